"""Choosing an adaptation without target labels: the selectors, each a score of one fitted candidate.

A recipe search on a domain shift fits each candidate adaptation on 80 % of the labelled source
rows and the unlabelled target rows (the *forward* fit), then scores it with every selector; the
search keeps the candidate the chosen selector scores highest (``cnnfeat benchmark --select``).
No target label is read. The selectors (higher is better for each):

- ``reverse``: reverse validation (Zhong et al. 2010; skada's ``CircularValidation`` is the same
  idea): the forward fit labels the target, a second fit learns from those pseudo labels and is
  scored on the 20 % of the source that neither fit saw.
- ``entropy``: minus the mean entropy of the target predictions (Morerio et al. 2018),
  skada's ``PredictionEntropyScorer``.
- ``snd``: soft neighbourhood density of the target predictions (Saito et al. 2021), skada's
  ``SoftNeighborhoodDensity``.
- ``iwv``: importance-weighted accuracy on the held-out source rows (Sugiyama et al. 2007),
  weights from kernel density estimates, skada's ``ImportanceWeightedScorer``.
- ``dev``: minus deep embedded validation's control-variate risk on the held-out source rows,
  weighted by a domain classifier (You et al. 2019), skada's ``DeepEmbeddedValidation``.
- ``clusters``: how much the target predictions tell of the target's own clusters (the
  normalised mutual information between the predicted classes and a seeded k-means of the
  unit-normalised target rows, one cluster per class, the same clusters for every candidate).
  It tests the cluster assumption that self-labelling methods rely on, and it falls when their
  pseudo labels collapse onto a few classes. Written here: skada has no such scorer.

Every selector scores the rows as the candidate's classifier sees them: held-out source rows in
the source domain's view, target rows in the target's (for example CORAL's re-coloured source).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from cnnfeat.hints import ArrayLike, Classifier
from cnnfeat.registry import Registry

__all__ = ["DEFAULT_SELECTOR", "SELECTORS", "Evidence", "selection_scores", "target_clusters"]

#: (training rows, their labels, unlabelled rows, which rows are the source domain) -> a fitted classifier
FitRows = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], Classifier]


@dataclass(frozen=True)
class Evidence:
    """What the selectors see of one candidate's forward fit.

    ``classifier`` predicts rows already in the candidate's views: ``source_rows`` (held-out
    labelled source rows, labels ``source_codes`` as indices into ``classifier.classes_``) and
    ``target_rows`` (the unlabelled target rows); ``raw_target_rows`` are those before any adaptation
    (for scores that must not depend on a candidate's views). ``reverse`` is the reverse-validation accuracy.
    """

    classifier: Classifier
    source_rows: np.ndarray
    source_codes: np.ndarray
    target_rows: np.ndarray
    raw_target_rows: np.ndarray
    reverse: float


#: the selector with the lowest measured regret (docs/results.md, benchmarks/selector_regret.py)
DEFAULT_SELECTOR = "clusters"

#: selector name -> its score of a candidate (higher is better); ``--select`` accepts these names
SELECTORS = Registry[Callable[[Evidence], float]]("selector")


class _Rows(ClassifierMixin, BaseEstimator):
    """A fitted probe seen by skada's scorers: rows already mapped, classes as indices, metadata accepted."""

    def __init__(self, classifier: Classifier) -> None:
        self.classifier = classifier

    def __sklearn_is_fitted__(self) -> bool:
        return True

    def fit(self, X: ArrayLike, y: ArrayLike) -> _Rows:  # scikit-learn's scorers want an estimator; this one is fitted already
        return self

    @property
    def classes_(self) -> np.ndarray:
        return np.arange(len(self.classifier.classes_))

    def predict_proba(self, X: ArrayLike, sample_domain: ArrayLike | None = None, allow_source: bool = False) -> np.ndarray:
        return np.asarray(self.classifier.predict_proba(X))

    def predict(self, X: ArrayLike, sample_domain: ArrayLike | None = None, allow_source: bool = False) -> np.ndarray:
        return np.asarray(self.predict_proba(X).argmax(axis=1))

    def score(self, X: ArrayLike, y: ArrayLike, sample_weight: ArrayLike | None = None, **metadata: Any) -> float:
        from sklearn.metrics import accuracy_score

        return float(accuracy_score(y, self.predict(X), sample_weight=sample_weight))


def _skada_score(scorer_name: str, evidence: Evidence, **params: Any) -> float:
    """The value of skada's scorer ``scorer_name`` (built with ``params``) for the evidence."""
    import sklearn
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    from cnnfeat.adaptation.mapping import skada

    metrics = skada().metrics  # imported without its side effects
    X = np.r_[evidence.source_rows, evidence.target_rows]
    y = np.r_[evidence.source_codes, np.full(len(evidence.target_rows), -1)]
    domains = np.r_[np.ones(len(evidence.source_rows), int), np.full(len(evidence.target_rows), -2)]
    with sklearn.config_context(enable_metadata_routing=True):  # skada's scorers are built and called with routing on
        scorer = getattr(metrics, scorer_name)(**params)
        rows = _Rows(evidence.classifier).set_score_request(sample_weight=True)
        rows.set_predict_proba_request(sample_domain=True, allow_source=True)
        # deep embedded validation reads the rows' features from the pipeline's last transformer: the rows themselves
        estimator = (
            Pipeline([("rows", FunctionTransformer()), ("probe", rows)]) if scorer_name == "DeepEmbeddedValidation" else rows
        )
        return float(scorer(estimator, X, y, sample_domain=domains))


def _reverse(evidence: Evidence) -> float:
    return evidence.reverse


def target_clusters(rows: np.ndarray, n_clusters: int) -> np.ndarray:
    """A seeded k-means of the unit-normalised rows: the same clusters for every candidate of a split."""
    from sklearn.cluster import KMeans

    from cnnfeat.normalize import unit_rows

    return np.asarray(KMeans(n_clusters=n_clusters, n_init=4, random_state=0).fit_predict(unit_rows(np.asarray(rows, float))))


def _clusters(evidence: Evidence) -> float:
    from sklearn.metrics import normalized_mutual_info_score

    predicted = np.asarray(evidence.classifier.predict(evidence.target_rows))
    clusters = target_clusters(evidence.raw_target_rows, len(evidence.classifier.classes_))
    return float(normalized_mutual_info_score(clusters, predicted))


SELECTORS.add("reverse", _reverse, help="reverse validation: pseudo-label the target, learn back, score on held-out source")
SELECTORS.add("clusters", _clusters, help="agreement of the target predictions with the target's k-means clusters")
SELECTORS.add(
    "entropy",
    lambda evidence: _skada_score("PredictionEntropyScorer", evidence),
    help="the target predictions' confidence (minus their mean entropy; skada)",
)
SELECTORS.add(
    "snd",
    lambda evidence: _skada_score("SoftNeighborhoodDensity", evidence),
    help="soft neighbourhood density of the target predictions (skada)",
)
SELECTORS.add(
    "iwv",
    lambda evidence: _skada_score("ImportanceWeightedScorer", evidence),
    help="importance-weighted accuracy on held-out source rows (skada)",
)
SELECTORS.add(
    "dev",
    lambda evidence: _skada_score("DeepEmbeddedValidation", evidence, random_state=0),
    help="deep embedded validation: domain-weighted held-out source risk (skada)",
)


def _held_out(labels: np.ndarray, source: np.ndarray, val_size: float, random_state: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.model_selection import train_test_split

    _, counts = np.unique(labels[source], return_counts=True)
    stratify = labels[source] if counts.min() >= 2 else None
    fit, held_out = train_test_split(source, test_size=val_size, random_state=random_state, stratify=stratify)
    return np.asarray(fit), np.asarray(held_out)


def _unwrapped(model: Classifier, X: np.ndarray) -> tuple[Classifier, np.ndarray]:
    """A pipeline's last step and the rows as it receives them (its normalisation steps applied)."""
    while hasattr(model, "steps"):
        for _, step in model.steps[:-1]:
            X = step.transform(X)
        model = model.steps[-1][1]
    return model, X


def _views(model: Classifier, X: np.ndarray, *, source: bool) -> tuple[np.ndarray, Classifier]:
    """Rows as the model's final classifier sees them, and that classifier."""
    model, X = _unwrapped(model, X)
    if hasattr(model, "adapted_rows"):
        return model.adapted_rows(X, source=source), model.estimator_
    return X, model


def selection_scores(
    fit_rows: FitRows,
    X: np.ndarray,
    labels: np.ndarray,
    train: np.ndarray,
    unlabelled: np.ndarray,
    is_source: np.ndarray,
    *,
    selectors: list[str] | None = None,
    val_size: float = 0.2,
    random_state: int = 0,
) -> dict[str, float | None]:
    """Every selector's score of one candidate (see the module's text); no target label is read.

    Parameters
    ----------
    fit_rows : callable
        ``fit_rows(rows, y, unlabelled, is_source)`` fits the candidate on ``X[rows]`` labelled ``y``
        plus the unlabelled ``X[unlabelled]``, with ``is_source`` (a mask over ``X``) naming the
        source domain, and returns the fitted classifier.
    X, labels : arrays
        All rows and their labels (only the labelled training rows' labels are read).
    train, unlabelled : arrays of row indices
        The labelled rows (source, and any labelled target) and the unlabelled target rows.
    is_source : boolean array over ``X``
        The source domain's rows.
    selectors : list of str, optional
        The selectors to compute (default: all of :data:`SELECTORS`).
    """
    source = train[is_source[train]]
    target_labelled = train[~is_source[train]]
    fit, held_out = _held_out(labels, source, val_size, random_state)
    forward = fit_rows(np.r_[fit, target_labelled], labels[np.r_[fit, target_labelled]], unlabelled, is_source)
    pseudo = forward.predict(X[unlabelled])
    # the other way round: the target (pseudo-labelled, and any labelled images) is the source now
    reversed_rows, reversed_labels = np.r_[unlabelled, target_labelled], np.r_[pseudo, labels[target_labelled]]
    if len(np.unique(reversed_labels)) < 2:  # the target got one label: the way back can only predict it
        reverse = float(np.mean(labels[held_out] == reversed_labels[0]))
    else:
        backward = fit_rows(reversed_rows, reversed_labels, np.r_[fit, held_out], ~is_source)
        reverse = float(np.mean(backward.predict(X[held_out]) == labels[held_out]))
    source_rows, classifier = _views(forward, X[held_out], source=True)
    target_rows, _ = _views(forward, X[unlabelled], source=False)
    classes = list(classifier.classes_)
    known = np.isin(labels[held_out], classes)  # a class the forward fit never saw cannot be scored
    evidence = Evidence(
        classifier=classifier,
        source_rows=np.asarray(source_rows)[known],
        source_codes=np.array([classes.index(c) for c in labels[held_out][known]], dtype=int),
        target_rows=np.asarray(target_rows),
        reverse=reverse,
        raw_target_rows=_unwrapped(forward, X[unlabelled])[1],
    )
    scores: dict[str, float | None] = {}
    for name in selectors or list(SELECTORS):
        value = SELECTORS.get(name)(evidence)
        scores[name] = value if math.isfinite(value) else None  # a degenerate score ranks nothing
    return scores
