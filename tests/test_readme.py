"""The README's library example runs as written (on synthetic images)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.mark.slow
def test_readme_pipeline_example_runs(image_tree: Path, tmp_path: Path, monkeypatch) -> None:
    block = re.search(r"## Library\n\n```python\n(.*?)```", README.read_text(), re.S)
    assert block, "the README lost its library example"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 6
    paths = sorted(str(p) for p in image_tree.rglob("*.jpg"))
    labels = [Path(p).parent.name for p in paths]
    monkeypatch.chdir(tmp_path)  # the example caches into features/
    namespace = {
        "train_paths": paths[::2] * 2,
        "train_labels": labels[::2] * 2,
        "test_paths": paths[1::2],
        "test_labels": labels[1::2],
    }
    exec(compile(code, str(README), "exec"), namespace)  # our own README, not file content from users
    assert list((tmp_path / "features").glob("efficientnet_lite0-*.h5"))
    clf = namespace["clf"]
    assert 0.0 <= clf.score(namespace["test_paths"], namespace["test_labels"]) <= 1.0
    assert clf[-1].C_ > 0
