"""What a user installs is what is tested: the wheel, installed non-editable in a fresh environment."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def _sh(*cmd: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, capture_output=True, text=True, timeout=900, env=env)
    assert done.returncode == 0, f"{cmd}\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.mark.slow
def test_the_wheel_installed_in_a_fresh_environment_has_the_catalog_and_works(tmp_path: Path) -> None:
    # build from a copy of what the sdist would hold, so the checkout is left untouched
    source = tmp_path / "src"
    shutil.copytree(ROOT / "cnnfeat", source / "cnnfeat", ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    _sh(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--wheel-dir", tmp_path / "dist", source, cwd=tmp_path)
    (wheel,) = (tmp_path / "dist").glob("cnnfeat-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    manifests = sorted(Path(n).stem for n in names if n.startswith("cnnfeat/data_manifests/") and n.endswith(".json"))
    assert manifests == sorted(p.stem for p in (ROOT / "cnnfeat" / "data_manifests").glob("*.json"))
    assert not any(n.startswith("tests/") for n in names)
    builtin = "cnnfeat/builtin_data/eurosat_mini/"
    assert sum(n.startswith(builtin) and n.endswith(".jpg") for n in names) == 1000
    assert {builtin + "LICENSE", builtin + "README.md"} <= set(names)

    # a fresh environment; its dependencies come from this one's site-packages, but not this checkout's cnnfeat
    env_dir = tmp_path / "env"
    venv.create(env_dir, with_pip=False)
    python = env_dir / "bin" / "python"
    site = Path(_sh(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])", cwd=tmp_path).strip())
    (site / "dependencies.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    _sh(sys.executable, "-m", "pip", "--python", python, "install", "--quiet", "--no-deps", wheel, cwd=tmp_path)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = f"{env_dir / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    where = _sh(python, "-c", "import cnnfeat; print(cnnfeat.__file__)", cwd=tmp_path, env=env)
    assert where.startswith(str(site)), where  # the installed copy, not the checkout

    cnnfeat = env_dir / "bin" / "cnnfeat"
    listing = _sh(cnnfeat, "data", "list", cwd=tmp_path, env=env)
    assert {line.split()[0] for line in listing.splitlines()[1 : 1 + len(manifests)]} == set(manifests)

    store = tmp_path / "samples.h5"
    _sh(cnnfeat, "extract", "--samples", "--output", store, "--no-progress", cwd=tmp_path, env=env)
    assert "rows:        2" in _sh(cnnfeat, "info", store, cwd=tmp_path, env=env)
    _sh(cnnfeat, "export", store, "--format", "parquet", "--output", tmp_path / "samples.parquet", cwd=tmp_path, env=env)
    check = (
        "import pandas as pd, numpy as np; from cnnfeat.store import FeatureStore\n"
        f"frame = pd.read_parquet({str(tmp_path / 'samples.parquet')!r})\n"
        f"store = FeatureStore({str(store)!r}, mode='r')\n"
        "X = frame[[f'pool_{i}' for i in range(1280)]].to_numpy(np.float32)\n"
        "print(np.array_equal(X, store.get(frame['key'].tolist())['pool']), frame['label'].tolist())"
    )
    assert _sh(python, "-c", check, cwd=tmp_path, env=env).strip() == "True ['china', 'flower']"

    from PIL import Image

    rng = np.random.default_rng(0)
    for cls, colour in (("red", (200, 40, 40)), ("blue", (40, 40, 200))):
        for i in range(10):
            path = tmp_path / "mine" / cls / f"{i}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(np.clip(np.array(colour) + rng.normal(0, 20, (40, 40, 3)), 0, 255).astype(np.uint8)).save(path)
    out = tmp_path / "bench"
    _sh(cnnfeat, "benchmark", "--data", tmp_path / "mine", "--out", out, "--no-progress", cwd=tmp_path, env=env)
    table = (out / "table.md").read_text()
    assert "mine (5-fold)" in table and "efficientnet_lite0/pool" in table and "hog" in table
    assert (out / "bars_mine.png").stat().st_size > 1000

    # the built-in default, offline, from another folder: the CNN's features far ahead of HOG on the satellite photos
    offline = {
        **env,
        "HF_HUB_OFFLINE": "1",
        "NO_PROXY": "*",
        "http_proxy": "http://127.0.0.1:9",
        "https_proxy": "http://127.0.0.1:9",
    }
    _sh(cnnfeat, "benchmark", "--no-progress", cwd=tmp_path, env=offline)
    scores = json.loads((tmp_path / "results" / "benchmark" / "table.json").read_text())
    mean = {cell["method"]: sum(cell["values"]) / len(cell["values"]) for cell in scores["cells"]}
    assert mean["cnn:efficientnet_lite0/pool + logreg"] - mean["hog + chi2 + logreg"] >= 20, mean
    assert any(m.startswith("finetune:") for m in mean)
    assert (tmp_path / "results" / "benchmark" / "cost_eurosat_mini.png").stat().st_size > 2000
