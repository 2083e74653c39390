"""Downloads verified by checksum, and archive extraction that cannot escape its folder.

:func:`download` fetches only what it can verify (a published or pinned
checksum, or an explicit ``trust_unverified``), streams to a ``.part`` file,
checks the checksum *before* the file takes its final name, and says where to
put a manual download when there is no network. :func:`safe_extract` unpacks
zip and tar archives only after checking every member: no absolute paths, no
``..``, no links that point outside the target, no device files, and sizes
within :class:`ExtractionLimits` (total bytes, members, inflation ratio).
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
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO

from cnnfeat.exceptions import DownloadError, UnsafeArchiveError
from cnnfeat.files import install

__all__ = ["ExtractionLimits", "download", "safe_extract", "sha256_of"]

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
    trust_unverified: bool = False,
    max_bytes: int | None = None,
) -> Path:
    """Fetch ``url`` to ``dest`` and verify its checksum; an existing, verified file is kept.

    ``sha256`` is preferred; ``md5`` is accepted where it is the only checksum a
    dataset's authors (or torchvision) publish. With neither, nothing is fetched
    unless ``trust_unverified`` (then its sha256 is logged); a file already at
    ``dest`` (a manual download) is the user's own and is kept.

    Parameters
    ----------
    progress : callable, optional
        ``progress(bytes_so_far, total_or_None)``.
    trust_unverified : bool
        Fetch a file that has no checksum to verify it against.
    max_bytes : int, optional
        Stop (and delete the part) past this many bytes; a server that sends more than its
        ``Content-Length`` announced is stopped too.

    Raises
    ------
    DownloadError
        No network (the message says where to place a manual download), an HTTP
        error, no checksum without ``trust_unverified``, too many bytes, or a checksum
        mismatch (the bad file is deleted, never unpacked).
    """
    algorithm, expected = ("sha256", sha256) if sha256 else ("md5", md5) if md5 else ("sha256", None)
    dest = Path(dest)
    if dest.exists():
        if expected is None or _digest_of(dest, algorithm) == expected:
            return dest
        raise DownloadError(f"{dest} exists but its {algorithm} is not {expected}; delete it to download again")
    if expected is None and not trust_unverified:
        raise DownloadError(
            f"{url}: no published or pinned checksum, so what arrives cannot be verified (an intercepting proxy could "
            f"send anything). Download it yourself and place it at {dest}, or accept it with --trust-unverified"
        )
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    digest = hashlib.new(algorithm)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            done = 0
            while block := response.read(1 << 20):
                done += len(block)
                limit = min(n for n in (total, max_bytes) if n is not None) if (total or max_bytes) else None
                if limit is not None and done > limit:
                    raise DownloadError(
                        f"{url}: more than {limit:,} bytes arrived ("
                        + ("its announced size" if limit == total else "the limit")
                        + "); stopped, and the part was deleted"
                    )
                out.write(block)
                digest.update(block)
                if progress is not None:
                    progress(done, total)
    except DownloadError:
        part.unlink(missing_ok=True)
        raise
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
    install(part, dest)
    return dest


def _digest_of(path: Path, algorithm: str, chunk: int = 1 << 20) -> str:
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def _inside(root: Path, relative: str) -> Path:
    if not relative.strip("/"):
        raise UnsafeArchiveError(f"member {relative!r} has no name")
    pure = PurePosixPath(relative.replace("\\", "/"))
    if pure.is_absolute() or (pure.parts and pure.parts[0].endswith(":")):
        raise UnsafeArchiveError(f"member {relative!r} has an absolute path")
    if ".." in pure.parts:
        raise UnsafeArchiveError(f"member {relative!r} climbs out of the target with '..'")
    target = (root / pure).resolve()
    if target != root and root not in target.parents:
        raise UnsafeArchiveError(f"member {relative!r} would be written outside {root}")
    return target


@dataclass(frozen=True)
class ExtractionLimits:
    """What an archive may unpack to: total bytes, members, and bytes per archive byte (a bomb's ratio).

    The defaults fit the catalog's largest archive (SUN397: about 38 GB, 109k files, stored
    JPEGs) with room, and refuse a zip bomb long before it fills a disk.
    """

    max_bytes: int = 100 * 1024**3
    max_members: int = 2_000_000
    max_ratio: float = 100.0

    def check(self, archive: Path, sizes: list[int]) -> int:
        """Refuse before writing when the members' declared sizes break a limit; returns the byte budget."""
        total = sum(sizes)
        budget = min(self.max_bytes, int(self.max_ratio * max(archive.stat().st_size, 1 << 20)))
        if len(sizes) > self.max_members:
            raise UnsafeArchiveError(f"{archive}: {len(sizes):,} members, over the limit of {self.max_members:,}")
        if total > budget:
            raise UnsafeArchiveError(
                f"{archive}: would unpack to {total:,} bytes, over the limit of {budget:,} "
                f"({self.max_ratio:g}x the archive, at most {self.max_bytes:,}); refused as a possible archive bomb"
            )
        return budget


def safe_extract(
    archive: str | os.PathLike[str], dest: str | os.PathLike[str], *, limits: ExtractionLimits | None = None
) -> list[Path]:
    """Unpack a zip or tar archive into ``dest`` after checking every member.

    All members are checked before the first is written, so an unsafe archive
    leaves nothing behind: paths must stay inside ``dest``, symbolic and hard links
    may point only inside it, device files and FIFOs are refused, and the declared
    sizes must keep within ``limits`` (:class:`ExtractionLimits`). The bytes actually
    written are counted too, so a member that inflates past its declared size is stopped.

    Returns the paths of the extracted files.
    """
    archive = Path(archive)
    root = Path(dest).resolve()
    limits = limits or ExtractionLimits()
    try:
        if zipfile.is_zipfile(archive):
            root.mkdir(parents=True, exist_ok=True)
            return _extract_zip(archive, root, limits)
        if tarfile.is_tarfile(archive):
            root.mkdir(parents=True, exist_ok=True)
            return _extract_tar(archive, root, limits)
    # what the archive modules raise for damaged data (zlib, gzip, bz2, lzma errors are OSError, EOFError or these)
    # (RuntimeError: zipfile's "encrypted, password required")
    except (zipfile.BadZipFile, tarfile.TarError, zlib.error, EOFError, NotImplementedError, ValueError, RuntimeError) as exc:
        raise UnsafeArchiveError(f"{archive}: damaged archive ({type(exc).__name__}: {exc}); download it again") from None
    except OSError as exc:
        if exc.filename is not None and Path(exc.filename).resolve() != archive.resolve():
            raise  # writing the output failed (a full disk, a read-only folder): not the archive's fault
        raise UnsafeArchiveError(f"{archive}: damaged archive ({type(exc).__name__}: {exc}); download it again") from None
    raise UnsafeArchiveError(f"{archive}: not a zip or tar archive")


def _copy_within(src: IO[bytes], target: Path, budget: list[int], archive: Path) -> None:
    """Copy a member's bytes, refusing past what the archive may still write (``budget[0]``)."""
    with open(target, "wb") as out:
        while block := src.read(1 << 20):
            budget[0] -= len(block)
            if budget[0] < 0:
                raise UnsafeArchiveError(f"{archive}: {target.name} unpacks past the archive's byte limit; stopped")
            out.write(block)


def _extract_zip(archive: Path, root: Path, limits: ExtractionLimits) -> list[Path]:
    written: list[Path] = []
    with zipfile.ZipFile(archive) as z:
        members = z.infolist()
        for info in members:
            _inside(root, info.filename)
            if stat.S_ISLNK(info.external_attr >> 16):
                raise UnsafeArchiveError(f"{archive}: member {info.filename!r} is a symbolic link; refused in zip files")
        budget = [limits.check(archive, [info.file_size for info in members])]
        for info in members:
            target = _inside(root, info.filename)
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src:
                _copy_within(src, target, budget, archive)
            written.append(target)
    return written


def _extract_tar(archive: Path, root: Path, limits: ExtractionLimits) -> list[Path]:
    written: list[Path] = []
    with tarfile.open(archive) as tar:
        members = tar.getmembers()
        budget = [limits.check(archive, [m.size for m in members if m.isfile()])]
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
                with src:
                    _copy_within(src, target, budget, archive)
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
