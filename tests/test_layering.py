"""The layering of the package, enforced: a module imports only from its own layer or the layers below it."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "cnnfeat"

#: bottom to top; docs/architecture.md describes the same rooms
LAYERS: list[set[str]] = [
    {"exceptions", "config", "files", "registry", "hints"},
    {"weights", "backbones", "images", "store", "inputs", "download", "catalog", "layouts"},
    {"runtimes", "protocols", "splits", "methods", "normalize", "logistic_path", "probes", "adaptation", "extractors", "export"}
    | {"finetune", "logistic_stream", "model_file", "knn_probe", "selection"},
    {"engines", "runner", "recipes", "tables", "plots", "suites", "report", "answer", "html_report"},
    {"console", "cli", "extract", "benchmark", "data", "train", "predict", "__main__"},
]


def _room(module: str) -> str:
    """``cnnfeat.extractors.cnn`` -> ``extractors``."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def _rank(room: str) -> int:
    for rank, rooms in enumerate(LAYERS):
        if room in rooms:
            return rank
    raise AssertionError(f"room {room!r} is in no layer: add it to LAYERS (and to docs/architecture.md)")


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
    return [(line, name) for line, name in found if name.startswith("cnnfeat.")]


def test_imports_point_down_only() -> None:
    wrong = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent).with_suffix("")
        room = _room(".".join(relative.parts))
        if room == "__init__":
            continue  # the package's lazy public names may point anywhere
        for line, name in _imports(path):
            if _rank(_room(name)) > _rank(room):
                wrong.append(f"{relative}.py:{line} ({room}, layer {_rank(room)}) imports {name} (layer {_rank(_room(name))})")
    assert wrong == []


def test_every_room_is_in_a_layer() -> None:
    rooms = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir() if p.suffix == ".py" or (p / "__init__.py").is_file()}
    for room in rooms - {"__init__"}:
        _rank(room)


def test_every_module_keeps_to_one_job_in_at_most_450_lines() -> None:
    long = [f"{p.relative_to(PACKAGE)}: {n}" for p in PACKAGE.rglob("*.py") if (n := len(p.read_text().splitlines())) > 450]
    assert long == []


def test_files_are_replaced_durably_in_one_place() -> None:
    elsewhere = [p.relative_to(PACKAGE) for p in PACKAGE.rglob("*.py") if p.name != "files.py" and "os.replace(" in p.read_text()]
    assert elsewhere == []  # cnnfeat.files.install: fsync, os.replace, fsync the folder
