"""Linear probes: scikit-learn's logistic regression and linear SVM, with C chosen the published ways.

The regularisation strength moves over orders of magnitude between datasets, so
a fixed ``C=1`` is not a linear-probe result. :class:`SweptLinearClassifier`
chooses it on a held-out validation split and refits on train+val:

- ``search="kornblith"`` (Kornblith, Shlens & Le 2019): 45 log-spaced L2 penalties
  ``lambda`` in [1e-6, 1e5], ``C = 1 / lambda``; logistic regression is solved along
  the path from strong to weak regularisation (:mod:`cnnfeat.logistic_path`, or
  scikit-learn's L-BFGS warm-started the same way with ``solver="lbfgs"``).
- ``search="clip"`` (Radford et al. 2021): a coarse sweep over ``lambda`` in
  [1e-6, 1e6] (one value per two decades), then a few rounds of refinement around
  the best value, halving the step in log space each round.
- ``search="fixed"``: just ``C``.

Among values of C that tie on validation the strongest regularisation wins; when all of
them tie, validation says nothing and the middle of the range is used (see :func:`choose_c`).

DeCAF's "dropout" is available as ``dropout=p``: the classifier trains on
``dropout_copies`` copies of the features with a random fraction ``p`` of each
vector zeroed (and the rest scaled by ``1 / (1 - p)``).

Wide features (far more dimensions than training rows, e.g. chi-squared-mapped
bag-of-words or HOG histograms) are fitted in the span of the training rows:
the weights of an L2-penalised linear model lie in that span (the representer
theorem), so the solution is the same, and each solver pass costs ``n`` instead
of ``d`` per row. The fitted weights are mapped back, so ``estimator_`` is an
ordinary model on the original features.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable
from numbers import Integral, Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, _fit_context
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.svm import LinearSVC
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted

from cnnfeat.exceptions import ConfigError
from cnnfeat.hints import ArrayLike, Classifier, checked_rows, checked_rows_and_labels
from cnnfeat.knn_probe import KNNProbe
from cnnfeat.logistic_path import SOLVERS, PathSweep, Scorer
from cnnfeat.registry import Registry

__all__ = [
    "KORNBLITH_PENALTIES",
    "PROBES",
    "KNNProbe",
    "SweptLinearClassifier",
    "choose_c",
    "innermost",
    "make_probe",
    "mean_per_class_accuracy",
]

#: Kornblith et al.'s 45 L2 penalties; C = 1 / penalty. Python's ``**`` (the C library's correctly
#: rounded ``pow``), not ``np.logspace``: numpy's AVX-512 power differs in the last bit on 4 of the 45,
#: and one bit off in C can move the chosen C, and with it test accuracy (measured in docs/results.md).
KORNBLITH_PENALTIES = np.array([10.0 ** float(e) for e in np.linspace(-6, 5, 45)])

#: fit in the span of the rows when the features are at least this many times wider than the rows
_SPAN_RATIO = 4


def make_probe(
    kind: str = "logreg", C: float = 1.0, *, max_iter: int = 1000, tol: float = 1e-4, warm_start: bool = False
) -> Classifier:
    """A plain scikit-learn linear classifier: ``"logreg"`` (multinomial, L-BFGS) or ``"svm"`` (LinearSVC)."""
    if kind == "logreg":
        return LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, tol=tol, warm_start=warm_start)
    if kind == "svm":
        return LinearSVC(C=C, max_iter=max_iter, tol=tol, dual="auto")
    raise ConfigError(f"kind must be 'logreg' or 'svm'; got {kind!r}")


def innermost(model: Classifier, attribute: str) -> Classifier:
    """The fitted estimator inside a pipeline or adaptation wrapper that has ``attribute`` (``C_``, ``k_``), or None."""
    while model is not None and not hasattr(model, attribute):
        model = model.steps[-1][1] if hasattr(model, "steps") else getattr(model, "estimator_", None)
    return model


def mean_per_class_accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean of the per-class recalls (sklearn's ``balanced_accuracy_score``)."""
    from sklearn.metrics import balanced_accuracy_score

    return float(balanced_accuracy_score(y_true, y_pred))


def _row_span(X: np.ndarray) -> np.ndarray | None:
    """An orthonormal basis ``(d, r)`` of the span of the rows of ``X``, or None when X is not wide."""
    n, d = X.shape
    if n * _SPAN_RATIO > d:
        return None
    # eigenvectors of the n x n Gram matrix: two matrix products, no d x d work
    eigenvalues, vectors = np.linalg.eigh((X @ X.T).astype(np.float64))
    keep = eigenvalues > eigenvalues.max() * 1e-6
    return X.T @ (vectors[:, keep] / np.sqrt(eigenvalues[keep])).astype(X.dtype)


def _dropout_copies(X: np.ndarray, y: np.ndarray, p: float, copies: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    masked = [X * (rng.random(X.shape) >= p) / (1.0 - p) for _ in range(copies)]
    return np.concatenate(masked).astype(X.dtype, copy=False), np.tile(y, copies)


class SweptLinearClassifier(ClassifierMixin, BaseEstimator):
    """A linear classifier whose C is chosen on a validation split, then refit on all the data.

    Parameters
    ----------
    kind : {"logreg", "svm"}
        Multinomial logistic regression (L-BFGS) or a linear SVM (liblinear).
    search : {"kornblith", "clip", "fixed"}
        How C is chosen (see the module docstring).
    solver : {"path", "lbfgs"}
        Logistic regression's solver: ``"path"`` (:mod:`cnnfeat.logistic_path`: every C solved to a
        certified bound on its gap to the optimum, along the regularisation path) or ``"lbfgs"``
        (scikit-learn's, one fit per C at ``tol``, as the committed tables were made). The SVM is liblinear's.
    C : float
        The value used by ``search="fixed"``.
    penalties : array-like, optional
        Override the L2 penalties swept by ``"kornblith"`` (C = 1 / penalty).
    val_size : float
        Fraction of the training data held out (stratified) to score each C; at least one image per
        class when every class has two or more (2 shots: half of them).
    warm_start : bool
        ``solver="lbfgs"``: warm-start logistic regression along the path (same choice, less time).
    dropout : float
        DeCAF-style dropout rate on features during training (0 = off).
    dropout_copies : int
        Masked copies of the training set when ``dropout > 0``.
    max_iter, tol : int, float
        Solver settings (``tol``: scikit-learn's solvers' only; the path solver stops on its gap bound).
    random_state : int
        Seeds the validation split and the dropout masks.

    Attributes
    ----------
    C_ : float
        The chosen C.
    penalty_ : float
        ``1 / C_``.
    val_scores_ : dict of float to float
        Validation accuracy of each C tried.
    estimator_ : LogisticRegression or LinearSVC
        Refit on all the training data with ``C_``.
    search_seconds_ : float
        Time spent choosing C.
    n_iter_ : int or ndarray
        Solver iterations of the final fit.
    """

    _parameter_constraints: dict[str, list[object]] = {  # noqa: RUF012 (scikit-learn's own convention)
        "kind": [StrOptions({"logreg", "svm"})],
        "search": [StrOptions({"kornblith", "clip", "fixed"})],
        "solver": [StrOptions(set(SOLVERS))],
        "C": [Interval(Real, 0, None, closed="neither")],
        "penalties": ["array-like", None],
        "val_size": [Interval(Real, 0, 1, closed="neither")],
        "warm_start": ["boolean"],
        "dropout": [Interval(Real, 0, 1, closed="left")],
        "dropout_copies": [Interval(Integral, 1, None, closed="left")],
        "max_iter": [Interval(Integral, 1, None, closed="left")],
        "tol": [Interval(Real, 0, None, closed="neither")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        *,
        kind: str = "logreg",
        search: str = "kornblith",
        solver: str = "path",
        C: float = 1.0,
        penalties: ArrayLike | None = None,
        val_size: float = 0.2,
        warm_start: bool = True,
        dropout: float = 0.0,
        dropout_copies: int = 4,
        max_iter: int = 1000,
        tol: float = 1e-4,
        random_state: int = 0,
    ) -> None:
        self.kind = kind
        self.search = search
        self.solver = solver
        self.C = C
        self.penalties = penalties
        self.val_size = val_size
        self.warm_start = warm_start
        self.dropout = dropout
        self.dropout_copies = dropout_copies
        self.max_iter = max_iter
        self.tol = tol
        self.random_state = random_state

    def _uses_path(self) -> bool:
        return self.kind == "logreg" and self.solver == "path"

    def _dropped(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The rows the solver sees: ``dropout_copies`` masked copies when ``dropout > 0``."""
        if self.dropout > 0:
            return _dropout_copies(X, y, self.dropout, self.dropout_copies, self.random_state)
        return X, y

    def _training_set(self, X: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        """scikit-learn's solvers' rows (in the row span when wide; float64) and the span basis."""
        X, y = self._dropped(X, y)
        basis = _row_span(X)
        # L-BFGS on a float32 loss stops where float32 rounding hides the decrease: strongly
        # regularised fits ended after a few iterations far from their optimum
        return (X if basis is None else X @ basis).astype(np.float64, copy=False), y, basis

    @staticmethod
    def _train(estimator: Classifier, X: np.ndarray, y: np.ndarray) -> Classifier:
        with warnings.catch_warnings():
            # weakly regularised fits on separable data hit max_iter; the sweep scores them anyway
            warnings.simplefilter("ignore", ConvergenceWarning)
            return estimator.fit(X, y)

    def _sklearn_scorer(self, Xtr: np.ndarray, ytr: np.ndarray, Xva: np.ndarray, yva: np.ndarray) -> Scorer:
        """Validation accuracy of each C by scikit-learn's solvers, from strong to weak regularisation."""
        Xfit, yfit, basis = self._training_set(Xtr, ytr)
        if basis is not None:
            Xva = Xva @ basis
        warm = self.kind == "logreg" and self.warm_start
        model = make_probe(self.kind, max_iter=self.max_iter, tol=self.tol, warm_start=warm)

        def score(Cs: list[float]) -> dict[float, float]:
            nonlocal model
            scores: dict[float, float] = {}
            for C in sorted(Cs):
                if not warm:
                    model = make_probe(self.kind, C, max_iter=self.max_iter, tol=self.tol)
                model.set_params(C=C)
                scores[float(C)] = float((self._train(model, Xfit, yfit).predict(Xva) == yva).mean())
            return scores

        return score

    def _choose(self, X: np.ndarray, y: np.ndarray, path: PathSweep | None) -> tuple[float, dict[float, float]]:
        if self.search == "fixed":
            return float(self.C), {}
        classes, counts = np.unique(y, return_counts=True)
        stratify = y if counts.min() >= 2 else None
        test_size: float | int = self.val_size
        if stratify is not None and np.ceil(self.val_size * len(y)) < len(classes):
            test_size = len(classes)  # few shots: one validation image per class, the smallest stratified split
        Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=test_size, random_state=self.random_state, stratify=stratify)
        if len(np.unique(ytr)) < 2:
            return float(self.C), {}
        score = path.scorer(*self._dropped(Xtr, ytr), Xva, yva) if path else self._sklearn_scorer(Xtr, ytr, Xva, yva)
        if self.search == "kornblith":
            penalties = np.asarray(self.penalties if self.penalties is not None else KORNBLITH_PENALTIES, float)
            scores = score(list(1.0 / penalties))
        else:
            scores = score([10.0**e for e in range(-6, 7, 2)])
            step = 1.0
            for _ in range(4):  # refine around the best, halving the step (in decades)
                best = choose_c(scores)
                candidates = [best * 10**step, best / 10**step]
                scores.update(score([c for c in candidates if c not in scores]))
                step /= 2
        return choose_c(scores), scores

    @_fit_context(prefer_skip_nested_validation=True)
    def fit(self, X: ArrayLike, y: ArrayLike) -> SweptLinearClassifier:
        """Choose C on a validation split of ``(X, y)``, then fit on all of it.

        Parameters are checked by scikit-learn's ``_parameter_constraints`` (an
        ``InvalidParameterError`` names the parameter, what it accepts and what it got).
        """
        X, y = checked_rows_and_labels(self, X, y, dtype=[np.float64, np.float32])
        check_classification_targets(y)
        started = time.perf_counter()
        path = None
        if self._uses_path():  # dropout masks the sweep's rows anew: they are not copies of the final rows
            path = PathSweep(*self._dropped(X, y), max_iter=self.max_iter, shared_basis=self.dropout == 0)
        self.C_, self.val_scores_ = self._choose(X, y, path)
        self.search_seconds_ = time.perf_counter() - started
        self.penalty_ = 1.0 / self.C_
        if path is not None:
            self.estimator_ = path.final(self.C_, self.tol)
        else:
            Xfit, yfit, basis = self._training_set(X, y)
            self.estimator_ = self._train(make_probe(self.kind, self.C_, max_iter=self.max_iter, tol=self.tol), Xfit, yfit)
            if basis is not None:  # back to weights on the original features
                self.estimator_.coef_ = self.estimator_.coef_ @ basis.T
                self.estimator_.n_features_in_ = X.shape[1]
        self.classes_ = self.estimator_.classes_
        self.n_iter_ = self.estimator_.n_iter_
        return self

    def decision_function(self, X: ArrayLike) -> np.ndarray:
        check_is_fitted(self)
        return self.estimator_.decision_function(checked_rows(self, X, reset=False, dtype=[np.float64, np.float32]))

    def predict(self, X: ArrayLike) -> np.ndarray:
        check_is_fitted(self)
        return self.estimator_.predict(checked_rows(self, X, reset=False, dtype=[np.float64, np.float32]))

    @available_if(lambda self: self.kind == "logreg")
    def predict_proba(self, X: ArrayLike) -> np.ndarray:
        """Class probabilities (``kind="logreg"`` only)."""
        check_is_fitted(self)
        return self.estimator_.predict_proba(checked_rows(self, X, reset=False, dtype=[np.float64, np.float32]))


def choose_c(scores: dict[float, float]) -> float:
    """The C with the best validation accuracy; among ties, the strongest regularisation (smallest C).

    When every C scores the same, validation says nothing (one image per class: the held-out images'
    classes are absent from the rest), and the middle of the values tried, in decades, is taken: the
    smallest C would be the C -> 0 limit, whose weights are the class sums of the features (far worse
    than the middle of the grid on 15-Scene at 1 shot; docs/results.md has the figures).

    Examples
    --------
    >>> choose_c({1e-4: 0.4, 1e-2: 0.3, 1.0: 0.4})
    0.0001
    >>> choose_c({1e-4: 0.0, 1e-2: 0.0, 1.0: 0.0})
    0.01
    """
    top = max(scores.values())
    if min(scores.values()) == top:
        tried = sorted(scores)
        centre = np.sqrt(tried[0] * tried[-1])
        return min(tried, key=lambda C: round(abs(np.log10(C / centre)), 9))  # rounded: the smaller of two equals
    return min(C for C, s in scores.items() if s == top)


#: probe name -> the probe, given logistic regression's solver (``--probes`` accepts these names)
PROBES = Registry[Callable[[str], Classifier]]("probe")
PROBES.add(
    "logreg",
    lambda solver: SweptLinearClassifier(kind="logreg", search="kornblith", solver=solver),
    help="logistic regression, Kornblith's 45 values of C",
)
PROBES.add(
    "logreg+dropout",
    lambda solver: SweptLinearClassifier(kind="logreg", search="kornblith", dropout=0.5, solver=solver),
    help="DeCAF's dropout on the features",
)
PROBES.add(
    "svm",
    lambda solver: SweptLinearClassifier(kind="svm", search="clip", solver=solver),
    help="linear SVM, CLIP's search for C",
)
PROBES.add("svm+dropout", lambda solver: SweptLinearClassifier(kind="svm", search="clip", dropout=0.5, solver=solver), help="")
PROBES.add("knn", lambda solver: KNNProbe(), help="DINOv2's weighted k-NN")
