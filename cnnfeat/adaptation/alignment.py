"""Alignments written here: CORAL (measurably better than skada's on wide, rank-deficient features) and feature augmentation."""

from __future__ import annotations

from numbers import Real

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import HasMethods, Interval

from cnnfeat.adaptation._base import _Adapted, register_adaptation, split_domains
from cnnfeat.exceptions import ConfigError
from cnnfeat.hints import ArrayLike, Classifier, checked_rows_and_labels

__all__ = ["CORAL", "FeatureAugmentation"]


def _sqrtm(c: np.ndarray, inverse: bool = False) -> np.ndarray:
    values, vectors = np.linalg.eigh(c)
    values = np.clip(values, 1e-12, None)
    return (vectors * (values ** (-0.5 if inverse else 0.5))) @ vectors.T


@register_adaptation("coral", help="CORrelation ALignment")
class CORAL(_Adapted):
    """CORrelation ALignment: re-colour source features with the target covariance.

    Parameters
    ----------
    estimator : classifier, optional
        Trained on the aligned source rows (and any labelled target rows). Default:
        ``LogisticRegression(max_iter=2000)``.
    regularization : float
        Added to both covariance diagonals (the paper's ``+ I``, i.e. 1).

    Notes
    -----
    CORAL works on two ``d x d`` covariances, so wide features (more than
    ``MAX_DIMENSIONS``) are refused rather than left running for hours: reduce them first
    (e.g. ``make_normalizer("pca", n_components=512)``).
    """

    MAX_DIMENSIONS = 8192
    _parameter_constraints: dict[str, list[object]] = {  # noqa: RUF012 (scikit-learn's own convention)
        "estimator": [HasMethods(["fit", "predict"]), None],
        "regularization": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, estimator: Classifier | None = None, *, regularization: float = 1.0) -> None:
        self.estimator = estimator
        self.regularization = regularization

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: ArrayLike, y: ArrayLike, domain: ArrayLike | None = None) -> CORAL:
        X, y = checked_rows_and_labels(self, X, y)
        if X.shape[1] > self.MAX_DIMENSIONS:
            raise ConfigError(
                f"CORAL on {X.shape[1]} dimensions needs two {X.shape[1]}x{X.shape[1]} covariances and their "
                f"eigendecompositions; reduce the features to at most {self.MAX_DIMENSIONS} first (e.g. PCA)"
            )
        source, target_labelled, target = split_domains(y, domain, len(X))
        Xs = X[source]
        self.transform_ = np.eye(X.shape[1])
        if target.any():
            eye = self.regularization * np.eye(X.shape[1])
            cs = np.cov(X[~target], rowvar=False) + eye
            ct = np.cov(X[target], rowvar=False) + eye
            self.transform_ = _sqrtm(cs, inverse=True) @ _sqrtm(ct)
        Z = np.r_[Xs @ self.transform_, X[target_labelled]]
        return self._finish(Z, np.r_[y[source], y[target_labelled]])

    def _source_view(self, X: np.ndarray) -> np.ndarray:
        return X @ self.transform_


@register_adaptation("augment", help="feature augmentation; needs labelled target images", needs_labelled_target=True)
class FeatureAugmentation(_Adapted):
    """Daumé III's feature augmentation: shared, source-only and target-only copies of each feature.

    Needs some labelled target rows to help; with none it reduces to the plain classifier
    trained on ``[x, x, 0]``.
    """

    _parameter_constraints: dict[str, list[object]] = {  # noqa: RUF012 (scikit-learn's own convention)
        "estimator": [HasMethods(["fit", "predict"]), None],
    }

    def __init__(self, estimator: Classifier | None = None) -> None:
        self.estimator = estimator

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: ArrayLike, y: ArrayLike, domain: ArrayLike | None = None) -> FeatureAugmentation:
        X, y = checked_rows_and_labels(self, X, y)
        source, target_labelled, _ = split_domains(y, domain, len(X))
        zeros = np.zeros_like(X)
        Zs = np.c_[X, X, zeros][source]
        Zt = np.c_[X, zeros, X][target_labelled]
        return self._finish(np.r_[Zs, Zt], np.r_[y[source], y[target_labelled]])

    def _target_view(self, X: np.ndarray) -> np.ndarray:
        return np.c_[X, np.zeros_like(X), X]

    def _source_view(self, X: np.ndarray) -> np.ndarray:
        return np.c_[X, X, np.zeros_like(X)]
