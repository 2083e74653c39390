"""EfficientNet-Lite in Keras 3: the architecture (the weights are loaded by :mod:`cnnfeat.weights.efficientnet_lite`).

EfficientNet-Lite (Tan & Le; TensorFlow TPU repository, 2020) is EfficientNet
without squeeze-and-excitation, with ReLU6, and with the stem (32 filters), the
head (1280 filters) and the repeats of the first and last stage kept fixed
when the model is scaled. BatchNorm uses eps 1e-3 and convolutions TF "same"
padding, which Keras' ``padding="same"`` reproduces exactly. Inputs are RGB
pixels scaled as ``(x - 127) / 128``; this builder expects that scaling to be
applied before the model (cnnfeat's backbone wrapper does it in-graph).

Layer names follow Keras' own EfficientNet (``stem_conv``, ``block2a_expand_conv``,
``block6d_project_bn``, ``top_activation``, ``avg_pool``, ``predictions``) so
users can tap layers with names they already know.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cnnfeat.exceptions import ConfigError
from cnnfeat.hints import KerasModel

__all__ = ["LITE_VARIANTS", "build_efficientnet_lite", "lite_blocks"]

# (width, depth, resolution, dropout) from the official efficientnet_lite_builder.py
LITE_VARIANTS: dict[str, tuple[float, float, int, float]] = {
    "efficientnet_lite0": (1.0, 1.0, 224, 0.2),
    "efficientnet_lite1": (1.0, 1.1, 240, 0.2),
    "efficientnet_lite2": (1.1, 1.2, 260, 0.3),
    "efficientnet_lite3": (1.2, 1.4, 280, 0.3),
    "efficientnet_lite4": (1.4, 1.8, 300, 0.3),
}

# (repeats, kernel, stride, expand_ratio, in_filters, out_filters) — the EfficientNet-B0 stages
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN_EPS = 1e-3


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    scaled = filters * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * scaled:
        new += divisor
    return int(new)


@dataclass(frozen=True)
class _Block:
    name: str
    torch_index: int
    kernel: int
    stride: int
    expand_ratio: int
    in_filters: int
    out_filters: int


def lite_blocks(width: float, depth: float) -> list[_Block]:
    blocks: list[_Block] = []
    for stage, (repeats, kernel, stride, expand, fin, fout) in enumerate(_STAGES):
        fixed = stage in (0, len(_STAGES) - 1)  # Lite keeps first/last stage repeats
        n = repeats if fixed else math.ceil(depth * repeats)
        fin, fout = _round_filters(fin, width), _round_filters(fout, width)
        for r in range(n):
            blocks.append(
                _Block(
                    name=f"block{stage + 1}{chr(ord('a') + r)}",
                    torch_index=len(blocks),
                    kernel=kernel,
                    stride=stride if r == 0 else 1,
                    expand_ratio=expand,
                    in_filters=fin if r == 0 else fout,
                    out_filters=fout,
                )
            )
    return blocks


def build_efficientnet_lite(
    variant: str = "efficientnet_lite0",
    *,
    include_top: bool = True,
    input_shape: tuple[int | None, int | None, int] | None = None,
    classes: int = 1000,
) -> KerasModel:
    """Build an (untrained) EfficientNet-Lite as a Keras functional model.

    Parameters
    ----------
    variant : str
        One of :data:`LITE_VARIANTS`.
    include_top : bool
        Add global pooling, dropout and the 1000-way ``predictions`` layer (softmax).
    input_shape : tuple, optional
        Defaults to the variant's resolution, ``(r, r, 3)``.
    classes : int
        Size of the classifier when ``include_top``.

    Returns
    -------
    keras.Model
        Expects inputs already scaled as ``(x - 127) / 128``.
    """
    import keras
    from keras import layers

    if variant not in LITE_VARIANTS:
        raise ConfigError(f"unknown EfficientNet-Lite variant {variant!r}; expected one of {sorted(LITE_VARIANTS)}")
    width, depth, resolution, dropout = LITE_VARIANTS[variant]
    shape = input_shape or (resolution, resolution, 3)

    def bn(name: str) -> layers.Layer:
        return layers.BatchNormalization(epsilon=_BN_EPS, name=name)

    def relu6(name: str) -> layers.Layer:
        return layers.ReLU(max_value=6.0, name=name)

    inputs = keras.Input(shape=shape, name="input_layer")
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = relu6("stem_activation")(bn("stem_bn")(x))
    for b in lite_blocks(width, depth):
        shortcut = x
        if b.expand_ratio != 1:
            x = layers.Conv2D(b.in_filters * b.expand_ratio, 1, use_bias=False, name=f"{b.name}_expand_conv")(x)
            x = relu6(f"{b.name}_expand_activation")(bn(f"{b.name}_expand_bn")(x))
        x = layers.DepthwiseConv2D(b.kernel, strides=b.stride, padding="same", use_bias=False, name=f"{b.name}_dwconv")(x)
        x = relu6(f"{b.name}_activation")(bn(f"{b.name}_bn")(x))
        x = layers.Conv2D(b.out_filters, 1, use_bias=False, name=f"{b.name}_project_conv")(x)
        x = bn(f"{b.name}_project_bn")(x)
        if b.stride == 1 and b.in_filters == b.out_filters:
            x = layers.Add(name=f"{b.name}_add")([x, shortcut])
    x = layers.Conv2D(1280, 1, use_bias=False, name="top_conv")(x)
    x = relu6("top_activation")(bn("top_bn")(x))
    if include_top:
        x = layers.GlobalAveragePooling2D(name="avg_pool")(x)
        x = layers.Dropout(dropout, name="top_dropout")(x)
        x = layers.Dense(classes, activation="softmax", name="predictions")(x)
    return keras.Model(inputs, x, name=variant)
