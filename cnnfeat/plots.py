"""Figures from run records (PNG, matplotlib's Agg backend): bar charts, accuracy against cost, few-shot curves,
accuracy per layer, t-SNE.

Every function writes one file and returns its path.
"""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from cnnfeat.hints import ArrayLike
from cnnfeat.methods import Method
from cnnfeat.runner import Record
from cnnfeat.tables import cell_costs, pivot, row_letters, run_cost

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["bar_chart", "cost_chart", "few_shot_curve", "layer_curve", "pareto_front", "run_cost", "training_curves", "tsne_map"]


def _subplots(*args: Any, **kwargs: Any) -> tuple[Figure, Any]:  # axes: one, or an array of them
    """A figure and its axes drawn by Agg, without pyplot: the caller's matplotlib backend is left alone."""
    from matplotlib.figure import Figure

    figsize = kwargs.pop("figsize", None)
    fig = Figure(figsize=figsize)
    return fig, fig.subplots(*args, **kwargs)


def bar_chart(records: Sequence[Record], path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Grouped bars: one group per column (dataset or shift), one bar per method, std over seeds as error bars."""
    table = pivot(records)
    n_rows = max(len(table.rows), 1)
    width = 0.8 / n_rows
    fig, ax = _subplots(figsize=(max(6.0, 1.2 * len(table.columns) * max(1, n_rows / 2)) + 3.0, 4.2))
    x = np.arange(len(table.columns))
    for i, row in enumerate(table.rows):
        stats = [table.mean_std(row, c) for c in table.columns]
        means = [s[0] if s else np.nan for s in stats]
        stds = [s[1] if s else 0 for s in stats]
        ax.bar(x + (i - (n_rows - 1) / 2) * width, means, width, yerr=stds, capsize=2, label=row)
    ax.set_xticks(x, table.columns, rotation=20 if len(table.columns) > 4 else 0)
    ax.set_ylabel("accuracy (%), the protocol's metric")
    ax.set_ylim(0, 100)
    ax.set_title(title)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))
    ax.grid(axis="y", alpha=0.3)
    return _save(fig, path)


def pareto_front(points: list[tuple[float, float]]) -> list[int]:
    """Indices of the points ``(cost, accuracy)`` that no other point beats on both, cheapest first.

    >>> pareto_front([(1.0, 50.0), (2.0, 80.0), (3.0, 70.0), (4.0, 85.0)])
    [0, 1, 3]
    """
    order = sorted(range(len(points)), key=lambda i: (points[i][0], -points[i][1]))
    front: list[int] = []
    for i in order:
        if not front or points[i][1] > points[front[-1]][1]:
            front.append(i)
    return front


def cost_chart(records: Sequence[Record], path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Accuracy against seconds per 1,000 images (log scale), one point per table row and column, the Pareto front drawn.

    Error bars are the std over seeds, in both directions. Points are lettered, with the
    rows' full names in the key; a hollow point's features came from the cache, so its
    cost is the probe's alone.
    """
    table = pivot(records)
    costs, measured = cell_costs(records)
    cells = [
        (row, col)
        for row in table.rows
        for col in table.columns
        if table.mean_std(row, col) and np.mean(costs.get((row, col)) or 0) > 0
    ]
    points = [(float(np.mean(costs[c])), table.mean_std(*c)[0]) for c in cells]  # type: ignore[index]
    # the key goes below the plot: a long list of long names beside it would squeeze the plot to a sliver
    fig, ax = _subplots(figsize=(9.0, 4.6 + 0.17 * (len(table.rows) + 1)))
    letters = row_letters(table.rows)
    colours = {row: f"C{i % 10}" for i, row in enumerate(table.rows)}
    for cell, (cost, accuracy) in zip(cells, points):
        row, column = cell
        _, std, _ = table.mean_std(row, column)  # type: ignore[misc]
        face = colours[row] if measured[cell] else "white"
        ax.errorbar(
            cost,
            accuracy,
            yerr=std,
            xerr=float(np.std(costs[cell])),
            fmt="o",
            color=colours[row],
            mfc=face,
            capsize=2,
            label=f"{letters[row]}: {row}" + ("" if measured[cell] else " (features cached)"),
        )
        suffix = f" {column}" if len(table.columns) > 1 else ""
        ax.annotate(letters[row] + suffix, (cost, accuracy), textcoords="offset points", xytext=(6, 4), fontsize=8)
    for column in table.columns:
        mine = [i for i, c in enumerate(cells) if c[1] == column]
        front = [mine[j] for j in pareto_front([points[i] for i in mine])]
        if len(front) > 1:
            ax.plot(
                [points[i][0] for i in front],
                [points[i][1] for i in front],
                "--",
                color="grey",
                lw=1,
                label="Pareto front" if column == table.columns[0] else None,
            )
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if not cells:  # records without timings (e.g. written by hand)
        ax.text(0.5, 0.5, "no timings in these records", ha="center", transform=ax.transAxes)
        return _save(fig, path)
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel("seconds per 1,000 images: extraction + probe (log scale)")
    ax.set_ylabel("accuracy (%), the protocol's metric")
    ax.set_title(title)
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="upper left", bbox_to_anchor=(0.0, -0.14), frameon=False)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, path)


def few_shot_curve(records: Sequence[Record], path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Accuracy against training images per class (records of ``n_per_class:<k>`` protocols), one line per method."""
    curves: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        shots = r.parsed_protocol.shots if r.ok else None
        if shots is not None:
            curves[f"{r.dataset}: {r.row}"][shots].append(100 * r.metric("mean_per_class_accuracy"))
    fig, ax = _subplots(figsize=(6, 4.2))
    for label, points in curves.items():
        ks = sorted(points)
        means = np.array([np.mean(points[k]) for k in ks])
        stds = np.array([np.std(points[k]) for k in ks])
        ax.plot(ks, means, marker="o", label=label)
        ax.fill_between(ks, means - stds, means + stds, alpha=0.15)
    ax.set_xscale("log")
    return _finish(fig, ax, path, "training images per class", title)


def training_curves(records: Sequence[Record], path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Training and validation accuracy per epoch of fine-tuned runs (mean over runs), stages end to end.

    A dotted vertical line marks where the fine-tuning stage (the unfrozen blocks, at the
    lower learning rate) starts.
    """
    curves: dict[str, dict[str, list[list[float]]]] = defaultdict(lambda: defaultdict(list))
    starts: dict[str, int] = {}
    for r in records:
        history = r.training.history if r.ok and r.training else None
        if not history:
            continue
        for metric in ("accuracy", "val_accuracy"):
            values = [v for stage in ("head", "fine_tune") for v in history.get(stage, {}).get(metric, [])]
            if values:
                curves[r.row][metric].append(values)
        if "fine_tune" in history:
            starts[r.row] = len(history["head"].get("accuracy", []))
    fig, ax = _subplots(figsize=(7, 4.2))
    for i, (row, metrics) in enumerate(curves.items()):
        colour = f"C{i % 10}"
        for metric, style in (("accuracy", "--"), ("val_accuracy", "-")):
            runs = metrics.get(metric, [])
            if runs:
                length = min(len(v) for v in runs)  # early stopping may end runs at different epochs
                mean = 100 * np.mean([v[:length] for v in runs], axis=0)
                label = f"{row} ({'train' if metric == 'accuracy' else 'validation'})"
                ax.plot(np.arange(1, length + 1), mean, style, color=colour, label=label)
        if row in starts:
            ax.axvline(starts[row] + 0.5, color=colour, linestyle=":", alpha=0.6)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=6, loc="lower right")
    ax.grid(alpha=0.3)
    return _save(fig, path)


def layer_curve(records: Sequence[Record], path: str | os.PathLike[str], taps: list[str], *, title: str = "") -> Path:
    """Probe accuracy of each tap of a CNN, from early to late layers (``taps`` in network order)."""
    by_tap: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        method = Method.parse(r.method) if r.ok else None
        if method is not None and method.kind == "cnn" and method.tap in taps:
            by_tap[f"{r.dataset}, {method.backbone}, {r.probe}"][method.tap].append(100 * r.metric("mean_per_class_accuracy"))
    fig, ax = _subplots(figsize=(max(6.0, 0.7 * len(taps)), 4.2))
    for label, values in by_tap.items():
        present = [t for t in taps if t in values]
        x = [taps.index(t) for t in present]
        means = [np.mean(values[t]) for t in present]
        stds = [np.std(values[t]) for t in present]
        ax.errorbar(x, means, yerr=stds, marker="o", capsize=3, label=label)
    ax.set_xticks(range(len(taps)), taps, rotation=30, ha="right")
    return _finish(fig, ax, path, "tap (early → late)", title)


def tsne_map(maps: Mapping[str, ArrayLike], labels: ArrayLike, path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Side-by-side 2-D maps (e.g. t-SNE of an early and a late tap: :func:`cnnfeat.runner.embeddings.embed_2d`), by class."""
    from matplotlib import colormaps

    labels = np.asarray(labels)
    classes = sorted(set(labels.tolist()))
    colours = colormaps["tab20"].resampled(len(classes))
    fig, axes = _subplots(1, len(maps), figsize=(5.2 * len(maps), 5), squeeze=False)
    for ax, (name, xy) in zip(axes[0], maps.items()):
        xy = np.asarray(xy)
        for i, cls in enumerate(classes):
            mask = labels == cls
            ax.scatter(xy[mask, 0], xy[mask, 1], s=4, color=colours(i), label=str(cls))
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    axes[0][-1].legend(fontsize=6, markerscale=3, loc="center left", bbox_to_anchor=(1, 0.5))
    fig.suptitle(title)
    return _save(fig, path)


def _finish(fig: Figure, ax: Axes, path: str | os.PathLike[str], xlabel: str, title: str) -> Path:
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean per-class accuracy (%)")
    ax.set_title(title)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return _save(fig, path)


def _save(fig: Figure, path: str | os.PathLike[str]) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path
