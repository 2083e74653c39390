"""Alignments of the source features to the target's: CORAL, subspace alignment, feature augmentation."""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.validation import validate_data

from cnnfeat.adaptation._base import _Adapted, register_adaptation, split_domains
from cnnfeat.exceptions import ConfigError

__all__ = ["CORAL", "FeatureAugmentation", "SubspaceAlignment"]


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
    _parameter_constraints: dict[str, list[Any]] = {  # noqa: RUF012 (scikit-learn's own convention)
        "estimator": [HasMethods(["fit", "predict"]), None],
        "regularization": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, estimator: Any = None, *, regularization: float = 1.0) -> None:
        self.estimator = estimator
        self.regularization = regularization

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: Any, y: Any, domain: Any = None) -> CORAL:
        X, y = validate_data(self, X, y)
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


@register_adaptation("sa", help="subspace alignment, 100 components", n_components=100)
class SubspaceAlignment(_Adapted):
    """Subspace alignment of PCA bases (source basis mapped onto the target's).

    Parameters
    ----------
    estimator : classifier, optional
        Default: ``LogisticRegression(max_iter=2000)``.
    n_components : int
        Subspace dimension (Fernando et al. choose it by a stability bound; 100 is common
        on deep features).
    """

    _parameter_constraints: dict[str, list[Any]] = {  # noqa: RUF012 (scikit-learn's own convention)
        "estimator": [HasMethods(["fit", "predict"]), None],
        "n_components": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, estimator: Any = None, *, n_components: int = 100) -> None:
        self.estimator = estimator
        self.n_components = n_components

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: Any, y: Any, domain: Any = None) -> SubspaceAlignment:
        from sklearn.decomposition import PCA

        X, y = validate_data(self, X, y)
        source, target_labelled, target = split_domains(y, domain, len(X))
        k = min(int(self.n_components), X.shape[1], int((~target).sum()), int(target.sum()) if target.any() else X.shape[0])
        self.source_pca_ = PCA(n_components=k, random_state=0).fit(X[~target])
        self.target_pca_ = PCA(n_components=k, random_state=0).fit(X[target]) if target.any() else self.source_pca_
        ps, pt = self.source_pca_.components_.T, self.target_pca_.components_.T
        self.alignment_ = ps.T @ pt  # M
        Z = self.source_pca_.transform(X[source]) @ self.alignment_
        if target_labelled.any():
            Z = np.r_[Z, self._target_view(X[target_labelled])]
        return self._finish(Z, np.r_[y[source], y[target_labelled]])

    def _target_view(self, X: np.ndarray) -> np.ndarray:
        return self.target_pca_.transform(X)


@register_adaptation("augment", help="feature augmentation; needs labelled target images", needs_labelled_target=True)
class FeatureAugmentation(_Adapted):
    """Daumé III's feature augmentation: shared, source-only and target-only copies of each feature.

    Needs some labelled target rows to help; with none it reduces to the plain classifier
    trained on ``[x, x, 0]``.
    """

    _parameter_constraints: dict[str, list[Any]] = {  # noqa: RUF012 (scikit-learn's own convention)
        "estimator": [HasMethods(["fit", "predict"]), None],
    }

    def __init__(self, estimator: Any = None) -> None:
        self.estimator = estimator

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: Any, y: Any, domain: Any = None) -> FeatureAugmentation:
        X, y = validate_data(self, X, y)
        source, target_labelled, _ = split_domains(y, domain, len(X))
        zeros = np.zeros_like(X)
        Zs = np.c_[X, X, zeros][source]
        Zt = np.c_[X, zeros, X][target_labelled]
        return self._finish(np.r_[Zs, Zt], np.r_[y[source], y[target_labelled]])

    def _target_view(self, X: np.ndarray) -> np.ndarray:
        return np.c_[X, np.zeros_like(X), X]
