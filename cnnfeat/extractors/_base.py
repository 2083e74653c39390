"""What every image feature extractor shares: the estimator base, its cache, and the engines that fill it.

:class:`CachedImageFeatures` checks inputs, names and opens the feature store (``cache=``),
serves a fully cached request without the writer's lock, and hands the rest to an engine
(:class:`~cnnfeat.extractors.local.LocalEngine` by default, or the Ray engine) through the
hooks its subclasses implement. Without a cache the rows live in memory for the call.
"""

from __future__ import annotations

import logging
import os
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from numbers import Integral
from pathlib import Path
from typing import cast

import numpy as np
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils import Tags
from sklearn.utils._param_validation import Interval, StrOptions

from cnnfeat.exceptions import (
    HealedStoreWarning,
    ImageError,
    StoreCorruptError,
    StoreError,
)
from cnnfeat.extractors.local import ON_ERROR, ExtractionEngine, ExtractionReport, LocalEngine
from cnnfeat.extractors.sources import as_sources, read_source, source_name
from cnnfeat.hints import ImageInput, ImageSource, JSONObject
from cnnfeat.store import FeatureStore, MemoryRows, RowStore, fingerprint_of, repair_store

__all__ = ["COMMON_CONSTRAINTS", "CachedImageFeatures"]

logger = logging.getLogger(__name__)

#: the constraints of the parameters every cached extractor has (scikit-learn's ``_parameter_constraints``)
COMMON_CONSTRAINTS: dict[str, list[object]] = {
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "dtype": [StrOptions({"float32", "float16"})],
    "cache": [str, os.PathLike, None],
    "on_error": [StrOptions(set(ON_ERROR))],
    "heal": ["boolean"],
    "max_pixels": [Interval(Integral, 1, None, closed="left"), None],
    "n_jobs": [Interval(Integral, 1, None, closed="left"), None],
}


class CachedImageFeatures(TransformerMixin, BaseEstimator):
    """Base of transformers mapping image files (or arrays) to fixed-length features, cached by content.

    A subclass supplies the hooks; the base does input checking, the FeatureStore
    (``cache=``), the parallel decode-and-compute loop, the error policy, the
    report, and ``transform`` (taps concatenated, float32). Subclasses must have
    the parameters ``cache``, ``dtype``, ``on_error``, ``heal``, ``n_jobs`` and ``batch_size``.

    Hooks (what an engine calls: :class:`~cnnfeat.extractors.local.LocalEngine` here, the Ray engine's workers)
    -----------------------------------------------------------------------------------------------------------
    extractor_config() -> dict
        Everything that determines the feature values (its hash names the cache file).
    feature_taps() -> tuple of str
        Output blocks, in ``transform``'s column order.
    feature_dims() -> dict of str to int
        Width of each tap (may build a model).
    image_loader() -> callable(data, name) -> item
        Runs in worker threads: bytes (or an image array) to what ``compute_batch`` takes.
    compute_batch(items) -> dict of str to (n, d) array
        Runs in the calling thread, one batch at a time.
    device_name() -> str
        Where ``compute_batch`` runs (``cpu`` unless the subclass says otherwise).
    _cache_prefix() -> str
        Start of the cache file name.
    """

    def _cache_prefix(self) -> str:
        return type(self).__name__.lower()

    def store_config(self) -> JSONObject:
        """``extractor_config()`` with the taps: what the store is fingerprinted by (parameters validated first)."""
        self._validate_params()
        return {**self.extractor_config(), "taps": list(self.feature_taps())}

    @property
    def last_report_(self) -> ExtractionReport:
        """What the last ``transform`` did. Not fitted state: ``check_is_fitted`` does not count it."""
        try:
            return self.__dict__["_last_report"]
        except KeyError:
            raise AttributeError("last_report_ is set by transform; nothing was transformed yet") from None

    def store_path(self, config: JSONObject | None = None) -> Path | None:
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

    def device_name(self) -> str:
        return "cpu"

    def extract(
        self,
        X: ImageInput,
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
        sources: list[ImageSource],
        config: JSONObject,
        path: Path | None,
        return_features: bool,
        progress: Callable[[int], None] | None,
        index_columns: Mapping[str, Sequence[str]] | None,
        engine: ExtractionEngine | None,
    ) -> tuple[dict[str, np.ndarray] | None, ExtractionReport]:
        engine = engine or LocalEngine()
        if path is not None and not engine.distributed:  # a cluster's driver reads no image
            cached = _read_if_all_cached(sources, path, config, return_features=return_features, index_columns=index_columns)
            if cached is not None:
                if progress is not None:
                    progress(len(sources))
                return cached
        if path is None:  # no cache: the rows live in memory for this call
            memory = MemoryRows(self.feature_taps())
            report = engine.run(self, sources, memory, progress=progress)
            report.store_path = None
            return (_gather(memory, report.keys) if return_features else None), report
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StoreError(f"{path.parent}: cannot create the feature store's folder ({exc.strerror or exc})") from None
        dims = None if path.exists() else self.feature_dims()  # an existing store knows its widths: no model is built
        with FeatureStore(path, config, dims=dims, dtype=self.dtype) as store:
            report = engine.run(self, sources, store, progress=progress)
            report.store_path = str(path)
            if index_columns is not None:
                names = [source_name(s, i) for i, s in enumerate(sources)]
                store.set_index(names, report.keys, **index_columns)
            if not return_features:
                _verify(store, report.keys)
                return None, report
            store.compact()  # merge now (close would anyway), so the rows are read from HDF5 in bulk
            return _gather(store, report.keys), report

    def transform(self, X: ImageInput) -> np.ndarray:
        """Features of each image, taps concatenated: float32 of shape (n, n_features)."""
        features, report = self.extract(X)
        self.__dict__["_last_report"] = report
        blocks = cast(dict[str, np.ndarray], features)  # return_features=True: never None
        return np.concatenate([blocks[t] for t in self.feature_taps()], axis=1)

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.requires_fit = False
        tags.input_tags.two_d_array = False
        tags.input_tags.string = True
        tags.transformer_tags.preserves_dtype = ["float32"]
        return tags


def _read_if_all_cached(
    sources: Sequence[ImageSource],
    path: Path,
    config: JSONObject,
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
        features = None
        if return_features:
            features = _gather(store, keys)
        else:
            _verify(store, keys)
    report.seconds = time.perf_counter() - started
    return features, report


def _verify(store: RowStore, keys: Sequence[str | None], block: int = 4096) -> None:
    """Read the rows of ``keys`` through their checksums without keeping them (a damaged one raises)."""
    wanted = [k for k in dict.fromkeys(keys) if k is not None]
    for start in range(0, len(wanted), block):
        store.get(wanted[start : start + block])


def _gather(store: RowStore, keys: Sequence[str | None]) -> dict[str, np.ndarray]:
    """Rows for ``keys`` from the store; NaN rows where a key is ``None`` (a skipped image)."""
    ok = [i for i, k in enumerate(keys) if k is not None]
    rows = store.get([k for k in keys if k is not None])
    out = {}
    for tap, block in rows.items():
        full = np.full((len(keys), block.shape[1]), np.nan, dtype=np.float32)
        full[ok] = block
        out[tap] = full
    return out
