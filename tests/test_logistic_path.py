"""The path solver against scikit-learn's LogisticRegression: same objective, same optimum, same choices."""

from __future__ import annotations

import json
import warnings
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest
from scipy.special import logsumexp
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression

from cnnfeat.logistic_path import RowBasis, logistic_path
from cnnfeat.probes import SweptLinearClassifier
from cnnfeat.runner import RunSpec
from cnnfeat.runner.spec import LEGACY_SOLVER

RESULTS = Path(__file__).resolve().parents[1] / "results"


def _objective(coef: np.ndarray, intercept: np.ndarray, X: np.ndarray, codes: np.ndarray, C: float) -> float:
    """scikit-learn's objective times C * n: C * sum of log losses + ||W||^2 / 2 (binomial for one row of weights)."""
    if coef.shape[0] == 1:
        margin = (X @ coef[0] + intercept[0]) * (2 * codes - 1)
        return float(C * np.logaddexp(0, -margin).sum() + 0.5 * np.sum(coef * coef))
    logits = X @ coef.T + intercept
    return float(C * np.sum(logsumexp(logits, axis=1) - logits[np.arange(len(X)), codes]) + 0.5 * np.sum(coef * coef))


def _sklearn(X: np.ndarray, codes: np.ndarray, C: float, tol: float = 1e-10) -> LogisticRegression:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return LogisticRegression(C=C, tol=tol, max_iter=50_000).fit(X, codes)


@pytest.fixture(scope="module")
def features() -> tuple[np.ndarray, np.ndarray]:
    """Correlated, non-negative, separable-at-weak-penalty rows, like pooled CNN features: 240 x 60, 6 classes."""
    rng = np.random.default_rng(0)
    codes = np.repeat(np.arange(6), 40)
    mixing = rng.normal(size=(20, 60)) * np.linspace(3, 0.1, 20)[:, None]
    X = np.maximum(rng.normal(size=(6, 20))[codes] + rng.normal(size=(240, 20)), 0) @ mixing + rng.normal(size=(240, 60)) * 0.05
    return X, codes


@pytest.mark.parametrize("C", [1e-3, 0.1, 10.0])
def test_objective_equals_scikit_learns_at_tight_tolerance(features: tuple, C: float) -> None:
    X, codes = features
    (fit,) = logistic_path(X, codes, 6, [C])
    reference = _sklearn(X, codes, C)
    ours = _objective(fit.coef, fit.intercept, X, codes, C)
    theirs = _objective(reference.coef_, reference.intercept_, X, codes, C)
    assert abs(ours - theirs) <= 1e-6 * theirs
    assert fit.objective == pytest.approx(ours, rel=1e-9)  # the objective it reports is the objective of its weights
    assert fit.gap_bound <= 1e-7
    assert np.mean(np.argmax(X @ fit.coef.T + fit.intercept, axis=1) == reference.predict(X)) >= 0.99


def test_weak_penalties_are_solved_where_a_gradient_threshold_stops_at_once(features: tuple) -> None:
    """At large C scikit-learn's default tol (1e-4 on the mean loss' gradient) ends far from the optimum; the
    certificate does not: the path's objective is the tight reference's, and far below the default's."""
    X, codes = features
    C = 1e4
    (fit,) = logistic_path(X, codes, 6, [1.0, C])[1:]
    tight, default = _sklearn(X, codes, C), _sklearn(X, codes, C, tol=1e-4)
    ours = _objective(fit.coef, fit.intercept, X, codes, C)
    assert ours <= _objective(tight.coef_, tight.intercept_, X, codes, C) * (1 + 1e-6)
    assert ours < 0.9 * _objective(default.coef_, default.intercept_, X, codes, C)


def test_two_classes_follow_scikit_learns_binomial_model(features: tuple) -> None:
    X, codes = features
    binary = codes % 2
    for C in (0.01, 1.0):
        (fit,) = logistic_path(X, binary, 2, [C])
        reference = _sklearn(X, binary, C)
        assert fit.coef.shape == (1, X.shape[1]) and fit.intercept.shape == (1,)
        assert _objective(fit.coef, fit.intercept, X, binary, C) == pytest.approx(
            _objective(reference.coef_, reference.intercept_, X, binary, C), rel=1e-6
        )
        np.testing.assert_allclose(fit.coef, reference.coef_, atol=1e-3 * np.abs(reference.coef_).max())


def test_wide_rows_are_solved_in_their_span() -> None:
    rng = np.random.default_rng(1)
    X, codes = rng.normal(size=(40, 500)), np.repeat(np.arange(4), 10)
    X[:, :4] += 3 * np.eye(4)[codes]
    assert RowBasis(X).V.shape == (500, 39)  # 40 centred rows span 39 directions
    (fit,) = logistic_path(X, codes, 4, [0.5])
    reference = _sklearn(X, codes, 0.5)
    assert _objective(fit.coef, fit.intercept, X, codes, 0.5) == pytest.approx(
        _objective(reference.coef_, reference.intercept_, X, codes, 0.5), rel=1e-6
    )


def test_every_c_is_returned_in_the_order_asked_with_its_own_solution(features: tuple) -> None:
    X, codes = features
    Cs = [10.0, 1e-3, 1.0, 1e-3]
    fits = logistic_path(X, codes, 6, Cs)
    assert [f.C for f in fits] == Cs
    (alone,) = logistic_path(X, codes, 6, [1.0])  # from zero, not along the path: the same optimum
    assert fits[2].objective == pytest.approx(alone.objective, rel=2e-7)
    started = logistic_path(X, codes, 6, [1.0], start=(alone.coef, alone.intercept))[0]
    assert started.n_iter <= 1


def test_an_iteration_cap_is_reported_by_the_gap_bound(features: tuple) -> None:
    X, codes = features
    (fit,) = logistic_path(X, codes, 6, [100.0], max_iter=3)
    assert fit.n_iter == 3
    assert fit.gap_bound > 1e-7  # not certified: the bound says so


def test_rows_that_say_nothing_are_solved_at_once() -> None:
    """Constant features and balanced classes: zero weights are the optimum, certified without iterating."""
    fits = logistic_path(np.ones((30, 5)), np.repeat([0, 1, 2], 10), 3, [0.1, 10.0], max_iter=50)
    assert all(f.n_iter == 0 and f.gap_bound < 1e-12 for f in fits)
    assert all(np.abs(f.coef).max() == 0 for f in fits)


def test_the_sweep_chooses_scikit_learns_c_from_its_exact_validation_scores() -> None:
    """The path sweep and scikit-learn's (at a tight tolerance) score every C alike and choose the same C."""
    X, y = load_digits(return_X_y=True)
    rows = np.concatenate([np.flatnonzero(y == k)[:30] for k in range(10)])
    penalties = np.logspace(-3, 3, 7)
    path = SweptLinearClassifier(penalties=penalties).fit(X[rows], y[rows])
    sklearn = SweptLinearClassifier(penalties=penalties, solver="lbfgs", tol=1e-9, max_iter=20_000).fit(X[rows], y[rows])
    assert path.C_ == sklearn.C_
    assert path.val_scores_ == sklearn.val_scores_
    assert np.array_equal(path.predict(X), sklearn.predict(X))
    # weights within the gap bound of the optimum: probabilities agree to a few thousandths where the curvature is flat
    np.testing.assert_allclose(path.predict_proba(X), sklearn.predict_proba(X), atol=5e-3)
    assert path.estimator_.n_iter_.shape == (1,)


def test_records_made_before_the_solver_field_keep_their_keys() -> None:
    """A committed record (scikit-learn's solver, no ``solver`` field) has the key of its spec with solver lbfgs,
    so --skip-existing reuses it only for --solver lbfgs; the path solver's runs are new records."""
    record = json.loads(next((RESULTS / "scene15" / "records").glob("*.json")).read_text())
    assert "solver" not in record
    spec = RunSpec(**{f.name: record[f.name] for f in fields(RunSpec) if f.name in record}, solver=LEGACY_SOLVER)
    assert spec.key() == record["key"]
    assert RunSpec(**{**spec.__dict__, "solver": "path"}).key() != record["key"]


def test_a_dropout_sweep_on_wide_rows_is_solved_in_its_own_rows_span() -> None:
    """Dropout's masked copies of the sweep's rows are not copies of the final rows: the sweep needs its own span."""
    from sklearn.model_selection import train_test_split

    from cnnfeat.probes import _dropout_copies

    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(60, 400)), np.repeat(np.arange(3), 20)
    X[:, :3] += 2 * np.eye(3)[y]
    penalties = [1e-2, 1.0, 1e2]
    probe = SweptLinearClassifier(penalties=penalties, dropout=0.5, dropout_copies=3).fit(X, y)
    Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    Xd, yd = _dropout_copies(Xtr, ytr, 0.5, 3, 0)
    fits = logistic_path(Xd, yd, 3, [1 / p for p in penalties], gap_tol=1e-6)
    alone = {f.C: float(((Xva @ f.coef.T + f.intercept).argmax(axis=1) == yva).mean()) for f in fits}
    assert probe.val_scores_ == pytest.approx(alone)


def test_the_compact_lbfgs_product_is_the_two_loop_recursions() -> None:
    from cnnfeat.logistic_path import _inverse_hessian_product

    def two_loop(g: np.ndarray, steps: list[tuple[np.ndarray, np.ndarray]], D: np.ndarray) -> np.ndarray:
        q, alphas = g.copy(), []
        for s, y in reversed(steps):
            alphas.append(float(s @ q) / float(s @ y))
            q -= alphas[-1] * y
        s, y = steps[-1]
        q = q / D * (float(s @ y) / float(y @ (y / D)))
        for (s, y), alpha in zip(steps, reversed(alphas)):
            q += (alpha - float(y @ q) / float(s @ y)) * s
        return q

    rng = np.random.default_rng(0)
    p = 300
    H = rng.normal(size=(p, p))
    H = H @ H.T / p + np.diag(rng.uniform(0.5, 5, p))  # a convex quadratic's Hessian: every pair has s.y > 0
    steps = [(s, H @ s) for s in rng.normal(size=(7, p))]
    g, D = rng.normal(size=p), np.diag(H).copy()
    ours, theirs = _inverse_hessian_product(g, steps, D), two_loop(g, steps, D)
    assert np.allclose(ours, theirs, rtol=1e-9, atol=1e-12 * np.abs(theirs).max())
    assert np.array_equal(_inverse_hessian_product(g, [], D), g / D)
