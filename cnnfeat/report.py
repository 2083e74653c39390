"""A benchmark's output folder, made from its records: ``table.md``/``.csv``/``.json``, the figures, ``report.html``.

Bar charts and accuracy against cost per dataset, the few-shot curve when three or more shot counts were run, the
training curves of fine-tuned runs per dataset, and,
for a network probed at three or more taps, the accuracy per tap and t-SNE maps of its
earliest and latest tap (the maps the runs made: :mod:`cnnfeat.runner.embeddings`).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from cnnfeat.methods import Method
from cnnfeat.runner import Record

__all__ = ["write_report"]


def write_report(records: Sequence[Record], out: str | os.PathLike[str]) -> str:
    """Write the tables and figures of ``records`` into ``out``; returns the Markdown table.

    The runs of a recipe search add the chosen recipe's row, and ``recipes.json``: what was chosen
    on each split, and every candidate's score (:mod:`cnnfeat.recipes`). The figures come from the
    records and the maps the runs wrote (``embeddings/``): nothing is extracted here.
    """
    import json

    from cnnfeat.html_report import write_html
    from cnnfeat.recipes import choices
    from cnnfeat.runner import sort_records

    out = Path(out)
    records = sort_records(records)  # the order --tables-only rebuilds them in
    if chosen := choices(records):
        (out / "recipes.json").write_text(json.dumps(chosen, indent=1) + "\n")
    markdown = _tables_and_charts(records, out)
    _layer_figures(records, out)
    write_html(records, out)  # last: it embeds every figure written above
    return markdown


def _layer_figures(records: Sequence[Record], out: Path) -> None:
    """Accuracy per tap, and t-SNE maps of the earliest and latest tap, where a network was probed at 3+ taps."""
    from cnnfeat import plots
    from cnnfeat.runner.embeddings import load_layer_maps, probed_at_several_taps

    # each network's taps in the order the suite listed them (early to late)
    curves = {group: record.features.taps for group, record in probed_at_several_taps(records).items()}
    for (dataset, backbone), taps in curves.items():
        mine = [r for r in records if r.dataset == dataset and _backbone_of(r.method) == backbone]
        plots.layer_curve(mine, out / f"layers_{dataset}_{backbone}.png", taps, title=f"{dataset}: probe accuracy per tap")
    for found in load_layer_maps(out):
        if (found.dataset, found.backbone) in curves:
            maps = {f"{found.backbone} {tap}": xy for tap, xy in found.maps.items()}
            title = f"{found.dataset}: t-SNE of an early and a late tap"
            plots.tsne_map(maps, found.labels, out / f"{found.name}.png", title=title)


def _backbone_of(method: str) -> str | None:
    parsed = Method.parse(method)
    return parsed.backbone if parsed.kind == "cnn" else None


def _tables_and_charts(records: Sequence[Record], out: Path) -> str:
    from cnnfeat import plots
    from cnnfeat.tables import pivot, results_markdown, to_csv, to_json

    table = pivot(records)
    markdown = results_markdown(records)
    (out / "table.md").write_text(markdown + "\n")
    (out / "table.csv").write_text(to_csv(table))
    (out / "table.json").write_text(to_json(table))
    ok = [r for r in records if r.ok]
    for dataset in sorted({r.dataset for r in ok}):
        mine = [r for r in ok if r.dataset == dataset]
        plots.bar_chart(mine, out / f"bars_{dataset}.png", title=dataset)
        plots.cost_chart(mine, out / f"cost_{dataset}.png", title=f"{dataset}: accuracy against cost")
    shots = {r.protocol for r in ok if r.parsed_protocol.shots is not None}
    if len(shots) >= 3:
        plots.few_shot_curve(ok, out / "few_shot.png", title="accuracy against training images per class")
    for dataset in sorted({r.dataset for r in ok if r.training}):
        trained = [r for r in ok if r.dataset == dataset and r.training]
        plots.training_curves(trained, out / f"training_{dataset}.png", title=f"{dataset}: fine-tuning, per epoch")
    return markdown
