"""The HDF5 schema of a feature store: its format constants, datasets, attributes, and string-column digests."""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from cnnfeat.hints import H5Dataset, H5File, H5Group, JSONObject

__all__ = ["FEATURE_CODE_VERSION", "FORMAT_VERSION", "fingerprint_of"]

#: 2: checksums at rest (fletcher32 chunks, sha256 of string columns); 3: string columns as fixed-length UTF-8
#: bytes with a fletcher32 checksum per chunk, as every other column (a damaged variable-length string could
#: crash HDF5 itself before any checksum was read). 1 and 2 are still read, and rewritten as 3 on the next write.
FORMAT_VERSION = 3
READABLE_FORMATS = (1, 2, 3)
#: bump when a code change alters feature values for an unchanged configuration
FEATURE_CODE_VERSION = 1
FORMAT_NAME = "cnnfeat.FeatureStore"
#: fletcher32 on new datasets (a benchmark turns it off to measure what it costs)
CHECKSUMS = True
DESCRIPTION = (
    "cnnfeat feature store. Row i of every /features/<tap> dataset holds the features of the image "
    "whose file bytes have sha256 /keys[i]; /paths[i] is the path it was first computed from. Only the "
    "first n_rows rows are valid. attrs['config'] is the JSON of the extractor configuration whose "
    "sha256 is attrs['fingerprint']."
)


def fingerprint_of(config: JSONObject) -> str:
    """sha256 of the canonical JSON of an extractor configuration."""
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


def create_datasets(f: H5File, taps: Sequence[str], dims: Mapping[str, int], dtype: str, *, path_width: int = 256) -> None:
    """The empty datasets of a store, each with a fletcher32 checksum per chunk."""
    f.create_dataset("keys", shape=(0,), maxshape=(None,), dtype="S64", chunks=(4096,), fletcher32=CHECKSUMS)
    create_paths(f, width=path_width)
    group = f.create_group("features")
    for tap in taps:
        d = int(dims[tap])
        rows_per_chunk = max(1, min(1024, (1 << 20) // max(d * np.dtype(dtype).itemsize, 1)))
        ds = group.create_dataset(
            tap, shape=(0, d), maxshape=(None, d), dtype=dtype, chunks=(rows_per_chunk, d), fletcher32=CHECKSUMS
        )
        ds.attrs["description"] = f"features of tap {tap!r}, one row per image"


def create_paths(f: H5File, *, width: int, rows: np.ndarray | None = None) -> H5Dataset:
    """``/paths``: resizable, fixed-length UTF-8 of ``width`` bytes, checksummed per chunk (``rows``: its content)."""
    data = np.zeros(0, dtype=f"S{width}") if rows is None else rows.astype(f"S{width}")
    paths = f.create_dataset("paths", data=data, maxshape=(None,), dtype=f"S{width}", chunks=(1024,), fletcher32=CHECKSUMS)
    paths.attrs["description"] = "the path each row was first computed from (UTF-8; undecodable names as \\xNN)"
    paths.attrs["sha256"] = strings_digest(data)
    return paths


def append_paths(f: H5File, start: int, paths: Sequence[str]) -> None:
    """Write ``paths`` as ``/paths[start:]``; a longer path than it holds rewrites it wider (its first rows kept)."""
    new = encoded_texts(paths)
    if f["paths"].dtype.itemsize < new.dtype.itemsize:
        rows = f["paths"][:start]
        del f["paths"]
        create_paths(f, width=-(-new.dtype.itemsize // 64) * 64, rows=rows)  # a multiple of 64: rarely rewritten again
    end = start + len(new)
    f["paths"].resize((end,))
    f["paths"][start:end] = new
    f["paths"].attrs["sha256"] = strings_digest(f["paths"][:end])


def encoded_texts(values: Iterable[object]) -> np.ndarray:
    """A string column as HDF5 keeps it: fixed-length UTF-8 bytes (``S<longest>``, at least 1)."""
    encoded = [t.encode() for t in storable_texts(values)]
    return np.array(encoded, dtype=f"S{max([1, *map(len, encoded)])}")


def write_index(group: H5Group, rows: np.ndarray, columns: Mapping[str, Sequence[str]]) -> None:
    """``/index``: ``row``, ``key`` and the string columns, each checksummed per chunk (strings also by sha256)."""
    checked = {"chunks": True, "fletcher32": CHECKSUMS} if len(rows) else {}  # an empty dataset has no chunks
    group.create_dataset("row", data=rows, **checked)
    for name, column in columns.items():
        if name == "key":
            group.create_dataset(name, data=np.asarray(column, dtype="S64"), **checked)
        else:
            ds = group.create_dataset(name, data=encoded_texts(column), **checked)
            ds.attrs["sha256"] = strings_digest(ds[:])


def read_fingerprint(path: str | os.PathLike[str]) -> str | None:
    """The fingerprint a store file declares, or None when it is not a readable store."""
    import h5py

    try:
        with h5py.File(path, "r") as f:
            return text(f.attrs["fingerprint"]) if f.attrs.get("format") is not None else None
    except (OSError, KeyError, RuntimeError, UnicodeDecodeError):
        return None


def text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def storable_texts(values: Iterable[object]) -> list[str]:
    """Strings HDF5 can hold as UTF-8: a file name's bytes that are not UTF-8 become ``\\xNN`` escapes.

    Python keeps such bytes as lone surrogates (``os.fsdecode``), which UTF-8 cannot encode.
    The path columns are a record of the inputs (rows are keyed by content), so an escaped
    name is kept readable rather than refused.

    >>> import os
    >>> storable_texts([os.fsdecode(b"caf\\xe9.jpg"), "ok.jpg"])
    ['caf\\\\xe9.jpg', 'ok.jpg']
    """
    return [os.fsencode(v).decode("utf-8", "backslashreplace") if isinstance(v, str) else text(v) for v in values]


def strings_digest(values: Iterable[object]) -> str:
    """sha256 of a string column as stored (each value's UTF-8 bytes, newline-terminated)."""
    digest = hashlib.sha256()
    for v in values:
        digest.update((v if isinstance(v, bytes) else str(v).encode()) + b"\n")
    return digest.hexdigest()


def write_attrs(f: H5File, config: JSONObject, n_rows: int) -> None:
    import h5py

    from cnnfeat import __version__

    f.attrs["format"] = FORMAT_NAME
    f.attrs["format_version"] = FORMAT_VERSION
    f.attrs["description"] = DESCRIPTION
    f.attrs["fingerprint"] = fingerprint_of(config)
    f.attrs["config"] = json.dumps(config, sort_keys=True, indent=1, default=str)
    f.attrs["feature_code_version"] = int(config.get("feature_code_version", FEATURE_CODE_VERSION))
    f.attrs["cnnfeat_version"] = __version__
    f.attrs["h5py_version"] = h5py.__version__
    f.attrs["numpy_version"] = np.__version__
    f.attrs["created"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    f.attrs["n_rows"] = n_rows


def config_diff(a: JSONObject, b: JSONObject) -> list[str]:
    return sorted(
        k
        for k in set(a) | set(b)
        if json.dumps(a.get(k), sort_keys=True, default=str) != json.dumps(b.get(k), sort_keys=True, default=str)
    )
