"""A benchmark's output folder, made from its records: ``table.md``/``.csv``/``.json``, the figures, ``report.html``.

Bar charts and accuracy against cost per dataset, the few-shot curve when three or more shot counts were run, the
training curves of fine-tuned runs per dataset, and,
for a network probed at three or more taps, the accuracy per tap and t-SNE maps of its
earliest and latest tap (those read the features back from the cache the runs filled).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["write_report"]


def write_report(
    records: list[dict[str, Any]],
    out: str | os.PathLike[str],
    *,
    data_root: str | os.PathLike[str] | None = None,
    cache: str | os.PathLike[str] | None = None,
    loaded: Sequence[Any] = (),
) -> str:
    """Write the tables and figures of ``records`` into ``out``; returns the Markdown table.

    ``loaded`` holds datasets already loaded (a user's own), for the t-SNE maps. The runs
    of a recipe search add the chosen recipe's row, and ``recipes.json``: what was chosen
    on each split, and every candidate's score (:mod:`cnnfeat.recipes`).
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
    _layer_figures(
        records,
        out,
        Path(data_root) if data_root else None,
        Path(cache) if cache else None,
        {d.name: d for d in loaded},
    )
    write_html(records, out)  # last: it embeds every figure written above
    return markdown


def _layer_figures(
    records: list[dict[str, Any]], out: Path, data_root: Path | None, cache: Path | None, loaded: dict[str, Any]
) -> None:
    """Accuracy per tap, and t-SNE maps of the earliest and latest tap, where a network was probed at 3+ taps."""
    import numpy as np

    from cnnfeat import plots
    from cnnfeat.catalog import load_dataset
    from cnnfeat.exceptions import DatasetError
    from cnnfeat.methods import Method
    from cnnfeat.runner import default_cache

    groups: dict[tuple[str, str], dict[str, Any]] = {}
    for r in records:
        method = Method.parse(r.get("method", "")) if r.get("status") == "ok" else None
        if method is not None and method.kind == "cnn":
            groups.setdefault((r["dataset"], method.backbone), r)
    for (dataset, backbone), record in groups.items():
        taps = record["features"]["extractor"]["taps"]  # in the order the suite listed them (early to late)
        if len(taps) < 3:
            continue
        mine = [r for r in records if r.get("dataset") == dataset and r.get("method", "").startswith(f"cnn:{backbone}/")]
        plots.layer_curve(mine, out / f"layers_{dataset}_{backbone}.png", taps, title=f"{dataset}: probe accuracy per tap")
        try:
            ds = loaded[dataset] if dataset in loaded else load_dataset(dataset, data_root, strict=False)
        except DatasetError:  # the images are not here (e.g. tables rebuilt elsewhere): the curve only
            continue
        rows = np.random.default_rng(0).permutation(len(ds.manifest))[:1500]
        extractor = Method.parse(record["method"]).make_features(cache or default_cache(), layers=",".join(taps))
        blocks, _ = extractor.extract([ds.manifest.paths[i] for i in rows])  # read from the cache the runs filled
        labels = [ds.manifest.labels[i] for i in rows]
        chosen = {f"{backbone} {taps[0]}": blocks[taps[0]], f"{backbone} {taps[-1]}": blocks[taps[-1]]}
        plots.tsne_map(
            chosen, labels, out / f"tsne_{dataset}_{backbone}.png", title=f"{dataset}: t-SNE of an early and a late tap"
        )


def _tables_and_charts(records: list[dict[str, Any]], out: Path) -> str:
    from cnnfeat import plots
    from cnnfeat.protocols import Protocol
    from cnnfeat.tables import pivot, results_markdown, to_csv, to_json

    table = pivot(records)
    markdown = results_markdown(records)
    (out / "table.md").write_text(markdown + "\n")
    (out / "table.csv").write_text(to_csv(table))
    (out / "table.json").write_text(to_json(table))
    ok = [r for r in records if r.get("status") == "ok"]
    for dataset in sorted({r["dataset"] for r in ok}):
        mine = [r for r in ok if r["dataset"] == dataset]
        plots.bar_chart(mine, out / f"bars_{dataset}.png", title=dataset)
        plots.cost_chart(mine, out / f"cost_{dataset}.png", title=f"{dataset}: accuracy against cost")
    shots = {r["protocol"] for r in ok if Protocol.parse(r["protocol"]).shots is not None}
    if len(shots) >= 3:
        plots.few_shot_curve(ok, out / "few_shot.png", title="accuracy against training images per class")
    for dataset in sorted({r["dataset"] for r in ok if r.get("training")}):
        trained = [r for r in ok if r["dataset"] == dataset and r.get("training")]
        plots.training_curves(trained, out / f"training_{dataset}.png", title=f"{dataset}: fine-tuning, per epoch")
    return markdown
