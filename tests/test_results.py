"""Every committed reference table is what its records give: the tables code did not drift from results/."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from cnnfeat.runner import Record, load_records
from cnnfeat.tables import pivot, results_markdown, to_csv

RESULTS = Path(__file__).resolve().parents[1] / "results"


@pytest.mark.parametrize("folder", sorted(p.name for p in RESULTS.iterdir() if (p / "table.md").is_file()))
def test_committed_tables_reproduce_from_their_records(folder: str) -> None:
    records = load_records(RESULTS / folder)
    assert records
    assert results_markdown(records) + "\n" == (RESULTS / folder / "table.md").read_text()
    assert to_csv(pivot(records)) == (RESULTS / folder / "table.csv").read_bytes().decode()


@pytest.mark.parametrize("folder", sorted(p.name for p in RESULTS.iterdir() if (p / "records").is_dir()))
def test_every_committed_record_reads_as_a_typed_record_and_writes_back_unchanged(folder: str) -> None:
    for path in sorted((RESULTS / folder / "records").glob("*.json")):
        data = json.loads(path.read_text())
        record = Record.from_dict(data)
        assert record.key == path.stem and (record.features.networks or record.features.classifier is not None)
        assert list(record.to_dict().items()) == list(data.items())  # the same fields, values and order


def test_a_field_an_older_record_lacked_is_written_once_it_is_set() -> None:
    older = {"key": "k", "method": "hog", "probe": "logreg", "dataset": "d", "protocol": "kfold:5", "seed": 0,
             "normalize": "none", "adapt": "none", "row": "hog + logreg", "column": "d (5-fold)", "command": "",
             "versions": {}, "machine": "m", "status": "ok", "split": "s", "n_train": 8, "n_test": 2, "n_unlabelled": 0,
             "accuracy": 0.5, "mean_per_class_accuracy": 0.5, "C": 1.0, "probe_seconds": 0.1, "features": {}}  # fmt: skip
    record = Record.from_dict(older)
    assert record.to_dict() == older and record.recipe_search is None and record.solver is None  # absent, not invented
    scored = dataclasses.replace(record, cross_validation=None, cross_validation_seconds=0.5)
    assert scored.to_dict() == older | {"cross_validation": None, "cross_validation_seconds": 0.5}
