"""FeatureStore: the HDF5 store of feature rows, written through a CRC-framed journal.

See :mod:`cnnfeat.store` for the layout, the crash safety and the integrity at rest.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import time
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from cnnfeat.exceptions import CnnfeatError, ConfigError, StoreError, StoreMismatchError
from cnnfeat.files import install
from cnnfeat.hints import H5File, JSONObject
from cnnfeat.store.integrity import DAMAGED_FILE, UNREADABLE, MissingKeyError, copy_rows, read_checked, reports_damage
from cnnfeat.store.journal import Journal
from cnnfeat.store.lock import StoreLock
from cnnfeat.store.run_index import index_table, read_run_index, write_run_index
from cnnfeat.store.schema import (
    FEATURE_CODE_VERSION,
    FORMAT_NAME,
    FORMAT_VERSION,
    READABLE_FORMATS,
    append_paths,
    config_diff,
    create_datasets,
    fingerprint_of,
    storable_texts,
    text,
    write_attrs,
)

__all__ = ["FeatureStore"]

logger = logging.getLogger(__name__)


class FeatureStore:
    """Content-addressed HDF5 feature cache with atomic commits and resume.

    Parameters
    ----------
    path : str or Path
        The HDF5 file.
    config : dict, optional
        The extractor configuration; required to create a store, checked
        (through its fingerprint) when opening an existing one.
    dims : dict of str to int, optional
        Feature width per tap; required to create a store.
    dtype : {"float32", "float16"}
        Storage type of the features (reads return float32).
    mode : {"a", "r"}
        ``"a"``: open for writing (takes the lock, recovers a crashed run's journal);
        ``"r"``: read only, no lock.
    durable : bool
        ``fsync`` each journal record, so committed rows survive a power cut too.

    Examples
    --------
    >>> with FeatureStore("f.h5", config={"backbone": "x"}, dims={"pool": 4}) as store:  # doctest: +SKIP
    ...     store.append(["ab" * 32], {"pool": np.ones((1, 4))}, ["a.jpg"])
    ...     store.get(["ab" * 32])["pool"].shape
    (1, 4)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        config: JSONObject | None = None,
        *,
        dims: Mapping[str, int] | None = None,
        dtype: str = "float32",
        mode: str = "a",
        durable: bool = True,
    ) -> None:
        if mode not in ("a", "r"):
            raise ConfigError(f"mode must be 'a' or 'r'; got {mode!r}")
        if dtype not in ("float32", "float16"):
            raise ConfigError(f"dtype must be 'float32' or 'float16'; got {dtype!r}")
        self.path = Path(path)
        self.mode = mode
        self.durable = durable
        self._journal_path = self.path.with_name(self.path.name + ".journal")
        self._journal = Journal(self._journal_path, "", durable=durable)  # its fingerprint is known once the file is read
        self._lock = StoreLock(self.path.with_name(self.path.name + ".lock")) if mode == "a" else None
        self._h5: H5File | None = None
        self._index: dict[str, int] = {}  # key -> row in the HDF5 file
        self._pending: dict[str, tuple[int, int]] = {}  # key -> (journal record, row within it)
        self._pending_paths: dict[str, str] = {}
        self._pending_rows = 0
        self._run_index: dict[str, list[str]] | None = None
        self._speed: float | None = None
        if self._lock is not None:
            self._lock.acquire()
            for leftover in self.path.parent.glob(f".{self.path.name}.*.tmp"):  # a merge cut short by a crash
                leftover.unlink(missing_ok=True)
        try:
            self._open(config, dims, dtype)
        except CnnfeatError:
            self.close(compact=False)
            raise
        except DAMAGED_FILE as exc:  # HDF5 metadata that no longer parses: damage, reported as such
            self.close(compact=False)
            raise StoreError(f"{self.path}: cannot read the feature store ({exc}); {UNREADABLE}") from exc
        except BaseException:
            self.close(compact=False)
            raise

    def _open(self, config: JSONObject | None, dims: Mapping[str, int] | None, dtype: str) -> None:
        import h5py

        if not self.path.exists():
            if self.mode == "r":
                raise StoreError(f"{self.path}: no feature store at this path")
            if config is None or not dims:
                raise ConfigError("creating a feature store needs its config and the dims of each tap")
            try:
                self._create(config, dims, dtype)
            except OSError as exc:
                raise StoreError(f"{self.path}: cannot create the feature store ({exc.strerror or exc})") from exc
        try:
            self._h5 = h5py.File(self.path, "r")
        except OSError as exc:
            raise StoreError(f"{self.path}: cannot open as HDF5 ({exc}); it is not a cnnfeat store or is damaged") from exc
        attrs = self._h5.attrs
        if attrs.get("format") != FORMAT_NAME:
            raise StoreMismatchError(f"{self.path}: not a cnnfeat feature store (no format attribute); refusing to write to it")
        self.format_version = int(attrs.get("format_version", -1))
        if self.format_version not in READABLE_FORMATS:
            raise StoreMismatchError(
                f"{self.path}: store format version {attrs.get('format_version')} is not one this cnnfeat reads "
                f"({', '.join(map(str, READABLE_FORMATS))}); extract into a new file"
            )
        if self.format_version < FORMAT_VERSION:
            logger.info(
                "%s: written before checksums at rest (format %d); the next write upgrades it", self.path, self.format_version
            )
        self.config: JSONObject = json.loads(attrs["config"])
        self.fingerprint: str = str(attrs["fingerprint"])
        if int(self.config.get("feature_code_version", -1)) != FEATURE_CODE_VERSION:
            raise StoreMismatchError(
                f"{self.path}: written by feature code version {self.config.get('feature_code_version')}, "
                f"this cnnfeat computes version {FEATURE_CODE_VERSION}; features would differ, so they are not mixed. "
                "Extract into a new file."
            )
        if config is not None and fingerprint_of(config) != self.fingerprint:
            raise StoreMismatchError(
                f"{self.path}: holds features of another extractor configuration "
                f"(fingerprint {self.fingerprint[:12]}, wanted {fingerprint_of(config)[:12]}; "
                f"differs in: {', '.join(config_diff(self.config, config)) or 'unknown'}). "
                "Use another output path, or delete the file to start over."
            )
        self.dims: dict[str, int] = {t: int(self._h5["features"][t].shape[1]) for t in self.config["taps"]}
        self.dtype = np.dtype(self._h5["features"][self.config["taps"][0]].dtype)
        n = int(attrs["n_rows"])
        keys = read_checked(self._h5["keys"], slice(0, n), self.path, "keys")
        self._index = {k.decode(): i for i, k in enumerate(keys)}
        self._journal = Journal(self._journal_path, self.fingerprint, durable=self.durable)
        if self.mode == "a":
            self._recover_journal()

    def _create(self, config: JSONObject, dims: Mapping[str, int], dtype: str) -> None:
        import h5py

        taps = list(config.get("taps", dims))
        if sorted(taps) != sorted(dims):
            raise ConfigError(f"config taps {taps} and dims {sorted(dims)} disagree")
        tmp = self._tmp_path()
        with h5py.File(tmp, "w") as f:
            create_datasets(f, taps, dims, dtype)
            write_attrs(f, config, n_rows=0)
        install(tmp, self.path)

    @property
    def taps(self) -> list[str]:
        return list(self.config["taps"])

    @property
    def n_rows(self) -> int:
        """Committed rows: in the HDF5 file plus complete journal records."""
        return len(self._index) + len(self._pending)

    def __contains__(self, key: object) -> bool:
        return key in self._index or key in self._pending

    def __len__(self) -> int:
        return self.n_rows

    def keys(self) -> list[str]:
        """Every committed key, file rows first."""
        return list(self._index) + list(self._pending)

    @reports_damage
    def get(self, keys: Sequence[str], taps: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        """Features of ``keys`` (in that order) as float32 arrays, one per tap.

        Raises ``KeyError`` naming the first key that is not in the store.
        """
        taps = list(taps) if taps is not None else self.taps
        out = {t: np.empty((len(keys), self.dims[t]), np.float32) for t in taps}
        in_file = [(i, self._index[k]) for i, k in enumerate(keys) if k in self._index]
        in_journal = [(i, self._pending[k]) for i, k in enumerate(keys) if k not in self._index and k in self._pending]
        if len(in_file) + len(in_journal) != len(keys):
            missing = next(k for k in keys if k not in self)
            raise MissingKeyError(f"key {missing} is not in feature store {self.path}")
        if in_file:
            positions = np.array([i for i, _ in in_file])
            rows = np.array([r for _, r in in_file])
            order = np.argsort(rows)
            unique_rows, inverse = np.unique(rows[order], return_inverse=True)
            for t in taps:  # h5py wants increasing indices
                block = read_checked(self._file["features"][t], unique_rows, self.path, f"features/{t}")
                out[t][positions[order]] = block[inverse]
        widths, wanted = [self.dims[t] for t in self.taps], [t in taps for t in self.taps]
        read = [t for t in self.taps if t in taps]  # in the journal's order: the store's
        for i, (record, row) in in_journal:
            for t, vector in zip(read, self._journal.read_row(record, row, widths, wanted, self.dtype)):
                out[t][i] = vector
        return out

    def append(self, keys: Sequence[str], features: Mapping[str, np.ndarray], paths: Sequence[str]) -> int:
        """Commit rows for new keys (keys already present are skipped). Returns rows added.

        The rows are committed when this returns: a crash afterwards loses none of them.
        """
        if self.mode != "a":
            raise StoreError(f"{self.path}: opened read-only")
        if set(features) != set(self.taps):
            raise ConfigError(f"features must have exactly the taps {self.taps}; got {sorted(features)}")
        if not (len(keys) == len(paths) == len(next(iter(features.values())))):
            raise ConfigError("keys, paths and feature rows must have the same length")
        seen: set[str] = set()
        take = []
        for i, key in enumerate(keys):
            if len(key) != 64:
                raise ConfigError(f"key {key!r} is not a 64-character sha256 hex digest")
            if key not in self and key not in seen:
                seen.add(key)
                take.append(i)
        if not take:
            return 0
        blocks = []
        for t in self.taps:
            block = np.asarray(features[t])[take]
            if block.ndim != 2 or block.shape[1] != self.dims[t]:
                raise ConfigError(f"tap {t!r} rows must have width {self.dims[t]}; got shape {block.shape}")
            blocks.append(np.ascontiguousarray(block, dtype=self.dtype))
        kept_keys, kept_paths = [keys[i] for i in take], [str(paths[i]) for i in take]
        self._add_record(self._journal.append(kept_keys, kept_paths, blocks, self.n_rows), kept_keys, kept_paths)
        if self._pending_rows > max(4096, len(self._index)):
            self.compact()
        return len(take)

    def note_speed(self, seconds_per_image: float) -> None:
        """Record how fast the rows being added were computed (kept as an attribute at the next merge)."""
        self._speed = float(seconds_per_image)

    @property
    def measured_speed(self) -> float | None:
        """Seconds per image of the last extraction that computed rows into this store (None if never noted)."""
        value = self._h5.attrs.get("extraction_seconds_per_image") if self._h5 is not None else None
        try:
            return float(value) if value is not None and 0 < float(value) < 1e6 else None
        except (TypeError, ValueError):
            return None

    def set_index(self, paths: Sequence[str], keys: Sequence[str | None], **columns: Sequence[str]) -> None:
        """Record which row each input of a run maps to, as ``/index`` (written on close).

        ``/index/path``, ``/index/key`` and ``/index/row`` (-1 for a skipped input), plus any
        extra string columns such as ``label``. A later call replaces the index.
        """
        if self.mode != "a":
            raise StoreError(f"{self.path}: opened read-only")
        self._run_index = index_table(paths, keys, columns)

    def holds_index(self, paths: Sequence[str], keys: Sequence[str | None], **columns: Sequence[str]) -> bool:
        """Whether ``/index`` already says what :meth:`set_index` with these arguments would write.

        A rerun whose every image is cached and whose inputs are unchanged then writes nothing.
        """
        try:
            stored = self.read_index()
        except StoreError:
            return False
        if stored is None or self._pending:
            return False
        wanted: dict[str, list[Any]] = {n: storable_texts(c) for n, c in index_table(paths, keys, columns).items()}
        wanted["row"] = [self._index.get(k, -1) if k else -1 for k in keys]
        return bool(stored == wanted)

    def _write_run_index(self, f: H5File) -> None:
        if self._run_index is not None:  # the rows the pending keys get in this merge
            rows_of = self._index | {k: len(self._index) + i for i, k in enumerate(self._pending)}
            write_run_index(f, self._run_index, rows_of)
            self._run_index = None

    def _add_record(self, record: int, keys: Sequence[str], paths: Sequence[str]) -> None:
        for row, (key, path) in enumerate(zip(keys, paths)):
            if key not in self._pending and key not in self._index:  # merged already if a crash hit after os.replace
                self._pending[key] = (record, row)
                self._pending_paths[key] = path
        self._pending_rows += len(keys)
        if not self._pending:  # every row of the journal is in the file already
            self._journal.records.clear()
            self._pending_rows = 0

    def _recover_journal(self) -> None:
        """Re-read a journal left by a crashed writer (complete records kept, a torn tail dropped), then merge it."""
        row_bytes = sum(self.dims[t] for t in self.taps) * self.dtype.itemsize
        for record, keys, paths in self._journal.recover(row_bytes):
            self._add_record(record, keys, paths)
        if self._pending_rows:
            logger.info("%s: recovered %d committed rows from the journal", self.path, len(self._pending))
            self.compact()

    @reports_damage
    def read_index(self) -> dict[str, list[Any]] | None:
        """The last run's ``/index`` as columns (``row`` as ints, the rest as str), checked; None without one.

        Raises :class:`~cnnfeat.exceptions.StoreCorruptError` when a column fails its checksum or digest.
        """
        return read_run_index(self._file, self.path)

    @reports_damage
    def paths_of(self, keys: Sequence[str]) -> list[str]:
        """The path each key's row was first computed from."""
        paths = self._file["paths"]
        return [text(read_checked(paths, slice(r, r + 1), self.path, "paths")[0]) for r in (self._index[k] for k in keys)]

    @property
    def _file(self) -> H5File:
        """The open HDF5 file (a closed store has none)."""
        if self._h5 is None:
            raise StoreError(f"{self.path}: the feature store is closed")
        return self._h5

    def compact(self) -> None:
        """Merge the journal into the HDF5 file and atomically replace it."""
        import h5py

        if self.mode != "a" or not (self._journal.records or self._run_index is not None):
            return
        if self.format_version < FORMAT_VERSION:  # rewrite with checksums first, then merge as usual
            self._rewrite(range(int(self._file.attrs["n_rows"])))
        new_keys = list(self._pending)
        tmp = self._tmp_path()
        needed = self.path.stat().st_size + self._journal.size
        free = shutil.disk_usage(self.path.parent).free
        if free < needed + (1 << 20):  # said before HDF5 starts writing: a full disk mid-write leaves it in a bad state
            raise StoreError(
                f"{self.path}: not enough disk space to merge the journal ({free:,} bytes free, about {needed:,} "
                f"needed); the {len(new_keys)} rows committed since the last merge are kept in {self._journal_path}, "
                "and the next run with room merges them"
            )
        try:
            shutil.copyfile(self.path, tmp)
            with h5py.File(tmp, "r+") as f:
                start = int(f.attrs["n_rows"])
                end = start + len(new_keys)
                if new_keys:
                    f["keys"].resize((end,))
                    f["keys"][start:end] = np.array([k.encode() for k in new_keys], dtype="S64")
                    append_paths(f, start, [self._pending_paths[k] for k in new_keys])
                chunk = 8192
                for c in range(0, len(new_keys), chunk):
                    part = new_keys[c : c + chunk]
                    rows = self.get(part)
                    for t in self.taps:
                        ds = f["features"][t]
                        if ds.shape[0] < start + c + len(part):
                            ds.resize((end, ds.shape[1]))
                        ds[start + c : start + c + len(part)] = rows[t]
                self._write_run_index(f)
                f.attrs["n_rows"] = end  # the commit marker, written after the rows
                f.attrs["updated"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
                if self._speed is not None:
                    f.attrs["extraction_seconds_per_image"] = self._speed
            self._file.close()
            install(tmp, self.path)
        except (OSError, RuntimeError) as exc:  # h5py raises RuntimeError for some failed writes (ENOSPC on close)
            with contextlib.suppress(OSError):
                tmp.unlink()
            raise StoreError(
                f"{self.path}: could not write the feature store ({exc}); the committed rows are kept in {self._journal_path}"
            ) from exc
        finally:
            if self._h5 is None or not self._h5.id.valid:
                self._h5 = h5py.File(self.path, "r")
        for i, key in enumerate(new_keys, start=len(self._index)):
            self._index[key] = i
        self._journal.remove()
        self._pending.clear()
        self._pending_paths.clear()
        self._pending_rows = 0

    def _rewrite(self, rows: Iterable[int]) -> None:
        """Replace the file by a fresh copy (current format, checksums) holding only ``rows``; the journal stays."""
        import h5py

        tmp = self._tmp_path()
        try:
            copy_rows(self._file, tmp, list(rows))
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._file.close()
        install(tmp, self.path)
        self._h5 = h5py.File(self.path, "r")
        self.format_version = FORMAT_VERSION
        keys = self._h5["keys"][: int(self._h5.attrs["n_rows"])]
        self._index = {k.decode(): i for i, k in enumerate(keys)}

    def _tmp_path(self) -> Path:
        return self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")

    def close(self, compact: bool = True) -> None:
        """Merge pending rows into the HDF5 file (when ``compact``), close it, release the lock."""
        try:
            if compact and self.mode == "a" and (self._journal.records or self._run_index is not None):
                self.compact()
        finally:
            self._journal.close()
            if self._h5 is not None:
                self._h5.close()
                self._h5 = None
            if self._lock is not None:
                self._lock.release()
                self._lock = None

    def __enter__(self) -> FeatureStore:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None) -> None:
        # after a failed write (a full disk) the journal keeps every committed row: merging again would fail again
        self.close(compact=not isinstance(exc, StoreError))

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.path)!r}, rows={self.n_rows}, taps={self.taps}, fingerprint={self.fingerprint[:12]})"
