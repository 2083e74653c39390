"""Shared fixtures: an isolated cache dir, synthetic image trees, the real datasets when present."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.support import make_image

SHARED_DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keep converted weights in one session-wide temp folder, never in the user's cache."""
    monkeypatch.setenv("CNNFEAT_CACHE", str(tmp_path_factory.getbasetemp() / "cnnfeat-cache"))


@pytest.fixture
def image_tree(tmp_path: Path) -> Path:
    """``root/<class>/img_k.jpg``: 3 classes x 4 JPEGs, plus one PNG."""
    root = tmp_path / "images"
    for c, name in enumerate(("cat", "dog", "owl")):
        for k in range(4):
            make_image(root / name / f"img_{k}.jpg", seed=10 * c + k)
    make_image(root / "owl" / "extra.png", seed=99)
    return root


@pytest.fixture
def image_paths(image_tree: Path) -> list[str]:
    return sorted(str(p) for p in image_tree.rglob("*") if p.is_file())


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"real datasets not found at {SHARED_DATASETS} (they sit beside the repository in CI)")
    return SHARED_DATASETS


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
