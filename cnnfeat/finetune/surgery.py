"""Model surgery for fine-tuning: the new head, the backbone cut at a layer, what trains in each stage."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from cnnfeat.backbones import block_ends, get_backbone, make_base, preprocess
from cnnfeat.exceptions import ConfigError
from cnnfeat.hints import KerasModel, KerasOptimizer, KerasTensor

if TYPE_CHECKING:
    from cnnfeat.finetune.estimator import FineTunedCNN

__all__ = [
    "HEADS",
    "backbone_of",
    "build_image_model",
    "head_layers",
    "make_optimizer",
    "parse_trainable",
    "rest_model",
]

HEADS = ("linear", "mlp")
_TRAINABLE = re.compile(r"^(head|all|top(\d+)|after:(.+))$")


def parse_trainable(value: str) -> tuple[str, int | str | None]:
    """``"top3"`` -> ``("top", 3)``, ``"after:block5a_add"`` -> ``("after", "block5a_add")``, ``"head"``/``"all"``."""
    match = _TRAINABLE.match(value) if isinstance(value, str) else None
    if not match or (match.group(2) is not None and int(match.group(2)) < 1):
        raise ConfigError(f"trainable must be 'head', 'top<k>' (k >= 1), 'after:<layer>' or 'all'; got {value!r}")
    if match.group(2) is not None:
        return "top", int(match.group(2))
    if match.group(3) is not None:
        return "after", match.group(3)
    return match.group(1), None


def head_layers(est: FineTunedCNN, x: KerasTensor, n_classes: int) -> KerasTensor:
    from keras import layers

    if est.head == "mlp":
        for i in (1, 2):
            x = layers.Dropout(est.dropout, seed=est.random_state + i, name=f"head_dropout{i}")(x)
            x = layers.Dense(est.hidden_units, activation="relu", name=f"head_fc{i}")(x)
    x = layers.Dropout(est.dropout, seed=est.random_state, name="head_dropout")(x)
    return layers.Dense(n_classes, activation="softmax", name="head_predictions")(x)


def build_image_model(est: FineTunedCNN, n_classes: int) -> tuple[KerasModel, KerasModel]:
    """(the whole model on uint8-range RGB, its backbone part)."""
    import keras
    from keras import layers

    spec = get_backbone(est.backbone)
    keras.utils.set_random_seed(est.random_state)
    base, _ = make_base(spec, include_top=False, weights=est.weights, seed=est.random_state)
    if est.truncate_at is not None:
        names = [layer.name for layer in base.layers]
        if est.truncate_at not in names:
            from cnnfeat.exceptions import UnknownLayerError, did_you_mean

            raise UnknownLayerError(
                f"backbone {spec.name} has no layer {est.truncate_at!r}{did_you_mean(est.truncate_at, names)}"
            )
        base = keras.Model(base.inputs, base.get_layer(est.truncate_at).output, name=f"{spec.name}_to_{est.truncate_at}")
    inputs = keras.Input(shape=(spec.input_size, spec.input_size, 3), name="rgb")
    x = base(preprocess(inputs, spec.preprocessing), training=False)
    if est.truncate_at is not None:
        for i in range(est.new_blocks):
            x = layers.Conv2D(64 * 2**i, 3, padding="same", activation="relu", name=f"new_block{i + 1}_conv")(x)
            x = layers.MaxPooling2D(2, padding="same", name=f"new_block{i + 1}_pool")(x)
    if len(x.shape) == 4:
        x = layers.GlobalAveragePooling2D(name="head_pool")(x)
    return keras.Model(inputs, head_layers(est, x, n_classes), name=f"{spec.name}_finetuned"), base


def trainable_from(est: FineTunedCNN, base: KerasModel) -> str | None:
    """The layer after which ``trainable`` trains (``None``: from the start)."""
    kind, value = parse_trainable(est.trainable)
    names = [layer.name for layer in base.layers]
    if kind in ("all", "head"):
        return None
    if kind == "top":
        ends = block_ends(base, get_backbone(est.backbone))
        k = int(value)  # type: ignore[arg-type]
        return None if k >= len(ends) else ends[-k - 1]
    if value not in names:
        from cnnfeat.exceptions import UnknownLayerError, did_you_mean

        raise UnknownLayerError(f"backbone {est.backbone} has no layer {value!r}{did_you_mean(str(value), names)}")
    return str(value)


def rest_model(est: FineTunedCNN, base: KerasModel, cut_after: str, n_classes: int) -> tuple[KerasModel, KerasModel]:
    """(the model to train on ``cut_after``'s output maps, its backbone part: the layers after ``cut_after``)."""
    import keras

    spec = get_backbone(est.backbone)
    cut = base.get_layer(cut_after).output
    rest = keras.Model(cut, base.output, name=f"{spec.name}_after_{cut_after}")
    maps = keras.Input(shape=tuple(cut.shape[1:]), name="maps")
    x = keras.layers.GlobalAveragePooling2D(name="head_pool")(rest(maps, training=False))
    return keras.Model(maps, head_layers(est, x, n_classes), name=f"{spec.name}_finetuned"), rest


def unfreeze(est: FineTunedCNN, base: KerasModel, *, from_start: bool = False) -> None:
    """Make ``trainable``'s part of the backbone trainable (the rest stays frozen)."""
    import keras

    names = [layer.name for layer in base.layers]
    boundary = None if from_start else trainable_from(est, base)
    start = 0 if boundary is None else names.index(boundary) + 1
    base.trainable = True
    for i, layer in enumerate(base.layers):
        # a BatchNormalization layer runs in inference mode only while it is frozen: the outer
        # call's training=False does not reach it once it is trainable (Keras 3)
        layer.trainable = i >= start and not isinstance(layer, keras.layers.BatchNormalization)


def make_optimizer(est: FineTunedCNN, learning_rate: float) -> KerasOptimizer:
    import keras

    if est.optimizer == "adam":
        return keras.optimizers.Adam(learning_rate)
    return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)


def backbone_of(model: KerasModel) -> KerasModel:
    """The nested backbone model inside a fine-tuning model (the one layer that is itself a model)."""
    import keras

    return next(layer for layer in model.layers if isinstance(layer, keras.Model))
