"""The backbone registry: each entry carries what it takes to reproduce a feature.

A :class:`BackboneSpec` names the builder, the input size, the resize/crop rule,
the interpolation, the preprocessing mode and the weight sources of one
ImageNet CNN, like timm's model entries carry their data config. Keras and
TensorFlow are imported only inside the functions that build models, so
``import cnnfeat`` stays light.

Examples
--------
>>> import cnnfeat
>>> cnnfeat.get_backbone("efficientnet_lite0").input_size
224
>>> "resnet50" in cnnfeat.list_backbones()
True
"""

from cnnfeat.backbones import zoo  # noqa: F401 (registers the model zoo)
from cnnfeat.backbones.build import (
    BuiltBackbone,
    block_ends,
    build_backbone,
    list_layers,
    make_base,
    preprocess,
    weights_identity,
)
from cnnfeat.backbones.device import compute_device, keras_backend_name
from cnnfeat.backbones.registry import (
    POOL_TAPS,
    PREPROCESSING_MODES,
    BackboneSpec,
    get_backbone,
    list_backbones,
    register_backbone,
)

__all__ = [
    "POOL_TAPS",
    "PREPROCESSING_MODES",
    "BackboneSpec",
    "BuiltBackbone",
    "block_ends",
    "build_backbone",
    "compute_device",
    "get_backbone",
    "keras_backend_name",
    "list_backbones",
    "list_layers",
    "make_base",
    "preprocess",
    "register_backbone",
    "weights_identity",
]
