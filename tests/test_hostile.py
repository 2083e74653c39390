"""Hostile inputs and their edges (issue 27): every file is a result or one clear error naming it, never a crash."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from tests.support import make_image

TINY = ["--backbone", "tiny_test", "--weights", "none", "--batch-size", "4", "--no-progress"]


def _cnnfeat(
    *args: str | Path, cwd: Path, env: dict[str, str] | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """The command in a child process, with a UTF-8 locale's strict stdout, as a user's terminal has it."""
    env = {**os.environ, "PYTHONIOENCODING": "utf-8", **(env or {})}
    command = [sys.executable, "-m", "cnnfeat", *map(str, args)]
    return subprocess.run(command, cwd=cwd, capture_output=True, text=True, errors="replace", env=env, timeout=timeout)


def test_a_file_name_that_is_not_utf8_is_extracted_and_never_wedges_the_store(image_tree: Path, tmp_path: Path) -> None:
    # finding 2: the name's Latin-1 bytes could not be written to HDF5, the merge failed, and every later run into
    # the output failed on the rows stuck in the journal
    make_image(Path(os.fsdecode(bytes(image_tree / "cat") + b"/latin1_\xe9t\xe9.jpg")), seed=5)
    out = tmp_path / "f.h5"
    done = _cnnfeat("extract", image_tree, "--output", out, "--on-error", "skip", *TINY, cwd=tmp_path)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert "newly computed: 14" in done.stdout
    with h5py.File(out) as f:
        assert f.attrs["n_rows"] == 14
        names = [p.decode() for p in f["index/path"][:]]
        assert any(n.endswith("latin1_\\xe9t\\xe9.jpg") for n in names)  # its bytes kept, escaped
    assert not out.with_name("f.h5.journal").exists()
    shutil.rmtree(image_tree / "dog")
    again = _cnnfeat("extract", image_tree, "--output", out, *TINY, cwd=tmp_path)
    assert again.returncode == 0 and "cache hits: 10" in again.stdout, again.stderr


def test_only_regular_files_are_read_and_no_read_exceeds_the_limit(image_tree: Path, tmp_path: Path) -> None:
    # finding 4: a link to /dev/zero in a folder tree was read until MemoryError (5.5 GB)
    from cnnfeat.exceptions import ImageDecodeError
    from cnnfeat.images import read_image_file

    (image_tree / "cat" / "zero.jpg").symlink_to("/dev/zero")
    os.mkfifo(image_tree / "dog" / "pipe.jpg")  # opening a FIFO for reading would block until a writer came
    done = _cnnfeat("extract", image_tree, "--output", tmp_path / "f.h5", "--on-error", "skip", *TINY, cwd=tmp_path, timeout=120)
    assert done.returncode == 3, done.stderr
    assert "zero.jpg: not a regular file" in done.stdout and "pipe.jpg: not a regular file" in done.stdout
    assert "newly computed: 13" in done.stdout
    big = tmp_path / "big.jpg"
    big.write_bytes(b"\xff\xd8" + b"\x00" * 2000)
    with pytest.raises(ImageDecodeError, match=r"big\.jpg: file of 2,002 bytes is over the limit of 1,000"):
        read_image_file(big, max_bytes=1000)
    assert read_image_file(big)[0][:2] == b"\xff\xd8"
