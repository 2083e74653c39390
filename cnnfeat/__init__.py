"""cnnfeat: ImageNet CNNs as fixed feature extractors, with a crash-safe HDF5 feature cache.

The public names load lazily, so ``import cnnfeat`` imports neither TensorFlow
nor OpenCV.

Examples
--------
>>> import cnnfeat
>>> cnnfeat.list_backbones()[:3]
['convnext_tiny', 'densenet121', 'efficientnet_lite0']
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "BackboneSpec": "cnnfeat.backbones",
    "register_backbone": "cnnfeat.backbones",
    "get_backbone": "cnnfeat.backbones",
    "list_backbones": "cnnfeat.backbones",
    "list_layers": "cnnfeat.backbones",
    "build_backbone": "cnnfeat.backbones",
    "FeatureStore": "cnnfeat.store",
    "ImageTransform": "cnnfeat.images",
    "decode_image": "cnnfeat.images",
    "CNNFeatures": "cnnfeat.extractors.cnn",
    "extract_features": "cnnfeat.extractors.cnn",
    "HOGFeatures": "cnnfeat.extractors.hog",
    "SIFTBoVW": "cnnfeat.extractors.sift_bovw",
    "ColorHistogram": "cnnfeat.extractors.color",
    "ExtractionReport": "cnnfeat.extractors.local",
    "quiet_tensorflow": "cnnfeat.console",
    "RayEngine": "cnnfeat.engines",
    "FineTunedCNN": "cnnfeat.finetune",
    "CnnfeatError": "cnnfeat.exceptions",
    "SweptLinearClassifier": "cnnfeat.probes",
    "load_dataset": "cnnfeat.catalog",
    "load_inputs": "cnnfeat.inputs",
    "load_model": "cnnfeat.model_file",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cnnfeat' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
