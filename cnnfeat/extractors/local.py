"""One extraction run in this process, and the per-image bookkeeping every engine shares.

:func:`run_extraction` streams images through a thread pool (read, hash, decode, resize) in
input order, skips the ones whose content key is already in the store, gathers the rest into
batches, computes their features and commits each batch. Memory stays bounded by the batch
size and the read-ahead, whatever the number of images. :class:`Ledger` is the bookkeeping
(cached, duplicate, skipped or computed, and the error policy) that this loop and the Ray
engine's driver both use; :class:`LocalEngine` is this loop behind the engines' protocol.
"""

from __future__ import annotations

import contextlib
import logging
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

import numpy as np

from cnnfeat.exceptions import ConfigError, ImageError, SkippedImageWarning
from cnnfeat.extractors.sources import default_workers, read_source, source_name
from cnnfeat.hints import ImageSource, SourceData

if TYPE_CHECKING:
    from cnnfeat.extractors._base import CachedImageFeatures
    from cnnfeat.store import RowStore

__all__ = ["ON_ERROR", "ExtractionEngine", "ExtractionReport", "Ledger", "LocalEngine", "run_extraction", "warn_skipped"]

logger = logging.getLogger(__name__)

#: what an unreadable image does: stop the run, or be skipped and listed
ON_ERROR = ("fail", "skip")


@dataclass
class ExtractionReport:
    """What an extraction did: counts, skipped files with reasons, time.

    ``keys[i]`` is the content key of input ``i``, or ``None`` when it was skipped.
    """

    n_inputs: int = 0
    n_cached: int = 0
    n_computed: int = 0
    n_duplicates: int = 0
    n_healed: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    store_path: str | None = None
    device: str = ""
    keys: list[str | None] = field(default_factory=list, repr=False)
    #: images each worker of a distributed engine handled (empty for the local engine)
    workers: dict[str, int] = field(default_factory=dict)
    #: seconds per image of the extraction that computed the store's rows (so a cached rerun still knows its speed)
    earlier_seconds_per_image: float | None = None

    @property
    def images_per_second(self) -> float:
        """Inputs handled per second, cache hits included."""
        return self.n_inputs / self.seconds if self.seconds > 0 else 0.0

    @property
    def computed_per_second(self) -> float:
        """Newly computed images per second (the extraction speed proper)."""
        return self.n_computed / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """A few lines for a person to read."""
        lines = [
            f"images: {self.n_inputs}  cache hits: {self.n_cached}  newly computed: {self.n_computed}"
            f"  duplicates: {self.n_duplicates}  skipped: {len(self.skipped)}",
            f"time: {self.seconds:.1f} s  ({self.images_per_second:.1f} images/s overall, "
            f"{self.computed_per_second:.1f} computed/s)",
        ]
        if self.device:
            lines.append(f"device: {self.device}")
        if self.workers:
            counts = ", ".join(f"{name} {n}" for name, n in sorted(self.workers.items()))
            lines.append(f"workers: {len(self.workers)} ({counts} images)")
        if self.store_path:
            lines.append(f"output: {self.store_path}")
        if self.n_healed:
            lines.append(f"healed: {self.n_healed} cached rows failed their checksum; they were dropped and recomputed")
        for path, reason in self.skipped:
            lines.append(f"skipped {path}: {reason}")
        return "\n".join(lines)


class Ledger:
    """One run's per-image bookkeeping: each input is cached, a duplicate, skipped, or computed (once per key).

    The local loop and the Ray engine's driver both count through it, so their reports agree.
    """

    def __init__(self, sources: Sequence[ImageSource], store: RowStore, on_error: str) -> None:
        if on_error not in ON_ERROR:
            raise ConfigError(f"on_error must be 'fail' or 'skip'; got {on_error!r}")
        self.sources, self.store, self.on_error = sources, store, on_error
        self.report = ExtractionReport(n_inputs=len(sources), store_path=str(store.path), keys=[None] * len(sources))
        self.claimed: set[str] = set()  # keys this run computes (queued or committed)
        self.started = time.perf_counter()

    def unreadable(self, index: int, error: BaseException | str) -> ImageError | None:
        """Input ``index`` could not be read: the error to raise (``on_error="fail"``), or None once it is listed."""
        name = source_name(self.sources[index], index)
        if not isinstance(error, ImageError):
            error = ImageError(name, error if isinstance(error, str) else f"{type(error).__name__}: {error}")
        if self.on_error == "fail":
            return error
        logger.info("skipping %s", error)  # listed once in the report and a SkippedImageWarning
        self.report.skipped.append((error.path, error.reason))
        return None

    def claim(self, index: int, key: str, *, cached: bool, duplicate: bool = False) -> bool:
        """Count input ``index`` (content ``key``); True when this run must compute it (its first sight of the key)."""
        self.report.keys[index] = key
        if duplicate or key in self.claimed:  # the same bytes as an earlier input of this run
            self.report.n_duplicates += 1
            return False
        if cached:
            self.report.n_cached += 1
            return False
        self.claimed.add(key)
        return True

    def commit(self, keys: list[str], features: Mapping[str, np.ndarray], names: list[str]) -> None:
        """Append computed rows to the store: they are committed when this returns."""
        self.store.append(keys, features, names)
        self.report.n_computed += len(keys)

    def finish(self) -> ExtractionReport:
        self.report.seconds = time.perf_counter() - self.started
        if self.report.skipped:
            warn_skipped(self.report.skipped)
        return self.report


def run_extraction(
    sources: Sequence[ImageSource],
    store: RowStore,
    *,
    load: Callable[[SourceData, str], np.ndarray],
    compute: Callable[[list[np.ndarray]], Mapping[str, np.ndarray]],
    batch_size: int,
    on_error: str = "fail",
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExtractionReport:
    """Compute the features of every source not yet in ``store`` and commit them batch by batch.

    Parameters
    ----------
    sources : sequence
        Paths or image arrays (see :func:`~cnnfeat.extractors.sources.as_sources`).
    store : FeatureStore or MemoryRows
        Open for writing; rows already there are not recomputed.
    load : callable
        ``load(data, name) -> item``: bytes (or an array) to the item ``compute`` takes.
        Runs in worker threads; raises :class:`ImageError` for a bad image.
    compute : callable
        ``compute(items) -> {tap: (len(items), d) array}``. Runs in the calling thread.
    batch_size : int
        Images per ``compute`` call.
    on_error : {"fail", "skip"}
        ``"fail"``: raise the first :class:`ImageError` (committed batches stay committed).
        ``"skip"``: record it in ``report.skipped``, warn, and go on.
    workers : int, optional
        Decode threads (default :func:`~cnnfeat.extractors.sources.default_workers`).
    progress : callable, optional
        Called with the number of inputs handled since the last call.
    """
    from cnnfeat.images import map_ordered

    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1; got {batch_size}")
    ledger = Ledger(sources, store, on_error)
    workers = workers or default_workers()
    batch_items: list[np.ndarray] = []
    batch_keys: list[str] = []
    batch_names: list[str] = []

    def prepare(indexed: tuple[int, ImageSource]) -> tuple[str, np.ndarray | None]:
        index, source = indexed
        data, key = read_source(source)
        if key in store or key in ledger.claimed:
            return key, None
        return key, load(data, source_name(source, index))

    def flush() -> None:
        if batch_items:
            ledger.commit(list(batch_keys), compute(batch_items), list(batch_names))
        for gathered in (batch_items, batch_keys, batch_names):
            gathered.clear()

    with contextlib.closing(
        map_ordered(prepare, enumerate(sources), workers=workers, max_ahead=max(2 * batch_size, 4 * workers))
    ) as results:
        pending_progress = 0
        for (index, source), result, error in results:
            if error is not None:
                if (raised := ledger.unreadable(index, error)) is not None:
                    raise raised
            elif result is not None:
                key, item = result
                if ledger.claim(index, key, cached=item is None) and item is not None:  # claimed: to compute
                    batch_items.append(item)
                    batch_keys.append(key)
                    batch_names.append(source_name(source, index))
                    if len(batch_items) >= batch_size:
                        flush()
            pending_progress += 1
            if progress is not None and (pending_progress >= batch_size or index == len(sources) - 1):
                progress(pending_progress)
                pending_progress = 0
    flush()
    return ledger.finish()


def warn_skipped(skipped: Sequence[tuple[str, str]]) -> None:
    """One :class:`SkippedImageWarning` listing the first few skipped images and why."""
    listing = "; ".join(f"{p}: {r}" for p, r in skipped[:5])
    more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
    warnings.warn(f"skipped {len(skipped)} unreadable image(s): {listing}{more}", SkippedImageWarning, stacklevel=3)


class ExtractionEngine(Protocol):
    """Where the batches of an extraction run (see :mod:`cnnfeat.engines`); the default is this process."""

    #: whether the work leaves this process for a cluster (whose workers, not the driver, read the images)
    distributed: bool

    def describe(self) -> str:
        """Where the work runs, for a person."""
        ...

    def close(self) -> None:
        """Release what the engine holds (a cluster connection)."""
        ...

    def run(
        self,
        extractor: CachedImageFeatures,
        sources: Sequence[ImageSource],
        store: RowStore,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> ExtractionReport:
        """Commit to ``store`` the features of every source not in it, as :class:`LocalEngine` does."""
        ...


class LocalEngine:
    """Extraction in this process: images decoded in a thread pool, batches computed here (the default engine)."""

    distributed = False

    def describe(self) -> str:
        return f"this machine ({default_workers()} decode threads)"

    def close(self) -> None:
        """Nothing to release."""

    def run(
        self,
        extractor: CachedImageFeatures,
        sources: Sequence[ImageSource],
        store: RowStore,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> ExtractionReport:
        """Commit to ``store`` the features of every source not in it (:func:`run_extraction`)."""
        report = run_extraction(
            sources,
            store,
            load=extractor.image_loader(),
            compute=extractor.compute_batch,
            batch_size=extractor.batch_size,
            on_error=extractor.on_error,
            workers=extractor.n_jobs,
            progress=progress,
        )
        report.device = extractor.device_name() if report.n_computed else "none (all features from the cache)"
        if report.n_computed:
            store.note_speed(report.seconds / report.n_computed)
        report.earlier_seconds_per_image = store.measured_speed
        return report
