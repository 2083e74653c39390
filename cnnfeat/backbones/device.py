"""Where Keras computes, and which backend it uses (the latter read without importing Keras)."""

from __future__ import annotations

import json
import os
from pathlib import Path

__all__ = ["compute_device", "keras_backend_name"]


def compute_device() -> str:
    """The device Keras computes on, e.g. ``"cpu (2 cores)"`` or ``"gpu: NVIDIA H100"``."""
    import keras

    backend = keras.backend.backend()
    names: list[str] = []
    if backend == "tensorflow":
        import tensorflow as tf

        names = [d.name for d in tf.config.list_physical_devices("GPU")]
    elif backend == "jax":
        import jax

        names = [str(d.device_kind) for d in jax.devices() if d.platform != "cpu"]
    elif backend == "torch":
        import torch

        names = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
    if names:
        return f"gpu: {', '.join(names)} ({backend})"
    return f"cpu ({os.cpu_count()} cores, {backend})"


def keras_backend_name() -> str:
    """Keras' backend without importing Keras (and so TensorFlow)."""
    if os.environ.get("KERAS_BACKEND"):
        return os.environ["KERAS_BACKEND"]
    config = Path(os.environ.get("KERAS_HOME", Path.home() / ".keras"), "keras.json")
    try:
        return str(json.loads(config.read_text()).get("backend", "tensorflow"))
    except (OSError, ValueError):
        return "tensorflow"
