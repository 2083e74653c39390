"""The typed record of one run, and the record store: one JSON file per run, written atomically, loaded and sorted.

A record's JSON layout is the one every committed record has; :meth:`Record.from_dict`
reads each version of it (fields added later are absent from older records and read as
None), and :meth:`Record.to_dict` writes the fields a record holds, in the order runs
have always written them, so a rewritten old record keeps its shape.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from cnnfeat.catalog import dataset_spec
from cnnfeat.exceptions import ConfigError, DatasetError
from cnnfeat.files import atomic_write
from cnnfeat.hints import JSONObject
from cnnfeat.methods import Method
from cnnfeat.protocols import Protocol

if TYPE_CHECKING:
    from cnnfeat.runner.spec import RunSpec

__all__ = [
    "DataProvenance",
    "FeatureProvenance",
    "Record",
    "RecordStore",
    "Training",
    "load_records",
    "run_identity",
    "sort_records",
]


def _written(obj: Any) -> JSONObject:
    """A provenance dataclass as JSON: its fields that are set (None is never written), nested ones too."""
    found = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if value is None:
            continue
        if isinstance(value, list) and value and dataclasses.is_dataclass(value[0]):
            value = [_written(v) for v in value]
        found[f.name] = value
    return found


@dataclass
class FeatureProvenance:
    """Where a run's features came from: the extractor's configuration, the cache's share, the time it took.

    A concatenation of networks has one part per network in ``parts``; a fine-tuned classifier
    has only its ``classifier`` parameters.
    """

    extractor: JSONObject | None = None  # the extractor's store configuration (its fingerprint's input)
    fingerprint: str | None = None
    n_cached: int | None = None
    n_computed: int | None = None
    device: str | None = None
    seconds: float | None = None
    earlier_seconds_per_1k: float | None = None  # read from the cache: the speed measured when it was filled
    parts: list[FeatureProvenance] | None = None
    classifier: JSONObject | None = None

    @classmethod
    def from_dict(cls, data: JSONObject | None) -> FeatureProvenance:
        data = dict(data or {})
        if data.get("parts") is not None:
            data["parts"] = [cls.from_dict(p) for p in data["parts"]]
        return cls(**data)

    @property
    def networks(self) -> list[FeatureProvenance]:
        """Each network's provenance: the parts of a concatenation, else this one (none for a fine-tuned run)."""
        if self.parts is not None:
            return self.parts
        return [self] if self.seconds is not None else []

    @property
    def taps(self) -> list[str]:
        return list((self.extractor or {}).get("taps") or [])


@dataclass
class DataProvenance:
    """Which copy of the data a run read; for a user's data its size and digest, and the images skipped."""

    layout: str | None = None
    root: str | None = None
    images: int | None = None
    classes: int | None = None
    digest: str | None = None
    skipped: list[dict[str, str]] | None = None


@dataclass
class Training:
    """A fine-tuned classifier's training: seconds, path, epochs run, learning rates and the curves per phase."""

    seconds: float
    path: str
    epochs_run: dict[str, int]
    learning_rates: dict[str, float]
    history: dict[str, dict[str, list[float]]]


#: fields written with the run's result when it succeeded (None included: a k-NN probe has no C)
_RESULT = (
    "split", "n_train", "n_test", "n_unlabelled", "n_features", "accuracy", "mean_per_class_accuracy", "C",
    "val_accuracy_by_C", "probe_seconds", "validation_score", "features",
)  # fmt: skip


@dataclass
class Record:
    """One run: what ran (the :class:`~cnnfeat.runner.RunSpec`'s fields), how it went, and where it came from.

    ``solver`` is the run's requested solver until the probe is fitted, then what fitted it
    (``path``, ``lbfgs``, ``liblinear`` for the SVM, None for k-NN or fine-tuning); the field
    kept one name in every committed record. ``seed`` is a split's seed, a fold, or an official
    split's number (see :class:`~cnnfeat.runner.RunSpec`).
    """

    # identity
    key: str = ""
    method: str = ""
    probe: str = ""
    dataset: str = ""
    protocol: str = ""
    seed: int = 0
    normalize: str = "none"
    adapt: str = "none"
    data_digest: str | None = None
    solver: str | None = None
    row: str = ""
    column: str = ""
    command: str = ""
    recipe_search: bool | None = None
    versions: dict[str, str] = field(default_factory=dict)
    machine: str = ""
    # outcome
    status: str = "ok"
    error: str | None = None
    traceback: str | None = None
    # sizes and metrics
    split: str | None = None
    n_train: int | None = None
    n_test: int | None = None
    n_unlabelled: int | None = None
    n_features: int | None = None
    accuracy: float | None = None
    mean_per_class_accuracy: float | None = None
    C: float | None = None
    val_accuracy_by_C: dict[str, float] | None = None  # noqa: N815 (the name in every committed record)
    k: int | None = None
    val_accuracy_by_k: dict[str, float] | None = None
    training: Training | None = None
    probe_seconds: float | None = None
    validation_score: float | None = None
    # provenance
    features: FeatureProvenance = field(default_factory=FeatureProvenance)
    data: DataProvenance | None = None
    dataset_problems: list[str] | None = None
    # a recipe search's scores, added after the runs
    cross_validation: float | None = None
    cross_validation_error: str | None = None
    cross_validation_seconds: float | None = None
    reverse_validation: float | None = None
    reverse_validation_error: str | None = None
    reverse_validation_seconds: float | None = None
    #: leave-one-domain-out protocol: the accuracy on each training domain of the probe fitted on the others, averaged
    domain_validation: float | None = None
    #: leave-one-domain-out protocol: the rule that chooses the features (cnnfeat.recipes.DG_RULES; records without it:
    #: training-domain validation)
    dg_validation: str | None = None
    #: on a domain shift, the rule that chooses the adaptation (cnnfeat.selection; records without it: reverse)
    selector: str | None = None
    #: every selector's score of this run (cnnfeat.selection.selection_scores)
    selection: dict[str, float | None] | None = None
    selection_error: str | None = None
    selection_seconds: float | None = None
    # a recipe search's chosen row (cnnfeat.recipes.choose), never written: the run it chose and among how many
    chosen: str | None = None
    candidates: int | None = None
    #: fields the JSON this record was read from lacked (older records): not written back
    absent: frozenset[str] = field(default=frozenset(), repr=False, compare=False)

    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def cross_validated(self) -> bool:
        """Whether the recipe search's cross-validation has scored this run (a score of None included)."""
        return self.cross_validation_seconds is not None or self.cross_validation_error is not None

    def selection_score(self, selector: str) -> float | None:
        """This run's score under ``selector``; older records hold reverse validation's in its own field."""
        if self.selection is not None and selector in self.selection:
            return self.selection[selector]
        return self.reverse_validation if selector == "reverse" else None

    @property
    def parsed_protocol(self) -> Protocol:
        return Protocol.parse(self.protocol)

    def metric(self, name: str) -> float:
        """``accuracy`` or ``mean_per_class_accuracy``, as a fraction."""
        value = getattr(self, name)
        if value is None:
            raise ConfigError(f"run {self.key} has no {name}")
        return float(value)

    @classmethod
    def from_dict(cls, data: JSONObject) -> Record:
        """A record from its JSON object, of any version (fields it lacks are None)."""
        names = set(_WRITTEN)
        values = {k: v for k, v in data.items() if k in names}
        values["features"] = FeatureProvenance.from_dict(values.get("features"))
        if values.get("data") is not None:
            values["data"] = DataProvenance(**values["data"])
        if values.get("training") is not None:
            values["training"] = Training(**values["training"])
        return cls(**values, absent=frozenset(names - set(data)))

    def to_dict(self) -> JSONObject:
        """The record's JSON object: identity, outcome, and what it holds of the rest, in the runs' order."""
        found: JSONObject = {}
        for name in _WRITTEN:
            value = getattr(self, name)
            scored = name == "cross_validation" and self.cross_validated  # a score of None, recorded as such
            if name in self.absent and value == _DEFAULTS[name] and not scored:  # not in its file, and not set since
                continue
            if value is None and name not in _IDENTITY and not (self.ok and name in _RESULT) and not scored:
                continue
            found[name] = _written(value) if dataclasses.is_dataclass(value) else value
        return found


#: what every record has, whatever its outcome
_IDENTITY = (
    "key", "method", "probe", "dataset", "protocol", "seed", "normalize", "adapt", "data_digest", "solver", "row", "column",
    "command", "recipe_search", "versions", "machine", "status",
)  # fmt: skip
#: what a record's JSON holds, in order: the search's chosen-row fields are never written
_WRITTEN = tuple(f.name for f in dataclasses.fields(Record) if f.name not in ("absent", "chosen", "candidates"))
_DEFAULTS = {name: getattr(Record(), name) for name in _WRITTEN}


class RecordStore:
    """The records of one results folder, one JSON file per run (``<folder>/records/<key>.json``)."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder) / "records"

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str) -> Record | None:
        """The record of run ``key``, or None when it has none."""
        path = self.path(key)
        return Record.from_dict(json.loads(path.read_text())) if path.is_file() else None

    def write(self, record: Record) -> None:
        """Write (or replace) a record, atomically: a reader sees the old file or the new one."""
        self.folder.mkdir(parents=True, exist_ok=True)
        text = json.dumps(record.to_dict(), indent=1, default=str)
        atomic_write(self.path(record.key), lambda tmp: tmp.write_text(text))


def load_records(folder: str | os.PathLike[str]) -> list[Record]:
    """Every record under ``folder/records`` (or ``folder`` itself), by dataset, protocol, method, probe, seed."""
    folder = Path(folder)
    records_dir = folder / "records" if (folder / "records").is_dir() else folder
    return sort_records(Record.from_dict(json.loads(p.read_text())) for p in records_dir.glob("*.json"))


def run_identity(run: RunSpec | Record) -> tuple[str, str, str, str, int, str, str]:
    """What makes a run the same cell of a grid, whatever solver fitted it and whichever data digest it read."""
    return run.method, run.probe, run.dataset, run.protocol, run.seed, run.normalize, run.adapt


def sort_records(records: Iterable[Record]) -> list[Record]:
    """Records by dataset, protocol, method, probe and seed: the order of every table, however they were run."""
    return sorted(records, key=_record_order)


def _record_order(record: Record) -> tuple[Any, ...]:
    """Dataset, protocol (shifts in the catalog's order, shots by number), method, probe, seed."""
    protocol = record.parsed_protocol
    name, detail = protocol.name, protocol.detail
    try:
        shifts = dataset_spec(record.dataset).get("protocols", {}).get("shifts", [])
    except DatasetError:  # a record of a dataset no longer in the catalog still sorts
        shifts = []
    rank = shifts.index(detail) if detail in shifts else int(detail) if detail.isdigit() else len(shifts)
    return (
        record.dataset, name, rank, detail, *_method_order(record), record.normalize, record.probe,
        record.adapt != "none", record.adapt, record.seed,
    )  # fmt: skip


def _method_order(record: Record) -> tuple[str, int, str]:
    """Methods by name, except that the taps of one network keep their extraction order (early to late)."""
    method, taps = record.method, record.features.taps
    try:
        parsed = Method.parse(method)
    except ConfigError:  # a record of a method this version no longer knows still sorts
        return method, -1, ""
    if parsed.kind == "cnn" and parsed.tap in taps:
        return parsed.untapped, taps.index(parsed.tap), method
    return method, -1, ""
