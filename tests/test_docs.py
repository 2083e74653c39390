"""The front door: a short README whose examples and numbers are real, and documentation that builds strictly."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
PAGES = sorted((ROOT / "docs").glob("*.md"))
#: a Python block preceded by this marker is executed by the tests (the README's library block always is)
RUNNABLE = "<!-- runnable -->"


def _runnable_blocks() -> list[tuple[str, str]]:
    blocks = []
    library = re.search(r"## The library\n.*?```python\n(.*?)```", README.read_text(), re.S)
    assert library, "the README lost its library example"
    blocks.append(("README.md", library.group(1)))
    for page in PAGES:
        for n, code in enumerate(re.findall(re.escape(RUNNABLE) + r"\n```python\n(.*?)```", page.read_text(), re.S)):
            blocks.append((f"docs/{page.name}#{n}", code))
    return blocks


def test_the_readme_is_short_and_names_no_path_of_this_projects_machines() -> None:
    text = README.read_text()
    assert len(text.splitlines()) <= 200
    assert "../shared" not in text and "/work/" not in text
    library = re.search(r"## The library\n.*?```python\n(.*?)```", text, re.S)
    code = [line for line in library.group(1).splitlines() if line.strip() and not line.startswith(("from ", "import "))]
    assert len(code) <= 5, code
    for link in re.findall(r"\]\(((?!https?:)[^)#]+)", text):  # every relative link leads to a file of the checkout
        assert (ROOT / link).exists(), link


def test_the_readmes_headline_numbers_are_the_committed_records() -> None:
    from cnnfeat.runner import load_records
    from cnnfeat.tables import pivot

    table = pivot(load_records(ROOT / "results" / "eurosat_mini"))
    printed = re.search(r"\| method \| eurosat_mini \(30/class\).*?\n\n", README.read_text(), re.S).group(0)
    expected = {
        "EfficientNet-Lite0 `pool`": "cnn:efficientnet_lite0/pool + logreg",
        "last block fine-tuned": "finetune:efficientnet_lite0/top1?epochs=10&fine_tune_epochs=5",
        "HOG": "hog + chi2 + logreg",
    }
    for words, row in expected.items():
        line = next(line for line in printed.splitlines() if words in line)
        mean, std, _ = table.mean_std(row, "eurosat_mini (30/class)")
        assert f"{mean:.2f} ± {std:.2f}" in line, (line, mean, std)


@pytest.mark.slow
@pytest.mark.parametrize("where,code", _runnable_blocks(), ids=[w for w, _ in _runnable_blocks()])
def test_the_runnable_examples_run_as_written(where: str, code: str, tmp_path: Path) -> None:
    # in a child process from an empty folder, as a reader pastes them (the cache goes where the example says)
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{where}\n{done.stdout}\n{done.stderr}"
    assert done.stdout.strip(), f"{where} printed nothing"
    if where == "README.md":
        accuracy = float(re.search(r"accuracy (\d\.\d+)", done.stdout).group(1))
        assert 0.75 < accuracy < 0.95, done.stdout  # Lite0 on 300 built-in photos: far above HOG's ~0.53
        assert list((tmp_path / "features").glob("efficientnet_lite0-*.h5"))


@pytest.mark.slow
def test_the_documentation_builds_strictly(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(tmp_path / "site")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-4000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "SweptLinearClassifier" in api and "FeatureStore" in api  # the reference was generated from the docstrings
    for page in PAGES:
        name = "index.html" if page.stem == "index" else f"{page.stem}/index.html"
        assert (tmp_path / "site" / name).is_file(), name
