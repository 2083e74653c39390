"""Choosing an adaptation without target labels: every selector's score, read without a target label."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from cnnfeat.adaptation import CORAL, SelectivePseudoLabeling
from cnnfeat.selection import DEFAULT_SELECTOR, SELECTORS, selection_scores, target_clusters
from tests.support import translated_domains

X, y, is_source = translated_domains(1)
TRAIN, UNLABELLED = np.flatnonzero(is_source), np.flatnonzero(~is_source)


def _fit_rows(make):
    def fit(rows, labels, unlabelled, source):
        model = make()
        if not hasattr(model, "adapted_rows"):  # no adaptation: the labelled rows only
            return model.fit(X[rows], labels)
        both = np.r_[rows, unlabelled]
        marked = np.r_[labels, -np.ones(len(unlabelled), int)]
        return model.fit(X[both], marked, domain=np.where(source[both], "source", "target"))

    return fit


CANDIDATES = {
    "none": _fit_rows(lambda: LogisticRegression(max_iter=2000)),
    "coral": _fit_rows(lambda: CORAL(LogisticRegression(max_iter=2000))),
    "spl": _fit_rows(lambda: SelectivePseudoLabeling(n_components=5)),
}


def _scores(name: str, labels: np.ndarray = y) -> dict[str, float | None]:
    return selection_scores(CANDIDATES[name], X, labels, TRAIN, UNLABELLED, is_source)


def test_every_selector_scores_every_candidate_and_reads_no_target_label() -> None:
    hidden = y.copy()
    hidden[UNLABELLED] = -7  # a read of a target label would change a score
    for name in CANDIDATES:
        scores = _scores(name, hidden)
        assert set(scores) == set(SELECTORS) and DEFAULT_SELECTOR in scores
        assert scores == _scores(name), name  # the same with the labels there to read
        assert all(v is None or np.isfinite(v) for v in scores.values())


def test_the_clusters_selector_ranks_the_adaptations_by_their_target_accuracy() -> None:
    """On a translated target, SPL is right, source-only is wrong: the target's clusters tell them apart."""
    accuracy = {
        name: float(np.mean(fit(TRAIN, y[TRAIN], UNLABELLED, is_source).predict(X[UNLABELLED]) == y[UNLABELLED]))
        for name, fit in CANDIDATES.items()
    }
    clusters = {name: _scores(name)["clusters"] for name in CANDIDATES}
    assert accuracy["spl"] > 0.95 and accuracy["none"] < 0.8, accuracy
    assert max(clusters, key=clusters.__getitem__) == "spl" and clusters["spl"] > clusters["none"] + 0.2, clusters


def test_reverse_validation_cannot_see_a_plain_linear_probes_errors() -> None:
    """Its known blind spot, kept in view: labels made by a linear model are learned back by one."""
    assert _scores("none")["reverse"] > 0.95


def test_a_collapsed_labelling_scores_low_on_clusters() -> None:
    from sklearn.dummy import DummyClassifier

    constant = _fit_rows(lambda: DummyClassifier(strategy="most_frequent"))
    scores = selection_scores(constant, X, y, TRAIN, UNLABELLED, is_source, selectors=["clusters", "reverse"])
    assert scores["clusters"] == pytest.approx(0.0) and scores["reverse"] < 0.5


def test_target_clusters_are_seeded() -> None:
    np.testing.assert_array_equal(target_clusters(X[UNLABELLED], 3), target_clusters(X[UNLABELLED].copy(), 3))
