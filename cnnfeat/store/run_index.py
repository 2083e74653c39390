"""A store's ``/index``: the inputs of its last run in their order, with the row each one's features are in."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnfeat.exceptions import ConfigError, StoreCorruptError
from cnnfeat.hints import H5File
from cnnfeat.store.integrity import read_checked
from cnnfeat.store.schema import strings_digest, text, write_index

__all__ = ["index_table", "read_run_index", "write_run_index"]


def index_table(paths: Sequence[str], keys: Sequence[str | None], columns: Mapping[str, Sequence[str]]) -> dict[str, list[str]]:
    """The string columns of a run's ``/index``: path, key ("" for a skipped input) and any extra column."""
    table = {"path": [str(p) for p in paths], "key": [k or "" for k in keys]}
    for name, column in columns.items():
        if len(column) != len(paths):
            raise ConfigError(f"index column {name!r} has {len(column)} entries for {len(paths)} paths")
        table[name] = [str(v) for v in column]
    return table


def write_run_index(f: H5File, table: Mapping[str, Sequence[str]], rows_of: Mapping[str, int]) -> None:
    """Replace ``/index`` in the open HDF5 file ``f``: ``table``'s columns and each key's row (-1: skipped)."""
    if "index" in f:
        del f["index"]
    group = f.create_group("index")
    group.attrs["description"] = "the inputs of the last run in their order; row -1 means skipped"
    rows = [rows_of.get(k, -1) if k else -1 for k in table["key"]]
    write_index(group, np.asarray(rows, dtype=np.int64), table)


def read_run_index(h5: H5File, path: Path) -> dict[str, list[Any]] | None:
    """``/index`` as columns (``row`` as ints, the rest as str), checked; None without one."""
    if "index" not in h5:
        return None
    columns: dict[str, list[Any]] = {}
    for name, ds in h5["index"].items():
        values = read_checked(ds, slice(None), path, f"index/{name}")
        if ds.dtype.kind == "O" and ds.attrs.get("sha256") not in (None, strings_digest(values)):
            raise StoreCorruptError(str(path), f"index/{name}", [])
        columns[name] = [int(v) for v in values] if name == "row" else [text(v) for v in values]
    return columns
