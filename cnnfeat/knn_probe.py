"""Weighted k-nearest-neighbour evaluation of frozen features (DINOv2's k-NN probe)."""

from __future__ import annotations

from collections.abc import Sequence
from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.model_selection import train_test_split
from sklearn.utils._param_validation import Interval
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from cnnfeat.exceptions import ConfigError
from cnnfeat.hints import ArrayLike, checked_rows, checked_rows_and_labels
from cnnfeat.normalize import unit_rows

__all__ = ["KNNProbe"]


class KNNProbe(ClassifierMixin, BaseEstimator):
    """Weighted k-nearest-neighbour evaluation of frozen features, as DINOv2 reports next to its linear probe.

    Features are L2-normalised; a query's ``k`` nearest training rows by cosine similarity
    vote for their class with weight ``exp(similarity / temperature)``. ``k`` is chosen among
    ``ks`` on a stratified validation split of the training data (like the linear probes' C;
    ties go to the smaller ``k``), then the probe keeps every training row.

    Parameters
    ----------
    ks : sequence of int
        The values of ``k`` tried (DINOv2: 10, 20, 100, 200); those above the number of
        training rows are capped at it.
    temperature : float
        The vote weights' temperature (DINOv2: 0.07).
    val_size : float
        Fraction of the training rows held out to choose ``k``.
    random_state : int
        Seeds the validation split.

    Attributes
    ----------
    k_ : int
        The chosen ``k``.
    val_scores_ : dict of int to float
        Validation accuracy of each ``k`` tried.
    classes_ : ndarray
        The class labels.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = np.r_[rng.normal(0, 1, (20, 4)) + [5, 0, 0, 0], rng.normal(0, 1, (20, 4)) - [5, 0, 0, 0]]
    >>> y = np.r_[np.zeros(20), np.ones(20)]
    >>> KNNProbe(ks=(3, 5)).fit(X, y).score(X, y)
    1.0
    """

    _parameter_constraints: dict[str, list[object]] = {  # noqa: RUF012 (scikit-learn's own convention)
        "ks": ["array-like"],
        "temperature": [Interval(Real, 0, None, closed="neither")],
        "val_size": [Interval(Real, 0, 1, closed="neither")],
        "random_state": ["random_state"],
    }

    def __init__(
        self, *, ks: Sequence[int] = (10, 20, 100, 200), temperature: float = 0.07, val_size: float = 0.2, random_state: int = 0
    ) -> None:
        self.ks = ks
        self.temperature = temperature
        self.val_size = val_size
        self.random_state = random_state

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: ArrayLike, y: ArrayLike) -> KNNProbe:
        """Choose ``k`` on a validation split of ``(X, y)``, then keep every row."""
        X, y = checked_rows_and_labels(self, X, y, dtype=[np.float32, np.float64])
        check_classification_targets(y)
        ks = sorted({int(k) for k in self.ks})
        if not ks or ks[0] < 1:
            raise ConfigError(f"ks must be positive integers; got {self.ks!r}")
        self.classes_, codes = np.unique(y, return_inverse=True)
        counts = np.bincount(codes)
        stratify = codes if counts.min() >= 2 else None
        test_size: float | int = self.val_size
        if stratify is not None and np.ceil(self.val_size * len(codes)) < len(self.classes_):
            test_size = len(self.classes_)
        rows = np.arange(len(codes))
        fit_rows, val_rows = train_test_split(rows, test_size=test_size, random_state=self.random_state, stratify=stratify)
        train, val = unit_rows(X[fit_rows], np.float32), unit_rows(X[val_rows], np.float32)
        votes = _knn_votes(val, train, codes[fit_rows], len(self.classes_), ks, self.temperature)
        self.val_scores_ = {k: float((v.argmax(axis=1) == codes[val_rows]).mean()) for k, v in votes.items()}
        best = max(self.val_scores_.values())
        self.k_ = min(k for k, score in self.val_scores_.items() if score == best)
        self.train_ = unit_rows(X, np.float32)
        self.train_codes_ = codes
        return self

    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Each class's share of the weighted votes."""
        check_is_fitted(self)
        X = checked_rows(self, X, reset=False, dtype=[np.float32, np.float64])
        votes = _knn_votes(
            unit_rows(X, np.float32), self.train_, self.train_codes_, len(self.classes_), [self.k_], self.temperature
        )[self.k_]
        return votes / votes.sum(axis=1, keepdims=True)

    def predict(self, X: ArrayLike) -> np.ndarray:
        check_is_fitted(self)
        return self.classes_[self.predict_proba(X).argmax(axis=1)]


def _knn_votes(
    queries: np.ndarray,
    train: np.ndarray,
    codes: np.ndarray,
    n_classes: int,
    ks: list[int],
    temperature: float,
    block: int = 1024,
) -> dict[int, np.ndarray]:
    """``{k: (n_queries, n_classes) summed vote weights}`` of the ``k`` most similar training rows."""
    largest = min(max(ks), len(train))
    out = {k: np.zeros((len(queries), n_classes)) for k in ks}
    for start in range(0, len(queries), block):
        sims = queries[start : start + block] @ train.T
        top = np.argpartition(-sims, largest - 1, axis=1)[:, :largest]
        order = np.take_along_axis(sims, top, axis=1).argsort(axis=1)[:, ::-1]
        top = np.take_along_axis(top, order, axis=1)  # most similar first
        weights = np.exp(np.take_along_axis(sims, top, axis=1).astype(np.float64) / temperature)
        labels = codes[top]
        for k in ks:
            kk = min(k, largest)
            rows = np.repeat(np.arange(len(top)), kk)
            np.add.at(out[k][start : start + block], (rows, labels[:, :kk].ravel()), weights[:, :kk].ravel())
    return out
