"""A feature store described, and its features written out as NumPy, Parquet or CSV tables.

Rows follow the store's ``/index``, the inputs of the last run in their order
(skipped inputs, which have no features, are left out); a store without an index
is written in its own row order. Each row carries ``path``, ``key`` (the sha256
of the image file) and, where the index has them, ``label``, ``split`` and
``domain``; then one column per feature dimension, named ``<tap>_<i>``.

Examples
--------
>>> from cnnfeat.export import export_features, store_info  # doctest: +SKIP
>>> store_info("webcam.h5")["rows"]  # doctest: +SKIP
795
>>> export_features("webcam.h5", "webcam.parquet", format="parquet")  # doctest: +SKIP
>>> import pandas as pd; pd.read_parquet("webcam.parquet").shape  # doctest: +SKIP
(795, 1282)
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnfeat.exceptions import ConfigError
from cnnfeat.files import atomic_write
from cnnfeat.hints import JSONObject
from cnnfeat.store import FeatureStore

__all__ = ["EXPORT_FORMATS", "export_features", "feature_table", "store_info"]

EXPORT_FORMATS = ("npz", "parquet", "csv")
_TEXT_COLUMNS = ("path", "label", "split", "domain", "key")


def store_info(path: str | os.PathLike[str]) -> JSONObject:
    """What a store holds: rows, taps with their widths, dtype, size on disk, configuration and provenance."""
    import h5py

    path = Path(path)
    with FeatureStore(path, mode="r") as store:
        info: JSONObject = {
            "file": str(path),
            "bytes": path.stat().st_size,
            "rows": store.n_rows,
            "taps": dict(store.dims),
            "dtype": str(store.dtype),
            "fingerprint": store.fingerprint,
            "config": store.config,
        }
    with h5py.File(path, "r") as f:
        info["attrs"] = {k: _plain(f.attrs[k]) for k in f.attrs if k not in ("config", "description")}
        if "index" in f:
            rows = f["index"]["row"][:]
            info["index"] = {"inputs": len(rows), "skipped": int((rows < 0).sum()), "columns": sorted(f["index"])}
    journal = path.with_name(path.name + ".journal")
    if journal.exists():
        info["journal_bytes"] = journal.stat().st_size  # rows a crashed run committed, merged by the next writer
    return info


def _plain(value: Any) -> Any:
    if isinstance(value, bytes):
        return value.decode()
    return value.item() if isinstance(value, np.generic) else value


def feature_table(
    path: str | os.PathLike[str], taps: Sequence[str] | None = None
) -> tuple[dict[str, list[str]], dict[str, np.ndarray]]:
    """``(text columns, {tap: (n, d) float32})`` of a store, in the order of its index.

    Raises
    ------
    ConfigError
        A requested tap is not in the store (the message lists those it has).
    """
    path = Path(path)
    with FeatureStore(path, mode="r") as store:
        wanted = list(taps) if taps else store.taps
        unknown = [t for t in wanted if t not in store.dims]
        if unknown:
            raise ConfigError(f"{path}: no tap {unknown[0]!r}; the store holds {', '.join(store.taps)}")
        index = store.read_index()
        if index is not None:
            kept = [i for i, row in enumerate(index["row"]) if row >= 0]
            columns = {name: [index[name][i] for i in kept] for name in _TEXT_COLUMNS if name in index}
        else:
            keys = store.keys()
            columns = {"path": store.paths_of(keys), "key": keys}
        features = store.get(columns["key"], wanted)
    return columns, features


def export_features(
    path: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    format: str | None = None,
    taps: Sequence[str] | None = None,
) -> int:
    """Write the features of store ``path`` to ``output`` as ``npz``, ``parquet`` or ``csv``; returns the row count.

    ``format`` defaults to ``output``'s suffix. ``npz`` holds one array per text column and
    one ``(n, d)`` array per tap; ``parquet`` and ``csv`` one column per feature dimension.
    The file is written beside ``output`` and then moved into place, so a failed export
    leaves no partial file.
    """
    output = Path(output)
    format = format or output.suffix.lstrip(".").lower()
    if format not in EXPORT_FORMATS:
        raise ConfigError(f"unknown export format {format!r}; choose from {', '.join(EXPORT_FORMATS)}")
    columns, features = feature_table(path, taps)

    def write(tmp: Path) -> None:
        if format == "npz":
            with open(tmp, "wb") as f:
                arrays: JSONObject = {k: np.asarray(v, dtype=str) for k, v in columns.items()} | features
                np.savez(f, **arrays)
        elif format == "parquet":
            _write_parquet(tmp, columns, features, path)
        else:
            _write_csv(tmp, columns, features)

    atomic_write(output, write)
    return len(columns["key"])


def _feature_names(features: dict[str, np.ndarray]) -> list[str]:
    return [f"{tap}_{i}" for tap, X in features.items() for i in range(X.shape[1])]


def _write_parquet(tmp: Path, columns: dict[str, list[str]], features: dict[str, np.ndarray], source: Any) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise ConfigError('writing Parquet needs pyarrow: pip install "cnnfeat[export]" (or pip install pyarrow)') from None
    X = np.concatenate(list(features.values()), axis=1) if features else np.zeros((len(columns["key"]), 0), np.float32)
    arrays = [pa.array(v, pa.string()) for v in columns.values()] + [pa.array(X[:, j]) for j in range(X.shape[1])]
    table = pa.Table.from_arrays(arrays, names=[*columns, *_feature_names(features)])
    table = table.replace_schema_metadata(
        {"cnnfeat": json.dumps({"store": str(source), "taps": {t: X.shape[1] for t, X in features.items()}})}
    )
    pq.write_table(table, tmp)


def _write_csv(tmp: Path, columns: dict[str, list[str]], features: dict[str, np.ndarray]) -> None:
    X = np.concatenate(list(features.values()), axis=1)
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow([*columns, *_feature_names(features)])
        for i in range(len(columns["key"])):
            writer.writerow([columns[c][i] for c in columns] + [repr(float(v)) for v in X[i]])
