"""The environment cnnfeat reads: where it keeps files of its own (converted weights, default feature stores), the CPU."""

from __future__ import annotations

import contextlib
import os
import platform
import sys
from pathlib import Path

__all__ = ["cache_dir", "cpu_name", "cpu_threads"]


def cache_dir() -> Path:
    """The user cache folder: ``$CNNFEAT_CACHE``, else the platform's cache dir + ``/cnnfeat``.

    Nothing is created here; callers make the sub-folders they write.
    """
    override = os.environ.get("CNNFEAT_CACHE")
    if override:
        return Path(override).expanduser()
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    else:
        base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "cnnfeat"


def cpu_threads() -> int:
    """Threads a runtime may use: ``$OMP_NUM_THREADS`` where set (Ray sets it to a worker's CPUs), else every core."""
    try:
        wanted = int(os.environ.get("OMP_NUM_THREADS", ""))
    except ValueError:
        wanted = 0
    return wanted if wanted > 0 else os.cpu_count() or 1


def cpu_name() -> str:
    """The CPU's model name (``/proc/cpuinfo``'s, else the platform's): the one place it is read."""
    name = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.partition(":")[2].strip()
    return name
