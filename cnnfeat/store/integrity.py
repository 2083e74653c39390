"""Integrity at rest: reads that check every chunk, the damage of a store, and its repair."""

from __future__ import annotations

import functools
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Concatenate, ParamSpec, TypeVar

import numpy as np

from cnnfeat.exceptions import CnnfeatError, StoreCorruptError, StoreError, StoreMismatchError
from cnnfeat.files import install
from cnnfeat.hints import H5Dataset, H5File
from cnnfeat.store.lock import StoreLock
from cnnfeat.store.schema import FORMAT_NAME, create_datasets, encoded_texts, strings_digest, text, write_attrs, write_index

__all__ = ["check_store", "repair_store"]

logger = logging.getLogger(__name__)

#: what h5py raises for a file whose HDF5 structure (not its checksummed data) is damaged
DAMAGED_FILE = (OSError, RuntimeError, KeyError, ValueError, TypeError)
UNREADABLE = "its HDF5 structure is damaged; move it aside and extract again to recompute its rows from the images"

if TYPE_CHECKING:
    from cnnfeat.store.feature_store import FeatureStore as _Store

_P = ParamSpec("_P")
_R = TypeVar("_R")


class MissingKeyError(KeyError):
    """A key the store does not hold (the caller's mistake, not damage)."""


def reports_damage(method: Callable[Concatenate[_Store, _P], _R]) -> Callable[Concatenate[_Store, _P], _R]:
    """Turn what h5py raises on a damaged HDF5 structure into a StoreError naming the file."""

    @functools.wraps(method)
    def wrapper(store: _Store, /, *args: _P.args, **kwargs: _P.kwargs) -> _R:
        try:
            return method(store, *args, **kwargs)
        except (CnnfeatError, MissingKeyError):
            raise
        except DAMAGED_FILE as exc:
            raise StoreError(f"{store.path}: cannot read the feature store ({exc}); {UNREADABLE}") from exc

    return wrapper


def read_checked(ds: H5Dataset, selection: slice | np.ndarray | list[int], path: Path | str, name: str) -> np.ndarray:
    """``ds[selection]``; a chunk whose checksum fails becomes a StoreCorruptError naming its rows."""
    try:
        return np.asarray(ds[selection])
    except (RuntimeError, ValueError, KeyError) as exc:  # the dataset's own metadata is damaged
        raise StoreError(f"{path}: cannot read /{name} ({exc}); {UNREADABLE}") from exc
    except OSError as exc:
        wanted = set(np.arange(ds.shape[0])[selection].tolist())
        bad = [r for r in damaged_rows(ds, len(ds)) if r in wanted]
        if not bad:  # not a checksum: an I/O error of the file itself
            raise StoreError(f"{path}: cannot read /{name} ({exc})") from exc
        raise StoreCorruptError(str(path), name, bad) from exc


def damaged_rows(ds: H5Dataset, n: int) -> list[int]:
    """Rows (below ``n``) of every chunk of ``ds`` that cannot be read back."""
    step = ds.chunks[0] if ds.chunks else max(n, 1)
    bad: list[int] = []
    for start in range(0, n, step):
        stop = min(start + step, n)
        try:
            ds[start:stop]
        except OSError:
            bad.extend(range(start, stop))
    return bad


def damage_of(f: H5File) -> dict[str, list[int]]:
    """Every damaged dataset of an open store, with its damaged rows (see :meth:`FeatureStore.check`)."""
    n = int(f.attrs["n_rows"])
    found: dict[str, list[int]] = {}
    datasets = [("keys", f["keys"], n)] + [(f"features/{t}", ds, n) for t, ds in f["features"].items()]
    if "index" in f:
        datasets += [(f"index/{name}", ds, len(ds)) for name, ds in f["index"].items()]
    datasets.append(("paths", f["paths"], n))
    for name, ds, rows in datasets:
        if not hasattr(ds, "dtype"):  # a link whose target is damaged resolves to nothing
            found[name] = []
            continue
        expected = ds.attrs.get("sha256")  # a string column's digest, beside its chunks' checksums (from format 3)
        bad = damaged_rows(ds, rows) if ds.dtype.kind != "O" else []
        if bad:
            found[name] = bad
        elif expected is not None and strings_digest(ds[:rows]) != expected:
            found[name] = []  # the damage cannot be placed on rows
    return found


def copy_rows(src: H5File, tmp: Path, rows: list[int], *, keep_index: bool = True, block: int = 4096) -> None:
    """Write a fresh store file holding ``rows`` of ``src`` (current format); a kept index follows its keys."""
    import h5py

    config = json.loads(src.attrs["config"])
    taps = list(config["taps"])
    dims = {t: int(src["features"][t].shape[1]) for t in taps}
    paths = encoded_texts(text(v) for v in src["paths"][: int(src.attrs["n_rows"])])  # format 2's are variable-length
    with h5py.File(tmp, "w") as f:
        create_datasets(f, taps, dims, src["features"][taps[0]].dtype, path_width=paths.dtype.itemsize)
        write_attrs(f, config, n_rows=0)
        for name in ("created", "cnnfeat_version"):
            if name in src.attrs:
                f.attrs[name] = src.attrs[name]
        n = len(rows)
        for ds in [f["keys"], f["paths"], *f["features"].values()]:
            ds.resize((n, *ds.shape[1:]))
        for start in range(0, n, block):
            part = np.asarray(rows[start : start + block], dtype=np.int64)
            f["keys"][start : start + len(part)] = src["keys"][part]
            f["paths"][start : start + len(part)] = paths[part]
            for t in taps:
                f["features"][t][start : start + len(part)] = src["features"][t][part]
        f["paths"].attrs["sha256"] = strings_digest(f["paths"][:n])
        if "index" in src and keep_index:
            new_row = {k.decode(): i for i, k in enumerate(f["keys"][:n])}
            index = src["index"]
            keys = [k.decode() for k in index["key"][:]]
            columns = {name: [v.decode() if isinstance(v, bytes) else str(v) for v in index[name][:]]
                       for name in index if name not in ("row",)}  # fmt: skip
            write_index(f.create_group("index"), np.array([new_row.get(k, -1) for k in keys], dtype=np.int64), columns)
        f.attrs["n_rows"] = n


def check_store(path: str | os.PathLike[str]) -> dict[str, list[int]]:
    """Read every chunk of every dataset of a store, and each string column's digest: ``{dataset: damaged rows}``.

    Empty when the file is intact. A string column whose digest differs is listed with no
    rows (its damage cannot be placed on rows). A version-1 store has no checksums, so only
    what HDF5 itself cannot read is found there.

    Raises
    ------
    StoreError
        The file does not open as HDF5 (damage in its metadata), or is not a cnnfeat store.
    """
    import h5py

    try:
        with h5py.File(path, "r") as f:
            if f.attrs.get("format") != FORMAT_NAME:
                raise StoreMismatchError(f"{path}: not a cnnfeat feature store (no format attribute)")
            return damage_of(f)
    except DAMAGED_FILE as exc:
        raise StoreError(f"{path}: cannot read as a feature store ({exc}); it is damaged or not a cnnfeat store") from exc


def repair_store(path: str | os.PathLike[str]) -> int:
    """Rewrite a damaged store without its damaged rows; returns how many rows were dropped.

    Takes the writer's lock. A row is dropped when its key or any of its features sits in a
    chunk that fails its checksum; a damaged ``/index`` (the last run's inputs) is dropped
    whole. A pending journal is left alone (its records carry their own CRC). The dropped
    rows are simply absent afterwards: the next extraction recomputes them from the images.
    """
    import h5py

    path = Path(path)
    lock = StoreLock(path.with_name(path.name + ".lock"))
    lock.acquire()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with h5py.File(path, "r") as src:
            n = int(src.attrs["n_rows"])
            damage = damage_of(src)
            bad = set().union(*(set(rows) for name, rows in damage.items() if name == "keys" or name.startswith("features/")))
            if not damage:
                return 0
            keep_index = not any(name.startswith("index/") for name in damage)
            copy_rows(src, tmp, [r for r in range(n) if r not in bad], keep_index=keep_index)
        install(tmp, path)
        logger.warning("%s: dropped %d damaged rows (%s)", path, len(bad), ", ".join(sorted(damage)))
        return len(bad)
    finally:
        tmp.unlink(missing_ok=True)
        lock.release()
