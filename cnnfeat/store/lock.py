"""The writer's lock: an exclusive ``flock`` on ``<store>.lock`` that the kernel drops when its holder dies."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import time
from pathlib import Path

from cnnfeat.exceptions import StoreError, StoreLockedError

__all__ = ["StoreLock"]

logger = logging.getLogger(__name__)


class StoreLock:
    """An exclusive, non-blocking lock on ``<store>.lock``; released by the kernel if we die."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    @staticmethod
    def _try_lock(fd: int) -> bool:
        """An exclusive, non-blocking OS lock that the kernel drops when the process dies."""
        try:
            import fcntl
        except ImportError:  # Windows: lock one byte far past the holder's note
            import msvcrt

            os.lseek(fd, 1 << 20, os.SEEK_SET)
            try:
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)  # type: ignore[attr-defined]
            except OSError:
                return False
            return True
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        return True

    def acquire(self) -> None:
        # The holder unlinks the file on release, so the inode we lock may no longer be the one at the path (we
        # opened it before the unlink): holding it would let a second writer lock the new file at the same time.
        # Lock, then check the path still names our inode; if not, let go and try the new file.
        for _ in range(100):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            except OSError as exc:
                raise StoreError(
                    f"{self.path}: cannot take the writer's lock ({exc.strerror or exc}); new features need a "
                    "writable folder (a rerun whose images are all cached only reads)"
                ) from None
            try:
                if not self._try_lock(fd):
                    raise StoreLockedError(
                        f"feature store is being written by another process: lock {self.path} is held "
                        f"({self._holder(fd)}). Wait for it to finish or write to another --output."
                    )
                if not self._still_named(fd):
                    os.close(fd)
                    continue
                previous = self._holder(fd)
                if previous != "holder unknown":
                    logger.info("took over lock %s left by a process that has ended (%s)", self.path, previous)
                os.ftruncate(fd, 0)
                os.lseek(fd, 0, os.SEEK_SET)
                os.write(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "since": time.time()}).encode())
            except BaseException:
                with contextlib.suppress(OSError):
                    os.close(fd)
                raise
            self._fd = fd
            return
        raise StoreLockedError(f"feature store lock {self.path} kept changing under us; another process is writing")

    def _still_named(self, fd: int) -> bool:
        """Whether ``self.path`` still names the file ``fd`` has open (not unlinked or replaced since we opened it)."""
        try:
            named = os.stat(self.path)
        except FileNotFoundError:
            return False
        mine = os.fstat(fd)
        return (named.st_dev, named.st_ino) == (mine.st_dev, mine.st_ino)

    @staticmethod
    def _holder(fd: int) -> str:
        try:
            os.lseek(fd, 0, os.SEEK_SET)
            info = json.loads(os.read(fd, 4096) or b"{}")
            return f"pid {info['pid']} on {info['host']}"
        except (ValueError, KeyError, OSError):
            return "holder unknown"

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(OSError):
            os.ftruncate(self._fd, 0)
        with contextlib.suppress(OSError):  # unlinked while still held: whoever locks this inode next sees it is gone
            self.path.unlink()
        os.close(self._fd)  # closing the descriptor drops the flock
        self._fd = None
