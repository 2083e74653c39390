"""The method grammar, parsed in one place: ``cnn:<backbone>/<tap>[@<views>][?<param>=<value>&...]``, ``hog``, ...

A :class:`Method` is the parsed value the runner, the tables, the figures and the
CLIs share; :meth:`Method.make_features` builds the (unfitted) feature transformer it names,
and for ``finetune:<backbone>/<trainable>[?<param>=<value>&...]`` :meth:`Method.make_classifier`
the :class:`~cnnfeat.FineTunedCNN` (a classifier of its own: no probe follows it).

Several networks' features are concatenated by joining their ``cnn:`` methods with ``+``
(``cnn:efficientnet_lite0/block6d_add,pool+cnn:efficientnet_lite2/pool``): a ``+`` starts a
new part only where ``cnn:`` follows it, so views such as ``center+flip`` keep theirs.
Each tap of each part is L2-normalised before the concatenation (the runner does it).

Examples
--------
>>> m = Method.parse("cnn:vgg16/fc1@10crop?weights=none&batch_size=8")
>>> m.kind, m.backbone, m.tap, m.views, m.params["batch_size"], m.params["weights"]
('cnn', 'vgg16', 'fc1', '10crop', 8, None)
>>> m.network == Method.parse("cnn:vgg16/fc2@10crop?weights=none&batch_size=8").network  # one forward pass
True
>>> Method.parse("hog").default_normalize
'chi2'
>>> f = Method.parse("finetune:efficientnet_lite0/top2?head=mlp&learning_rate=0.003")
>>> f.kind, f.params["trainable"], f.params["learning_rate"]
('finetune', 'top2', 0.003)
>>> c = Method.parse("cnn:efficientnet_lite0/pool@center+flip+cnn:efficientnet_lite2/block6e_add,pool")
>>> c.kind, [(p.backbone, p.tap, p.views) for p in c.parts]
('concat', [('efficientnet_lite0', 'pool', 'center+flip'), ('efficientnet_lite2', 'block6e_add,pool', '')])
"""

from __future__ import annotations

import functools
import json
import os
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from cnnfeat.hints import Classifier

if TYPE_CHECKING:
    from cnnfeat.extractors._base import CachedImageFeatures
from cnnfeat.exceptions import ConfigError, did_you_mean
from cnnfeat.registry import parse_query

__all__ = ["HANDCRAFTED", "METHOD_PATTERNS", "Method"]

#: the hand-crafted baselines, and the normalisation each gets by default (the χ² map for histograms)
HANDCRAFTED = {"hog": "chi2", "sift_bovw": "chi2", "color_hist": "chi2"}
#: what ``--methods`` accepts, for help texts
METHOD_PATTERNS = [
    "cnn:<backbone>/<tap>[@<views>][?<param>=<value>&...]",
    "cnn:<backbone>/<tap>...+cnn:<backbone>/<tap>... (several networks concatenated)",
    "finetune:<backbone>/<head|top<k>|after:<layer>|all>[?<param>=<value>&...]",
    *HANDCRAFTED,
]


@dataclass(frozen=True)
class Method:
    """A parsed method: its kind (``cnn``, ``finetune``, ``concat`` or a baseline's name) and what it sets.

    ``params`` are the extractor's (or the fine-tuned classifier's) parameters; ``parts`` are a
    ``concat`` method's ``cnn:`` methods, in order.
    """

    text: str
    kind: str
    params: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    parts: tuple[Method, ...] = field(default=(), compare=False, hash=False)

    @classmethod
    def parse(cls, text: str) -> Method:
        """Parse a method string; a malformed one is a :class:`ConfigError` that says how to write it."""
        pieces = re.split(r"\+(?=cnn:)", text)
        if len(pieces) > 1:
            if not pieces[0].startswith("cnn:"):
                raise ConfigError(f"method {text!r}: only cnn: methods are concatenated, e.g. cnn:a/pool+cnn:b/pool")
            parts = tuple(cls.parse(piece) for piece in pieces)
            if len(set(parts)) < len(parts):
                raise ConfigError(f"method {text!r} names the same features twice")
            return cls(text, "concat", parts=parts)
        if text in HANDCRAFTED:
            return cls(text, text)
        kind, colon, rest = text.partition(":")
        if not colon or kind not in ("cnn", "finetune"):
            raise ConfigError(
                f"unknown method {text!r}{did_you_mean(text, HANDCRAFTED)}; choose from {', '.join(METHOD_PATTERNS)}"
            )
        body, _, query = rest.partition("?")
        if kind == "cnn":
            body, _, views = body.partition("@")
        backbone, _, what = body.partition("/")
        if not backbone or not what:
            example = "cnn:efficientnet_lite0/pool" if kind == "cnn" else "finetune:efficientnet_lite0/top2"
            raise ConfigError(
                f"method {text!r}: write {kind}:<backbone>/<{'tap' if kind == 'cnn' else 'trainable'}>, e.g. {example}"
            )
        params: dict[str, Any] = {"backbone": backbone}
        if kind == "cnn":
            params |= {"layers": what, **({"views": views} if views else {})}
        else:
            params["trainable"] = what
        params |= parse_query(query, f"method {text!r}")
        return cls(text, kind, params)

    def check(self) -> None:
        """Resolve everything the method names, without running it; a wrong name or value raises now.

        The backbone must exist, every parameter must be one the estimator has, with a valid
        value, and every tap (or ``after:<layer>``) must be a layer of the network (learned
        from a model with random weights, built once per backbone). Raises
        :class:`~cnnfeat.exceptions.ConfigError` (``UnknownBackboneError``,
        ``UnknownLayerError``) with a did-you-mean.

        >>> Method.parse("cnn:tiny_test/pool?batch_sise=8").check()  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        cnnfeat.exceptions.ConfigError: method ...: 'batch_sise' is not a parameter of CNNFeatures (did you mean 'batch_size'?)
        """
        import inspect

        from sklearn.utils._param_validation import InvalidParameterError

        if self.kind == "concat":
            for part in self.parts:
                part.check()
            return
        if self.kind in HANDCRAFTED:
            return
        from cnnfeat.backbones import get_backbone

        get_backbone(self.backbone)
        from cnnfeat.extractors.cnn import CNNFeatures
        from cnnfeat.finetune import FineTunedCNN, parse_trainable

        owner = CNNFeatures if self.kind == "cnn" else FineTunedCNN
        accepted = sorted(set(inspect.signature(owner.__init__).parameters) - {"self"})
        for name in self.params:
            if name not in accepted:
                raise ConfigError(
                    f"method {self.text!r}: {name!r} is not a parameter of {owner.__name__}{did_you_mean(name, accepted)}"
                )
        try:
            (self.make_features(None) if self.kind == "cnn" else self.make_classifier(None))._validate_params()
        except InvalidParameterError as exc:
            raise ConfigError(f"method {self.text!r}: {exc}") from None
        if self.kind == "cnn":
            layers = self.tap.split(",")
        else:
            how, layer = parse_trainable(str(self.params["trainable"]))
            layers = [str(layer)] if how == "after" else []
        for layer in layers:
            _check_layer(self.backbone, layer)
        _check_weights(self.backbone, self.params.get("weights", "imagenet"))

    def make_classifier(self, cache: str | os.PathLike[str] | None, **overrides: Any) -> Classifier:
        """The (unfitted) :class:`~cnnfeat.FineTunedCNN` a ``finetune:`` method names."""
        if self.kind != "finetune":
            raise ConfigError(f"method {self.text!r} names features, not a classifier")
        from cnnfeat.finetune import FineTunedCNN

        return FineTunedCNN(**{**self.params, **overrides, "cache": cache})

    @property
    def backbone(self) -> str:
        return str(self.params.get("backbone", ""))

    @property
    def tap(self) -> str:
        return str(self.params.get("layers", ""))

    @property
    def views(self) -> str:
        return str(self.params.get("views", ""))

    @property
    def network(self) -> str:
        """The CNN configuration without the tap: methods that share it share one forward pass."""
        return json.dumps({k: v for k, v in self.params.items() if k != "layers"}, sort_keys=True)

    @property
    def untapped(self) -> str:
        """A ``cnn:`` method's text without its tap (``cnn:<backbone>/[@views][?...]``): what its taps share."""
        return self.text.replace(f"/{self.tap}", "/", 1)

    @property
    def fitted_per_split(self) -> bool:
        """Whether the features learn from the training images (SIFT's codebook), so each split fits its own."""
        return self.kind == "sift_bovw"

    @property
    def default_normalize(self) -> str:
        return HANDCRAFTED.get(self.kind, "none")

    def make_features(self, cache: str | os.PathLike[str] | None, **overrides: Any) -> CachedImageFeatures:
        """The (unfitted) feature transformer this method names, caching into ``cache``."""
        if self.kind == "concat":
            raise ConfigError(f"method {self.text!r} concatenates several extractors: make each part's features")
        params = {**self.params, **overrides, "cache": cache}
        if self.kind == "cnn":
            from cnnfeat.extractors.cnn import CNNFeatures

            return CNNFeatures(**params)
        if self.kind == "hog":
            from cnnfeat.extractors.hog import HOGFeatures

            return HOGFeatures(**params)
        if self.kind == "sift_bovw":
            from cnnfeat.extractors.sift_bovw import SIFTBoVW

            return SIFTBoVW(**params)
        from cnnfeat.extractors.color import ColorHistogram

        return ColorHistogram(**params)


def _check_layer(backbone: str, layer: str) -> None:
    from cnnfeat.backbones import POOL_TAPS
    from cnnfeat.exceptions import UnknownLayerError

    if layer in POOL_TAPS:
        return
    names = _layer_names(backbone)
    if layer not in names:
        raise UnknownLayerError(
            f"backbone {backbone} has no layer {layer!r}{did_you_mean(layer, names)}; list them with "
            f"`cnnfeat extract --list-layers {backbone}`"
        )


@functools.cache
def _check_weights(backbone: str, weights: object) -> None:
    """Weights that Keras downloads are fetched now (once; later builds read its cache), or the reason they cannot be."""
    from cnnfeat.backbones import get_backbone
    from cnnfeat.backbones.build import make_base

    spec = get_backbone(backbone)
    if weights == "imagenet" and spec.imagenet_weights == "keras":
        make_base(spec, False, "imagenet", 0)  # a WeightsError names the download and the ways out


@functools.cache
def _layer_names(backbone: str) -> list[str]:
    from cnnfeat.backbones import list_layers

    return list(list_layers(backbone))
