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
2. On a domain shift, the adaptation, among the chosen features' runs: the highest score of the
   search's *selector* (``cnnfeat benchmark --select``; :mod:`cnnfeat.selection`), each
   candidate fitted on 80 % of the labelled source and the unlabelled target. No target label is
   read. Records made before selectors were named hold reverse validation's score (Zhong et al.
   2010) and are chosen by it.

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

from cnnfeat.hints import Classifier, JSONObject
from cnnfeat.registry import Registry
from cnnfeat.runner.records import FeatureProvenance, Record

__all__ = [
    "CHOSEN_ROW",
    "DG_RULES",
    "choices",
    "choose",
    "cross_validation",
    "dg_rule_of",
    "features_rule_choices",
    "needing_cross_validation",
    "needing_selection",
    "rule_choices",
    "selector_of",
    "validation_score",
]

CHOSEN_ROW = "recipe chosen on validation"


def validation_score(model: Classifier) -> float | None:
    """The validation accuracy at the C or k a fitted probe chose (inside any pipeline or adaptation)."""
    from cnnfeat.probes import innermost

    model = innermost(model, "val_scores_")
    if model is None or not model.val_scores_:
        return None
    chosen = model.C_ if hasattr(model, "C_") else model.k_
    return float(model.val_scores_[chosen])


def cross_validation(
    model: Classifier, choice: JSONObject, X: np.ndarray, y: np.ndarray, *, n_splits: int = 5, groups: np.ndarray | None = None
) -> float | None:
    """Stratified k-fold accuracy of an unfitted probe (or pipeline ending in one) with its C or k fixed to ``choice``.

    The probe's parameters are set in place (``search="fixed"`` and ``C``, or ``ks``); the folds are
    seeded (0), so every candidate sees the same ones. None when a class has a single image.
    With ``groups`` (each row's domain), one fold per group instead: each domain scored by the probe
    fitted on the others (leave-one-domain-out validation); None with fewer than two groups.
    """
    from sklearn.model_selection import LeaveOneGroupOut, StratifiedKFold, cross_val_score

    inner = model
    while hasattr(inner, "steps"):
        inner = inner.steps[-1][1]
    if choice.get("k") is not None:
        inner.set_params(ks=(int(choice["k"]),))
    else:
        inner.set_params(search="fixed", C=float(choice["C"]))
    if groups is not None:
        if len(np.unique(groups)) < 2:
            return None
        return float(np.mean(cross_val_score(model, X, y, groups=groups, cv=LeaveOneGroupOut())))
    folds = min(n_splits, int(np.unique(y, return_counts=True)[1].min()))
    if folds < 2:
        return None
    return float(np.mean(cross_val_score(model, X, y, cv=StratifiedKFold(folds, shuffle=True, random_state=0))))


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


#: how a leave-one-domain-out search chooses its features (DomainBed's names) -> the score a run is ranked by
DG_RULES = Registry[Callable[[Record], float | None]]("model-selection rule")
DG_RULES.add(
    "training-domain",
    lambda r: r.cross_validation,
    help="cross-validation on the pooled training domains",
)
DG_RULES.add(
    "leave-one-domain-out",
    lambda r: r.domain_validation,
    help="each training domain scored by the probe fitted on the others",
)


def dg_rule_of(group: Sequence[Record]) -> str:
    """The rule a leave-one-domain-out search's runs name (records made before rules were named: training-domain)."""
    return next((r.dg_validation for r in group if r.dg_validation), "training-domain")


def _is_lodo(group: Sequence[Record]) -> bool:
    return group[0].parsed_protocol.name == "lodo"


def _cv_score(group: Sequence[Record], rule: str | None = None) -> Callable[[Record], float | None]:
    """The score step 1 ranks a split's candidates by: under leave-one-domain-out, the rule's."""
    if _is_lodo(group):
        return DG_RULES.get(rule or dg_rule_of(group))
    return lambda r: r.cross_validation


def _features_choice(group: list[Record], rule: str | None = None) -> Record:
    """Step 1: the cheapest candidate within one standard error of the best cross-validation score.

    Where a run has no cross-validation score, the best validation score (ties to the narrower features).
    """
    plain = _plain(group)
    score = _cv_score(group, rule)
    if not all(score(r) is not None for r in plain):
        return _top(plain, lambda r: r.validation_score)
    best = _top(plain, score)
    return min(_within_one_se(plain, best, score), key=_cost_order(plain, score))


def _within_one_se(candidates: list[Record], best: Record, score: Callable[[Record], float | None]) -> list[Record]:
    """The candidates whose cross-validation accuracy is at most one standard error below the best's.

    The standard error is the binomial one of the best's accuracy over its training images, each of
    which the folds test once: ``sqrt(p (1 - p) / n)``.
    """
    p, n = float(score(best) or 0.0), max(int(best.n_train or 1), 1)
    floor = p - math.sqrt(p * (1 - p) / n)
    return [r for r in candidates if (score(r) or 0.0) >= floor - 1e-12]


def _cost_order(candidates: list[Record], score: Callable[[Record], float | None]) -> Callable[[Record], tuple[Any, ...]]:
    """Cheapest first, by what the recipe costs on every new image: its features' extraction, in seconds per 1,000
    images where every candidate's is known, else fewer networks and narrower features. Among candidates that
    cost the same (one network's taps, another probe), the higher score; then the row's name."""
    from cnnfeat.tables import known_seconds_per_1k

    timed = {r.row: known_seconds_per_1k(r) for r in candidates}  # a split's candidates differ in their row
    if all(t is not None for t in timed.values()):
        return lambda r: (timed[r.row], -(score(r) or 0.0), r.row)
    return lambda r: (len(r.features.networks), r.n_features or 0, -(score(r) or 0.0), r.row)


def needing_cross_validation(records: Sequence[Record]) -> list[Record]:
    """The runs step 1 must score: each split's candidates not yet cross-validated (a probe's C or k known)."""
    wanted = []
    for group in _candidates(records).values():
        plain = _plain(group)
        if len({r.row for r in plain}) > 1:  # a choice to make
            lodo = _is_lodo(group)  # both rules' scores, so that either can choose
            wanted += [
                r
                for r in plain
                if (not r.cross_validated or (lodo and r.domain_validation is None and not r.cross_validation_error))
                and (r.C is not None or r.k is not None)
            ]
    return wanted


def _family(group: list[Record], features: Record) -> list[Record]:
    """The chosen features' runs, one per adaptation."""
    return [r for r in group if _recipe(r) == _recipe(features)]


def _adaptations(group: list[Record], features: Record) -> list[Record]:
    """Step 2's candidates: on a shift, the chosen features' runs where they differ in adaptation (else none)."""
    family = _family(group, features)
    return family if _is_shift(group) and len({r.adapt for r in family}) > 1 else []


def selector_of(group: Sequence[Record]) -> str:
    """The selector a search's runs name (records made before selectors were named: reverse validation)."""
    return next((r.selector for r in group if r.selector), "reverse")


def _pending(record: Record, selector: str) -> bool:
    """Not scored yet: no score under ``selector``, no selection made, no error recorded."""
    return record.selection_score(selector) is None and record.selection is None and record.selection_error is None


def _best(group: list[Record]) -> Record | None:
    """The chosen run; None while the chosen features' adaptations are not all scored (an unfinished search)."""
    features = _features_choice(group)
    adaptations = _adaptations(group, features)
    if not adaptations:
        return features
    selector = selector_of(group)
    if any(_pending(r, selector) for r in adaptations):
        return None
    return _selected(adaptations, selector, features)


def _selected(family: list[Record], selector: str, fallback: Record) -> Record:
    """The run ``selector`` scores highest (``fallback`` where it could score none)."""
    scored = [r for r in family if r.selection_score(selector) is not None]
    return _top(scored, lambda r: r.selection_score(selector)) if scored else fallback


def needing_selection(records: Sequence[Record]) -> list[Record]:
    """The runs step 2 must score: on each shift, the chosen features' runs, where they differ in adaptation."""
    wanted = []
    for group in _candidates(records).values():
        selector = selector_of(group)
        wanted += [r for r in _adaptations(group, _features_choice(group)) if _pending(r, selector)]
    return wanted


@dataclasses.dataclass(frozen=True)
class RuleChoices:
    """What each rule would choose among one shift's adaptations of the chosen features: its target accuracies.

    ``by_selector`` maps a selector to the accuracy of the run it scores highest; ``fixed`` maps an
    adaptation to its own run's accuracy; ``oracle`` is the best of them (what test labels would choose).
    """

    dataset: str
    protocol: str
    seed: int
    oracle: float
    by_selector: dict[str, float]
    fixed: dict[str, float]


def rule_choices(records: Sequence[Record], selectors: Sequence[str]) -> list[RuleChoices]:
    """Per shift of a recipe search, every selector's and every fixed adaptation's choice (for their regret).

    Only the splits whose candidates are all scored by every selector in ``selectors`` are kept.
    """
    found = []
    for (dataset, protocol, seed), group in _candidates(records).items():
        family = _adaptations(group, _features_choice(group))
        if not family or any(_pending(r, s) for r in family for s in selectors):
            continue
        features = _features_choice(group)
        by_selector = {selector: _selected(family, selector, features).metric("accuracy") for selector in selectors}
        fixed = {r.adapt: r.metric("accuracy") for r in family}
        found.append(RuleChoices(dataset, protocol, seed, max(fixed.values()), by_selector, fixed))
    return found


def features_rule_choices(records: Sequence[Record]) -> list[RuleChoices]:
    """Per split of a leave-one-domain-out search, each of :data:`DG_RULES`'s choice of features (for their regret).

    Only the splits whose candidates hold both rules' scores are kept; the oracle is the best candidate.
    """
    found = []
    for (dataset, protocol, seed), group in _candidates(records).items():
        plain = _plain(group)
        if not _is_lodo(group) or any(r.cross_validation is None or r.domain_validation is None for r in plain):
            continue
        by_rule = {rule: _features_choice(group, rule).metric("accuracy") for rule in DG_RULES}
        found.append(RuleChoices(dataset, protocol, seed, max(r.metric("accuracy") for r in plain), by_rule, {}))
    return found


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
            t or 0.0
            for r in group
            for t in (r.probe_seconds, r.cross_validation_seconds, r.reverse_validation_seconds, r.selection_seconds)
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


def choices(records: Sequence[Record]) -> list[JSONObject]:
    """What a recipe search chose on each split, and the scores it chose by (``recipes.json``'s entries)."""
    found = []
    for (dataset, protocol, seed), group in _candidates(records).items():
        features = _features_choice(group)
        ranked = sorted(group, key=lambda r: -(r.validation_score or 0.0))
        best = _best(group)
        entry: JSONObject = {
            "dataset": dataset,
            "protocol": protocol,
            "seed": seed,
            "chosen": None if best is None else best.row,
        }
        entry["validation_scores"] = {r.row: r.validation_score for r in ranked}
        crossed = sorted((r for r in group if r.cross_validation is not None), key=lambda r: -(r.cross_validation or 0.0))
        entry["cross_validation"] = {r.row: r.cross_validation for r in crossed}
        if _is_lodo(group):
            entry["dg_validation"] = dg_rule_of(group)
            entry["domain_validation"] = {r.row: r.domain_validation for r in crossed if r.domain_validation is not None}
        if _is_shift(group):
            entry["features_chosen_on_source_validation"] = features.row
            selector = selector_of(group)
            family = _family(group, features)
            entry["selector"] = selector
            entry["adaptation_scores"] = {r.row: r.selection_score(selector) for r in family}
            if any(r.selection for r in family):
                entry["selection"] = {r.row: r.selection for r in family if r.selection}
        found.append(entry)
    return found
