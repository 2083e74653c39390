"""The fine-tuning epoch loop: seeded shuffles, early stopping on a validation split, a checkpoint per epoch."""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnnfeat.files import atomic_write
from cnnfeat.finetune.augmentation import network_inputs
from cnnfeat.hints import KerasModel

if TYPE_CHECKING:
    from cnnfeat.finetune.estimator import FineTunedCNN

__all__ = ["Checkpoints", "TrainingState", "reseed", "train_stage", "training_path", "validation_split"]

logger = logging.getLogger(__name__)


@dataclass
class TrainingState:
    """Where a stage's training is: epochs done, the per-epoch history, and early stopping's best loss and wait."""

    epoch: int = 0
    history: dict[str, list[float]] = field(default_factory=dict)
    best: float = math.inf
    wait: int = 0
    stopped: bool = False


def training_path(est: FineTunedCNN) -> str:
    """The cheapest way to train what ``trainable`` asks for.

    ``"features"``: the head alone, on the pooled features from the feature cache.
    ``"maps"``: without augmentation, the frozen front of the backbone runs once (its
    output maps go to the feature cache, for every later fit and prediction) and the
    epochs train the rest on them. ``"images"``: every epoch runs the
    whole network (augmentation, a truncated base, or ``all``).
    """
    if est.augment != "none" or est.truncate_at is not None:
        return "images"
    if est.trainable == "head":
        return "features"
    return "images" if est.trainable == "all" else "maps"


def validation_split(est: FineTunedCNN, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.arange(len(y))
    if est.validation_fraction == 0:
        return rows, rows[:0]
    from sklearn.model_selection import train_test_split

    n_val = max(1, round(est.validation_fraction * len(y)))
    if np.bincount(y).min() < 2 or n_val < len(np.unique(y)):
        # a few images per class: a validation split would take some classes' only examples away, so
        # every image trains and every epoch runs (no early stopping)
        return rows, rows[:0]
    train, val = train_test_split(rows, test_size=n_val, random_state=est.random_state, stratify=y)
    return np.sort(train), np.sort(val)


def train_stage(
    est: FineTunedCNN,
    model: KerasModel,
    data: np.ndarray,
    y: np.ndarray,
    train: np.ndarray,
    val: np.ndarray,
    stage: str,
    epochs: int,
    checkpoints: Checkpoints,
    crops: bool,
) -> tuple[KerasModel, dict[str, list[float]], int]:
    """Epoch by epoch: a seeded shuffle (and augmentation), one pass, early stopping, a checkpoint."""
    state = TrainingState()
    resumed = checkpoints.load(stage)
    if resumed is not None:
        model, state = resumed
        logger.info("resuming stage %s after epoch %d", stage, state.epoch)
    best_weights = checkpoints.best_weights(stage)
    x_val = network_inputs(est, data[val], np.random.default_rng(0), training=False, crops=crops) if len(val) else None
    while state.epoch < epochs and not state.stopped:
        epoch = state.epoch
        rng = np.random.default_rng([est.random_state, len(stage), epoch])
        # at least min_steps_per_epoch updates: a few images per class would otherwise get a step or two
        repeats = max(1, math.ceil(est.min_steps_per_epoch * est.batch_size / len(train)))
        order = np.concatenate([train[rng.permutation(len(train))] for _ in range(repeats)])
        x_epoch = network_inputs(est, data[order], rng, training=True, crops=crops)
        reseed(model, [est.random_state, len(stage), epoch])  # dropout masks: a function of the epoch, not of the past
        result = model.fit(
            x_epoch,
            y[order],
            batch_size=est.batch_size,
            epochs=1,
            shuffle=False,
            validation_data=(x_val, y[val]) if x_val is not None else None,
            verbose=est.verbose,
        )
        for name, values in result.history.items():
            state.history.setdefault(name, []).append(float(values[-1]))
        state.epoch = epoch + 1
        if x_val is not None:
            loss = float(result.history["val_loss"][-1])
            if loss < state.best - 1e-7:
                state.best, state.wait = loss, 0
                best_weights = [w.copy() for w in model.get_weights()]
            else:
                state.wait += 1
                state.stopped = state.wait >= est.patience
        checkpoints.save(stage, model, state, best_weights)
    if best_weights is not None:
        model.set_weights(best_weights)
    return model, state.history, state.epoch


def reseed(model: KerasModel, seed: Sequence[int]) -> None:
    """Set every random layer's generator state from ``seed``, so that a resumed epoch draws what it would have."""
    generators = [layer.seed_generator for layer in model._flatten_layers() if hasattr(layer, "seed_generator")]
    values = np.random.default_rng(list(seed)).integers(0, 2**31 - 1, (len(generators), 2))
    for generator, value in zip(generators, values):
        generator.state.assign(value.astype(generator.state.dtype)[: generator.state.shape[0]])


class Checkpoints:
    """Each finished epoch of a stage: ``<dir>/<run digest>/<stage>.keras`` (model and optimizer) and its state."""

    def __init__(self, folder: str | os.PathLike[str] | None, digest: str) -> None:
        self.folder = None if folder is None else Path(folder) / digest[:16]

    def save(self, stage: str, model: KerasModel, state: TrainingState, best: list[np.ndarray] | None) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        if best is not None:
            atomic_write(self.folder / f"{stage}.best.npz", lambda tmp: np.savez(tmp, *best))
        atomic_write(self.folder / f"{stage}.keras", lambda tmp: model.save(str(tmp)))
        # last: the epoch counts only when its model is saved
        atomic_write(self.folder / f"{stage}.json", lambda tmp: tmp.write_text(json.dumps(asdict(state))))

    def load(self, stage: str) -> tuple[KerasModel, TrainingState] | None:
        if self.folder is None or not (self.folder / f"{stage}.json").exists():
            return None
        import keras

        state = TrainingState(**json.loads((self.folder / f"{stage}.json").read_text()))
        return keras.models.load_model(self.folder / f"{stage}.keras", compile=True, safe_mode=True), state

    def best_weights(self, stage: str) -> list[np.ndarray] | None:
        if self.folder is None or not (self.folder / f"{stage}.best.npz").exists():
            return None
        with np.load(self.folder / f"{stage}.best.npz") as saved:
            return [saved[f"arr_{i}"] for i in range(len(saved.files))]
