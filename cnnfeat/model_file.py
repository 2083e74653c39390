"""A trained classifier as a file that is safe to load from anyone: features + normalisation + linear probe.

A model file is a zip holding ``model.json`` (format, version, the method, normalisation and
classes, the data digest, what was measured, and the sha256 of the arrays) and ``arrays.npz``
(the probe's coefficients and intercepts), read with ``allow_pickle=False``: no object is
unpickled, so loading runs no code from the file, and its method may name no local file
(weights are ImageNet's or none). Any change to either member, or a member added, is refused
(the checksums detect damage and edits; they are not a signature: the safety comes from the
format, which holds no code).

:func:`load_model` gives the scikit-learn pipeline: the feature transformer the method names
(through the feature cache), the normalisation, and a ``LogisticRegression`` carrying the saved
weights, so ``predict`` and ``predict_proba`` take image paths.

Examples
--------
>>> from cnnfeat.model_file import SUPPORTED_METHOD_KINDS
>>> sorted(SUPPORTED_METHOD_KINDS)
['cnn', 'color_hist', 'hog']
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
import zlib
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnnfeat.exceptions import CnnfeatError, ConfigError
from cnnfeat.files import atomic_write
from cnnfeat.hints import JSONObject
from cnnfeat.methods import Method

if TYPE_CHECKING:
    from sklearn.pipeline import Pipeline

__all__ = ["FORMAT", "SUPPORTED_METHOD_KINDS", "ModelCard", "ModelFileError", "load_model", "save_model"]

FORMAT = "cnnfeat-model"
VERSION = 1
#: methods whose transformer is fully described by its parameters (nothing fitted), so a model file can rebuild it
SUPPORTED_METHOD_KINDS = frozenset({"cnn", "hog", "color_hist"})
#: normalisations without fitted state: the name alone rebuilds them
STATELESS_NORMALIZATIONS = frozenset({"none", "l2", "power", "power+l2", "chi2"})
_MEMBERS = {"model.json", "arrays.npz"}
_MAX_MEMBER_BYTES = 1 << 30


class ModelFileError(CnnfeatError):
    """A model file that is damaged, tampered with, of another format, or from a newer cnnfeat."""


@dataclass
class ModelCard:
    """What a model file says about itself (``model.json`` less its checksum)."""

    method: str
    normalize: str
    classes: list[str]
    data_digest: str = ""
    data: str = ""
    measured: JSONObject = field(default_factory=dict)
    cnnfeat_version: str = ""


def check_trainable(method: str, normalize: str) -> Method:
    """The parsed method, if a model file can hold it with this normalisation; else a ConfigError saying why."""
    parsed = Method.parse(method)
    if parsed.kind not in SUPPORTED_METHOD_KINDS or (parsed.kind == "cnn" and "," in parsed.tap):
        raise ConfigError(
            f"method {method!r}: a model file holds one network's single tap, hog or color_hist (not several taps, "
            "several networks, a fitted SIFT codebook or fine-tuning); train one of those"
        )
    if normalize not in STATELESS_NORMALIZATIONS:
        raise ConfigError(f"normalisation {normalize!r} has fitted state; a model file takes {sorted(STATELESS_NORMALIZATIONS)}")
    return parsed


def save_model(path: str | os.PathLike[str], pipeline: Pipeline, card: ModelCard) -> Path:
    """Write a fitted pipeline (features -> [normalisation] -> logistic probe) as a model file."""
    final = pipeline[-1]
    lr = getattr(final, "estimator_", final)  # SweptLinearClassifier keeps the refitted LogisticRegression
    if not hasattr(lr, "coef_") or not hasattr(lr, "predict_proba"):
        raise ConfigError("only a fitted logistic-regression probe can be saved as a model file")
    buffer = io.BytesIO()
    np.savez(buffer, coef=np.asarray(lr.coef_, np.float64), intercept=np.asarray(lr.intercept_, np.float64))
    arrays = buffer.getvalue()
    from cnnfeat import __version__

    card.cnnfeat_version = __version__
    body = {"format": FORMAT, "version": VERSION, **asdict(card), "arrays_sha256": hashlib.sha256(arrays).hexdigest()}
    body["sha256"] = _digest(body)

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as z:
            z.writestr("model.json", json.dumps(body, indent=1, sort_keys=True))
            z.writestr("arrays.npz", arrays)

    path = Path(path)
    atomic_write(path, write)
    return path


def _digest(body: JSONObject) -> str:
    return hashlib.sha256(json.dumps({k: v for k, v in body.items() if k != "sha256"}, sort_keys=True).encode()).hexdigest()


def read_model(path: str | os.PathLike[str]) -> tuple[ModelCard, dict[str, np.ndarray]]:
    """The card and arrays of a model file, verified; a :class:`ModelFileError` naming the file otherwise."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            infos = {info.filename: info for info in z.infolist()}
            if set(infos) != _MEMBERS:
                raise ModelFileError(f"{path}: not a cnnfeat model file (members {sorted(infos)[:5]})")
            if any(info.file_size > _MAX_MEMBER_BYTES for info in infos.values()):
                raise ModelFileError(f"{path}: a member is larger than a model file's ever is; refused")
            body = json.loads(z.read("model.json"))
            arrays_bytes = z.read("arrays.npz")
    except ModelFileError:
        raise
    except (OSError, zipfile.BadZipFile, zlib.error, ValueError, KeyError, RuntimeError, NotImplementedError, EOFError) as exc:
        raise ModelFileError(f"{path}: not a readable model file ({type(exc).__name__}: {exc})") from None
    if not isinstance(body, dict) or body.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a cnnfeat model file")
    if body.get("version") != VERSION:
        raise ModelFileError(f"{path}: model file version {body.get('version')!r}; this cnnfeat reads version {VERSION}")
    if body.get("sha256") != _digest(body) or body.get("arrays_sha256") != hashlib.sha256(arrays_bytes).hexdigest():
        raise ModelFileError(f"{path}: the model file was changed after it was written (its checksum differs); refused")
    try:
        with np.load(io.BytesIO(arrays_bytes), allow_pickle=False) as npz:
            arrays = {name: np.asarray(npz[name]) for name in ("coef", "intercept")}
        fields = {k: body[k] for k in ModelCard.__dataclass_fields__}
        card = ModelCard(**fields)
    except (ValueError, KeyError, TypeError, OSError) as exc:
        raise ModelFileError(f"{path}: not a readable model file ({type(exc).__name__}: {exc})") from None
    n = len(card.classes)
    rows = 1 if n == 2 else n
    if arrays["coef"].ndim != 2 or arrays["coef"].shape[0] != rows or arrays["intercept"].shape != (rows,):
        raise ModelFileError(f"{path}: its weights do not fit its {n} classes")
    return card, arrays


def load_model(path: str | os.PathLike[str], *, cache: str | os.PathLike[str] | None = None) -> Pipeline:
    """The scikit-learn pipeline of a model file: image paths in, classes out (``predict``, ``predict_proba``).

    ``cache`` is the feature cache folder (default: the user cache). The file is verified first
    (:class:`ModelFileError` when damaged or tampered with).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    from cnnfeat.config import cache_dir
    from cnnfeat.normalize import make_normalizer

    card, arrays = read_model(path)
    method = check_trainable(card.method, card.normalize)
    if method.params.get("weights", "imagenet") not in ("imagenet", None):  # a file must not point at local files
        raise ModelFileError(f"{path}: its method reads weights from {method.params['weights']!r}; a model file may not")
    features = method.make_features(cache if cache is not None else cache_dir() / "features")
    probe = LogisticRegression()
    probe.coef_, probe.intercept_ = arrays["coef"], arrays["intercept"]
    probe.classes_ = np.asarray(card.classes, dtype=object)
    probe.n_features_in_ = arrays["coef"].shape[1]
    model = make_pipeline(features, make_normalizer(card.normalize), probe)
    model.card_ = card
    return model
