"""Choosing a recipe without peeking: the choice among a recipe search's runs, by training-side scores only.

A recipe is a row of a results table: features (networks, taps, views), normalisation,
probe and, on a domain shift, adaptation. A recipe search (``cnnfeat benchmark --suite best``,
or ``--choose-recipe`` with any grid) runs every candidate on every split, and
:func:`choose` then picks one per split (dataset, protocol, seed) and reports that
candidate's test accuracy as the row :data:`CHOSEN_ROW`:

1. Features, normalisation and probe: by *cross-validation* accuracy on the training images
   (stratified 5-fold, seed 0, the same folds for every candidate), each candidate at the C (or k)
   its own validation split chose. A single 20 % validation split is too small to rank recipes a
   point apart (on 300 training images, one image is a third of a point). Among the candidates
   within one standard error of the best score (the one-standard-error rule of Breiman et al.
   1984; the binomial error of the best's accuracy over its training images), the cheapest is
   chosen: a difference the training images cannot resolve is not worth paying for. On a domain
   shift these are the labelled source images, and the runs without adaptation are compared (an
   adapted run's probe also sees pseudo-labelled target rows, which would flatter it). Where the
   folds cannot be made (one image of a class), the best validation accuracy stands in.
2. On a domain shift, the adaptation, among the chosen features' runs: the highest
   *reverse validation* accuracy (Zhong et al. 2010; used to select DANN's
   hyper-parameters, Ganin et al. 2016). The recipe is fitted on 80 % of the labelled source
   and the unlabelled target and labels the target; it is then fitted the other way round
   (the pseudo-labelled target as its source, the source images unlabelled) and scored on the
   20 % of the source it never saw. No target label is read.

Both scores are computed after the search, for the runs that need them (five fits at a
fixed C per candidate; two fits per adaptation of the chosen features), so a search
resumed with ``--skip-existing`` computes only what is missing. A split whose scores are not
all there (an interrupted search) has no chosen row until then.

Cheapest means what the recipe costs on each new image: the fewest extraction seconds per 1,000
images (as measured when the features were computed) where every candidate's are known, else the
fewest networks and the narrowest features. Candidates that cost the same (the same network with
another probe or normalisation) go by their score, then by the row's name, which puts a run
without adaptation before the adapted ones.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cnnfeat.runner.records import FeatureProvenance, Record

__all__ = [
    "CHOSEN_ROW",
    "choices",
    "choose",
    "cross_validation",
    "needing_cross_validation",
    "needing_reverse_validation",
    "reverse_validation",
    "validation_score",
]

CHOSEN_ROW = "recipe chosen on validation"

#: (training rows, their labels, unlabelled rows, which rows are the source domain) -> a fitted classifier
FitRows = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], Any]


def validation_score(model: Any) -> float | None:
    """The validation accuracy at the C or k a fitted probe chose (inside any pipeline or adaptation)."""
    from cnnfeat.probes import innermost

    model = innermost(model, "val_scores_")
    if model is None or not model.val_scores_:
        return None
    chosen = model.C_ if hasattr(model, "C_") else model.k_
    return float(model.val_scores_[chosen])


def cross_validation(model: Any, choice: dict[str, Any], X: np.ndarray, y: np.ndarray, *, n_splits: int = 5) -> float | None:
    """Stratified k-fold accuracy of an unfitted probe (or pipeline ending in one) with its C or k fixed to ``choice``.

    The probe's parameters are set in place (``search="fixed"`` and ``C``, or ``ks``); the folds are
    seeded (0), so every candidate sees the same ones. None when a class has a single image.
    """
    from sklearn.model_selection import StratifiedKFold, cross_val_score

    inner = model
    while hasattr(inner, "steps"):
        inner = inner.steps[-1][1]
    if choice.get("k") is not None:
        inner.set_params(ks=(int(choice["k"]),))
    else:
        inner.set_params(search="fixed", C=float(choice["C"]))
    folds = min(n_splits, int(np.unique(y, return_counts=True)[1].min()))
    if folds < 2:
        return None
    return float(np.mean(cross_val_score(model, X, y, cv=StratifiedKFold(folds, shuffle=True, random_state=0))))


def reverse_validation(
    fit_rows: FitRows,
    X: np.ndarray,
    labels: np.ndarray,
    train: np.ndarray,
    unlabelled: np.ndarray,
    is_source: np.ndarray,
    *,
    val_size: float = 0.2,
    random_state: int = 0,
) -> float:
    """Reverse-validation accuracy of a domain-adaptation recipe: no target label is read.

    Parameters
    ----------
    fit_rows : callable
        ``fit_rows(rows, y, unlabelled, is_source)`` fits the recipe on ``X[rows]`` labelled ``y``
        plus the unlabelled ``X[unlabelled]``, with ``is_source`` (a mask over ``X``) naming the
        source domain, and returns the fitted classifier.
    X, labels : arrays
        All rows and their labels (only the labelled training rows' labels are read).
    train, unlabelled : arrays of row indices
        The labelled rows (source, and any labelled target) and the unlabelled target rows.
    is_source : boolean array over ``X``
        The source domain's rows.
    """
    from sklearn.model_selection import train_test_split

    source = train[is_source[train]]
    target_labelled = train[~is_source[train]]
    _, counts = np.unique(labels[source], return_counts=True)
    stratify = labels[source] if counts.min() >= 2 else None
    fit, held_out = train_test_split(source, test_size=val_size, random_state=random_state, stratify=stratify)
    forward = fit_rows(np.r_[fit, target_labelled], labels[np.r_[fit, target_labelled]], unlabelled, is_source)
    pseudo = forward.predict(X[unlabelled])
    # the other way round: the target (pseudo-labelled, and any labelled images) is the source now
    reversed_rows, reversed_labels = np.r_[unlabelled, target_labelled], np.r_[pseudo, labels[target_labelled]]
    if len(np.unique(reversed_labels)) < 2:  # the target got one label: the way back can only predict it
        return float(np.mean(labels[held_out] == reversed_labels[0]))
    backward = fit_rows(reversed_rows, reversed_labels, np.r_[fit, held_out], ~is_source)
    return float(np.mean(backward.predict(X[held_out]) == labels[held_out]))


def _split_of(record: Record) -> tuple[str, str, int]:
    return record.dataset, record.protocol, record.seed


def _recipe(record: Record) -> tuple[str, str, str]:
    """Features, normalisation and probe: what the first step chooses."""
    return record.method, record.normalize, record.probe


def _candidates(records: Sequence[Record]) -> dict[tuple[str, str, int], list[Record]]:
    """A recipe search's successful, scored runs, per split."""
    groups: dict[tuple[str, str, int], list[Record]] = {}
    for r in records:
        if r.ok and r.recipe_search and r.validation_score is not None:
            groups.setdefault(_split_of(r), []).append(r)
    return groups


def _top(records: list[Record], score: Callable[[Record], float | None]) -> Record:
    return min(records, key=lambda r: (-(score(r) or 0.0), r.n_features or 0, r.row))


def _is_shift(group: list[Record]) -> bool:
    return group[0].parsed_protocol.is_domain_shift


def _plain(group: list[Record]) -> list[Record]:
    """The runs step 1 compares: on a shift, those without adaptation (if any)."""
    plain = [r for r in group if r.adapt == "none"] if _is_shift(group) else group
    return plain or group


def _features_choice(group: list[Record]) -> Record:
    """Step 1: the cheapest candidate within one standard error of the best cross-validation score.

    Where a run has no cross-validation score, the best validation score (ties to the narrower features).
    """
    plain = _plain(group)
    if not all(r.cross_validation is not None for r in plain):
        return _top(plain, lambda r: r.validation_score)
    best = _top(plain, lambda r: r.cross_validation)
    return min(_within_one_se(plain, best), key=_cost_order(plain))


def _within_one_se(candidates: list[Record], best: Record) -> list[Record]:
    """The candidates whose cross-validation accuracy is at most one standard error below the best's.

    The standard error is the binomial one of the best's accuracy over its training images, each of
    which the folds test once: ``sqrt(p (1 - p) / n)``.
    """
    p, n = float(best.cross_validation or 0.0), max(int(best.n_train or 1), 1)
    floor = p - math.sqrt(p * (1 - p) / n)
    return [r for r in candidates if (r.cross_validation or 0.0) >= floor - 1e-12]


def _cost_order(candidates: list[Record]) -> Callable[[Record], tuple[Any, ...]]:
    """Cheapest first, by what the recipe costs on every new image: its features' extraction, in seconds per 1,000
    images where every candidate's is known, else fewer networks and narrower features. Among candidates that
    cost the same (one network's taps, another probe), the higher score; then the row's name."""
    from cnnfeat.tables import known_seconds_per_1k

    timed = {r.row: known_seconds_per_1k(r) for r in candidates}  # a split's candidates differ in their row
    if all(t is not None for t in timed.values()):
        return lambda r: (timed[r.row], -(r.cross_validation or 0.0), r.row)
    return lambda r: (len(r.features.networks), r.n_features or 0, -(r.cross_validation or 0.0), r.row)


def needing_cross_validation(records: Sequence[Record]) -> list[Record]:
    """The runs step 1 must score: each split's candidates not yet cross-validated (a probe's C or k known)."""
    wanted = []
    for group in _candidates(records).values():
        plain = _plain(group)
        if len({r.row for r in plain}) > 1:  # a choice to make
            wanted += [r for r in plain if not r.cross_validated and (r.C is not None or r.k is not None)]
    return wanted


def _family(group: list[Record], features: Record) -> list[Record]:
    """The chosen features' runs, one per adaptation."""
    return [r for r in group if _recipe(r) == _recipe(features)]


def _adaptations(group: list[Record], features: Record) -> list[Record]:
    """Step 2's candidates: on a shift, the chosen features' runs where they differ in adaptation (else none)."""
    family = _family(group, features)
    return family if _is_shift(group) and len({r.adapt for r in family}) > 1 else []


def _best(group: list[Record]) -> Record | None:
    """The chosen run; None while the chosen features' adaptations are not all scored (an unfinished search)."""
    features = _features_choice(group)
    adaptations = _adaptations(group, features)
    if not adaptations:
        return features
    scored = [r for r in adaptations if r.reverse_validation is not None]
    return _top(scored, lambda r: r.reverse_validation) if len(scored) == len(adaptations) else None


def needing_reverse_validation(records: Sequence[Record]) -> list[Record]:
    """The runs step 2 must score: on each shift, the chosen features' runs, where they differ in adaptation."""
    wanted = []
    for group in _candidates(records).values():
        wanted += [r for r in _adaptations(group, _features_choice(group)) if r.reverse_validation is None]
    return wanted


def choose(records: Sequence[Record]) -> list[Record]:
    """One record per split of a recipe search: the chosen candidate's, under the row :data:`CHOSEN_ROW`.

    Examples
    --------
    >>> from cnnfeat.runner import Record
    >>> runs = [Record(recipe_search=True, dataset="d", protocol="kfold:5", method=m, probe="logreg", row=m,
    ...                validation_score=s, accuracy=a) for m, s, a in [("a", 0.9, 0.8), ("b", 0.7, 0.95)]]
    >>> [(r.row, r.chosen, r.accuracy, r.candidates) for r in choose(runs)]
    [('recipe chosen on validation', 'a', 0.8, 2)]
    """
    chosen = []
    for group in _candidates(records).values():
        if len({r.row for r in group}) < 2:
            continue
        best = _best(group)
        if best is None:
            continue
        # the search's cost is every candidate's: each probe fitted and scored, each network's features extracted
        networks = {p.fingerprint: p for r in group for p in r.features.networks}
        seconds = sum(
            t or 0.0 for r in group for t in (r.probe_seconds, r.cross_validation_seconds, r.reverse_validation_seconds)
        )
        chosen.append(
            dataclasses.replace(
                best,
                probe_seconds=seconds,
                features=FeatureProvenance(parts=list(networks.values())),
                row=CHOSEN_ROW,
                chosen=best.row,
                candidates=len(group),
            )
        )
    return chosen


def choices(records: Sequence[Record]) -> list[dict[str, Any]]:
    """What a recipe search chose on each split, and the scores it chose by (``recipes.json``'s entries)."""
    found = []
    for (dataset, protocol, seed), group in _candidates(records).items():
        features = _features_choice(group)
        ranked = sorted(group, key=lambda r: -(r.validation_score or 0.0))
        best = _best(group)
        entry: dict[str, Any] = {
            "dataset": dataset,
            "protocol": protocol,
            "seed": seed,
            "chosen": None if best is None else best.row,
        }
        entry["validation_scores"] = {r.row: r.validation_score for r in ranked}
        crossed = sorted((r for r in group if r.cross_validation is not None), key=lambda r: -(r.cross_validation or 0.0))
        entry["cross_validation"] = {r.row: r.cross_validation for r in crossed}
        if _is_shift(group):
            entry["features_chosen_on_source_validation"] = features.row
            family = [r for r in _family(group, features) if r.reverse_validation is not None]
            entry["reverse_validation"] = {r.row: r.reverse_validation for r in family}
        found.append(entry)
    return found
