"""The feature bank: each (method, dataset)'s features computed once, through the cache, and assembled per run.

Every method kind reads its features through one :class:`FeatureSource`: a network's taps
(all the taps a suite wants of it, in one forward pass), several networks concatenated,
a hand-crafted extractor (the SIFT codebook fitted on each split's training images), or the
images themselves for a fine-tuned classifier. :meth:`FeatureBank.job` hands a run
everything its probe needs, and nothing is extracted inside a split loop.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar, cast

import numpy as np

from cnnfeat.catalog import Dataset, load_dataset
from cnnfeat.extractors.local import ExtractionEngine
from cnnfeat.methods import Method
from cnnfeat.normalize import unit_rows
from cnnfeat.protocols import Split
from cnnfeat.runner.provenance import data_provenance
from cnnfeat.runner.records import DataProvenance, FeatureProvenance
from cnnfeat.runner.spec import RunSpec
from cnnfeat.store import fingerprint_of

__all__ = ["FeatureBank", "ProbeJob"]

T = TypeVar("T")
#: features per tap, each (n_images, d), and where they came from
Blocks = tuple[dict[str, np.ndarray], FeatureProvenance]


@dataclass
class ProbeJob:
    """One run's probe, ready to fit anywhere: the rows it needs (``split`` indexes ``X``) and their provenance."""

    run: RunSpec
    X: np.ndarray
    labels: np.ndarray
    domains: np.ndarray
    split: Split
    sizes: dict[str, str | int]  # the split's description and sizes
    features: FeatureProvenance
    data: DataProvenance
    dataset_problems: list[str]
    cache: str | None = None  # where a fine-tuned classifier's head-only path caches features


class FeatureSource(Protocol):
    """How one method kind gets its feature matrix for a run (the rows ``rows`` of the dataset)."""

    def matrix(
        self, bank: FeatureBank, run: RunSpec, dataset: Dataset, split: Split, rows: np.ndarray
    ) -> tuple[np.ndarray, FeatureProvenance]: ...


class NetworkTaps:
    """``cnn:`` and several networks joined by ``+``: every tap of each network in one pass, shared by all runs."""

    def matrix(
        self, bank: FeatureBank, run: RunSpec, dataset: Dataset, split: Split, rows: np.ndarray
    ) -> tuple[np.ndarray, FeatureProvenance]:
        method = Method.parse(run.method)
        parts = method.parts if method.kind == "concat" else (method,)
        extracted = [bank.network(part, dataset) for part in parts]
        if method.kind == "cnn" and "," not in method.tap:  # one tap: as extracted
            blocks, info = extracted[0]
            return blocks[method.tap][rows], info
        # several taps or networks: each tap L2-normalised, then concatenated
        taps = [(blocks, tap) for part, (blocks, _) in zip(parts, extracted) for tap in part.tap.split(",")]
        X = np.concatenate([unit_rows(blocks[tap][rows]) for blocks, tap in taps], axis=1)
        info = extracted[0][1] if method.kind == "cnn" else FeatureProvenance(parts=[i for _, i in extracted])
        return X, info


class FittedPerSplit:
    """A hand-crafted extractor that learns from images (SIFT's codebook): fitted on each split's training rows."""

    def matrix(
        self, bank: FeatureBank, run: RunSpec, dataset: Dataset, split: Split, rows: np.ndarray
    ) -> tuple[np.ndarray, FeatureProvenance]:
        needed = np.unique(np.r_[split.train, split.val, split.test, split.unlabelled]).astype(int)
        key = (run.method, run.dataset, run.protocol, str(run.seed))
        blocks, info = bank.memo(key, lambda: bank.extract(run.method, dataset, needed, split.train, random_state=0))
        return np.concatenate([b[rows] for b in blocks.values()], axis=1), info


class WholeDataset:
    """A hand-crafted extractor with nothing to learn: every image once per dataset."""

    def matrix(
        self, bank: FeatureBank, run: RunSpec, dataset: Dataset, split: Split, rows: np.ndarray
    ) -> tuple[np.ndarray, FeatureProvenance]:
        blocks, info = bank.memo((run.method, run.dataset), lambda: bank.extract(run.method, dataset))
        return np.concatenate([b[rows] for b in blocks.values()], axis=1), info


class ImagePaths:
    """A fine-tuned classifier trains on the images themselves: its "features" are their paths."""

    def matrix(
        self, bank: FeatureBank, run: RunSpec, dataset: Dataset, split: Split, rows: np.ndarray
    ) -> tuple[np.ndarray, FeatureProvenance]:
        paths = np.asarray(dataset.manifest.paths, dtype=object)[rows]
        return paths, FeatureProvenance(classifier=Method.parse(run.method).params)


def _source(method: Method) -> FeatureSource:
    if method.kind in ("cnn", "concat"):
        return NetworkTaps()
    if method.kind == "finetune":
        return ImagePaths()
    return FittedPerSplit() if method.fitted_per_split else WholeDataset()


class FeatureBank:
    """The datasets and features of a suite's runs, each loaded or extracted once (a failure once, for every run)."""

    def __init__(
        self,
        runs: Sequence[RunSpec],
        *,
        data_root: str | os.PathLike[str] | None,
        cache: str | os.PathLike[str] | None,
        strict: bool,
        engine: ExtractionEngine | None,
        loaded: Sequence[Dataset] = (),
        runtime: str | None = None,
    ) -> None:
        self.data_root, self.cache, self.strict, self.engine = data_root, cache, strict, engine
        self.runtime = runtime  # for every cnn: method that names none
        # memo tables: a value, or the exception making it raised (see memo)
        self._datasets: dict[Hashable, Dataset] = {d.name: d for d in loaded}
        self._features: dict[Hashable, Any] = {}
        # the taps wanted per (dataset, network): they are extracted together, in one forward pass each
        self._taps: dict[tuple[str, str], list[str]] = {}
        for run in runs:
            parsed = Method.parse(run.method)
            for part in parsed.parts if parsed.kind == "concat" else (parsed,) if parsed.kind == "cnn" else ():
                taps = self._taps.setdefault((run.dataset, part.network), [])
                if part.tap not in taps:
                    taps.append(part.tap)

    def memo(self, key: Hashable, make: Callable[[], T], table: dict[Hashable, Any] | None = None) -> T:
        """``make()``, once per key; a failure is remembered too and raised for every run that needs it."""
        table = self._features if table is None else table
        if key not in table:
            try:
                table[key] = make()
            except Exception as exc:  # recorded for every run that needs it
                table[key] = exc
        if isinstance(table[key], Exception):
            raise table[key]
        return cast(T, table[key])

    def dataset(self, name: str) -> Dataset:
        return self.memo(name, lambda: load_dataset(name, self.data_root, strict=self.strict), self._datasets)

    def network(self, part: Method, dataset: Dataset) -> Blocks:
        """A ``cnn:`` method's features per tap, with every tap the suite wants of its network."""
        group = (dataset.name, part.network)
        layers = ",".join(self._taps.get(group, [part.tap]))
        overrides: dict[str, Any] = {"layers": layers}
        if self.runtime is not None and "runtime" not in part.params:
            overrides["runtime"] = self.runtime
        return self.memo(("cnn", *group), lambda: self.extract(part.text, dataset, **overrides))

    def extract(
        self, method: str, dataset: Dataset, rows: np.ndarray | None = None, fit_rows: np.ndarray | None = None, **overrides: Any
    ) -> Blocks:
        """The method's features of the dataset's images (all rows, or ``rows``; NaN elsewhere), per tap."""
        paths = dataset.manifest.paths
        extractor = Method.parse(method).make_features(self.cache, **overrides)
        started = time.perf_counter()
        if fit_rows is not None:
            extractor.fit([paths[i] for i in fit_rows])
        wanted = range(len(paths)) if rows is None else rows
        found, report = extractor.extract([paths[i] for i in wanted], engine=self.engine)
        blocks: dict[str, np.ndarray] = found or {}  # ``extract`` returns the rows unless told not to
        config = extractor.store_config()  # the extractor's configuration and taps (hashing a weights file once)
        info = FeatureProvenance(
            extractor=config,
            fingerprint=fingerprint_of(config),
            n_cached=report.n_cached,
            n_computed=report.n_computed,
            device=report.device,
            seconds=time.perf_counter() - started,
        )
        if not report.n_computed and report.earlier_seconds_per_image:  # read from the cache: the speed measured then
            info.earlier_seconds_per_1k = 1000 * report.earlier_seconds_per_image
        if rows is not None:
            for tap, X in blocks.items():
                full = np.full((len(paths), X.shape[1]), np.nan, np.float32)
                full[rows] = X
                blocks[tap] = full
        return blocks, info

    def job(self, run: RunSpec) -> ProbeJob:
        """Split and features of one run: everything its probe needs, and only the rows it uses."""
        dataset = self.dataset(run.dataset)
        split = run.split(dataset)
        train = np.r_[split.train, split.val].astype(int)
        rows = np.unique(np.r_[train, split.test, split.unlabelled]).astype(int)
        X, info = _source(Method.parse(run.method)).matrix(self, run, dataset, split, rows)
        position = np.full(len(dataset.manifest), -1)
        position[rows] = np.arange(len(rows))
        local = Split(
            train=position[train], test=position[split.test], unlabelled=position[split.unlabelled], description=split.description
        )
        sizes: dict[str, str | int] = {
            "split": split.description,
            "n_train": len(train),
            "n_test": len(split.test),
            "n_unlabelled": len(split.unlabelled),
        }
        sizes["n_features"] = int(X.shape[1]) if X.ndim == 2 else 0
        return ProbeJob(
            run,
            X,
            np.asarray(dataset.manifest.labels, dtype=object)[rows],
            np.asarray(dataset.manifest.domains)[rows],
            local,
            sizes,
            info,
            data_provenance(dataset),
            list(dataset.problems),
            None if self.cache is None else os.fspath(self.cache),
        )
