"""Where a built network runs: Keras (the reference) or an exported graph in ONNX Runtime or OpenVINO.

The Keras model is the reference for every feature value. A runtime runs the
ONNX graph exported from it (:mod:`cnnfeat.runtimes.graphs`, made once and
cached) and must give Keras' float32 features within ``1e-4 × max|f|``; a
reduced precision (``bf16``, ``int8``) is never the default and has its own fingerprint.
``auto`` resolves, by device, to a concrete runtime (:func:`resolve_runtime`),
and the resolved name, never ``auto``, is what the feature store and records carry.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from cnnfeat.exceptions import ConfigError, did_you_mean

__all__ = ["EXACT_TOLERANCE", "PRECISIONS", "RUNTIMES", "has_gpu", "installed", "require"]

#: every runtime a user can ask for; ``auto`` picks one of the others
RUNTIMES = ("auto", "keras", "onnxruntime", "openvino")
#: ``mixed``: float16 compute in Keras (GPUs); ``bf16``: OpenVINO's bf16 hint (CPUs with AVX512_BF16 or AMX);
#: ``int8``: ONNX Runtime on a statically quantised graph, calibrated on the user's images
PRECISIONS = ("float32", "mixed", "bf16", "int8")
#: a float32 runtime's features must be within this fraction of max|f| of Keras'
EXACT_TOLERANCE = 1e-4
_EXTRAS = {"onnxruntime": "pip install onnxruntime tf2onnx onnx", "openvino": 'pip install "cnnfeat[openvino]"'}


def installed(runtime: str) -> bool:
    """Whether ``runtime``'s package is importable (checked without importing it)."""
    return importlib.util.find_spec(runtime) is not None  # each runtime is named after its package


def require(runtime: str) -> None:
    """Raise a clear :class:`ConfigError` when ``runtime`` is unknown or its package is not installed."""
    if runtime not in RUNTIMES:
        raise ConfigError(f"unknown runtime {runtime!r}{did_you_mean(runtime, RUNTIMES)}; choose from {', '.join(RUNTIMES)}")
    if runtime in _EXTRAS and not installed(runtime):
        raise ConfigError(f"runtime {runtime!r} is not installed: {_EXTRAS[runtime]}")


def has_gpu() -> bool:
    """An NVIDIA GPU is visible to this process (read from the driver, without importing a framework)."""
    return Path("/proc/driver/nvidia/gpus").is_dir() and any(Path("/proc/driver/nvidia/gpus").iterdir())
