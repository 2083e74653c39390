"""What every image feature extractor shares: inputs, the cached batch loop, the report.

:func:`run_extraction` streams images through a thread pool (read, hash,
decode, resize) in input order, skips the ones whose content key is already
in the :class:`~cnnfeat.store.FeatureStore`, gathers the rest into batches,
computes their features and commits each batch to the store. Memory stays
bounded by the batch size and the read-ahead, whatever the number of images.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from numbers import Integral
from pathlib import Path
from typing import Any, Protocol, cast

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._param_validation import Interval, StrOptions

from cnnfeat.exceptions import (
    ConfigError,
    HealedStoreWarning,
    ImageError,
    SkippedImageWarning,
    StoreCorruptError,
    StoreError,
)
from cnnfeat.images import read_image_file
from cnnfeat.store import FeatureStore, fingerprint_of, repair_store

__all__ = [
    "CachedImageFeatures",
    "ExtractionEngine",
    "ExtractionReport",
    "as_sources",
    "default_workers",
    "run_extraction",
    "source_name",
    "warn_skipped",
]

logger = logging.getLogger(__name__)

ON_ERROR = ("fail", "skip")
#: the constraints of the parameters every cached extractor has (scikit-learn's ``_parameter_constraints``)
COMMON_CONSTRAINTS: dict[str, list[Any]] = {
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "dtype": [StrOptions({"float32", "float16"})],
    "cache": [str, os.PathLike, None],
    "on_error": [StrOptions(set(ON_ERROR))],
    "heal": ["boolean"],
    "max_pixels": [Interval(Integral, 1, None, closed="left"), None],
    "n_jobs": [Interval(Integral, 1, None, closed="left"), None],
}


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


def read_source(source: Any) -> tuple[Any, str]:
    """An input's data (file bytes, or the array itself) and its content key."""
    if isinstance(source, np.ndarray):
        return source, array_key(source)
    return read_image_file(source)


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
        data, key = read_source(source)
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

    with contextlib.closing(
        map_ordered(prepare, enumerate(sources), workers=workers, max_ahead=max(2 * batch_size, 4 * workers))
    ) as results:
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
        warn_skipped(report.skipped)
    return report


def warn_skipped(skipped: Sequence[tuple[str, str]]) -> None:
    """One :class:`SkippedImageWarning` listing the first few skipped images and why."""
    listing = "; ".join(f"{p}: {r}" for p, r in skipped[:5])
    more = f" (and {len(skipped) - 5} more)" if len(skipped) > 5 else ""
    warnings.warn(f"skipped {len(skipped)} unreadable image(s): {listing}{more}", SkippedImageWarning, stacklevel=3)


class ExtractionEngine(Protocol):
    """Where the batches of an extraction run (see :mod:`cnnfeat.engines`); the default is this process."""

    def run(
        self,
        extractor: CachedImageFeatures,
        sources: Sequence[Any],
        store: FeatureStore,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> ExtractionReport:
        """Commit to ``store`` the features of every source not in it, as :func:`run_extraction` does."""
        ...


class CachedImageFeatures(TransformerMixin, BaseEstimator):
    """Base of transformers mapping image files (or arrays) to fixed-length features, cached by content.

    A subclass supplies the hooks; the base does input checking, the FeatureStore
    (``cache=``), the parallel decode-and-compute loop, the error policy, the
    report, and ``transform`` (taps concatenated, float32). Subclasses must have
    the parameters ``cache``, ``dtype``, ``on_error``, ``heal``, ``n_jobs`` and ``batch_size``.

    Hooks
    -----
    extractor_config() -> dict
        Everything that determines the feature values (its hash names the cache file).
    _taps() -> tuple of str
        Output blocks, in ``transform``'s column order.
    _dims() -> dict of str to int
        Width of each tap (may build a model).
    _loader() -> callable(data, name) -> item
        Runs in worker threads: bytes (or an image array) to what ``_compute`` takes.
    _compute(items) -> dict of str to (n, d) array
        Runs in the calling thread, one batch at a time.
    _cache_prefix() -> str
        Start of the cache file name.
    """

    def _cache_prefix(self) -> str:
        return type(self).__name__.lower()

    def store_config(self) -> dict[str, Any]:
        """``extractor_config()`` with the taps: what the store is fingerprinted by (parameters validated first)."""
        self._validate_params()
        return {**self.extractor_config(), "taps": list(self._taps())}

    @property
    def last_report_(self) -> ExtractionReport:
        """What the last ``transform`` did. Not fitted state: ``check_is_fitted`` does not count it."""
        try:
            return self.__dict__["_last_report"]
        except KeyError:
            raise AttributeError("last_report_ is set by transform; nothing was transformed yet") from None

    def store_path(self, config: Mapping[str, Any] | None = None) -> Path | None:
        """The cache file these parameters use (``None`` without a cache).

        ``config`` is ``store_config()`` when the caller already has it (computing it may
        hash a weights file).
        """
        if self.cache is None:
            return None
        cache = Path(self.cache)
        if cache.suffix.lower() in (".h5", ".hdf5"):
            return cache
        return cache / f"{self._cache_prefix()}-{fingerprint_of(config or self.store_config())[:16]}.h5"

    def _device(self) -> str:
        return "cpu"

    def extract(
        self,
        X: Any,
        *,
        return_features: bool = True,
        progress: Callable[[int], None] | None = None,
        index_columns: Mapping[str, Sequence[str]] | None = None,
        engine: ExtractionEngine | None = None,
    ) -> tuple[dict[str, np.ndarray] | None, ExtractionReport]:
        """Extract (or read from the cache) the features of ``X``.

        Returns ``({tap: (n, d) float32}, report)``; rows of skipped images are NaN.
        With ``return_features=False`` only the store is filled (for very large sets).
        ``index_columns`` (e.g. ``{"label": [...]}``) are written with the inputs' paths and
        rows as the store's ``/index`` (see :meth:`FeatureStore.set_index`).

        Every cached row served is read back through its checksum. A damaged one, with
        ``heal=True``, is dropped from the store and recomputed (``report.n_healed``).

        ``engine`` runs the batches elsewhere (:class:`cnnfeat.engines.RayEngine`); by default
        they run here, decoded in a thread pool.
        """
        sources = as_sources(X)
        config = self.store_config()
        path = self.store_path(config)
        try:
            return self._extract(sources, config, path, return_features, progress, index_columns, engine)
        except StoreCorruptError as exc:
            if not self.heal or path is None:
                raise
            logger.debug("healing after: %s", exc)
            dropped = repair_store(path)
        message = f"{path}: {dropped} cached rows failed their checksum; they were dropped and are recomputed"
        warnings.warn(message, HealedStoreWarning, stacklevel=2)
        features, report = self._extract(sources, config, path, return_features, progress, index_columns, engine)
        report.n_healed = dropped
        return features, report

    def _extract(
        self,
        sources: list[Any],
        config: dict[str, Any],
        path: Path | None,
        return_features: bool,
        progress: Callable[[int], None] | None,
        index_columns: Mapping[str, Sequence[str]] | None,
        engine: ExtractionEngine | None,
    ) -> tuple[dict[str, np.ndarray] | None, ExtractionReport]:
        if path is not None and engine is None:  # an engine's driver reads no image
            cached = _read_if_all_cached(sources, path, config, return_features=return_features, index_columns=index_columns)
            if cached is not None:
                if progress is not None:
                    progress(len(sources))
                return cached
        with tempfile.TemporaryDirectory(prefix="cnnfeat-") if path is None else contextlib.nullcontext() as tmp:
            store_file = Path(tmp, "features.h5") if path is None else path
            try:
                store_file.parent.mkdir(parents=True, exist_ok=True)
            except OSError as exc:
                reason = exc.strerror or exc
                raise StoreError(f"{store_file.parent}: cannot create the feature store's folder ({reason})") from None
            # An existing store knows its widths: a run of cache hits builds no model.
            dims = None if store_file.exists() else self._dims()
            computed = []

            def compute(items: list[Any]) -> Mapping[str, np.ndarray]:
                computed.append(len(items))
                return self._compute(items)

            with FeatureStore(store_file, config, dims=dims, dtype=self.dtype) as store:
                if engine is None:
                    report = run_extraction(
                        sources,
                        store,
                        load=self._loader(),
                        compute=compute,
                        batch_size=self.batch_size,
                        on_error=self.on_error,
                        workers=self.n_jobs,
                        progress=progress,
                    )
                    report.device = self._device() if computed else "none (all features from the cache)"
                    if report.n_computed:
                        store.note_speed(report.seconds / report.n_computed)
                    report.earlier_seconds_per_image = store.measured_speed
                else:
                    report = engine.run(self, sources, store, progress=progress)
                report.store_path = None if path is None else str(path)
                if index_columns is not None:
                    names = [source_name(s, i) for i, s in enumerate(sources)]
                    store.set_index(names, report.keys, **index_columns)
                if not return_features:
                    _verify(store, report.keys)
                    return None, report
                store.compact()  # merge now (close would anyway), so the rows are read from HDF5 in bulk
                return _gather(store, report.keys), report

    def transform(self, X: Any) -> np.ndarray:
        """Features of each image, taps concatenated: float32 of shape (n, n_features)."""
        features, report = self.extract(X)
        self.__dict__["_last_report"] = report
        blocks = cast(dict[str, np.ndarray], features)  # return_features=True: never None
        return np.concatenate([blocks[t] for t in self._taps()], axis=1)

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


def _read_if_all_cached(
    sources: Sequence[Any],
    path: Path,
    config: Mapping[str, Any],
    *,
    return_features: bool,
    index_columns: Mapping[str, Sequence[str]] | None = None,
) -> tuple[dict[str, np.ndarray] | None, ExtractionReport] | None:
    """Every source's features, read without the writer lock; ``None`` as soon as one is missing.

    A run that only reads the cache then never waits for, or collides with, a process that is
    writing the same store, and works on read-only media. With ``index_columns``, the store's
    ``/index`` must already say the same (else the index is to be written). Any miss, unreadable
    file or store problem returns ``None``, and the caller takes the writer's path, which
    handles (and reports) all of them.
    """
    if not path.exists():
        return None
    started = time.perf_counter()
    try:
        store = FeatureStore(path, config, mode="r")
    except StoreError:  # a damaged or foreign file: the writer's path says what is wrong
        return None
    with store:
        keys: list[str | None] = []
        for source in sources:
            try:
                key = read_source(source)[1]
            except ImageError:
                return None
            if key not in store:
                return None
            keys.append(key)
        names = [source_name(s, i) for i, s in enumerate(sources)]
        if index_columns is not None and not store.holds_index(names, keys, **index_columns):
            return None
        report = ExtractionReport(
            n_inputs=len(sources),
            n_cached=len(sources),
            store_path=str(path),
            device="none (all features from the cache)",
            keys=keys,
            earlier_seconds_per_image=store.measured_speed,
        )
        features = _gather(store, keys) if return_features else _verify(store, keys)
    report.seconds = time.perf_counter() - started
    return features, report


def _verify(store: FeatureStore, keys: Sequence[str | None], block: int = 4096) -> None:
    """Read the rows of ``keys`` through their checksums without keeping them (a damaged one raises)."""
    wanted = [k for k in dict.fromkeys(keys) if k is not None]
    for start in range(0, len(wanted), block):
        store.get(wanted[start : start + block])


def _gather(store: FeatureStore, keys: Sequence[str | None]) -> dict[str, np.ndarray]:
    """Rows for ``keys`` from the store; NaN rows where a key is ``None`` (a skipped image)."""
    ok = [i for i, k in enumerate(keys) if k is not None]
    rows = store.get([keys[i] for i in ok])
    out = {}
    for tap, block in rows.items():
        full = np.full((len(keys), block.shape[1]), np.nan, dtype=np.float32)
        full[ok] = block
        out[tap] = full
    return out
