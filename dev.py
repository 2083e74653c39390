#!/usr/bin/env python3
"""Set up and run cnnfeat from a fresh clone, with nothing but Python >= 3.10.

    python3 dev.py main    # create .venv, install, run the built-in benchmark (eurosat_mini, offline)
    python3 dev.py test    # create .venv, install, run the checks (ruff, its format check, mypy) and the whole test suite
    python3 dev.py test --fast    # the inner loop: the same without the tests marked slow
    python3 dev.py lint    # the checks alone (what .pre-commit-config.yaml runs)

The virtual environment is made once in .venv and reused; it is reinstalled
when pyproject.toml changes.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".venv"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")
LINTED = ("cnnfeat", "tests", "benchmarks", "docs/hooks.py", "dev.py")


def run(*cmd: str | Path) -> None:
    print("+", " ".join(str(c) for c in cmd), flush=True)
    subprocess.run([str(c) for c in cmd], cwd=ROOT, check=True)


def ensure_venv() -> None:
    stamp = VENV / ".installed"
    wanted = hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == wanted and PYTHON.exists():
        return
    if not PYTHON.exists():
        print(f"creating {VENV}", flush=True)
        venv.create(VENV, with_pip=True)
    run(PYTHON, "-m", "pip", "install", "--quiet", "--upgrade", "pip")
    run(PYTHON, "-m", "pip", "install", "--quiet", "-e", ".[test]")
    stamp.write_text(wanted)


def main() -> int:
    if sys.version_info < (3, 10):  # noqa: UP036 (this file must say so on an old Python, not crash)
        sys.exit(f"cnnfeat needs Python >= 3.10; this is {sys.version.split()[0]}")
    commands = {"main", "test", "lint"}
    if len(sys.argv) < 2 or sys.argv[1] not in commands:
        print(__doc__)
        return 2
    ensure_venv()
    env_args = sys.argv[2:]
    try:
        if sys.argv[1] == "main":
            run(PYTHON, "-m", "cnnfeat.benchmark", *env_args)
            return 0
        run(PYTHON, "-m", "ruff", "check", *LINTED)
        run(PYTHON, "-m", "ruff", "format", "--check", *LINTED)
        run(PYTHON, "-m", "mypy")  # the files and the strictness per module: pyproject.toml's [tool.mypy]
        if sys.argv[1] == "test":
            fast = "--fast" in env_args
            args = [a for a in env_args if a != "--fast"] + (["-m", "not slow"] if fast else [])
            run(PYTHON, "-m", "pytest", *args)
    except subprocess.CalledProcessError as exc:
        return exc.returncode or 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
