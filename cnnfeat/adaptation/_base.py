"""What every adaptation shares: the domain marks, the wrapped classifier, and the registry of names."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, MetaEstimatorMixin, clone
from sklearn.linear_model import LogisticRegression
from sklearn.utils.metaestimators import available_if
from sklearn.utils.validation import check_is_fitted

from cnnfeat.exceptions import ConfigError
from cnnfeat.hints import ArrayLike, Classifier, checked_rows
from cnnfeat.registry import Registry, parse_query

__all__ = ["ADAPTATIONS", "AdaptationKind", "adaptation_kind", "make_adaptation", "register_adaptation", "split_domains"]


@dataclass(frozen=True)
class AdaptationKind:
    """How a benchmark run builds an adaptation around its probe, and what its split must offer."""

    #: ``make(probe, **params)``: the probe wrapped, with the parameters a ``name?<param>=<value>`` text sets
    make: Callable[..., Classifier]
    #: labelled target images among the training rows (feature augmentation has nothing to do without them)
    needs_labelled_target: bool = False


def _no_adaptation(probe: Classifier, **params: object) -> Classifier:
    if params:
        raise ConfigError(f"adaptation 'none' takes no parameters; got {', '.join(params)}")
    return probe


#: adaptation name -> how to wrap a probe in it (``--adapt`` accepts these names, and ``name?<param>=<value>&...``)
ADAPTATIONS = Registry[AdaptationKind]("adaptation")
ADAPTATIONS.add("none", AdaptationKind(_no_adaptation), help="the probe alone")


def register_adaptation(name: str, *, help: str, needs_labelled_target: bool = False, **params: Any) -> Callable[[type], type]:
    """A class decorator: ``--adapt name`` wraps a run's probe as ``cls(probe, **params)``.

    ``--adapt name?<param>=<value>&...`` sets the class's other parameters too (a hyper-parameter of the
    adaptation, as a candidate of its own for a selector to choose among).
    """

    def add(cls: type) -> type:
        def make(probe: Classifier, **overrides: Any) -> Classifier:
            return cls(probe, **(params | overrides))

        ADAPTATIONS.add(name, AdaptationKind(make, needs_labelled_target), help=help)
        return cls

    return add


def adaptation_kind(text: str) -> AdaptationKind:
    """The registered kind of an ``--adapt`` text (``name`` or ``name?<param>=<value>&...``)."""
    return ADAPTATIONS.get(text.partition("?")[0])


def make_adaptation(text: str, probe: Classifier) -> Classifier:
    """``probe`` wrapped in the adaptation an ``--adapt`` text names, with its parameters.

    A parameter the adaptation does not have, or a value it does not accept, is a
    :class:`~cnnfeat.exceptions.ConfigError` now, not when the run is fitted.

    >>> from sklearn.linear_model import LogisticRegression
    >>> make_adaptation("coral?regularization=0.5", LogisticRegression()).regularization
    0.5
    """
    from sklearn.utils._param_validation import InvalidParameterError

    name, _, query = text.partition("?")
    params = parse_query(query, f"adaptation {text!r}")
    try:
        adapted = ADAPTATIONS.get(name).make(probe, **params)
    except TypeError as exc:  # a keyword the class does not take
        raise ConfigError(f"adaptation {text!r}: {exc}") from None
    if adapted is not probe:
        try:
            adapted._validate_params()
        except InvalidParameterError as exc:
            raise ConfigError(f"adaptation {text!r}: {exc}") from None
    return adapted


def split_domains(y: np.ndarray, domain: ArrayLike | None, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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


class _Adapted(MetaEstimatorMixin, ClassifierMixin, BaseEstimator):
    """Shared parts: the wrapped classifier, input checking, prediction through ``_target_view``."""

    def _classifier(self) -> Classifier:
        return clone(self.estimator) if self.estimator is not None else LogisticRegression(max_iter=2000)

    def _target_view(self, X: np.ndarray) -> np.ndarray:
        return X

    def _source_view(self, X: np.ndarray) -> np.ndarray:
        return self._target_view(X)

    def adapted_rows(self, X: ArrayLike, *, source: bool = False) -> np.ndarray:
        """Rows as the wrapped classifier sees them: mapped as source-domain rows, or (default) as target rows.

        Model selection without target labels scores the classifier on held-out source rows and on
        the target rows, each in its own domain's view.
        """
        check_is_fitted(self)
        X = checked_rows(self, X, reset=False)
        return self._source_view(X) if source else self._target_view(X)

    def _finish(self, Z: np.ndarray, y: np.ndarray) -> _Adapted:
        self.estimator_ = self._classifier().fit(Z, y)
        self.classes_ = self.estimator_.classes_
        return self

    def predict(self, X: ArrayLike) -> np.ndarray:
        """Predict target-domain rows."""
        check_is_fitted(self)
        return self.estimator_.predict(self._target_view(checked_rows(self, X, reset=False)))

    @available_if(lambda self: hasattr(self.estimator_ if hasattr(self, "estimator_") else self._classifier(), "predict_proba"))
    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        check_is_fitted(self)
        return self.estimator_.predict_proba(self._target_view(checked_rows(self, X, reset=False)))

    @available_if(
        lambda self: hasattr(self.estimator_ if hasattr(self, "estimator_") else self._classifier(), "decision_function")
    )
    def decision_function(self, X: ArrayLike) -> np.ndarray:
        check_is_fitted(self)
        return self.estimator_.decision_function(self._target_view(checked_rows(self, X, reset=False)))
