"""Files written whole or not at all, and derived files that are checked before they are trusted.

:func:`atomic_write` is the one way cnnfeat replaces a file: the content goes to a temporary
file in the same folder, is flushed to disk, and takes the final name with ``os.replace``
(as joblib's ``concurrency_safe_write``), so a reader never sees half a file and a crash
leaves the old one. :func:`write_checksummed` adds a ``<name>.sha256`` record beside a
derived artefact (converted weights, measurements), and :func:`checksum_matches` says
whether the artefact still has those bytes.

Examples
--------
>>> import tempfile, pathlib
>>> folder = pathlib.Path(tempfile.mkdtemp())
>>> write_checksummed(folder / "a.json", lambda tmp: tmp.write_text("{}"))
>>> checksum_matches(folder / "a.json")
True
>>> _ = (folder / "a.json").write_text("{ }")
>>> checksum_matches(folder / "a.json")
False
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

__all__ = ["atomic_write", "checksum_matches", "install", "sha256_file", "write_checksummed"]


def sha256_file(path: str | os.PathLike[str]) -> str:
    """The sha256 hex digest of a file's bytes, read in blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object]) -> None:
    """Make ``path`` by ``write(tmp)`` on a temporary file beside it, then fsync and rename it into place.

    The temporary name keeps the final name's suffixes (Keras insists on ``.weights.h5``). If
    ``write`` fails, the temporary file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    tmp = path.with_name(f".{os.getpid()}-{path.name}")
    try:
        write(tmp)
        install(tmp, path)
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def install(tmp: str | os.PathLike[str], path: str | os.PathLike[str]) -> None:
    """Give the finished file ``tmp`` the name ``path``, durably: fsync it, rename it (atomic), fsync the folder.

    For writers that make the temporary file themselves (the feature store's merge, a download);
    everything else uses :func:`atomic_write`.
    """
    with open(tmp, "rb+") as f:
        os.fsync(f.fileno())
    os.replace(tmp, path)
    with contextlib.suppress(OSError):  # persist the rename itself
        fd = os.open(Path(path).parent, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def _record(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def write_checksummed(path: str | os.PathLike[str], write: Callable[[Path], object]) -> None:
    """:func:`atomic_write` ``path``, then record its sha256 beside it (``<name>.sha256``)."""
    path = Path(path)
    _record(path).unlink(missing_ok=True)  # never a stale record beside new bytes
    atomic_write(path, write)
    digest = sha256_file(path)
    atomic_write(_record(path), lambda tmp: tmp.write_text(digest + "\n"))


def checksum_matches(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` exists with the bytes its ``.sha256`` record names (False when either is missing)."""
    path = Path(path)
    try:
        expected = _record(path).read_text().strip()
        return path.is_file() and sha256_file(path) == expected
    except OSError:
        return False
