"""A fitted :class:`~cnnfeat.FineTunedCNN` as one file: its Keras model and its parameters, classes and history."""

from __future__ import annotations

import json
import os
import tempfile
import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from sklearn.utils.validation import check_is_fitted

from cnnfeat.exceptions import ConfigError
from cnnfeat.files import atomic_write
from cnnfeat.hints import KerasModel

if TYPE_CHECKING:
    from cnnfeat.finetune.estimator import FineTunedCNN

__all__ = ["FITTED_EXTRAS", "FORMAT", "load", "model_from_bytes", "model_to_bytes", "save"]

FORMAT = "cnnfeat-finetuned"
FITTED_EXTRAS = ("history_", "epochs_run_", "learning_rates_", "fit_seconds_", "training_path_", "front_tap_")


def save(est: FineTunedCNN, path: str | os.PathLike[str]) -> Path:
    """Write the fitted classifier to one file: its Keras model (``.keras``) and its parameters and classes (JSON)."""
    check_is_fitted(est, "classes_")
    path = Path(path)
    meta = {
        "format": FORMAT,
        "params": {k: (os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in est.get_params().items()},
        "classes": est.classes_.tolist(),
        "fitted": {k: getattr(est, k) for k in FITTED_EXTRAS if hasattr(est, k)},
    }
    model_bytes = model_to_bytes(est._keras_model())

    def write(tmp: Path) -> None:
        with zipfile.ZipFile(tmp, "w") as archive:
            archive.writestr("estimator.json", json.dumps(meta, indent=1))
            archive.writestr("model.keras", model_bytes)

    atomic_write(path, write)
    return path


def load(cls: type[FineTunedCNN], path: str | os.PathLike[str], *, classes: Sequence[object] | None = None) -> FineTunedCNN:
    """Read a classifier written by :meth:`save`; ``classes`` (optional) must be the ones it was fitted on."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            meta = json.loads(archive.read("estimator.json"))
            model_bytes = archive.read("model.keras")
    except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: not a classifier saved by FineTunedCNN.save ({exc})") from None
    if meta.get("format") != FORMAT:
        raise ConfigError(f"{path}: not a classifier saved by FineTunedCNN.save (format {meta.get('format')!r})")
    stored = np.asarray(meta["classes"])
    if classes is not None and [str(c) for c in classes] != [str(c) for c in stored]:
        raise ConfigError(
            f"{path}: the model was fitted on classes {stored.tolist()}, not the {len(classes)} given ({list(classes)[:10]})"
        )
    model = model_from_bytes(model_bytes)
    if int(model.output_shape[-1]) != len(stored):
        raise ConfigError(f"{path}: the model has {model.output_shape[-1]} outputs for {len(stored)} classes")
    estimator = cls(**meta["params"])
    estimator.classes_, estimator.n_classes_, estimator.model_ = stored, len(stored), model
    for key, value in meta["fitted"].items():
        setattr(estimator, key, value)
    return estimator


def model_to_bytes(model: KerasModel) -> bytes:
    with tempfile.TemporaryDirectory(prefix="cnnfeat-model-") as tmp:
        path = Path(tmp, "model.keras")
        model.save(path)
        return path.read_bytes()


def model_from_bytes(data: bytes) -> KerasModel:
    import keras

    with tempfile.TemporaryDirectory(prefix="cnnfeat-model-") as tmp:
        path = Path(tmp, "model.keras")
        path.write_bytes(data)
        return keras.models.load_model(path, compile=True, safe_mode=True)
