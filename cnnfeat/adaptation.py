"""Feature-level domain adaptation on frozen features: no network is trained.

Each method wraps a scikit-learn classifier. ``fit(X, y, domain=...)`` takes the
source rows and the target rows together, marked by ``domain`` (``"source"`` /
``"target"``, or 0 / 1); target rows whose label is ``-1`` are unlabelled
(scikit-learn's semi-supervised convention). ``predict(X)`` takes target-domain
features. Without ``domain`` every method is its plain classifier.

- :class:`CORAL` (Sun, Feng & Saenko 2016): whiten the source features with their
  covariance, re-colour them with the target's; the target stays as it is.
- :class:`SubspaceAlignment` (Fernando et al. 2013): align the source PCA basis
  to the target's with ``M = Ps^T Pt``; train on ``Xs Ps M``, predict on ``Xt Pt``.
- :class:`FeatureAugmentation` (Daumé III 2007, "frustratingly easy"): source rows
  become ``[x, x, 0]`` and target rows ``[x, 0, x]``; for a few labelled target images.

Examples
--------
>>> import numpy as np
>>> from cnnfeat.adaptation import CORAL
>>> X = np.r_[Xs, Xt]; y = np.r_[ys, -np.ones(len(Xt), int)]          # doctest: +SKIP
>>> domain = ["source"] * len(Xs) + ["target"] * len(Xt)                 # doctest: +SKIP
>>> CORAL().fit(X, y, domain=domain).score(Xt, yt)                       # doctest: +SKIP
"""

from __future__ import annotations

from numbers import Integral, Real
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, _fit_context, clone
from sklearn.linear_model import LogisticRegression
from sklearn.utils._param_validation import HasMethods, Interval
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted, validate_data

from cnnfeat.exceptions import ConfigError

__all__ = ["CORAL", "FeatureAugmentation", "SubspaceAlignment", "split_domains"]


def split_domains(y: np.ndarray, domain: Any, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean masks: labelled source rows, labelled target rows, all target rows."""
    if domain is None:
        return np.ones(n, bool), np.zeros(n, bool), np.zeros(n, bool)
    d = np.asarray(domain)
    if d.shape != (n,):
        raise ConfigError(f"domain must have one entry per row ({n}); got shape {d.shape}")
    if d.dtype.kind in "US" or d.dtype == object:
        values = set(d.tolist())
        if not values <= {"source", "target"}:
            raise ConfigError(
                f"domain entries must be 'source' or 'target'; got {sorted(map(str, values - {'source', 'target'}))}"
            )
        target = d == "target"
    else:
        if not set(np.unique(d).tolist()) <= {0, 1}:
            raise ConfigError("a numeric domain must hold 0 (source) and 1 (target)")
        target = d.astype(bool)
    labels = np.asarray(y, dtype=object)
    labelled = ~((labels == -1) | (labels == "-1"))
    source = ~target
    if not (source & labelled).any():
        raise ConfigError("there are no labelled source rows")
    return source & labelled, target & labelled, target


def _sqrtm(c: np.ndarray, inverse: bool = False) -> np.ndarray:
    values, vectors = np.linalg.eigh(c)
    values = np.clip(values, 1e-12, None)
    return (vectors * (values ** (-0.5 if inverse else 0.5))) @ vectors.T


class _Adapted(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Shared parts: the wrapped classifier, input checking, prediction through ``_target_view``."""

    def _classifier(self) -> Any:
        return clone(self.estimator) if self.estimator is not None else LogisticRegression(max_iter=2000)

    def _target_view(self, X: np.ndarray) -> np.ndarray:
        return X

    def _finish(self, Z: np.ndarray, y: np.ndarray) -> _Adapted:
        self.estimator_ = self._classifier().fit(Z, y)
        self.classes_ = self.estimator_.classes_
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predict target-domain rows."""
        check_is_fitted(self)
        return self.estimator_.predict(self._target_view(validate_data(self, X, reset=False)))

    @available_if(lambda self: hasattr(self.estimator_ if hasattr(self, "estimator_") else self._classifier(), "predict_proba"))
    def predict_proba(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return self.estimator_.predict_proba(self._target_view(validate_data(self, X, reset=False)))

    @available_if(
        lambda self: hasattr(self.estimator_ if hasattr(self, "estimator_") else self._classifier(), "decision_function")
    )
    def decision_function(self, X: Any) -> np.ndarray:
        check_is_fitted(self)
        return self.estimator_.decision_function(self._target_view(validate_data(self, X, reset=False)))


class CORAL(_Adapted):
    """CORrelation ALignment: re-colour source features with the target covariance.

    Parameters
    ----------
    estimator : classifier, optional
        Trained on the aligned source rows (and any labelled target rows). Default:
        ``LogisticRegression(max_iter=2000)``.
    regularization : float
        Added to both covariance diagonals (the paper's ``+ I``, i.e. 1).

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
