"""Downloads verified by checksum, and archive extraction that cannot escape its folder.

:func:`download` streams to a ``.part`` file, checks the sha256 *before* the
file takes its final name, and says where to put a manual download when there
is no network. :func:`safe_extract` unpacks zip and tar archives only after
checking every member: no absolute paths, no ``..``, no links that point
outside the target, no device files.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import shutil
import stat
import tarfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from cnnfeat.exceptions import DownloadError, UnsafeArchiveError

__all__ = ["download", "safe_extract", "sha256_of"]

logger = logging.getLogger(__name__)


def sha256_of(path: str | os.PathLike[str]) -> str:
    """Hex sha256 of a file, read in chunks; remembered while the file's size and mtime stay the same."""
    path = Path(path)
    found = path.stat()
    return _remembered_sha256(str(path.resolve()), found.st_size, found.st_mtime_ns)


@functools.lru_cache(maxsize=64)
def _remembered_sha256(path: str, size: int, mtime_ns: int) -> str:
    return _digest_of(Path(path), "sha256")


def download(
    url: str,
    dest: str | os.PathLike[str],
    sha256: str | None = None,
    *,
    md5: str | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Fetch ``url`` to ``dest`` and verify its checksum; an existing, verified file is kept.

    ``sha256`` is preferred; ``md5`` is accepted where it is the only checksum a
    dataset's authors (or torchvision) publish. With neither, the file is kept
    unverified and its sha256 is logged.

    Parameters
    ----------
    progress : callable, optional
        ``progress(bytes_so_far, total_or_None)``.

    Raises
    ------
    DownloadError
        No network (the message says where to place a manual download), an HTTP
        error, or a checksum mismatch (the bad file is deleted, never unpacked).
    """
    algorithm, expected = ("sha256", sha256) if sha256 else ("md5", md5) if md5 else ("sha256", None)
    dest = Path(dest)
    if dest.exists():
        if expected is None or _digest_of(dest, algorithm) == expected:
            return dest
        raise DownloadError(f"{dest} exists but its {algorithm} is not {expected}; delete it to download again")
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.new(algorithm)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            done = 0
            while block := response.read(1 << 20):
                out.write(block)
                digest.update(block)
                done += len(block)
                if progress is not None:
                    progress(done, total)
    except (urllib.error.URLError, OSError, TimeoutError) as exc:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"could not download {url} ({getattr(exc, 'reason', exc)}). If this machine is offline, download it "
            f"elsewhere and place it at {dest}" + (f" ({algorithm} {expected})" if expected else "")
        ) from exc
    if expected is None:
        logger.warning("%s: no published checksum to verify against; its sha256 is %s", url, digest.hexdigest())
    elif digest.hexdigest() != expected:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{url}: {algorithm} is {digest.hexdigest()}, expected {expected}; the file was deleted, not unpacked"
        )
    os.replace(part, dest)
    return dest


def _digest_of(path: Path, algorithm: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _inside(root: Path, relative: str) -> Path:
    pure = PurePosixPath(relative.replace("\\", "/"))
    if pure.is_absolute() or (pure.parts and pure.parts[0].endswith(":")):
        raise UnsafeArchiveError(f"member {relative!r} has an absolute path")
    if ".." in pure.parts:
        raise UnsafeArchiveError(f"member {relative!r} climbs out of the target with '..'")
    target = (root / pure).resolve()
    if target != root and root not in target.parents:
        raise UnsafeArchiveError(f"member {relative!r} would be written outside {root}")
    return target


def safe_extract(archive: str | os.PathLike[str], dest: str | os.PathLike[str]) -> list[Path]:
    """Unpack a zip or tar archive into ``dest`` after checking every member.

    All members are checked before the first is written, so an unsafe archive
    leaves nothing behind. Symbolic and hard links are allowed only when they
    point inside ``dest``; device files and FIFOs are refused.

    Returns the paths of the extracted files.
    """
    archive = Path(archive)
    root = Path(dest).resolve()
    root.mkdir(parents=True, exist_ok=True)
    if zipfile.is_zipfile(archive):
        return _extract_zip(archive, root)
    if tarfile.is_tarfile(archive):
        return _extract_tar(archive, root)
    raise UnsafeArchiveError(f"{archive}: not a zip or tar archive")


def _extract_zip(archive: Path, root: Path) -> list[Path]:
    written = []
    with zipfile.ZipFile(archive) as z:
        members = z.infolist()
        for info in members:
            _inside(root, info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a symbolic link; refused in zip files")
        for info in members:
            target = _inside(root, info.filename)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(target, "wb") as out:
                shutil.copyfileobj(src, out)
            written.append(target)
    return written


def _extract_tar(archive: Path, root: Path) -> list[Path]:
    written = []
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        for m in members:
            target = _inside(root, m.name)
            if m.issym() or m.islnk():
                base = target.parent if m.issym() else root
                link = PurePosixPath(m.linkname)
                if link.is_absolute():
                    raise UnsafeArchiveError(f"{archive}: link {m.name!r} points to the absolute path {m.linkname!r}")
                resolved = (base / link).resolve()
                if resolved != root and root not in resolved.parents:
                    raise UnsafeArchiveError(f"{archive}: link {m.name!r} -> {m.linkname!r} escapes {root}")
            elif not (m.isfile() or m.isdir()):
                raise UnsafeArchiveError(f"{archive}: member {m.name!r} is a device or FIFO; refused")
        for m in members:
            target = _inside(root, m.name)
            if m.isdir():
                target.mkdir(parents=True, exist_ok=True)
            elif m.isfile():
                src = tar.extractfile(m)
                if src is None:
                    raise UnsafeArchiveError(f"{archive}: member {m.name!r} has no data")
                target.parent.mkdir(parents=True, exist_ok=True)
                with src, open(target, "wb") as out:
                    shutil.copyfileobj(src, out)
                written.append(target)
        for m in members:  # links last, as copies of what they point to (checked above to stay inside)
            if m.issym() or m.islnk():
                target = _inside(root, m.name)
                source = ((target.parent / m.linkname) if m.issym() else (root / m.linkname)).resolve()
                if source.is_file():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(source, target)
                    written.append(target)
    return written
