"""Extraction streams: peak memory does not grow with the number of images."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.support import make_photos, peak_rss_mb

pytestmark = pytest.mark.slow  # subprocesses on hundreds of photos


@pytest.mark.skipif(sys.platform == "win32", reason="os.wait4 is POSIX")
def test_peak_rss_at_10x_images_grows_less_than_20_percent(tmp_path: Path) -> None:
    images = tmp_path / "images"
    make_photos(images, 400, size=(640, 480))
    (images / "first40.txt").write_text("\n".join(f"photo_{i:05d}.jpg" for i in range(40)))
    cli = [sys.executable, "-m", "cnnfeat.extract", "--backbone", "tiny_test", "--weights", "none", "--no-progress"]
    small = peak_rss_mb([*cli, str(images / "first40.txt"), "--output", str(tmp_path / "a.h5")])
    large = peak_rss_mb([*cli, str(images), "--output", str(tmp_path / "b.h5")])
    assert large / small < 1.2, f"peak RSS {small:.0f} MB for 40 images, {large:.0f} MB for 400"
