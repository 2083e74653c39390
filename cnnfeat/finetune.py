"""Fine-tuning: the Keras transfer-learning recipes as one scikit-learn classifier.

:class:`FineTunedCNN` trains a new head on a pretrained backbone, then (``trainable``) unfreezes
its last blocks, everything after a layer, or all of it, and trains again with a learning rate
10x lower, as the Keras transfer-learning guide teaches. Its BatchNormalization layers stay
frozen in every stage, so they keep their ImageNet statistics and run in inference mode. It
uses the same backbones, preprocessing and image pipeline as :class:`~cnnfeat.CNNFeatures`.

Where it can be cheap it is: with ``trainable="head"`` and no augmentation the head is trained
on the pooled features from the feature cache (no forward pass per epoch); otherwise the images
are decoded once and kept in memory as uint8, and each epoch (augmented, shuffled) runs the
network.

Training is seeded and resumable: with ``checkpoint_dir`` each finished epoch is saved (model,
optimizer state, history, early-stopping state), and a training killed mid-run resumes from its
last finished epoch and ends with the model an uninterrupted run would have given.

Examples
--------
>>> from cnnfeat import FineTunedCNN
>>> clf = FineTunedCNN(trainable="top2", head="mlp", augment="flip+crop", epochs=10)  # doctest: +SKIP
>>> clf.fit(train_paths, train_labels).score(test_paths, test_labels)  # doctest: +SKIP
>>> clf.save("flowers.cnnfeat"); FineTunedCNN.load("flowers.cnnfeat").predict(paths)  # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import re
import tempfile
import time
import zipfile
from collections.abc import Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from cnnfeat.backbones import block_ends, get_backbone, make_base, preprocess
from cnnfeat.exceptions import ConfigError
from cnnfeat.extractors._base import as_sources, default_workers, read_source, source_name
from cnnfeat.files import atomic_write
from cnnfeat.images import ImageTransform

__all__ = ["AUGMENTATIONS", "HEADS", "FineTunedCNN", "parse_trainable"]

logger = logging.getLogger(__name__)

HEADS = ("linear", "mlp")
#: ``flip+crop``: a random crop of the network's size from the image resized as for the centre
#: crop, and a random horizontal flip; ``strong``: a random resized crop (35-100 % of the area,
#: aspect 3/4-4/3) and a flip
AUGMENTATIONS = ("none", "flip+crop", "strong")
_TRAINABLE = re.compile(r"^(head|all|top(\d+)|after:(.+))$")
_FORMAT = "cnnfeat-finetuned"
_PREDICT_CHUNK = 512
_FITTED_EXTRAS = ("history_", "epochs_run_", "learning_rates_", "fit_seconds_", "training_path_", "front_tap_")


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


class FineTunedCNN(ClassifierMixin, BaseEstimator):
    """A pretrained CNN with a new head, trained (and optionally fine-tuned) on images.

    Parameters
    ----------
    backbone : str
        A registered backbone (:func:`cnnfeat.list_backbones`).
    weights : {"imagenet", None} or path
        As for :class:`~cnnfeat.CNNFeatures` (``None``: random weights seeded by ``random_state``).
    trainable : str
        ``"head"``: the backbone stays frozen. ``"top<k>"``: its last ``k`` blocks (their
        boundaries come from the backbone's registry entry) and what follows them are trained
        in a second stage. ``"after:<layer>"``: everything after a named layer. ``"all"``: the whole
        backbone.
    head : {"linear", "mlp"}
        One softmax layer, or two fully connected layers (``hidden_units``, ReLU, dropout) and the softmax.
    hidden_units : int
        Width of the MLP head's layers.
    dropout : float
        Dropout before each dense layer of the head.
    truncate_at : str or None
        Cut the backbone after this layer and add ``new_blocks`` convolutional blocks
        (Conv 3x3 + ReLU + max-pool, 64, 128, ... filters) before the global pool: the
        truncated-base recipe. The kept part is frozen unless ``trainable`` says otherwise.
    new_blocks : int
        Convolutional blocks added after ``truncate_at``.
    augment : {"none", "flip+crop", "strong"}
        Training-time augmentation (see :data:`AUGMENTATIONS`); evaluation uses the centre crop.
    epochs : int
        Epochs of the first stage (the new head, backbone frozen).
    fine_tune_epochs : int
        Epochs of the second stage (``trainable`` unfrozen); unused for ``trainable="head"``.
    learning_rate : float
        The first stage's learning rate.
    fine_tune_learning_rate : float or None
        The second stage's; default ``learning_rate / 10``.
    optimizer : {"sgd", "adam"}
        SGD with Nesterov momentum 0.9, or Adam.
    batch_size : int
    min_steps_per_epoch : int
        An epoch passes over the (reshuffled, re-augmented) training images as many times as it takes to
        make this many updates: with a few images per class, one pass would be one step.
    validation_fraction : float
        Share of the training images (stratified) held out for early stopping; 0 disables it, and so does
        a training set too small to give every class a training image and the split one per class.
    patience : int
        Epochs without a lower validation loss before a stage stops (the best weights are kept).
    cache : path or None
        Feature cache of the head-only path (a ``.h5`` file or a folder, as for ``CNNFeatures``).
    checkpoint_dir : path or None
        Where finished epochs are saved; a later ``fit`` with the same data and parameters resumes there.
    random_state : int
        Seeds the validation split, the shuffles, augmentation, dropout and new layers' weights.
    n_jobs : int or None
        Decode threads.
    verbose : int
        Keras' ``fit`` verbosity.

    Attributes
    ----------
    classes_ : ndarray
    history_ : dict
        Per stage, the per-epoch ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``.
    epochs_run_ : dict
        Epochs each stage ran (early stopping may end a stage sooner).
    learning_rates_ : dict
        Each stage's learning rate.
    fit_seconds_ : float
    training_path_ : {"features", "maps", "images"}
        The head trained on cached features; the trained part on the frozen front's output maps,
        computed once (and cached like features); or the whole network run on the images every epoch.
    front_tap_ : str
        For the maps path: the layer whose output maps the trained part takes.
    """

    _parameter_constraints: dict[str, list[Any]] = {  # noqa: RUF012 (scikit-learn's own convention)
        "backbone": [str],
        "weights": [str, os.PathLike, None],
        "trainable": [str],
        "head": [StrOptions(set(HEADS))],
        "hidden_units": [Interval(Integral, 1, None, closed="left")],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "truncate_at": [str, None],
        "new_blocks": [Interval(Integral, 0, None, closed="left")],
        "augment": [StrOptions(set(AUGMENTATIONS))],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "fine_tune_epochs": [Interval(Integral, 0, None, closed="left")],
        "learning_rate": [Interval(Real, 0, None, closed="neither")],
        "fine_tune_learning_rate": [Interval(Real, 0, None, closed="neither"), None],
        "optimizer": [StrOptions({"sgd", "adam"})],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "min_steps_per_epoch": [Interval(Integral, 1, None, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "patience": [Interval(Integral, 1, None, closed="left")],
        "cache": [str, os.PathLike, None],
        "checkpoint_dir": [str, os.PathLike, None],
        "random_state": [Integral],
        "n_jobs": [Interval(Integral, 1, None, closed="left"), None],
        "verbose": [Integral],
    }

    def __init__(
        self,
        *,
        backbone: str = "efficientnet_lite0",
        weights: str | os.PathLike[str] | None = "imagenet",
        trainable: str = "head",
        head: str = "linear",
        hidden_units: int = 256,
        dropout: float = 0.2,
        truncate_at: str | None = None,
        new_blocks: int = 2,
        augment: str = "none",
        epochs: int = 20,
        fine_tune_epochs: int = 10,
        learning_rate: float = 0.01,
        fine_tune_learning_rate: float | None = None,
        optimizer: str = "sgd",
        batch_size: int = 32,
        min_steps_per_epoch: int = 10,
        validation_fraction: float = 0.1,
        patience: int = 5,
        cache: str | os.PathLike[str] | None = None,
        checkpoint_dir: str | os.PathLike[str] | None = None,
        random_state: int = 0,
        n_jobs: int | None = None,
        verbose: int = 0,
    ) -> None:
        self.backbone = backbone
        self.weights = weights
        self.trainable = trainable
        self.head = head
        self.hidden_units = hidden_units
        self.dropout = dropout
        self.truncate_at = truncate_at
        self.new_blocks = new_blocks
        self.augment = augment
        self.epochs = epochs
        self.fine_tune_epochs = fine_tune_epochs
        self.learning_rate = learning_rate
        self.fine_tune_learning_rate = fine_tune_learning_rate
        self.optimizer = optimizer
        self.batch_size = batch_size
        self.min_steps_per_epoch = min_steps_per_epoch
        self.validation_fraction = validation_fraction
        self.patience = patience
        self.cache = cache
        self.checkpoint_dir = checkpoint_dir
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.verbose = verbose

    # ------------------------------------------------------------------ pieces

    def _training_path(self) -> str:
        """The cheapest way to train what ``trainable`` asks for.

        ``"features"``: the head alone, on the pooled features from the feature cache.
        ``"maps"``: without augmentation, the frozen front of the backbone runs once (its
        output maps go to the feature cache, for every later fit and prediction) and the
        epochs train the rest on them. ``"images"``: every epoch runs the
        whole network (augmentation, a truncated base, or ``all``).
        """
        if self.augment != "none" or self.truncate_at is not None:
            return "images"
        if self.trainable == "head":
            return "features"
        return "images" if self.trainable == "all" else "maps"

    def _feature_extractor(self, tap: str = "pool") -> Any:
        """The cached extractor of the pooled features (the head-only path) or of a layer's whole map (the maps path)."""
        from cnnfeat.extractors.cnn import CNNFeatures

        return CNNFeatures(
            backbone=self.backbone,
            weights=self.weights,
            layers=tap,
            pooling="avg" if tap == "pool" else "flatten",  # the probes' pooled features share their cache
            cache=self.cache,
            seed=self.random_state,
            n_jobs=self.n_jobs,
            batch_size=self.batch_size,
        )

    def _transform(self, training: bool) -> ImageTransform:
        """The centre crop of ``CNNFeatures``; for augmentation, the image before that crop (a square)."""
        centre = self._feature_extractor().image_transform()
        if training and self.augment != "none":
            return dataclasses.replace(centre, size=centre.resize_to, crop_pct=1.0)
        return centre

    def _load_images(self, X: Any, training: bool) -> np.ndarray:
        """Every image decoded and resized once: uint8 ``(n, s, s, 3)``; a bad image raises, naming its file."""
        from cnnfeat.exceptions import ImageError
        from cnnfeat.images import map_ordered

        sources = as_sources(X)
        transform = self._transform(training)
        out = np.empty((len(sources), transform.size, transform.size, 3), np.uint8)

        def load(indexed: tuple[int, Any]) -> np.ndarray:
            index, source = indexed
            return transform.apply(read_source(source)[0], source_name(source, index))[0]

        workers = self.n_jobs or default_workers()
        for (index, source), image, error in map_ordered(load, enumerate(sources), workers=workers, max_ahead=4 * workers):
            if error is not None:
                raise error if isinstance(error, ImageError) else ImageError(source_name(source, index), str(error))
            out[index] = image
        return out

    def _head(self, x: Any, n_classes: int) -> Any:
        from keras import layers

        if self.head == "mlp":
            for i in (1, 2):
                x = layers.Dropout(self.dropout, seed=self.random_state + i, name=f"head_dropout{i}")(x)
                x = layers.Dense(self.hidden_units, activation="relu", name=f"head_fc{i}")(x)
        x = layers.Dropout(self.dropout, seed=self.random_state, name="head_dropout")(x)
        return layers.Dense(n_classes, activation="softmax", name="head_predictions")(x)

    def _build_image_model(self, n_classes: int) -> tuple[Any, Any]:
        """(the whole model on uint8-range RGB, its backbone part)."""
        import keras
        from keras import layers

        spec = get_backbone(self.backbone)
        keras.utils.set_random_seed(self.random_state)
        base, _ = make_base(spec, include_top=False, weights=self.weights, seed=self.random_state)
        if self.truncate_at is not None:
            names = [layer.name for layer in base.layers]
            if self.truncate_at not in names:
                from cnnfeat.exceptions import UnknownLayerError, did_you_mean

                raise UnknownLayerError(
                    f"backbone {spec.name} has no layer {self.truncate_at!r}{did_you_mean(self.truncate_at, names)}"
                )
            base = keras.Model(base.inputs, base.get_layer(self.truncate_at).output, name=f"{spec.name}_to_{self.truncate_at}")
        inputs = keras.Input(shape=(spec.input_size, spec.input_size, 3), name="rgb")
        x = base(preprocess(inputs, spec.preprocessing), training=False)
        if self.truncate_at is not None:
            for i in range(self.new_blocks):
                x = layers.Conv2D(64 * 2**i, 3, padding="same", activation="relu", name=f"new_block{i + 1}_conv")(x)
                x = layers.MaxPooling2D(2, padding="same", name=f"new_block{i + 1}_pool")(x)
        if len(x.shape) == 4:
            x = layers.GlobalAveragePooling2D(name="head_pool")(x)
        return keras.Model(inputs, self._head(x, n_classes), name=f"{spec.name}_finetuned"), base

    def _boundary(self, base: Any) -> str | None:
        """The layer after which ``trainable`` trains (``None``: from the start)."""
        kind, value = parse_trainable(self.trainable)
        names = [layer.name for layer in base.layers]
        if kind in ("all", "head"):
            return None
        if kind == "top":
            ends = block_ends(base, get_backbone(self.backbone))
            k = int(value)  # type: ignore[arg-type]
            return None if k >= len(ends) else ends[-k - 1]
        if value not in names:
            from cnnfeat.exceptions import UnknownLayerError, did_you_mean

            raise UnknownLayerError(f"backbone {self.backbone} has no layer {value!r}{did_you_mean(str(value), names)}")
        return str(value)

    def _rest_model(self, base: Any, boundary: str, n_classes: int) -> tuple[Any, Any]:
        """(the model to train on ``boundary``'s output maps, its backbone part: the layers after ``boundary``)."""
        import keras

        spec = get_backbone(self.backbone)
        cut = base.get_layer(boundary).output
        rest = keras.Model(cut, base.output, name=f"{spec.name}_after_{boundary}")
        maps = keras.Input(shape=tuple(cut.shape[1:]), name="maps")
        x = keras.layers.GlobalAveragePooling2D(name="head_pool")(rest(maps, training=False))
        return keras.Model(maps, self._head(x, n_classes), name=f"{spec.name}_finetuned"), rest

    def _unfreeze(self, base: Any, *, from_start: bool = False) -> None:
        """Make ``trainable``'s part of the backbone trainable (the rest stays frozen)."""
        import keras

        names = [layer.name for layer in base.layers]
        boundary = None if from_start else self._boundary(base)
        start = 0 if boundary is None else names.index(boundary) + 1
        base.trainable = True
        for i, layer in enumerate(base.layers):
            # a BatchNormalization layer runs in inference mode only while it is frozen: the outer
            # call's training=False does not reach it once it is trainable (Keras 3)
            layer.trainable = i >= start and not isinstance(layer, keras.layers.BatchNormalization)

    def _optimizer(self, learning_rate: float) -> Any:
        import keras

        if self.optimizer == "adam":
            return keras.optimizers.Adam(learning_rate)
        return keras.optimizers.SGD(learning_rate, momentum=0.9, nesterov=True)

    def _validation_split(self, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rows = np.arange(len(y))
        if self.validation_fraction == 0:
            return rows, rows[:0]
        from sklearn.model_selection import train_test_split

        n_val = max(1, round(self.validation_fraction * len(y)))
        if np.bincount(y).min() < 2 or n_val < len(np.unique(y)):
            # a few images per class: a validation split would take some classes' only examples away, so
            # every image trains and every epoch runs (no early stopping)
            return rows, rows[:0]
        train, val = train_test_split(rows, test_size=n_val, random_state=self.random_state, stratify=y)
        return np.sort(train), np.sort(val)

    # ------------------------------------------------------------------ fit

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: Any, y: Any) -> FineTunedCNN:
        """Train on images (paths or arrays) and their labels."""
        import keras

        parse_trainable(self.trainable)
        sources = as_sources(X)
        y = np.asarray(y)
        if len(y) != len(sources):
            raise ConfigError(f"X has {len(sources)} images but y has {len(y)} labels")
        classes, y_index = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ConfigError(f"fit needs at least 2 classes; got {len(classes)}")
        started = time.perf_counter()
        train, val = self._validation_split(y_index)
        checkpoints = _Checkpoints(self.checkpoint_dir, self._run_digest(sources, y) if self.checkpoint_dir else "")
        history: dict[str, dict[str, list[float]]] = {}
        epochs_run: dict[str, int] = {}
        rates: dict[str, float] = {}
        path, boundary = self._training_path(), None
        if path == "features":
            data = self._feature_extractor().transform(sources)
            keras.utils.set_random_seed(self.random_state)
            inputs = keras.Input(shape=(data.shape[1],), name="features")
            model = keras.Model(inputs, self._head(inputs, len(classes)), name="head")
        else:
            model, base = self._build_image_model(len(classes))
            boundary = self._boundary(base) if path == "maps" else None
            if boundary is None:  # augmentation, a truncated base, all of it, or top<k> past the first block
                path = "images"
                data = self._load_images(sources, training=True)
            else:  # the frozen front's maps, computed once (and cached); the epochs train the rest on them
                model, base = self._rest_model(base, boundary, len(classes))
                data = self._feature_extractor(boundary).transform(sources).reshape(-1, *model.input_shape[1:])
            base.trainable = False
        stages = [("head", self.epochs, float(self.learning_rate))]
        if self.trainable != "head" and self.fine_tune_epochs > 0:
            stages.append(("fine_tune", self.fine_tune_epochs, float(self.fine_tune_learning_rate or self.learning_rate / 10)))
        for stage, epochs, rate in stages:
            if stage == "fine_tune":
                self._unfreeze(base, from_start=path == "maps")  # the maps' model starts where training starts
            model.compile(self._optimizer(rate), "sparse_categorical_crossentropy", metrics=["accuracy"])
            crops = path == "images" and self.augment != "none"  # the data are the squares crops are drawn from
            model, history[stage], epochs_run[stage] = self._train(
                model, data, y_index, train, val, stage, epochs, checkpoints, crops
            )
            rates[stage] = rate
            base = _backbone_of(model) if path != "features" else None  # a resumed stage loads a new model
        self.training_path_ = path
        if path == "maps":
            self.front_tap_ = boundary
        else:
            self.__dict__.pop("front_tap_", None)  # from an earlier fit
        self.classes_ = classes
        self.n_classes_ = len(classes)
        self.model_ = model
        self.history_ = history
        self.epochs_run_ = epochs_run
        self.learning_rates_ = rates
        self.fit_seconds_ = time.perf_counter() - started
        return self

    def _run_digest(self, sources: Sequence[Any], y: np.ndarray) -> str:
        """What a checkpoint belongs to: these parameters, inputs and labels (a different run never resumes it)."""
        import hashlib

        params = {k: str(v) for k, v in self.get_params().items() if k not in ("verbose", "n_jobs", "checkpoint_dir")}
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
        for source, label in zip(sources, y):
            digest.update(read_source(source)[1].encode() + str(label).encode())
        return digest.hexdigest()

    def _train(
        self,
        model: Any,
        data: np.ndarray,
        y: np.ndarray,
        train: np.ndarray,
        val: np.ndarray,
        stage: str,
        epochs: int,
        checkpoints: _Checkpoints,
        crops: bool,
    ) -> tuple[Any, dict[str, list[float]], int]:
        """Epoch by epoch: a seeded shuffle (and augmentation), one pass, early stopping, a checkpoint."""

        state = {"epoch": 0, "history": {}, "best": np.inf, "wait": 0, "stopped": False}
        resumed = checkpoints.load(stage)
        if resumed is not None:
            model, state = resumed
            logger.info("resuming stage %s after epoch %d", stage, state["epoch"])
        best_weights = checkpoints.best_weights(stage, model)
        x_val = self._augmented(data[val], np.random.default_rng(0), training=False, crops=crops) if len(val) else None
        while state["epoch"] < epochs and not state["stopped"]:
            epoch = int(state["epoch"])
            rng = np.random.default_rng([self.random_state, len(stage), epoch])
            # at least min_steps_per_epoch updates: a few images per class would otherwise get a step or two
            repeats = max(1, math.ceil(self.min_steps_per_epoch * self.batch_size / len(train)))
            order = np.concatenate([train[rng.permutation(len(train))] for _ in range(repeats)])
            x_epoch = self._augmented(data[order], rng, training=True, crops=crops)
            _reseed(model, [self.random_state, len(stage), epoch])  # dropout masks: a function of the epoch, not of the past
            result = model.fit(
                x_epoch,
                y[order],
                batch_size=self.batch_size,
                epochs=1,
                shuffle=False,
                validation_data=(x_val, y[val]) if x_val is not None else None,
                verbose=self.verbose,
            )
            for name, values in result.history.items():
                state["history"].setdefault(name, []).append(float(values[-1]))
            state["epoch"] = epoch + 1
            if x_val is not None:
                loss = float(result.history["val_loss"][-1])
                if loss < state["best"] - 1e-7:
                    state["best"], state["wait"] = loss, 0
                    best_weights = [w.copy() for w in model.get_weights()]
                else:
                    state["wait"] += 1
                    state["stopped"] = state["wait"] >= self.patience
            checkpoints.save(stage, model, state, best_weights)
        if best_weights is not None:
            model.set_weights(best_weights)
        return model, state["history"], int(state["epoch"])

    def _augmented(self, images: np.ndarray, rng: np.random.Generator, *, training: bool, crops: bool) -> np.ndarray:
        """The network's inputs: random crops and flips of the stored squares, or their centre crops.

        Without ``crops`` the data are the inputs already (features, maps, or centre crops).
        """
        size = get_backbone(self.backbone).input_size
        if not crops:
            return images
        if not training:
            start = (images.shape[1] - size) // 2
            return images[:, start : start + size, start : start + size]
        return _augment_batch(images, size, self.augment, rng)

    # ------------------------------------------------------------------ predict

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        check_is_fitted(self, "classes_")
        sources = as_sources(X)
        model = self._keras_model()
        if self.training_path_ in ("features", "maps"):
            tap = self.front_tap_ if self.training_path_ == "maps" else "pool"
            inputs = self._feature_extractor(tap).transform(sources).reshape(-1, *model.input_shape[1:])
            return np.asarray(model.predict(inputs, batch_size=self.batch_size, verbose=0), dtype=np.float64)
        chunks = []
        for start in range(0, len(sources), _PREDICT_CHUNK):  # bounded memory, whatever the number of images
            images = self._load_images(sources[start : start + _PREDICT_CHUNK], training=False)
            chunks.append(np.asarray(model.predict(images, batch_size=self.batch_size, verbose=0), dtype=np.float64))
        return np.concatenate(chunks) if chunks else np.zeros((0, self.n_classes_))

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class of each image."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def _keras_model(self) -> Any:
        model = self.__dict__.get("model_")
        if model is None and "_model_bytes" in self.__dict__:
            model = self.__dict__["model_"] = _model_from_bytes(self.__dict__.pop("_model_bytes"))
        return model

    # ------------------------------------------------------------------ persistence

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        model = state.pop("model_", None)
        if model is not None:
            state["_model_bytes"] = _model_to_bytes(model)  # the Keras model in its own format, not pickled
        return state

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted classifier to one file: its Keras model (``.keras``) and its parameters and classes (JSON)."""
        check_is_fitted(self, "classes_")
        path = Path(path)
        meta = {
            "format": _FORMAT,
            "params": {k: (os.fspath(v) if isinstance(v, os.PathLike) else v) for k, v in self.get_params().items()},
            "classes": self.classes_.tolist(),
            "fitted": {k: getattr(self, k) for k in _FITTED_EXTRAS if hasattr(self, k)},
        }
        model_bytes = _model_to_bytes(self._keras_model())

        def write(tmp: Path) -> None:
            with zipfile.ZipFile(tmp, "w") as archive:
                archive.writestr("estimator.json", json.dumps(meta, indent=1))
                archive.writestr("model.keras", model_bytes)

        atomic_write(path, write)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, classes: Sequence[Any] | None = None) -> FineTunedCNN:
        """Read a classifier written by :meth:`save`; ``classes`` (optional) must be the ones it was fitted on."""
        path = Path(path)
        try:
            with zipfile.ZipFile(path) as archive:
                meta = json.loads(archive.read("estimator.json"))
                model_bytes = archive.read("model.keras")
        except (OSError, KeyError, zipfile.BadZipFile, json.JSONDecodeError) as exc:
            raise ConfigError(f"{path}: not a classifier saved by FineTunedCNN.save ({exc})") from None
        if meta.get("format") != _FORMAT:
            raise ConfigError(f"{path}: not a classifier saved by FineTunedCNN.save (format {meta.get('format')!r})")
        stored = np.asarray(meta["classes"])
        if classes is not None and [str(c) for c in classes] != [str(c) for c in stored]:
            raise ConfigError(
                f"{path}: the model was fitted on classes {stored.tolist()}, not the {len(classes)} given ({list(classes)[:10]})"
            )
        model = _model_from_bytes(model_bytes)
        if int(model.output_shape[-1]) != len(stored):
            raise ConfigError(f"{path}: the model has {model.output_shape[-1]} outputs for {len(stored)} classes")
        estimator = cls(**meta["params"])
        estimator.classes_, estimator.n_classes_, estimator.model_ = stored, len(stored), model
        for key, value in meta["fitted"].items():
            setattr(estimator, key, value)
        return estimator

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.non_deterministic = True  # threads in the training kernels may sum in another order
        return tags


def _reseed(model: Any, seed: Sequence[int]) -> None:
    """Set every random layer's generator state from ``seed``, so that a resumed epoch draws what it would have."""
    generators = [layer.seed_generator for layer in model._flatten_layers() if hasattr(layer, "seed_generator")]
    values = np.random.default_rng(list(seed)).integers(0, 2**31 - 1, (len(generators), 2))
    for generator, value in zip(generators, values):
        generator.state.assign(value.astype(generator.state.dtype)[: generator.state.shape[0]])


def _backbone_of(model: Any) -> Any:
    """The nested backbone model inside a fine-tuning model (the one layer that is itself a model)."""
    import keras

    return next(layer for layer in model.layers if isinstance(layer, keras.Model))


def _augment_batch(images: np.ndarray, size: int, augment: str, rng: np.random.Generator) -> np.ndarray:
    """Random crops (``flip+crop``: of the network's size; ``strong``: resized, 35-100 % of the area) and flips."""
    from cnnfeat.images import _cv2

    n, side = len(images), images.shape[1]
    out = np.empty((n, size, size, 3), np.uint8)
    flips = rng.random(n) < 0.5
    for i in range(n):
        if augment == "strong":
            area = rng.uniform(0.35, 1.0) * side * side
            aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            w = int(min(side, round(np.sqrt(area * aspect))))
            h = int(min(side, round(np.sqrt(area / aspect))))
            top, left = rng.integers(0, side - h + 1), rng.integers(0, side - w + 1)
            crop = _cv2().resize(images[i, top : top + h, left : left + w], (size, size), interpolation=_cv2().INTER_AREA)
        else:
            top, left = rng.integers(0, side - size + 1, 2)
            crop = images[i, top : top + size, left : left + size]
        out[i] = crop[:, ::-1] if flips[i] else crop
    return out


def _model_to_bytes(model: Any) -> bytes:
    with tempfile.TemporaryDirectory(prefix="cnnfeat-model-") as tmp:
        path = Path(tmp, "model.keras")
        model.save(path)
        return path.read_bytes()


def _model_from_bytes(data: bytes) -> Any:
    import keras

    with tempfile.TemporaryDirectory(prefix="cnnfeat-model-") as tmp:
        path = Path(tmp, "model.keras")
        path.write_bytes(data)
        return keras.models.load_model(path, compile=True, safe_mode=True)


class _Checkpoints:
    """Each finished epoch of a stage: ``<dir>/<run digest>/<stage>.keras`` (model and optimizer) and its state."""

    def __init__(self, folder: str | os.PathLike[str] | None, digest: str) -> None:
        self.folder = None if folder is None else Path(folder) / digest[:16]

    def save(self, stage: str, model: Any, state: dict[str, Any], best: list[np.ndarray] | None) -> None:
        if self.folder is None:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        if best is not None:
            atomic_write(self.folder / f"{stage}.best.npz", lambda tmp: np.savez(tmp, *best))
        atomic_write(self.folder / f"{stage}.keras", lambda tmp: model.save(str(tmp)))
        # last: the epoch counts only when its model is saved
        atomic_write(self.folder / f"{stage}.json", lambda tmp: tmp.write_text(json.dumps(state)))

    def load(self, stage: str) -> tuple[Any, dict[str, Any]] | None:
        if self.folder is None or not (self.folder / f"{stage}.json").exists():
            return None
        import keras

        state = json.loads((self.folder / f"{stage}.json").read_text())
        return keras.models.load_model(self.folder / f"{stage}.keras", compile=True, safe_mode=True), state

    def best_weights(self, stage: str, model: Any) -> list[np.ndarray] | None:
        if self.folder is None or not (self.folder / f"{stage}.best.npz").exists():
            return None
        with np.load(self.folder / f"{stage}.best.npz") as saved:
            return [saved[f"arr_{i}"] for i in range(len(saved.files))]
