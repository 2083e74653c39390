"""Adaptations whose map comes from skada (scikit-adaptation): subspace alignment, TCA, the linear OT mapping.

skada fits the map between the domains; the wrapper here adds what a benchmark run needs around
it, as for every adaptation: the domain marks, labelled target rows (the sampled "ST" protocol)
and the wrapped probe, trained on the mapped source rows (and the labelled target rows).
"""

from __future__ import annotations

from numbers import Integral, Real
from types import ModuleType

import numpy as np
from sklearn.base import BaseEstimator, _fit_context
from sklearn.utils._param_validation import HasMethods, Interval

from cnnfeat.adaptation._base import _Adapted, register_adaptation, split_domains
from cnnfeat.hints import ArrayLike, Classifier, checked_rows_and_labels

__all__ = ["LinearOTMapping", "SubspaceAlignment", "TransferComponentAnalysis", "skada"]

#: skada's marks: a positive domain is a source, a negative one a target
_SOURCE, _TARGET = 1, -2


#: POT, skada's optimal-transport library, imports every array library it finds (TensorFlow included) unless told not to
_POT_BACKENDS = (
    "POT_BACKEND_DISABLE_TENSORFLOW",
    "POT_BACKEND_DISABLE_PYTORCH",
    "POT_BACKEND_DISABLE_JAX",
    "POT_BACKEND_DISABLE_CUPY",
)


def skada() -> ModuleType:
    """The ``skada`` module, imported without its side effects.

    ``import skada`` switches on scikit-learn's metadata routing for the whole process, and its POT
    imports TensorFlow, PyTorch and JAX where installed (seconds, and gigabytes of address space);
    here the caller's scikit-learn settings are restored and POT keeps to NumPy (the wrappers call
    skada's adapters directly on arrays and route nothing).
    """
    import os

    import sklearn

    previous = {key: os.environ.get(key) for key in _POT_BACKENDS}
    os.environ.update(dict.fromkeys(_POT_BACKENDS, "1"))
    try:
        with sklearn.config_context():
            import skada as module
    finally:
        for key, value in previous.items():
            if value is None:
                del os.environ[key]
            else:
                os.environ[key] = value
    return module


class _Mapped(_Adapted):
    """An adaptation whose map is a fitted skada adapter (``_adapter()`` builds it)."""

    def _adapter(self, n_source: int, n_target: int, n_features: int) -> BaseEstimator:
        raise NotImplementedError

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: ArrayLike, y: ArrayLike, domain: ArrayLike | None = None) -> _Mapped:
        """Fit skada's map on both domains' rows, then the probe on the mapped source (and labelled target) rows."""
        X, y = checked_rows_and_labels(self, X, y)
        source, target_labelled, target = split_domains(y, domain, len(X))
        if not target.any():  # nothing to map to: the plain classifier
            self.adapter_ = None
            return self._finish(X[source], y[source])
        marks = np.where(target, _TARGET, _SOURCE)
        self.adapter_ = self._adapter(int((~target).sum()), int(target.sum()), X.shape[1])
        self.adapter_.fit(X, sample_domain=marks)
        Z = self._source_view(X[source])
        if target_labelled.any():
            Z = np.r_[Z, self._target_view(X[target_labelled])]
        return self._finish(Z, np.r_[y[source], y[target_labelled]])

    def _view(self, X: np.ndarray, mark: int) -> np.ndarray:
        if self.adapter_ is None:
            return X
        marks = np.full(len(X), mark)
        return np.asarray(self.adapter_.transform(X, sample_domain=marks, allow_source=mark == _SOURCE))

    def _target_view(self, X: np.ndarray) -> np.ndarray:
        return self._view(X, _TARGET)

    def _source_view(self, X: np.ndarray) -> np.ndarray:
        return self._view(X, _SOURCE)


@register_adaptation("sa", help="subspace alignment, 100 components (skada)", n_components=100)
class SubspaceAlignment(_Mapped):
    """Subspace alignment of PCA bases (Fernando et al. 2013): skada's ``SubspaceAlignmentAdapter``.

    The source rows are projected on their PCA basis ``Ps`` and aligned by ``M = Ps^T Pt``; the
    target rows on theirs.

    Parameters
    ----------
    estimator : classifier, optional
        Default: ``LogisticRegression(max_iter=2000)``.
    n_components : int
        Subspace dimension (Fernando et al. choose it by a stability bound; 100 is common on deep
        features), capped at the feature width and at each domain's number of rows.
    """

    _parameter_constraints: dict[str, list[object]] = {  # noqa: RUF012 (scikit-learn's own convention)
        "estimator": [HasMethods(["fit", "predict"]), None],
        "n_components": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(self, estimator: Classifier | None = None, *, n_components: int = 100) -> None:
        self.estimator = estimator
        self.n_components = n_components

    def _adapter(self, n_source: int, n_target: int, n_features: int) -> BaseEstimator:
        k = min(int(self.n_components), n_features, n_source, n_target)
        return skada().SubspaceAlignmentAdapter(n_components=k, random_state=0)


@register_adaptation("tca", help="transfer component analysis, linear kernel, 100 components (skada)")
class TransferComponentAnalysis(_Mapped):
    """Transfer component analysis (Pan et al. 2011): skada's ``TransferComponentAnalysisAdapter``.

    A kernel embedding of both domains' rows that shrinks their maximum mean discrepancy while
    keeping their variance. It solves an eigenproblem over all ``n_source + n_target`` rows.

    Parameters
    ----------
    estimator : classifier, optional
        Default: ``LogisticRegression(max_iter=2000)``.
    n_components : int
        Dimension of the embedding (capped at the number of rows).
    kernel : str
        A kernel of :func:`sklearn.metrics.pairwise.pairwise_kernels`; ``"linear"`` by default (an RBF
        kernel's default width, one over the feature count, is meaningless on unnormalised CNN features).
    mu : float
        Trade-off of the discrepancy against the embedding's size (the paper's mu).
    """

    _parameter_constraints: dict[str, list[object]] = {  # noqa: RUF012 (scikit-learn's own convention)
        "estimator": [HasMethods(["fit", "predict"]), None],
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "kernel": [str],
        "mu": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(
        self, estimator: Classifier | None = None, *, n_components: int = 100, kernel: str = "linear", mu: float = 0.1
    ) -> None:
        self.estimator = estimator
        self.n_components = n_components
        self.kernel = kernel
        self.mu = mu

    def _adapter(self, n_source: int, n_target: int, n_features: int) -> BaseEstimator:
        k = min(int(self.n_components), n_source + n_target)
        return skada().TransferComponentAnalysisAdapter(kernel=self.kernel, n_components=k, mu=self.mu)


@register_adaptation("ot", help="linear optimal-transport (Gaussian Monge) mapping of the source onto the target (skada)")
class LinearOTMapping(_Mapped):
    """The optimal-transport map between the two domains' Gaussian fits (Flamary et al. 2019): skada's ``LinearOTMappingAdapter``.

    Source rows move by ``x -> A x + b``, the Monge map that sends a Gaussian with the source's
    mean and covariance onto one with the target's (first and second moments matched, unlike
    CORAL, which matches the covariance only); target rows stay as they are.

    Parameters
    ----------
    estimator : classifier, optional
        Default: ``LogisticRegression(max_iter=2000)``.
    regularization : float
        Added to both covariance diagonals, as CORAL's ``+ I``: CNN features of a few hundred
        images have rank-deficient covariances, whose map is otherwise undefined.
    """

    _parameter_constraints: dict[str, list[object]] = {  # noqa: RUF012 (scikit-learn's own convention)
        "estimator": [HasMethods(["fit", "predict"]), None],
        "regularization": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, estimator: Classifier | None = None, *, regularization: float = 1.0) -> None:
        self.estimator = estimator
        self.regularization = regularization

    def _adapter(self, n_source: int, n_target: int, n_features: int) -> BaseEstimator:
        return skada().LinearOTMappingAdapter(reg=self.regularization, bias=True)
