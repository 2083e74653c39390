"""Exported graphs of a backbone, made once and cached: ONNX files keyed by everything that determines them.

The key is the sha256 of the canonical JSON of the backbone's data config, the
weights' identity, the taps, the pooling, the exporter's and the frameworks'
versions and the ONNX opset; the file is written atomically into
``<cnnfeat cache>/graphs/<key>.onnx`` with a JSON sidecar holding its sha256,
which is checked every time the graph is loaded: a corrupt or truncated file is
rebuilt (with a warning), never run. A graph that is cached loads without
importing TensorFlow.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import logging
import os
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cnnfeat.config import cache_dir
from cnnfeat.files import atomic_write, sha256_file
from cnnfeat.hints import JSONObject, KerasModel

__all__ = ["ExportedGraph", "exporter_versions", "graph_key", "load_or_export"]

logger = logging.getLogger(__name__)

#: what an exported graph's values depend on beyond the model itself
_EXPORTER_PACKAGES = ("keras", "tensorflow", "tf2onnx", "onnx")


def exporter_versions() -> dict[str, str]:
    """Installed versions of the packages that write the graph (read without importing them)."""
    found = {}
    for name in _EXPORTER_PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = "absent"
    return found


def graph_key(model_config: JSONObject) -> str:
    """The cache key of the graph of ``model_config`` (backbone, weights, taps, pooling, ...) with today's exporter."""
    text = json.dumps({"model": model_config, "exporter": exporter_versions(), "format": "onnx"}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


class ExportedGraph:
    """An ONNX file of a backbone, its verified bytes, and what its outputs are."""

    def __init__(self, path: Path, meta: JSONObject) -> None:
        self.path = path
        self.meta = meta
        self.taps: list[str] = list(meta["taps"])
        self.dims: dict[str, int] = {t: int(d) for t, d in meta["dims"].items()}


def cached_graph(path: Path, meta_path: Path, remedy: str) -> ExportedGraph | None:
    """The graph cached at ``path`` if it has the bytes its record names; None (with a warning saying ``remedy``) if not."""
    if not (path.is_file() and meta_path.is_file()):
        return None
    try:
        meta = json.loads(meta_path.read_text())
        if sha256_file(path) == meta["sha256"]:
            return ExportedGraph(path, meta)
        logger.warning("%s: the cached graph does not match its sha256 (damaged or truncated); %s", path, remedy)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        logger.warning("%s: cannot read the cached graph's record (%s); %s", meta_path, exc, remedy)
    return None


def load_or_export(
    model_config: JSONObject, build: Callable[[], KerasModel], *, folder: str | os.PathLike[str] | None = None
) -> ExportedGraph:
    """The cached graph of ``model_config``, exported from ``build()`` (a BuiltBackbone) when missing or damaged."""
    key = graph_key(model_config)
    folder = Path(folder) if folder is not None else cache_dir() / "graphs"
    onnx_path, meta_path = folder / f"{key}.onnx", folder / f"{key}.json"
    cached = cached_graph(onnx_path, meta_path, "exporting it again")
    if cached is not None:
        return cached
    folder.mkdir(parents=True, exist_ok=True)
    built = build()
    size = int(built.model.inputs[0].shape[1])
    built.model.predict_on_batch(np.zeros((1, size, size, 3), np.uint8))  # Keras exports only a model that has run
    with warnings.catch_warnings():  # keras' tf2onnx shim asks numpy about np.object: a FutureWarning for the user
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"keras\.src\.export")
        atomic_write(onnx_path, lambda tmp: built.model.export(str(tmp), format="onnx", verbose=False))
    meta = {
        "sha256": sha256_file(onnx_path),
        "taps": list(built.taps),
        "dims": built.feature_dims(),
        "model": dict(model_config),
        "exporter": exporter_versions(),
    }
    atomic_write(meta_path, lambda tmp: tmp.write_text(json.dumps(meta, indent=1, sort_keys=True, default=str)))
    logger.info("exported %s to %s", model_config.get("backbone", {}).get("name", "the backbone"), onnx_path)
    return ExportedGraph(onnx_path, meta)
