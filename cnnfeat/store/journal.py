"""The feature store's journal: CRC-framed records of committed rows, appended before they are merged into HDF5.

A journal file is a header (:data:`JOURNAL_MAGIC` and the store's fingerprint, a line) and then
records, each laid out as :data:`RECORD_HEAD` (magic, row count, length of the paths' JSON), the
paths' JSON, the rows' sha256 keys (32 bytes each), one block per tap (rows x width, the store's
dtype), and the CRC32 of everything after the magic. :class:`Journal` writes, reads back and
recovers that layout; it is declared here once.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np

from cnnfeat.exceptions import StoreError

__all__ = ["JOURNAL_MAGIC", "RECORD_HEAD", "Journal", "RecordLayout"]

logger = logging.getLogger(__name__)

JOURNAL_MAGIC = b"CNNFEAT-JOURNAL-1\n"
#: a record's head: magic, number of rows, bytes of the paths' JSON
RECORD_HEAD = struct.Struct("<4sII")
RECORD_MAGIC = b"CFRB"
#: after a record's blocks: the CRC32 of everything between the magic and it
RECORD_CRC = struct.Struct("<I")
KEY_BYTES = 32


@dataclass(frozen=True)
class RecordLayout:
    """Where the parts of one record lie, from its first byte."""

    n_rows: int
    n_path_bytes: int

    @property
    def keys_offset(self) -> int:
        return RECORD_HEAD.size + self.n_path_bytes

    @property
    def blocks_offset(self) -> int:
        """Offset of the first tap's block (the rows of each tap follow one another)."""
        return self.keys_offset + KEY_BYTES * self.n_rows


class Journal:
    """One store's journal file, opened on first write; ``records`` holds (offset of the first block, rows) per record."""

    def __init__(self, path: Path, fingerprint: str, *, durable: bool) -> None:
        self.path = path
        self.header = JOURNAL_MAGIC + fingerprint.encode() + b"\n"
        self.durable = durable
        self.records: list[tuple[int, int]] = []
        self._file: BinaryIO | None = None

    def _open(self) -> BinaryIO:
        if self._file is None:
            try:
                self._file = open(self.path, "r+b" if self.path.exists() else "w+b")  # noqa: SIM115 (held open for the writer)
                self._file.seek(0, os.SEEK_END)
                if self._file.tell() == 0:
                    self._file.write(self.header)
                    self._sync()
            except OSError as exc:
                raise StoreError(f"{self.path}: cannot write the journal ({exc.strerror or exc})") from exc
        return self._file

    def _sync(self) -> None:
        assert self._file is not None
        self._file.flush()
        if self.durable:
            os.fsync(self._file.fileno())

    def append(self, keys: Sequence[str], paths: Sequence[str], blocks: Sequence[np.ndarray], committed_rows: int) -> int:
        """Write one record and sync it; returns its number. A failed write leaves no torn record behind."""
        journal = self._open()
        path_bytes = json.dumps(list(paths)).encode()
        layout = RecordLayout(len(keys), len(path_bytes))
        body = b"".join([path_bytes, b"".join(bytes.fromhex(k) for k in keys), *(b.tobytes() for b in blocks)])
        head = RECORD_HEAD.pack(RECORD_MAGIC, layout.n_rows, layout.n_path_bytes)
        start = journal.tell()
        try:
            journal.write(head + body + RECORD_CRC.pack(zlib.crc32(body, zlib.crc32(head[len(RECORD_MAGIC) :]))))
            self._sync()
        except OSError as exc:
            # Cut the torn record off at the OS level (the file object's buffer still holds the failed bytes, and
            # flushing them would fail again on a full disk), then drop the file object: this writer is done.
            with contextlib.suppress(OSError):
                os.ftruncate(journal.fileno(), start)
            self._file = None
            with contextlib.suppress(OSError):
                journal.close()
            raise StoreError(
                f"{self.path}: could not write features ({exc.strerror or exc}); "
                f"the {committed_rows} rows committed before are kept"
            ) from exc
        self.records.append((start + layout.blocks_offset, layout.n_rows))
        return len(self.records) - 1

    def read_row(self, record: int, row: int, widths: Sequence[int], wanted: Sequence[bool], dtype: np.dtype) -> list[np.ndarray]:
        """Row ``row`` of record ``record``: one vector per tap (``widths`` in store order), for the taps ``wanted``."""
        first_block, n = self.records[record]
        journal = self._open()
        offset, out = first_block, []
        for width, want in zip(widths, wanted):
            size = width * dtype.itemsize
            if want:
                journal.seek(offset + row * size)
                out.append(np.frombuffer(journal.read(size), dtype).astype(np.float32))
            offset += n * size
        journal.seek(0, os.SEEK_END)
        return out

    def recover(self, row_bytes: int) -> Iterator[tuple[int, list[str], list[str]]]:
        """The complete records a crashed writer left, as (number, keys, paths); a torn tail is cut off.

        Reads one record at a time (the CRC computed in chunks), so memory stays bounded by a
        record's size however large the journal is. A journal of another store is deleted.
        """
        if not self.path.exists():
            return
        with open(self.path, "rb") as f:
            if f.read(len(self.header)) != self.header:
                logger.warning("%s: journal belongs to another store or is damaged; ignoring it", self.path)
                f.close()
                self.path.unlink()
                return
            good_end = f.tell()
            while len(start := f.read(RECORD_HEAD.size)) == RECORD_HEAD.size:
                magic, n, n_path = RECORD_HEAD.unpack(start)
                if magic != RECORD_MAGIC:
                    break
                layout = RecordLayout(n, n_path)
                head = f.read(layout.blocks_offset - RECORD_HEAD.size)
                crc = zlib.crc32(head, zlib.crc32(start[len(RECORD_MAGIC) :]))
                remaining = n * row_bytes
                while remaining > 0 and (chunk := f.read(min(remaining, 1 << 22))):
                    crc = zlib.crc32(chunk, crc)
                    remaining -= len(chunk)
                stored = f.read(RECORD_CRC.size)
                if len(head) != layout.blocks_offset - RECORD_HEAD.size or remaining or len(stored) != RECORD_CRC.size:
                    break
                if RECORD_CRC.unpack(stored)[0] != crc:
                    break
                keys = [head[n_path + KEY_BYTES * i : n_path + KEY_BYTES * (i + 1)].hex() for i in range(n)]
                self.records.append((good_end + layout.blocks_offset, n))
                yield len(self.records) - 1, keys, json.loads(head[:n_path])
                good_end = f.tell()
            size = f.seek(0, os.SEEK_END)
        if good_end < size:
            logger.warning("%s: dropped %d bytes of an incomplete record left by an interrupted run", self.path, size - good_end)
            with open(self.path, "r+b") as f:
                f.truncate(good_end)

    @property
    def size(self) -> int:
        return self.path.stat().st_size if self.path.exists() else 0

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

    def remove(self) -> None:
        """Delete the journal: its rows are in the HDF5 file now."""
        self.close()
        self.path.unlink(missing_ok=True)
        self.records.clear()
