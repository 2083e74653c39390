"""scikit-learn's private API that cnnfeat uses: declared here, present in the installed version, inside the pinned range."""

from __future__ import annotations

import ast
import importlib
import re
from pathlib import Path

import sklearn
from packaging.specifiers import SpecifierSet

ROOT = Path(__file__).resolve().parents[1]

#: every private scikit-learn name the package imports; a new one must be added here (and checked against the range)
PRIVATE = {
    "sklearn.base._fit_context",
    "sklearn.utils._param_validation.HasMethods",
    "sklearn.utils._param_validation.Interval",
    "sklearn.utils._param_validation.InvalidParameterError",
    "sklearn.utils._param_validation.StrOptions",
}


def _private_imports() -> set[str]:
    found = set()
    for path in (ROOT / "cnnfeat").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("sklearn"):
                private_module = any(part.startswith("_") for part in node.module.split("."))
                found |= {f"{node.module}.{a.name}" for a in node.names if private_module or a.name.startswith("_")}
    return found


def test_the_private_names_in_use_are_the_declared_ones() -> None:
    assert _private_imports() == PRIVATE


def test_each_private_name_exists_in_the_installed_version() -> None:
    for name in PRIVATE:
        module, _, attribute = name.rpartition(".")
        assert hasattr(importlib.import_module(module), attribute), f"scikit-learn {sklearn.__version__} lacks {name}"


def test_the_installed_version_is_inside_the_pinned_range() -> None:
    (pin,) = re.findall(r'^\s*"scikit-learn([^"]*)"', (ROOT / "pyproject.toml").read_text(), re.M)
    specifier = SpecifierSet(pin)
    assert "<" in str(specifier), "scikit-learn needs an upper bound: the private API above may change in any release"
    assert specifier.contains(sklearn.__version__)
