"""Comparison tables from run records: rows are methods, columns datasets or shifts, cells mean ± std over seeds.

Examples
--------
>>> from cnnfeat.runner import Record
>>> from cnnfeat.tables import pivot, to_markdown
>>> records = [
...     Record(row="hog + chi2 + svm", dataset="scene15", protocol="n_per_class:100", seed=s,
...            mean_per_class_accuracy=a, accuracy=a)
...     for s, a in enumerate([0.5, 0.6])
... ]
>>> print(to_markdown(pivot(records), footer=""))  # doctest: +NORMALIZE_WHITESPACE
| method | scene15 (100/class) |
|---|---|
| hog + chi2 + svm | 55.00 ± 7.07 |
<BLANKLINE>
scene15 (100/class): n_per_class (mean per class accuracy)
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from cnnfeat.runner import FINETUNE, Record

__all__ = [
    "COST_COLUMNS",
    "Table",
    "cell_costs",
    "extraction_seconds_per_1k",
    "footer_for",
    "known_seconds_per_1k",
    "pivot",
    "results_markdown",
    "row_letters",
    "run_cost",
    "to_csv",
    "to_json",
    "to_markdown",
]

COST_COLUMNS = ("extract s/1k img", "probe s/run")


@dataclass
class Table:
    """Cells ``(row, column) -> per-seed values`` (in %), with the rows and columns in first-seen order."""

    metric: str
    rows: list[str] = field(default_factory=list)
    columns: list[str] = field(default_factory=list)
    cells: dict[tuple[str, str], list[float]] = field(default_factory=dict)
    protocols: dict[str, set[str]] = field(default_factory=dict)
    failed: list[str] = field(default_factory=list)
    #: per row: extraction seconds per 1,000 images (None where features came from the cache), probe seconds per run
    extraction: dict[str, list[float | None]] = field(default_factory=dict)
    #: per row: for features read from the cache, the speed measured when they were computed (where recorded)
    earlier_extraction: dict[str, list[float]] = field(default_factory=dict)
    #: rows that train their own classifier on the images (fine-tuning): their extraction is part of their fit
    trained: set[str] = field(default_factory=set)
    probe_seconds: dict[str, list[float]] = field(default_factory=dict)

    def mean_std(self, row: str, column: str) -> tuple[float, float, int] | None:
        values = self.cells.get((row, column))
        if not values:
            return None
        arr = np.asarray(values)
        return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0, len(arr)


def pivot(records: Sequence[Record], metric: str = "auto") -> Table:
    """Group successful records by (row, column); ``metric="auto"`` uses each protocol's published metric.

    The runs of a recipe search add the row of the recipe chosen on validation (:func:`cnnfeat.recipes.choose`).
    """
    from cnnfeat.recipes import choose

    table = Table(metric=metric)
    protocols: dict[str, set[str]] = defaultdict(set)
    for record in [*records, *choose(records)]:
        if not record.ok:
            table.failed.append(f"{record.row} on {record.column} seed {record.seed}: {record.error}")
            continue
        protocol = record.parsed_protocol
        row, column = record.row, protocol.column(record.dataset)
        if row not in table.rows:
            table.rows.append(row)
        if column not in table.columns:
            table.columns.append(column)
        name = protocol.metric if metric == "auto" else metric
        table.cells.setdefault((row, column), []).append(100 * record.metric(name))
        table.extraction.setdefault(row, []).append(extraction_seconds_per_1k(record))
        if (earlier := earlier_seconds_per_1k(record)) is not None:
            table.earlier_extraction.setdefault(row, []).append(earlier)
        if record.probe == FINETUNE:
            table.trained.add(row)
        if record.probe_seconds is not None:
            table.probe_seconds.setdefault(row, []).append(float(record.probe_seconds))
        protocols[column].add(f"{protocol.name} ({name.replace('_', ' ')})")
    table.protocols = dict(protocols)
    return table


def row_letters(rows: list[str]) -> dict[str, str]:
    """Short labels for table rows, in their order: A, B, ... (the cost figure and report.html share them)."""
    return {row: chr(ord("A") + i) if i < 26 else str(i) for i, row in enumerate(rows)}


def run_cost(record: Record) -> tuple[float, bool]:
    """Seconds per 1,000 images of one run, and whether its feature extraction was measured in it.

    The extraction's seconds per 1,000 images plus the probe's fit and prediction (a fine-tuned
    classifier: its training) spread over the run's images. Where the features came from the
    cache only the probe's part is known, and the flag is False.
    """
    images = sum(n or 0 for n in (record.n_train, record.n_test, record.n_unlabelled)) or 1
    probe = 1000 * float(record.probe_seconds or 0.0) / images
    extraction = extraction_seconds_per_1k(record)
    if record.probe == FINETUNE:  # its maps are extracted inside its training, which probe_seconds holds
        return probe, True
    return probe + (extraction or 0.0), extraction is not None


def cell_costs(records: Sequence[Record]) -> tuple[dict[tuple[str, str], list[float]], dict[tuple[str, str], bool]]:
    """Per table cell ``(row, column)``: each successful run's :func:`run_cost`, and whether all were measured."""
    costs: dict[tuple[str, str], list[float]] = defaultdict(list)
    measured: dict[tuple[str, str], bool] = defaultdict(lambda: True)
    for r in records:
        if r.ok:
            cell = (r.row, r.parsed_protocol.column(r.dataset))
            cost, known = run_cost(r)
            costs[cell].append(cost)
            measured[cell] = measured[cell] and known
    return dict(costs), dict(measured)


def extraction_seconds_per_1k(record: Record) -> float | None:
    """Seconds a run's features took per 1,000 images, all networks together; None if any came from the cache."""
    parts = record.features.networks
    if not parts or any(not p.n_computed or p.n_cached for p in parts):
        return None
    return sum(1000 * float(p.seconds or 0.0) / int(p.n_computed or 1) for p in parts)


def earlier_seconds_per_1k(record: Record) -> float | None:
    """For features read from the cache: the seconds per 1,000 images measured when they were computed (all parts)."""
    values = [p.earlier_seconds_per_1k for p in record.features.networks]
    return float(sum(v for v in values if v is not None)) if values and all(v is not None for v in values) else None


def known_seconds_per_1k(record: Record) -> float | None:
    """A run's extraction seconds per 1,000 images: measured in the run, else when its cached features were computed."""
    measured = extraction_seconds_per_1k(record)
    return earlier_seconds_per_1k(record) if measured is None else measured


def footer_for(records: Sequence[Record]) -> str:
    """How the table was made: the command(s), protocols, seeds, versions and machine."""
    from cnnfeat.recipes import choose, dg_rule_of

    ok = [r for r in records if r.ok]
    if not ok:
        return ""
    first = ok[0]
    seeds = sorted({r.seed for r in ok})
    versions = ", ".join(f"{k} {v}" for k, v in first.versions.items())
    protocols = sorted({(r.split or r.protocol).split(", seed")[0] for r in ok})
    # several commands may write into one --out; resuming one (--skip-existing) does not change what it makes
    commands = list(dict.fromkeys(re.sub(r" --(no-)?skip-existing\b", "", r.command or "(library call)") for r in ok))
    lines = [("Command: " if len(commands) == 1 else "Commands: ") + "; ".join(f"`{c}`" for c in commands)]
    lines.append(f"Seeds: {', '.join(map(str, seeds))}.")
    lines.append(
        "Protocols: " + "; ".join(protocols[:8]) + (f"; ... ({len(protocols)} in all)" if len(protocols) > 8 else "") + "."
    )
    for name, data in {r.dataset: r.data for r in ok if r.data and r.data.digest}.items():
        lines.append(
            f"Data: {name} = {data.root} ({data.layout}, {data.images} images, {data.classes} classes, "
            f"content sha256 {(data.digest or '')[:16]})."
        )
    if chosen := choose(records):  # what a recipe search chose, and how often
        counts = Counter(r.chosen for r in chosen).most_common()
        each = ", ".join(f"`{row}` on {n}" for row, n in counts)
        lines.append(f"Recipe chosen on validation, of {len(chosen)} splits: {each}.")
        if selector := next((r.selector for r in ok if r.selector and r.parsed_protocol.is_domain_shift), None):
            lines.append(f"Adaptation chosen without target labels by the selector `{selector}` (`--select`).")
        if lodo := [r for r in ok if r.recipe_search and r.parsed_protocol.name == "lodo"]:  # DomainBed: name the rule
            lines.append(f"Model selection under leave-one-domain-out: {dg_rule_of(lodo)} validation (`--dg-validation`).")
    if runtimes := cnn_runtimes(ok):  # the last digits follow the runtime's last bits: say which, and how to ask for it
        line = f"CNN features computed by {' and '.join(runtimes)}"
        pinned = all(re.search(r"--runtime\b|[?&]runtime=", c) for c in commands)
        lines.append(line + ("." if pinned or len(runtimes) > 1 else f": `--runtime {runtimes[0]}` reproduces these digits."))
    lines.append(f"Versions: {versions}; machine: {first.machine or '?'}.")
    return "\n".join(lines)


def cnn_runtimes(records: Sequence[Record]) -> list[str]:
    """The runtimes that computed the records' CNN features (a store's configuration names none for Keras)."""
    found = {
        str(network.extractor.get("runtime", "keras"))
        for r in records
        for network in r.features.networks
        if network.extractor and network.extractor.get("extractor") == "cnn"
    }
    return sorted(found)


def results_markdown(records: Sequence[Record]) -> str:
    """The benchmark's ``table.md``: the pivot of ``records``, with an average column where 2+ shifts are columns."""
    table = pivot(records)
    shifts = sum("->" in c for c in table.columns) >= 2
    return to_markdown(table, footer=footer_for(records), average=shifts)


def _cell(table: Table, row: str, column: str, digits: int) -> str:
    found = table.mean_std(row, column)
    if found is None:
        return "—"
    mean, std, n = found
    return f"{mean:.{digits}f} ± {std:.{digits}f}" if n > 1 else f"{mean:.{digits}f}"


def to_markdown(table: Table, *, footer: str = "", digits: int = 2, average: bool = False) -> str:
    """A Markdown table; ``average=True`` adds the mean over columns (e.g. the six Office-31 shifts)."""
    costs = bool(table.probe_seconds)
    columns = table.columns + (["average"] if average else []) + (list(COST_COLUMNS) if costs else [])
    lines = ["| method | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for row in table.rows:
        cells = [_cell(table, row, c, digits) for c in table.columns]
        if average:
            means = [found[0] for c in table.columns if (found := table.mean_std(row, c)) is not None]
            cells.append(f"{np.mean(means):.{digits}f}" if len(means) == len(table.columns) else "—")
        if costs:
            extraction = table.extraction.get(row, [])
            known = [e for e in extraction if e is not None]
            earlier = table.earlier_extraction.get(row, [])
            if row in table.trained:
                cells.append("in s/run")  # the maps a fine-tuning run extracts are part of its training's time
            elif known:
                cells.append(f"{np.mean(known):.1f}")
            elif earlier:
                cells.append(f"{np.mean(earlier):.1f} (cached)")
            else:
                cells.append("cached" if extraction else "—")
            probe = table.probe_seconds.get(row)
            cells.append(f"{np.mean(probe):.1f}" if probe else "—")
        lines.append(f"| {row} | " + " | ".join(cells) + " |")
    text = "\n".join(lines)
    if table.protocols:
        kinds = {", ".join(sorted(p)) for p in table.protocols.values()}
        if len(kinds) == 1 and len(table.protocols) > 1:
            text += f"\n\nEvery column: {kinds.pop()}"
        else:
            text += "\n\n" + "; ".join(f"{c}: {', '.join(sorted(p))}" for c, p in table.protocols.items())
    if costs:
        text += (
            f"\n\n{COST_COLUMNS[0]}: feature extraction seconds per 1,000 images, where a run computed its features "
            f"(cached: read from the feature cache). {COST_COLUMNS[1]}: seconds per run to fit the probe (its C or k search "
            "included) and predict; for the chosen recipe, every candidate's, with their scoring."
        )
        if table.earlier_extraction:
            text += (
                " A number before (cached) is the extraction rate measured when those features were computed "
                "(start-up, such as building the network, excluded)."
            )
        if table.trained:
            text += " A fine-tuning row extracts its frozen part's maps as part of its training: in s/run."
    if table.failed:
        text += f"\n\n{len(table.failed)} run(s) failed: " + "; ".join(table.failed[:5])
    return text + (f"\n\n{footer}" if footer else "")


def to_csv(table: Table) -> str:
    """One line per (method, column): mean, std, number of seeds."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["method", "column", "mean", "std", "n_seeds"])
    for row in table.rows:
        for column in table.columns:
            found = table.mean_std(row, column)
            if found:
                writer.writerow([row, column, f"{found[0]:.4f}", f"{found[1]:.4f}", found[2]])
    return buffer.getvalue()


def to_json(table: Table) -> str:
    """The table as JSON, per-seed values included."""
    cells = [{"method": r, "column": c, "values": v} for (r, c), v in table.cells.items()]
    protocols = {c: sorted(p) for c, p in table.protocols.items()}
    return json.dumps({"metric": table.metric, "cells": cells, "protocols": protocols, "failed": table.failed}, indent=1)
