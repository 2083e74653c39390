"""The answer a results table gives, with its uncertainty: the best row, the rows it cannot be told from, the cheapest.

Per column (a dataset and protocol), rows are compared on the *same* splits: a paired t-test
over the splits' accuracies (scipy's ``ttest_rel``), two-sided at 5 %. Pairing is what the
benchmark's design allows, since every row of a column is run on the same seeded splits, and it
removes the split-to-split variation that dominates small data. A row whose difference from the
best is not significant is *not distinguishable* from it; the cheapest of those (seconds per
1,000 images, :func:`cnnfeat.tables.run_cost`) is the one to use. With one split there is no
test, and the answer says so.

Examples
--------
>>> from cnnfeat.runner import FeatureProvenance, Record
>>> extracted = FeatureProvenance(n_computed=100, n_cached=0, seconds=1.0)  # features computed in the run: costs compare
>>> records = [
...     Record(row=row, dataset="d", protocol="kfold:5", seed=s, accuracy=a, mean_per_class_accuracy=a,
...            n_train=80, n_test=20, probe_seconds=t, features=extracted)
...     for row, accs, t in (("big", [.90, .80, .85], 9.0), ("small", [.89, .79, .86], 1.0), ("hog", [.5, .4, .45], .5))
...     for s, a in enumerate(accs)
... ]
>>> (found,) = answer(records)
>>> found.best, found.indistinguishable, found.use
('big', ['small'], 'small')
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cnnfeat.runner import Record
from cnnfeat.tables import cell_costs, pivot

__all__ = ["ALPHA", "Answer", "answer", "describe"]

#: the significance level of the paired comparisons
ALPHA = 0.05


@dataclass
class Answer:
    """One column's answer: the best row, the rows not distinguishable from it, and the one to use."""

    column: str
    best: str
    mean: dict[str, float]
    std: dict[str, float]
    cost: dict[str, float]
    splits: int
    #: whether every compared row's cost includes its feature extraction (not read from the cache)
    costs_comparable: bool = True
    indistinguishable: list[str] = field(default_factory=list)
    p_values: dict[str, float] = field(default_factory=dict)
    use: str = ""
    finetune: str = ""


def _per_seed(records: Sequence[Record]) -> dict[str, dict[str, dict[int, float]]]:
    """``column -> row -> seed -> accuracy %`` (each protocol's metric), in one pass over the records."""
    found: dict[str, dict[str, dict[int, float]]] = {}
    for r in records:
        if r.ok:
            protocol = r.parsed_protocol
            column = found.setdefault(protocol.column(r.dataset), {})
            column.setdefault(r.row, {})[r.seed] = 100 * r.metric(protocol.metric)
    return found


def answer(records: Sequence[Record]) -> list[Answer]:
    """The answer of every column of the records' table (see the module's description)."""
    from scipy.stats import ttest_rel

    table = pivot([r for r in records if not r.recipe_search] or records)
    per_seed = _per_seed(records)
    costs, measured_cells = cell_costs(records)
    found = []
    for column in table.columns:
        values = per_seed.get(column, {})
        rows = [row for row in table.rows if row in values]
        if not rows:
            continue
        mean = {row: float(np.mean(list(values[row].values()))) for row in rows}
        std = {row: float(np.std(list(values[row].values()), ddof=1)) if len(values[row]) > 1 else 0.0 for row in rows}
        cost = {row: float(np.mean(costs[(row, column)])) for row in rows if (row, column) in costs}
        measured = all(measured_cells.get((row, column), True) for row in rows)
        best = max(rows, key=lambda row: (mean[row], -cost.get(row, 0.0)))
        result = Answer(column, best, mean, std, cost, splits=len(values[best]), costs_comparable=measured)
        for row in rows:
            if row == best:
                continue
            shared = sorted(set(values[row]) & set(values[best]))
            if len(shared) < 2:
                continue
            a, b = np.array([values[best][s] for s in shared]), np.array([values[row][s] for s in shared])
            p = 1.0 if np.allclose(a, b) else float(ttest_rel(a, b).pvalue)
            result.p_values[row] = p
            if p >= ALPHA:
                result.indistinguishable.append(row)
        candidates = [best, *result.indistinguishable]
        # costs compare only when each includes its extraction: features read from a cache cost the probe alone
        result.use = min(candidates, key=lambda row: (cost.get(row, float("inf")), -mean[row])) if measured else best
        result.finetune = _finetune_verdict(rows, values, mean, cost)
        found.append(result)
    return found


def _finetune_verdict(
    rows: list[str], values: dict[str, dict[int, float]], mean: dict[str, float], cost: dict[str, float]
) -> str:
    """Whether the best fine-tuned row beat the best frozen one beyond noise, and at what cost."""
    from scipy.stats import ttest_rel

    tuned = [row for row in rows if row.startswith("finetune:")]
    frozen = [row for row in rows if not row.startswith("finetune:")]
    if not tuned or not frozen:
        return ""
    t, f = max(tuned, key=mean.__getitem__), max(frozen, key=mean.__getitem__)
    shared = sorted(set(values[t]) & set(values[f]))
    gap = mean[t] - mean[f]
    times = f"{cost[t] / cost[f]:.1f}× the cost" if cost.get(f) else "its cost"
    if len(shared) < 2:
        return f"fine-tuning {gap:+.2f} points against the frozen features at {times}, on one split (no test)"
    p = float(ttest_rel([values[t][s] for s in shared], [values[f][s] for s in shared]).pvalue)
    beyond = "beyond noise" if p < ALPHA and gap > 0 else "below them beyond noise" if p < ALPHA else "within noise"
    return f"fine-tuning {gap:+.2f} points against the best frozen features ({beyond}, paired p = {p:.2f}) at {times}"


def describe(found: Answer, labels: dict[str, str] | None = None) -> str:
    """The answer in a sentence, e.g. "use A: 84.30 ± 1.50, not distinguishable from B (84.90) at a third of the cost"."""
    name = (labels or {}).get
    use, best = found.use, found.best
    head = f"{found.column}: use {name(use, use)}: {found.mean[use]:.2f} ± {found.std[use]:.2f}"
    if found.splits < 2:
        return head + " (one split: no test of the differences)"
    if use != best:
        ratio = found.cost.get(use, 0) / found.cost[best] if found.cost.get(best) else 0
        at = f", at {ratio:.2g}× its cost" if ratio else ""
        head += f", not distinguishable from the best, {name(best, best)} ({found.mean[best]:.2f}{at})"
    else:
        others = [name(row, row) for row in found.indistinguishable]
        head += ", the best" + (f"; not distinguishable from it: {', '.join(others)}" if others else ", ahead of every other row")
        if others and not found.costs_comparable:
            head += " (costs not compared: some features came from the cache)"
    return head + f" (paired t-test over {found.splits} splits, 5 %)"
