"""Feature normalisation for linear probes, built from scikit-learn's own transformers.

Steps, composed with ``+`` in :func:`make_normalizer`:

========  ==========================================================================
``l2``    unit L2 norm per row (``sklearn.preprocessing.Normalizer``) — Razavian et al.
``power`` signed power ``sign(x)|x|^alpha`` (:class:`SignedPower`) — Razavian's "aug"
``standard`` zero mean, unit variance per column (``StandardScaler``)
``pca``   PCA to ``n_components`` (``sklearn.decomposition.PCA``)
``whiten`` PCA-whitening (``PCA(whiten=True)``)
``chi2``  additive chi-squared kernel map (``AdditiveChi2Sampler``): a linear model on it
          approximates the chi-squared kernel SVM that histogram features need
========  ==========================================================================

Examples
--------
>>> from cnnfeat.normalize import make_normalizer
>>> make_normalizer("power+l2")
Pipeline(steps=[('power', SignedPower()), ('l2', Normalizer())])
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from numbers import Real

import numpy as np
from numpy.typing import DTypeLike
from sklearn.base import BaseEstimator, OneToOneFeatureMixin, TransformerMixin, _fit_context
from sklearn.pipeline import Pipeline
from sklearn.utils import Tags
from sklearn.utils._param_validation import Interval
from sklearn.utils.validation import check_is_fitted, validate_data

from cnnfeat.exceptions import ConfigError
from cnnfeat.hints import ArrayLike, checked_rows
from cnnfeat.registry import Registry

__all__ = ["NORMALIZER_STEPS", "SignedPower", "make_normalizer", "unit_rows"]


def unit_rows(X: ArrayLike, dtype: DTypeLike | None = None) -> np.ndarray:
    """Each row divided by its L2 norm (a zero row stays zero), in ``dtype`` when given, else in X's own."""
    X = np.asarray(X, dtype=dtype)
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


class SignedPower(OneToOneFeatureMixin, TransformerMixin, BaseEstimator):
    """``sign(x) * |x| ** alpha`` per element (Perronnin 2010; Razavian et al. 2014).

    Parameters
    ----------
    alpha : float
        Exponent in (0, 1]; 0.5 is the usual signed square root.
    """

    _parameter_constraints: dict[str, list[object]] = {"alpha": [Interval(Real, 0, 1, closed="right")]}  # noqa: RUF012

    def __init__(self, alpha: float = 0.5) -> None:
        self.alpha = alpha

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: ArrayLike, y: ArrayLike | None = None) -> SignedPower:
        validate_data(self, X, accept_sparse=False, dtype=[np.float64, np.float32])
        return self

    def transform(self, X: ArrayLike) -> np.ndarray:
        check_is_fitted(self)
        X = checked_rows(self, X, reset=False, dtype=[np.float64, np.float32], copy=True)
        return np.sign(X) * np.abs(X) ** self.alpha

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.transformer_tags.preserves_dtype = ["float64", "float32"]
        return tags


def _pca(n_components: int | float | None, whiten: bool = False) -> TransformerMixin:
    from sklearn.decomposition import PCA

    return PCA(n_components=n_components, whiten=whiten, random_state=0)


def _sklearn(module: str, name: str, **params: object) -> Callable[[int | float | None], TransformerMixin]:
    """A step made by a scikit-learn class, imported when the step is made."""

    def make(n_components: int | float | None) -> TransformerMixin:
        return getattr(importlib.import_module(module), name)(**params)

    return make


#: normalisation step name -> the step, given ``n_components`` (``pca`` and ``whiten`` use it)
NORMALIZER_STEPS = Registry[Callable[[int | float | None], TransformerMixin]]("normalisation step")
NORMALIZER_STEPS.add("l2", _sklearn("sklearn.preprocessing", "Normalizer"), help="unit L2 norm per row")
NORMALIZER_STEPS.add("power", lambda n: SignedPower(), help="signed square root")
NORMALIZER_STEPS.add("standard", _sklearn("sklearn.preprocessing", "StandardScaler"), help="zero mean, unit variance")
NORMALIZER_STEPS.add("pca", _pca, help="PCA")
NORMALIZER_STEPS.add("whiten", lambda n: _pca(n, whiten=True), help="PCA-whitening")
NORMALIZER_STEPS.add(
    "chi2", _sklearn("sklearn.kernel_approximation", "AdditiveChi2Sampler", sample_steps=2), help="chi-squared map"
)


def make_normalizer(spec: str | None, *, n_components: int | float | None = None) -> Pipeline | str:
    """A Pipeline of the ``+``-separated steps in ``spec`` (``"passthrough"`` for ``None``/``"none"``).

    Parameters
    ----------
    spec : str or None
        E.g. ``"l2"``, ``"power+l2"``, ``"standard+pca"``, ``"chi2"``.
    n_components : int or float, optional
        For ``pca`` and ``whiten``.
    """
    if spec is None or spec.strip().lower() in ("", "none"):
        return "passthrough"
    names = [part.strip().lower() for part in spec.split("+") if part.strip()]
    if len(set(names)) != len(names):
        raise ConfigError(f"a normalisation step appears twice in {spec!r}")
    return Pipeline([(name, NORMALIZER_STEPS.get(name)(n_components)) for name in names])
