"""``report.html``: a results folder as one self-contained page (the answer, the table, the figures, the provenance).

Everything is inside the file (figures as data URIs, styles inline), so it opens offline, mails
as one attachment and needs no server. Long method strings get letters, the same as the
accuracy-against-cost figure's, with a key.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Sequence
from pathlib import Path

from cnnfeat.answer import answer, describe
from cnnfeat.files import atomic_write
from cnnfeat.runner import Record
from cnnfeat.tables import footer_for, pivot, row_letters

__all__ = ["write_html"]

_STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.6em; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; margin: 0.6em 0; } td, th { border: 1px solid #ccc; padding: 0.3em 0.6em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; } tr.best td { font-weight: 600; background: #f3f8ff; }
.answer { background: #f6fbf4; border-left: 4px solid #4a9a3a; padding: 0.6em 1em; margin: 0.6em 0; }
.key td:first-child { font-weight: 600; } pre { background: #f7f7f7; padding: 0.8em; white-space: pre-wrap; }
figure { margin: 1em 0; } img { max-width: 100%; border: 1px solid #eee; } figcaption { color: #555; }
"""


def write_html(records: Sequence[Record], out: str | os.PathLike[str]) -> Path:
    """Write ``out/report.html`` from the records and the figures already in ``out``; returns its path."""
    out = Path(out)
    table = pivot(records)
    label = row_letters(table.rows)
    esc = html.escape
    parts = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>cnnfeat results</title><style>{_STYLE}</style>"]
    datasets = sorted({r.dataset for r in records if r.ok})
    parts.append(f"</head><body><h1>cnnfeat results: {esc(', '.join(datasets))}</h1><h2>The answer</h2>")
    found = answer(records)
    for a in found:
        parts.append(f"<p class='answer'>{esc(describe(a, {r: f'{label[r]} ({r})' for r in label}))}")
        if a.finetune:
            parts.append(f"<br>{esc(a.finetune)}")
        parts.append("</p>")
    if not found:
        parts.append("<p>No run succeeded: see the failures below.</p>")
    parts.append("<p>Rows are compared on the same splits by a paired t-test (two-sided, 5 %); a row not "
                 "distinguishable from the best is as good as far as these splits can tell, and the cheapest of "
                 "them is the one to use.</p>")  # fmt: skip
    parts.append("<h2>Table</h2><table><tr><th></th><th>method</th>")
    parts += [f"<th>{esc(c)}</th>" for c in table.columns] + ["</tr>"]
    best = {a.column: a.best for a in found}
    for row in table.rows:
        cls = " class='best'" if row in best.values() else ""
        parts.append(f"<tr{cls}><td>{label[row]}</td><td>{esc(row)}</td>")
        for column in table.columns:
            stats = table.mean_std(row, column)
            cell = "" if stats is None else f"{stats[0]:.2f} ± {stats[1]:.2f}" if stats[2] > 1 else f"{stats[0]:.2f}"
            parts.append(f"<td class='num'>{cell}</td>")
        parts.append("</tr>")
    parts.append("</table><p>Mean ± standard deviation over splits, in % (each column's protocol metric); bold: the best.</p>")
    for figure in sorted(out.glob("*.png")):
        data = base64.b64encode(figure.read_bytes()).decode()
        parts.append(
            f"<figure><img src='data:image/png;base64,{data}' alt='{esc(figure.stem)}'>"
            f"<figcaption>{esc(figure.name)}</figcaption></figure>"
        )
    if table.failed:
        parts.append("<h2>Failed runs</h2><ul>" + "".join(f"<li>{esc(f)}</li>" for f in table.failed[:50]) + "</ul>")
    parts.append(f"<h2>How it was made</h2><pre>{esc(footer_for(records))}</pre></body></html>\n")
    path = out / "report.html"
    atomic_write(path, lambda tmp: tmp.write_text("".join(parts), encoding="utf-8"))
    return path
