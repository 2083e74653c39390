"""What every image feature extractor shares: inputs, the cached batch loop, the report.

:func:`run_extraction` streams images through a thread pool (read, hash,
decode, resize) in input order, skips the ones whose content key is already
in the :class:`~cnnfeat.store.FeatureStore`, gathers the rest into batches,
computes their features and commits each batch to the store. Memory stays
bounded by the batch size and the read-ahead, whatever the number of images.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnfeat.exceptions import ConfigError, ImageError, SkippedImageWarning
from cnnfeat.images import read_image_file
from cnnfeat.store import FeatureStore

__all__ = ["ExtractionReport", "as_sources", "default_workers", "run_extraction", "source_name"]

logger = logging.getLogger(__name__)

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
    skipped: list[tuple[str, str]] = field(default_factory=list)
    seconds: float = 0.0
    store_path: str | None = None
    device: str = ""
    keys: list[str | None] = field(default_factory=list, repr=False)

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
        if self.store_path:
            lines.append(f"output: {self.store_path}")
        for path, reason in self.skipped:
            lines.append(f"skipped {path}: {reason}")
        return "\n".join(lines)


def as_sources(X: Any) -> list[Any]:
    """Validate extractor input: paths, or images as arrays. Returns a list of sources.

    Accepted: a sequence of paths (str / PathLike); an array of images of shape
    (n, h, w, 3) or (n, h, w); a sequence of (h, w[, 3]) arrays.
    """
    if isinstance(X, str | bytes | os.PathLike):
        raise ConfigError(f"expected a list of image paths or an array of images; got a single path {X!r}. Wrap it in a list.")
    if isinstance(X, np.ndarray) and X.dtype.kind in "uifb":
        if X.ndim not in (3, 4) or (X.ndim == 4 and X.shape[-1] not in (1, 3, 4)):
            raise ConfigError(f"an image array must have shape (n, h, w) or (n, h, w, 3); got {X.shape}")
        return list(X)
    try:
        sources = list(X)
    except TypeError:
        raise ConfigError(f"expected a list of image paths or an array of images; got {type(X).__name__}") from None
    for i, s in enumerate(sources):
        if isinstance(s, np.ndarray):
            if s.ndim not in (2, 3):
                raise ConfigError(f"image {i} must be a (h, w) or (h, w, 3) array; got shape {s.shape}")
        elif not isinstance(s, str | os.PathLike):
            raise ConfigError(f"input {i} is a {type(s).__name__}; expected a path or an image array")
    return sources


def source_name(source: Any, index: int) -> str:
    return os.fspath(source) if isinstance(source, str | os.PathLike) else f"<array {index}>"


def array_key(image: np.ndarray) -> str:
    """Content key of an in-memory image: sha256 of its dtype, shape and bytes."""
    digest = hashlib.sha256(f"{image.dtype.str}{image.shape}".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def default_workers() -> int:
    """Decode threads: one per core, at least 2 (decoding waits on I/O too)."""
    return max(2, os.cpu_count() or 1)


def run_extraction(
    sources: Sequence[Any],
    store: FeatureStore,
    *,
    load: Callable[[Any, str], Any],
    compute: Callable[[list[Any]], Mapping[str, np.ndarray]],
    batch_size: int,
    on_error: str = "fail",
    workers: int | None = None,
    progress: Callable[[int], None] | None = None,
) -> ExtractionReport:
    """Compute the features of every source not yet in ``store`` and commit them batch by batch.

    Parameters
    ----------
    sources : sequence
        Paths or image arrays (see :func:`as_sources`).
    store : FeatureStore
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
        Decode threads (default :func:`default_workers`).
    progress : callable, optional
        Called with the number of inputs handled since the last call.
    """
    from cnnfeat.images import map_ordered

    if on_error not in ON_ERROR:
        raise ConfigError(f"on_error must be 'fail' or 'skip'; got {on_error!r}")
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1; got {batch_size}")
    workers = workers or default_workers()
    report = ExtractionReport(n_inputs=len(sources), store_path=str(store.path), keys=[None] * len(sources))
    started = time.perf_counter()
    batch_items: list[Any] = []
    batch_keys: list[str] = []
    batch_names: list[str] = []
    queued: set[str] = set()  # keys in the batch being gathered
    computed: set[str] = set()  # keys committed by this run

    def prepare(indexed: tuple[int, Any]) -> tuple[str, Any]:
        index, source = indexed
        name = source_name(source, index)
        if isinstance(source, np.ndarray):
            key, data = array_key(source), source
        else:
            data, key = read_image_file(source)
        if key in store or key in queued:
            return key, None
        return key, load(data, name)

    def flush() -> None:
        if not batch_items:
            return
        features = compute(batch_items)
        store.append(batch_keys, features, batch_names)
        report.n_computed += len(batch_items)
        computed.update(batch_keys)
        for gathered in (batch_items, batch_keys, batch_names, queued):
            gathered.clear()

    results = map_ordered(prepare, enumerate(sources), workers=workers, max_ahead=max(2 * batch_size, 4 * workers))
    pending_progress = 0
    for (index, source), result, error in results:
        name = source_name(source, index)
        if error is not None:
            if not isinstance(error, ImageError):
                error = ImageError(name, f"{type(error).__name__}: {error}")
            if on_error == "fail":
                raise error
            logger.info("skipping %s", error)  # listed once in the report and a SkippedImageWarning
            report.skipped.append((error.path, error.reason))
        else:
            key, item = result
            report.keys[index] = key
            if key in queued or key in computed:  # same bytes as an earlier input of this run
                report.n_duplicates += 1
            elif item is None:
                report.n_cached += 1
            else:
                queued.add(key)
                batch_items.append(item)
                batch_keys.append(key)
                batch_names.append(name)
                if len(batch_items) >= batch_size:
                    flush()
        pending_progress += 1
        if progress is not None and (pending_progress >= batch_size or index == len(sources) - 1):
            progress(pending_progress)
            pending_progress = 0
    flush()
    report.seconds = time.perf_counter() - started
    if report.skipped:
        listing = "; ".join(f"{p}: {r}" for p, r in report.skipped[:5])
        more = f" (and {len(report.skipped) - 5} more)" if len(report.skipped) > 5 else ""
        warnings.warn(f"skipped {len(report.skipped)} unreadable image(s): {listing}{more}", SkippedImageWarning, stacklevel=2)
    return report
