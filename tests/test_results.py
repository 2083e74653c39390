"""Every committed reference table is what its records give: the tables code did not drift from results/."""

from __future__ import annotations

from pathlib import Path

import pytest

from cnnfeat.runner import load_records
from cnnfeat.tables import pivot, results_markdown, to_csv

RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.mark.parametrize("folder", sorted(p.name for p in RESULTS.iterdir() if (p / "table.md").is_file()))
def test_committed_tables_reproduce_from_their_records(folder: str) -> None:
    records = load_records(RESULTS / folder)
    assert records
    assert results_markdown(records) + "\n" == (RESULTS / folder / "table.md").read_text()
    assert to_csv(pivot(records)) == (RESULTS / folder / "table.csv").read_bytes().decode()
