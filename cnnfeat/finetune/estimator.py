"""The :class:`FineTunedCNN` estimator: scikit-learn's contract in front of surgery, training and persistence."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Sequence
from numbers import Integral, Real
from pathlib import Path

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.utils import Tags
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from cnnfeat.exceptions import ConfigError
from cnnfeat.extractors.sources import as_sources, read_source
from cnnfeat.finetune import persistence
from cnnfeat.finetune.augmentation import AUGMENTATIONS, load_images
from cnnfeat.finetune.persistence import model_from_bytes, model_to_bytes
from cnnfeat.finetune.surgery import (
    HEADS,
    backbone_of,
    build_image_model,
    head_layers,
    make_optimizer,
    parse_trainable,
    rest_model,
    trainable_from,
    unfreeze,
)
from cnnfeat.finetune.training import Checkpoints, train_stage, training_path, validation_split
from cnnfeat.hints import ArrayLike, ImageInput, ImageSource, KerasModel

__all__ = ["FineTunedCNN"]

#: images per prediction batch of the images path: bounded memory, whatever the number of images
_PREDICT_CHUNK = 512


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

    _parameter_constraints: dict[str, list[object]] = {  # noqa: RUF012 (scikit-learn's own convention)
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

    def _feature_extractor(self, tap: str = "pool") -> KerasModel:
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

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: ImageInput, y: ArrayLike) -> FineTunedCNN:
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
        train, val = validation_split(self, y_index)
        checkpoints = Checkpoints(self.checkpoint_dir, self._run_digest(sources, y) if self.checkpoint_dir else "")
        history: dict[str, dict[str, list[float]]] = {}
        epochs_run: dict[str, int] = {}
        rates: dict[str, float] = {}
        path, boundary = training_path(self), None
        if path == "features":
            data = self._feature_extractor().transform(sources)
            keras.utils.set_random_seed(self.random_state)
            inputs = keras.Input(shape=(data.shape[1],), name="features")
            model = keras.Model(inputs, head_layers(self, inputs, len(classes)), name="head")
        else:
            model, base = build_image_model(self, len(classes))
            boundary = trainable_from(self, base) if path == "maps" else None
            if boundary is None:  # augmentation, a truncated base, all of it, or top<k> past the first block
                path = "images"
                data = load_images(self, sources, training=True)
            else:  # the frozen front's maps, computed once (and cached); the epochs train the rest on them
                model, base = rest_model(self, base, boundary, len(classes))
                data = self._feature_extractor(boundary).transform(sources).reshape(-1, *model.input_shape[1:])
            base.trainable = False
        stages = [("head", self.epochs, float(self.learning_rate))]
        if self.trainable != "head" and self.fine_tune_epochs > 0:
            stages.append(("fine_tune", self.fine_tune_epochs, float(self.fine_tune_learning_rate or self.learning_rate / 10)))
        for stage, epochs, rate in stages:
            if stage == "fine_tune":
                unfreeze(self, base, from_start=path == "maps")  # the maps' model starts where training starts
            model.compile(make_optimizer(self, rate), "sparse_categorical_crossentropy", metrics=["accuracy"])
            crops = path == "images" and self.augment != "none"  # the data are the squares crops are drawn from
            model, history[stage], epochs_run[stage] = train_stage(
                self, model, data, y_index, train, val, stage, epochs, checkpoints, crops
            )
            rates[stage] = rate
            base = backbone_of(model) if path != "features" else None  # a resumed stage loads a new model
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

    def _run_digest(self, sources: Sequence[ImageSource], y: np.ndarray) -> str:
        """What a checkpoint belongs to: these parameters, inputs and labels (a different run never resumes it)."""
        import hashlib

        params = {k: str(v) for k, v in self.get_params().items() if k not in ("verbose", "n_jobs", "checkpoint_dir")}
        digest = hashlib.sha256(json.dumps(params, sort_keys=True).encode())
        for source, label in zip(sources, y):
            digest.update(read_source(source)[1].encode() + str(label).encode())
        return digest.hexdigest()

    def predict_proba(self, X: ImageInput) -> np.ndarray:
        """Class probabilities, columns in the order of ``classes_``."""
        check_is_fitted(self, "classes_")
        sources = as_sources(X)
        model = self._keras_model()
        if self.training_path_ in ("features", "maps"):
            tap = str(self.front_tap_) if self.training_path_ == "maps" else "pool"
            inputs = self._feature_extractor(tap).transform(sources).reshape(-1, *model.input_shape[1:])
            return np.asarray(model.predict(inputs, batch_size=self.batch_size, verbose=0), dtype=np.float64)
        chunks = []
        for start in range(0, len(sources), _PREDICT_CHUNK):  # bounded memory, whatever the number of images
            images = load_images(self, sources[start : start + _PREDICT_CHUNK], training=False)
            chunks.append(np.asarray(model.predict(images, batch_size=self.batch_size, verbose=0), dtype=np.float64))
        return np.concatenate(chunks) if chunks else np.zeros((0, self.n_classes_))

    def predict(self, X: ImageInput) -> np.ndarray:
        """The most probable class of each image."""
        proba = self.predict_proba(X)
        return self.classes_[np.argmax(proba, axis=1)]

    def _keras_model(self) -> KerasModel:
        model = self.__dict__.get("model_")
        if model is None and "_model_bytes" in self.__dict__:
            model = self.__dict__["model_"] = model_from_bytes(self.__dict__.pop("_model_bytes"))
        return model

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        model = state.pop("model_", None)
        if model is not None:
            state["_model_bytes"] = model_to_bytes(model)  # the Keras model in its own format, not pickled
        return state

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the fitted classifier to one file: its Keras model (``.keras``) and its parameters and classes (JSON)."""
        return persistence.save(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, classes: Sequence[object] | None = None) -> FineTunedCNN:
        """Read a classifier written by :meth:`save`; ``classes`` (optional) must be the ones it was fitted on."""
        return persistence.load(cls, path, classes=classes)

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.non_deterministic = True  # threads in the training kernels may sum in another order
        return tags
