"""Adaptations that learn a projection with target pseudo labels: BDA (and JDA), selective pseudo-labelling."""

from __future__ import annotations

from numbers import Integral, Real

import numpy as np
from sklearn.base import _fit_context
from sklearn.utils._param_validation import HasMethods, Interval

from cnnfeat.adaptation._base import _Adapted, register_adaptation, split_domains
from cnnfeat.hints import ArrayLike, Classifier, checked_rows_and_labels
from cnnfeat.normalize import unit_rows

__all__ = ["BalancedDistributionAdaptation", "SelectivePseudoLabeling"]


@register_adaptation("bda", help="balanced distribution adaptation")
class BalancedDistributionAdaptation(_Adapted):
    """Balanced Distribution Adaptation (Wang et al. 2017); with ``mu=None``, Joint Distribution Adaptation (Long et al. 2013).

    A linear projection of source and target rows into ``n_components`` dimensions that
    shrinks the maximum mean discrepancy between the domains' marginals and, through pseudo
    labels of the target rows, between their class conditionals, while keeping the data's
    variance. The class-conditional term is weighted ``mu`` against the marginal one (BDA;
    JDA weights them equally, which is ``mu = 0.5`` here). Iterated ``n_iter`` times: project,
    pseudo-label the target with a 1-nearest-neighbour classifier in the subspace (as both
    papers do), project again; the wrapped classifier is then trained once, on the final
    projection.

    No hyper-parameter is chosen on target labels: the defaults are fixed in advance, JDA's
    (``k = 100``, ``lambda = 0.1``, 10 iterations) and ``mu = 0.5`` for BDA (whose paper also
    estimates ``mu`` from the domains' A-distance; a fixed value needs no target label either).

    Parameters
    ----------
    estimator : classifier, optional
        Default: ``LogisticRegression(max_iter=2000)``.
    n_components : int
        Dimension of the shared subspace (capped at the feature width).
    mu : float or None
        Weight of the class-conditional discrepancy in [0, 1]; ``None``: JDA.
    regularization : float
        The projection's ridge (the papers' lambda).
    n_iter : int
        Pseudo-labelling rounds.
    """

    _parameter_constraints: dict[str, list[object]] = {  # noqa: RUF012 (scikit-learn's own convention)
        "estimator": [HasMethods(["fit", "predict"]), None],
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "mu": [Interval(Real, 0, 1, closed="both"), None],
        "regularization": [Interval(Real, 0, None, closed="neither")],
        "n_iter": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        estimator: Classifier | None = None,
        *,
        n_components: int = 100,
        mu: float | None = 0.5,
        regularization: float = 0.1,
        n_iter: int = 10,
    ) -> None:
        self.estimator = estimator
        self.n_components = n_components
        self.mu = mu
        self.regularization = regularization
        self.n_iter = n_iter

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: ArrayLike, y: ArrayLike, domain: ArrayLike | None = None) -> BalancedDistributionAdaptation:
        from scipy.linalg import eigh
        from sklearn.neighbors import KNeighborsClassifier

        X, y = checked_rows_and_labels(self, X, y)
        source, target_labelled, target = split_domains(y, domain, len(X))
        d = X.shape[1]
        self.mean_ = X[source | target].mean(axis=0)
        self.projection_ = np.eye(d)
        if not target.any():  # nothing to adapt to: the plain classifier on the (normalised) source rows
            return self._finish(self._target_view(X[source]), y[source])
        Zs, Zt = self._target_view(X[source]), self._target_view(X[target])
        ns, nt = len(Zs), len(Zt)
        Z = np.r_[Zs, Zt]
        ys = y[source]
        classes = np.unique(ys)
        centred_sum = Z.sum(axis=0)
        variance = Z.T @ Z - np.outer(centred_sum, centred_sum) / (ns + nt)  # Z^T H Z, without the n x n H
        b = variance + 1e-6 * np.trace(variance) / d * np.eye(d)
        k = min(int(self.n_components), d)
        pseudo: np.ndarray | None = None
        for _ in range(int(self.n_iter)):
            # M = sum_i w_i e_i e_i^T over the marginal term and one term per class (MMD): Z^T M Z and
            # ||M||_F from the e_i alone, so that no (ns + nt)^2 matrix is ever formed
            vectors, weights = [np.r_[np.full(ns, 1.0 / ns), np.full(nt, -1.0 / nt)]], [1.0]
            if pseudo is not None:
                marginal = 1.0 if self.mu is None else 1.0 - self.mu
                conditional = 1.0 if self.mu is None else self.mu
                weights = [marginal]
                for c in classes:
                    in_source, in_target = np.flatnonzero(ys == c), np.flatnonzero(pseudo == c)
                    if len(in_source) and len(in_target):
                        e = np.zeros(ns + nt)
                        e[in_source], e[ns + in_target] = 1.0 / len(in_source), -1.0 / len(in_target)
                        vectors.append(e)
                        weights.append(conditional)
            E, w = np.array(vectors), np.array(weights)
            projected_e = E @ Z  # (m, d): Z^T e_i for each term
            gram = E @ E.T
            frobenius = np.sqrt(max(float(w @ (gram**2) @ w), 1e-300))
            a = (projected_e.T * w) @ projected_e / frobenius + self.regularization * np.eye(d)
            _, basis = eigh(a, b, subset_by_index=[0, k - 1])
            projected = Z @ basis
            pseudo = KNeighborsClassifier(n_neighbors=1).fit(projected[:ns], ys).predict(projected[ns:])
        self.projection_ = basis
        labelled = np.r_[projected[:ns], self._target_view(X[target_labelled])]
        return self._finish(labelled, np.r_[ys, y[target_labelled]])

    def _target_view(self, X: np.ndarray) -> np.ndarray:
        return unit_rows(X - self.mean_) @ self.projection_


@register_adaptation("spl", help="selective pseudo-labelling")
@register_adaptation(
    "spl-pca", help="selective pseudo-labelling on the rows' 256 leading principal components (faster on wide features)",
    pca_components=256,
)  # fmt: skip
class SelectivePseudoLabeling(_Adapted):
    """Selective pseudo-labelling with structured prediction (Wang & Breckon, AAAI 2020).

    The rows are centred on the mean of both domains and L2-normalised. Each of
    ``n_iter`` rounds learns a supervised locality-preserving projection (rows of a class
    pulled together) from the labelled source rows and the target rows selected so far,
    then labels every target row twice in that subspace: by the nearest source class
    mean, and by k-means of the target rows started at those means (the "structured
    prediction": the target's own clusters). The two soft assignments are averaged. Round
    ``t`` selects, per predicted class, the ``t / n_iter`` most confident target rows, so a
    class with few confident rows is never crowded out; the last round takes them all. The
    wrapped classifier is then trained on the projected source and the pseudo-labelled target.

    No hyper-parameter is chosen on target labels: the paper's defaults are fixed in
    advance (a 128-dimensional projection, 10 rounds, a unit ridge).

    Parameters
    ----------
    estimator : classifier, optional
        Default: ``LogisticRegression(max_iter=2000)``.
    n_components : int
        Dimension of the learned projection (capped at the feature width).
    n_iter : int
        Selection rounds.
    regularization : float
        Ridge of the projection, relative to the mean feature variance.
    pca_components : int or None
        First reduce the centred, normalised rows (both domains') to this many principal components
        (``--adapt spl-pca``: 256). The projection's eigenproblems are ``d x d``; on wide features
        (thousands of dimensions from several taps) they dominate the fit. None: no reduction.
    """

    _parameter_constraints: dict[str, list[object]] = {  # noqa: RUF012 (scikit-learn's own convention)
        "estimator": [HasMethods(["fit", "predict"]), None],
        "n_components": [Interval(Integral, 1, None, closed="left")],
        "n_iter": [Interval(Integral, 1, None, closed="left")],
        "regularization": [Interval(Real, 0, None, closed="neither")],
        "pca_components": [Interval(Integral, 1, None, closed="left"), None],
    }

    def __init__(
        self,
        estimator: Classifier | None = None,
        *,
        n_components: int = 128,
        n_iter: int = 10,
        regularization: float = 1.0,
        pca_components: int | None = None,
    ) -> None:
        self.estimator = estimator
        self.n_components = n_components
        self.n_iter = n_iter
        self.regularization = regularization
        self.pca_components = pca_components

    @_fit_context(prefer_skip_nested_validation=False)
    def fit(self, X: ArrayLike, y: ArrayLike, domain: ArrayLike | None = None) -> SelectivePseudoLabeling:
        X, y = checked_rows_and_labels(self, X, y)
        source, target_labelled, target = split_domains(y, domain, len(X))
        self.mean_ = X[source | target].mean(axis=0)
        self.reduction_ = self._reduction(unit_rows(X[source | target] - self.mean_))
        self.projection_ = np.eye(X.shape[1] if self.reduction_ is None else self.reduction_.shape[1])
        labelled = source | target_labelled
        Zl, yl = self._reduced(X[labelled]), y[labelled]
        classes, codes = np.unique(yl, return_inverse=True)
        if not (target & ~target_labelled).any() or len(classes) < 2:  # nothing to pseudo-label
            return self._finish(self._target_view(X[labelled]), yl)
        Zt = self._reduced(X[target & ~target_labelled])
        pseudo, selected = np.zeros(len(Zt), int), np.zeros(len(Zt), bool)
        for round_ in range(int(self.n_iter) + 1):  # round 0: the projection from the labelled rows alone
            Z = np.r_[Zl, Zt[selected]]
            self.projection_ = self._projection(Z, np.r_[codes, pseudo[selected]], len(classes))
            Pl, Pt = unit_rows(Zl @ self.projection_), unit_rows(Zt @ self.projection_)
            means = unit_rows(np.array([Pl[codes == c].mean(axis=0) for c in range(len(classes))]))
            probabilities = (_soft_nearest(Pt, means) + _soft_nearest(Pt, _kmeans(Pt, means))) / 2
            pseudo, confidence = probabilities.argmax(axis=1), probabilities.max(axis=1)
            selected = _select_per_class(pseudo, confidence, (round_ + 1) / (int(self.n_iter) + 1))
        self.pseudo_labels_ = classes[pseudo]
        return self._finish(np.r_[Pl, Pt], np.r_[yl, self.pseudo_labels_])

    def _projection(self, Z: np.ndarray, codes: np.ndarray, n_classes: int) -> np.ndarray:
        """Supervised LPP: minimise within-class distances against the degree-weighted spread.

        With ``W_ij = 1`` for rows of one class and ``D_ii`` its size, ``Z^T L Z`` and
        ``Z^T D Z`` come from the class sums alone: no ``n x n`` matrix is formed.
        """
        from scipy.linalg import eigh

        d = Z.shape[1]
        sizes = np.bincount(codes, minlength=n_classes).astype(float)
        sums = np.zeros((n_classes, d))
        np.add.at(sums, codes, Z)
        degree = (Z * sizes[codes][:, None]).T @ Z  # Z^T D Z
        laplacian = degree - sums.T @ sums  # Z^T (D - W) Z
        ridge = self.regularization * np.trace(degree) / d * np.eye(d)
        k = min(int(self.n_components), d)
        _, basis = eigh(laplacian + ridge, degree + 1e-6 * np.trace(degree) / d * np.eye(d), subset_by_index=[0, k - 1])
        return basis

    def _reduction(self, Z: np.ndarray) -> np.ndarray | None:
        """The leading principal directions of the centred, normalised rows (``d x k``); None: no reduction."""
        k = self.pca_components
        if k is None or k >= min(Z.shape):
            return None
        _, _, vt = np.linalg.svd(Z - Z.mean(axis=0), full_matrices=False)
        return vt[: int(k)].T

    def _reduced(self, X: np.ndarray) -> np.ndarray:
        Z = unit_rows(X - self.mean_)
        return Z if self.reduction_ is None else unit_rows(Z @ self.reduction_)

    def _target_view(self, X: np.ndarray) -> np.ndarray:
        return unit_rows(self._reduced(X) @ self.projection_)


def _soft_nearest(Z: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """Each row's soft assignment to the centres: a softmax of minus the Euclidean distances."""
    distances = np.sqrt(np.maximum(((Z[:, None, :] - centres[None]) ** 2).sum(axis=2), 0))
    scores = np.exp(-(distances - distances.min(axis=1, keepdims=True)))
    return scores / scores.sum(axis=1, keepdims=True)


def _kmeans(Z: np.ndarray, centres: np.ndarray, n_iter: int = 100) -> np.ndarray:
    """Lloyd's k-means started at ``centres`` (cluster k stays the cluster of class k); an empty cluster keeps its start."""
    centres = centres.copy()
    for _ in range(n_iter):
        nearest = ((Z[:, None, :] - centres[None]) ** 2).sum(axis=2).argmin(axis=1)
        moved = np.array([Z[nearest == k].mean(axis=0) if (nearest == k).any() else centres[k] for k in range(len(centres))])
        if np.allclose(moved, centres):
            break
        centres = moved
    return centres


def _select_per_class(pseudo: np.ndarray, confidence: np.ndarray, fraction: float) -> np.ndarray:
    """The ``fraction`` most confident rows of each predicted class (at least one per class that has any)."""
    selected = np.zeros(len(pseudo), bool)
    for c in np.unique(pseudo):
        rows = np.flatnonzero(pseudo == c)
        keep = max(1, round(fraction * len(rows)))
        selected[rows[np.argsort(-confidence[rows], kind="stable")[:keep]]] = True
    return selected
