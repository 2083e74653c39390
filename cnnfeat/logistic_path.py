"""Multinomial logistic regression solved exactly along a path of C, fast enough to sweep 45 values per probe.

The objective is scikit-learn's ``LogisticRegression(solver="lbfgs")`` (L2 penalty, intercept not
penalised), multiplied by ``C * n``::

    G(W, b) = C * sum_i CE(softmax(W x_i + b), y_i) + ||W||^2 / 2

Two classes follow scikit-learn's binomial model (one weight vector), which is the symmetric
multinomial model at ``C / 2``.

What makes it fast, all of it exact:

- **A rotated basis.** The intercept absorbs the mean of the rows, and the penalty does not change under
  an orthonormal change of basis, so the rows are centred and rotated onto the eigenvectors of their
  scatter matrix: columns become orthogonal with known energies ``s_j^2``, and wide features (more
  dimensions than rows) shrink to the span of the rows, where the weights lie.
- **A preconditioned L-BFGS.** The initial inverse Hessian of each L-BFGS step is the inverse of the
  Hessian's diagonal in that basis, ``1 + C s_j^2 q`` with ``q`` the mean softmax curvature.
- **A regularisation path.** Values of C are solved in increasing order, each started from a linear
  extrapolation in ``log C`` of the two previous solutions.
- **One product per trial step saved.** The logits at ``x + t d`` are ``L + t (Z d)``, so a line search
  needs no product; products run in float32, the objective in float64, and the result is checked in
  float64.
- **Stopping on a certificate.** ``G`` is 1-strongly convex in ``W``, so ``G - G* <= ||grad G||^2 / 2``:
  the solver stops when that bound is below ``gap_tol`` times the smaller of ``G`` and ``G(0) - G`` (the
  decrease from zero weights), so the gap is small against the objective and against the part of it that
  the weights decide (at small C, ``G`` is almost all the constant ``G(0) = C n log K``). Not a gradient
  threshold, which is met without moving when C is large.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X, y = rng.normal(size=(60, 5)), np.repeat([0, 1, 2], 20)
>>> fits = logistic_path(X, y, 3, [0.1, 1.0])
>>> [fit.coef.shape for fit in fits], all(fit.gap_bound <= 1e-7 for fit in fits)
([(3, 5), (3, 5)], True)
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from sklearn.linear_model import LogisticRegression

__all__ = ["GAP_TOL", "SOLVERS", "PathFit", "PathSweep", "RowBasis", "Scorer", "logistic_path", "scatter_basis"]

#: the logistic probes' solvers: this module's, and scikit-learn's L-BFGS (one fit per C at its ``tol``)
SOLVERS = ("path", "lbfgs")

#: the default bound on each solution's relative gap to the optimum (see ``PathFit.gap_bound``)
GAP_TOL = 1e-7
#: a probe sweep's bound (it scores validation accuracy; the returned weights are solved to ``GAP_TOL``)
_SWEEP_GAP = 1e-6
#: a sweep's validation accuracy of each C it is given
Scorer = Callable[[list[float]], dict[float, float]]
#: eigen-directions of the rows' scatter below this fraction of the largest are rounding noise
_RANK_TOL = 1e-10
_ARMIJO = 1e-4
#: float32's smallest normal number: residuals below it are zero in the float32 products
_FLUSH = float(np.finfo(np.float32).tiny)
_MEMORY = 10
#: the certificate's scale is at least this fraction of G
_SCALE_FLOOR = 1e-12


@dataclass(frozen=True)
class PathFit:
    """One value of C's solution; ``coef`` and ``intercept`` on the original features, in scikit-learn's shapes."""

    C: float
    n_iter: int
    gap_bound: float  # certified bound on (G - G*) / min(G, G(0) - G) (the intercept, unpenalised, aside)
    objective: float  # G at the solution
    rotated: tuple[np.ndarray, np.ndarray] = field(repr=False)  # (A (r, K), b (K,)) in the rows' basis
    rows: _Rotated = field(repr=False, compare=False)

    @functools.cached_property
    def _weights(self) -> tuple[np.ndarray, np.ndarray]:
        coef, intercept = self.rows.unrotate(*self.rotated)
        if self.rows.binary:  # scikit-learn's binomial model: one weight vector
            return (coef[1] - coef[0])[None], np.r_[intercept[1] - intercept[0]]
        return coef, intercept

    @property
    def coef(self) -> np.ndarray:  # (n_classes, d); (1, d) for two classes
        return self._weights[0]

    @property
    def intercept(self) -> np.ndarray:  # (n_classes,); (1,) for two classes
        return self._weights[1]

    def predict_codes(self, X: np.ndarray) -> np.ndarray:
        """The class index of each row of ``X``, from the rotated weights (no product with the basis per C)."""
        A, b = self.rotated
        return np.asarray((self.rows.project(X) @ A + b).argmax(axis=1))  # ties: the lower index, as scikit-learn's


def scatter_basis(scatter: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The energies ``(r,)`` and eigenvectors ``(d, r)`` of a ``d x d`` scatter matrix, rounding noise left out."""
    energies, V = np.linalg.eigh(scatter)
    keep = energies > energies.max(initial=0.0) * _RANK_TOL
    return energies[keep], V[:, keep]


class RowBasis:
    """An orthonormal basis ``V (d, r)`` of the span of centred rows: the eigenvectors of their scatter.

    A basis of all the training rows also serves any subset of them (a validation split's training part):
    the centred rows of a subset lie in the same span.
    """

    def __init__(self, X: np.ndarray) -> None:
        X = np.asarray(X, dtype=np.float64)
        Xc = X - X.mean(axis=0)
        n, d = Xc.shape
        if n >= d:
            self.V = scatter_basis(Xc.T @ Xc)[1]
        else:  # wide: the n x n Gram matrix gives the span of the rows
            energies, U = np.linalg.eigh(Xc @ Xc.T)
            keep = energies > energies.max(initial=0.0) * _RANK_TOL
            self.V = (Xc.T @ U[:, keep]) / np.sqrt(energies[keep])


class _Rotated:
    """Rows centred and rotated onto a basis, ``Z = (X - mean) @ V``, with each column's energy ``sum(Z^2)``."""

    def __init__(self, X: np.ndarray, basis: RowBasis, *, binary: bool = False) -> None:
        X = np.asarray(X, dtype=np.float64)
        self.V, self.mean, self.binary = basis.V, X.mean(axis=0), binary
        self.Z = (X - self.mean) @ self.V
        self.Z32 = self.Z.astype(np.float32)
        self.energies = np.einsum("ij,ij->j", self.Z, self.Z)
        self._projected: tuple[np.ndarray, np.ndarray] | None = None

    def project(self, X: np.ndarray) -> np.ndarray:
        """Other rows in this basis, ``(X - mean) @ V``; the last rows asked for are kept (a sweep scores one set)."""
        if self._projected is None or self._projected[0] is not X:
            self._projected = (X, (np.asarray(X, dtype=np.float64) - self.mean) @ self.V)
        return self._projected[1]

    def rotate(self, coef: np.ndarray, intercept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Weights ``(K, d)`` and intercepts on the original features -> ``(A (r, K), b (K,))`` in this basis."""
        return self.V.T @ coef.T, intercept + coef @ self.mean

    def unrotate(self, A: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        coef = (self.V @ A).T
        return coef, b - coef @ self.mean


class _Problem:
    """``G`` and its gradient at one C, on the rotated rows; products in float32, sums in float64.

    What does not depend on C is made once per path; :meth:`at` gives the problem at each C, sharing it.
    """

    C = 1.0

    def __init__(self, rows: _Rotated, codes: np.ndarray, n_classes: int) -> None:
        self.rows, self.codes = rows, codes
        n = len(codes)
        self.picked = np.arange(n) * n_classes + codes  # each row's own class in the flattened (n, K) logits
        # the Hessian's diagonal in the rotated basis is 1 + C q (each column's energy, then n for the intercepts)
        self.diagonal_scale = np.concatenate([np.repeat(rows.energies, n_classes), np.full(n_classes, float(n))])

    def at(self, C: float) -> _Problem:
        problem = copy.copy(self)
        problem.C = C
        return problem

    def product(self, A: np.ndarray, exact: bool) -> np.ndarray:
        if exact:
            return np.asarray(self.rows.Z @ A)
        return np.asarray(self.rows.Z32 @ A.astype(np.float32)).astype(np.float64)

    def value(self, L: np.ndarray, A: np.ndarray) -> tuple[float, np.ndarray]:
        """``G`` from the logits ``L`` and the weights, and the probabilities."""
        top = L.max(axis=1, keepdims=True)
        E = L - top  # the passes over the (n, K) logits are most of an iteration on many rows: done in place
        np.exp(E, out=E)
        total = E.sum(axis=1, keepdims=True)
        loss = float(np.sum(np.log(total[:, 0]) + top[:, 0] - L.ravel().take(self.picked)))
        E /= total
        return self.C * loss + 0.5 * float(np.vdot(A, A)), E

    def gradient(self, P: np.ndarray, A: np.ndarray, exact: bool) -> tuple[np.ndarray, np.ndarray]:
        residual = P.copy()
        residual.ravel()[self.picked] -= 1.0  # P - Y, without reading the one-hot Y
        if exact:
            gA = self.rows.Z.T @ residual
        else:  # probabilities below float32's normal range would be subnormal there, and a product slow on them
            flushed = residual.astype(np.float32)
            np.copyto(flushed, 0.0, where=(residual < _FLUSH) & (residual > -_FLUSH))
            gA = (self.rows.Z32.T @ flushed).astype(np.float64)
        return self.C * gA + A, self.C * residual.sum(axis=0)


def _lbfgs(
    problem: _Problem, A: np.ndarray, b: np.ndarray, gap_tol: float, max_iter: int
) -> tuple[np.ndarray, np.ndarray, int, float, float]:
    """Minimise ``G`` from ``(A, b)``: float32 products until the certificate holds, then checked (and if need be
    finished) with float64 products. Returns the weights, iterations, the certified relative gap and ``G``."""
    r, K = A.shape
    n = len(problem.codes)
    at_zero = problem.C * n * np.log(K)  # G at zero weights
    iterations = 0
    for exact in (False, True):
        L = problem.product(A, exact) + b
        f, P = problem.value(L, A)
        gA, gb = problem.gradient(P, A, exact)
        g = np.concatenate([gA.ravel(), gb])
        steps: list[tuple[np.ndarray, np.ndarray]] = []  # (s, y): the step and the change of gradient
        while True:
            # against the decrease from zero weights, floored where there is none (at the start, or nothing to learn)
            scale = max(min(f, at_zero - f), _SCALE_FLOOR * f)
            bound = 0.5 * float(g @ g) / scale if scale > 0 else np.inf
            if bound <= gap_tol or iterations >= max_iter:
                break
            spread = 1.0 - P
            spread *= P
            curvature = float(np.mean(spread))
            D = 1.0 + (problem.C * curvature) * problem.diagonal_scale
            direction = -_inverse_hessian_product(g, steps, D)
            slope = float(g @ direction)
            if slope >= 0:  # not a descent direction: restart from the preconditioned gradient
                steps.clear()
                direction = -g / D
                slope = float(g @ direction)
            dA, db = direction[: r * K].reshape(r, K), direction[r * K :]
            ZdA = problem.product(dA, exact) + db
            t, accepted = 1.0, False
            for _ in range(40):
                L_t = t * ZdA
                L_t += L
                A_t = A + t * dA
                f_t, P_t = problem.value(L_t, A_t)
                if f_t <= f + _ARMIJO * t * slope:
                    accepted = True
                    break
                t *= 0.5
            iterations += 1
            if not accepted:  # no decrease left at this precision
                break
            A, b, L, f, P = A_t, b + t * db, L_t, f_t, P_t
            gA, gb = problem.gradient(P, A, exact)
            g_new = np.concatenate([gA.ravel(), gb])
            s, y = t * direction, g_new - g
            sy = float(s @ y)
            if sy > 1e-12 * float(y @ y):
                steps.append((s, y))
                if len(steps) > _MEMORY:
                    steps.pop(0)
            g = g_new
    return A, b, iterations, bound, f


def _inverse_hessian_product(g: np.ndarray, steps: list[tuple[np.ndarray, np.ndarray]], D: np.ndarray) -> np.ndarray:
    """L-BFGS's product of the inverse-Hessian estimate with ``g``, from the diagonal preconditioner ``D``.

    The compact form of Byrd, Nocedal and Schnabel (1994; Nocedal and Wright, eq. 7.24), the same product as
    the two-loop recursion in a few matrix products rather than a loop of vector operations per pair:
    ``H g = H0 g + S p - H0 Y u`` with ``R u = S'g``, ``R' p = (diag(S'Y) + Y'H0Y) u - Y'H0 g``, ``R`` the upper
    triangle of ``S'Y`` and ``H0`` the preconditioner scaled by the newest pair.
    """
    from scipy.linalg.lapack import dtrtrs  # LAPACK's triangular solve, without scipy's per-call checks

    if not steps:
        return np.asarray(g / D)
    S = np.array([s for s, _ in steps])  # (m, p), oldest first
    Y = np.array([y for _, y in steps])
    SY = S @ Y.T
    s, y = steps[-1]
    h0 = (float(s @ y) / float(y @ (y / D))) / D
    H0Y = Y * h0
    R = np.triu(SY)
    u = dtrtrs(R, S @ g)[0]
    p = dtrtrs(R, np.diag(SY) * u + (H0Y @ Y.T) @ u - H0Y @ g, trans=1)[0]
    return np.asarray(h0 * g + S.T @ p - H0Y.T @ u)


def _extrapolate(
    before: tuple[float, np.ndarray, np.ndarray], last: tuple[float, np.ndarray, np.ndarray], at: float
) -> tuple[np.ndarray, np.ndarray]:
    """The line through two ``(log C, A, b)`` solutions, at ``log C = at`` (a higher order overshoots)."""
    (l0, A0, b0), (l1, A1, b1) = before, last
    w0, w1 = (at - l1) / (l0 - l1), (at - l0) / (l1 - l0)
    return w0 * A0 + w1 * A1, w0 * b0 + w1 * b1


def logistic_path(
    X: np.ndarray,
    codes: np.ndarray,
    n_classes: int,
    Cs: Sequence[float],
    *,
    gap_tol: float = GAP_TOL,
    max_iter: int = 1000,
    start: tuple[np.ndarray, np.ndarray] | None = None,
    basis: RowBasis | None = None,
) -> list[PathFit]:
    """Solve scikit-learn's L2 logistic regression on ``X`` for every C in ``Cs`` (returned in the order given).

    Parameters
    ----------
    X : ndarray of shape (n, d)
        The rows.
    codes : ndarray of int, shape (n,)
        Each row's class, ``0 .. n_classes - 1``.
    n_classes : int
        The number of classes (two: scikit-learn's binomial model).
    Cs : sequence of float
        The inverse penalties.
    gap_tol : float
        Each solution's certified bound on its relative gap to the optimum.
    max_iter : int
        L-BFGS iterations per value of C at most (its fit's ``gap_bound`` then says how far it stopped).
    start : (coef, intercept), optional
        Weights on the original features to start the smallest C from (a previous fit's).
    basis : RowBasis, optional
        A basis of rows that include these (made from ``X`` when not given).
    """
    codes = np.asarray(codes, dtype=np.intp)
    binary = n_classes == 2
    rows = _Rotated(X, basis if basis is not None else RowBasis(X), binary=binary)
    K = 2 if binary else n_classes
    r = rows.Z.shape[1]
    solved: list[tuple[float, np.ndarray, np.ndarray]] = []  # (log C, A, b) in increasing C
    if start is not None:
        coef, intercept = start
        if binary:  # scikit-learn's binomial weights w are the symmetric model's (-w/2, w/2)
            coef, intercept = np.vstack([-coef / 2, coef / 2]), np.r_[-intercept / 2, intercept / 2]
        A0, b0 = rows.rotate(np.asarray(coef, float), np.asarray(intercept, float))
    else:
        A0, b0 = np.zeros((r, K)), np.zeros(K)
    labelled = _Problem(rows, codes, K)
    fits: dict[float, PathFit] = {}
    for C in sorted({float(C) for C in Cs}):
        C_model = C / 2 if binary else C
        if len(solved) >= 2:  # on the line in log C through the two previous solutions
            A, b = _extrapolate(solved[-2], solved[-1], float(np.log(C)))
        elif solved:
            A, b = solved[-1][1], solved[-1][2]
        else:
            A, b = A0, b0
        problem = labelled.at(C_model)
        A, b, n_iter, bound, objective = _lbfgs(problem, A.copy(), b.copy(), gap_tol, max_iter)
        solved.append((float(np.log(C)), A, b))
        fits[C] = PathFit(C, n_iter, bound, 2 * objective if binary else objective, (A, b), rows)
    return [fits[float(C)] for C in Cs]


class PathSweep:
    """:func:`logistic_path` for a probe: the sweep's validation scores of each C, then the final fit.

    One basis of all the training rows serves the final fit and, when its rows are a subset of them
    (``shared_basis``; not so for dropout's masked copies), the sweep; the final fit starts from the
    sweep's solution at the chosen C.
    """

    def __init__(self, X: np.ndarray, y: np.ndarray, *, max_iter: int, shared_basis: bool = True) -> None:
        self.X, self.y, self.max_iter, self.shared_basis = X, y, max_iter, shared_basis
        self.basis = RowBasis(X)
        self.solved: dict[float, PathFit] = {}

    def scorer(self, Xtr: np.ndarray, ytr: np.ndarray, Xva: np.ndarray, yva: np.ndarray) -> Scorer:
        classes, codes = np.unique(ytr, return_inverse=True)

        def score(Cs: list[float]) -> dict[float, float]:
            new = sorted(C for C in Cs if C not in self.solved)
            if new:
                smaller = [C for C in self.solved if new[0] > C]
                start = (self.solved[max(smaller)].coef, self.solved[max(smaller)].intercept) if smaller else None
                basis = self.basis if self.shared_basis else None  # None: the span of the sweep's own rows
                fits = logistic_path(
                    Xtr, codes, len(classes), new, gap_tol=_SWEEP_GAP, max_iter=self.max_iter, start=start, basis=basis
                )
                self.solved.update(zip(new, fits))
            return {float(C): float((_predict(self.solved[C], classes, Xva) == yva).mean()) for C in Cs}

        return score

    def final(self, C: float, tol: float) -> LogisticRegression:
        """scikit-learn's ``LogisticRegression`` at ``C`` on all the rows, its weights solved on the path."""
        from sklearn.linear_model import LogisticRegression

        classes, codes = np.unique(self.y, return_inverse=True)
        swept = self.solved.get(C)
        same_classes = swept is not None and swept.coef.shape[0] == (1 if len(classes) == 2 else len(classes))
        start = (swept.coef, swept.intercept) if swept is not None and same_classes else None
        (fit,) = logistic_path(self.X, codes, len(classes), [C], max_iter=self.max_iter, start=start, basis=self.basis)
        model = LogisticRegression(C=C, max_iter=self.max_iter, tol=tol)
        model.classes_, model.coef_, model.intercept_ = classes, fit.coef, fit.intercept
        model.n_features_in_, model.n_iter_ = self.X.shape[1], np.array([fit.n_iter], dtype=np.int32)
        return model


def _predict(fit: PathFit, classes: np.ndarray, X: np.ndarray) -> np.ndarray:
    return np.asarray(classes[fit.predict_codes(X)])
