"""The folder layouts of the catalog's datasets: a registry of loaders, each turning a folder into a Manifest and splits.

A catalog entry's ``layout.type`` names one of :data:`LAYOUTS`; the loader reads the images,
their labels (and domains) and the official split files the layout declares.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cnnfeat.exceptions import DatasetError
from cnnfeat.hints import JSONObject
from cnnfeat.inputs import IMAGE_EXTENSIONS, Manifest
from cnnfeat.registry import Registry

__all__ = ["LAYOUTS", "Loaded", "write_digits"]

logger = logging.getLogger(__name__)

#: what a layout's loader returns: the images and, per official split, its rows
Loaded = tuple[Manifest, dict[str, dict[str, np.ndarray]]]


def _images_below(folder: Path) -> list[Path]:
    found = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        found += [Path(dirpath, f) for f in sorted(filenames) if Path(f).suffix.lower() in IMAGE_EXTENSIONS]
    return found


def _require(path: Path, what: str) -> Path:
    if not path.is_file():
        raise DatasetError(f"{path}: missing ({what})")
    return path


def _class_folders(root: Path, layout: JSONObject) -> Loaded:
    top = root / layout.get("root", ".")
    if not top.is_dir():
        raise DatasetError(f"{top}: missing; the layout is {layout['pattern']}")
    paths, labels = [], []
    for path in _images_below(top):
        relative = path.relative_to(top)
        if len(relative.parts) < 2:
            continue  # files beside the class folders (lists, readmes) are not images of a class
        labels.append(relative.parent.as_posix() if layout.get("class_depth") == "any" else relative.parts[0])
        paths.append(str(path))
    manifest = Manifest(paths, labels)
    return manifest, _split_files(root, layout, manifest, top)


def _domain_class_folders(root: Path, layout: JSONObject) -> Loaded:
    paths, labels, domains = [], [], []
    for domain in layout["domains"]:
        top = root / layout["domain_root"].format(domain=domain)
        if not top.is_dir():
            raise DatasetError(f"{top}: missing domain {domain!r}; the layout is {layout['pattern']}")
        for path in _images_below(top):
            relative = path.relative_to(top)
            if len(relative.parts) >= 2:
                paths.append(str(path))
                labels.append(relative.parts[0])
                domains.append(domain)
    manifest = Manifest(paths, labels, domains=domains)
    return manifest, _split_files(root, layout, manifest, root / layout.get("split_files", {}).get("root", "."))


def _indexed(root: Path, layout: JSONObject) -> Loaded:
    pattern = re.compile(r"(\d+)\.\w+$")
    files = sorted(root.glob(layout["glob"]), key=lambda p: int(pattern.search(p.name).group(1)))  # type: ignore[union-attr]
    if not files:
        raise DatasetError(f"{root}: no files match {layout['glob']}; the layout is {layout['pattern']}")
    index = np.array([int(pattern.search(p.name).group(1)) for p in files])  # type: ignore[union-attr]
    rule = layout["labels"]
    if rule["from"] == "index_blocks":
        codes = (index - 1) // rule["block"]
    else:
        per_image = _load_mat(root / rule["file"])[rule["key"]].ravel().astype(int)
        if index.max() > len(per_image):
            raise DatasetError(f"{root / rule['file']}: {len(per_image)} labels but image number {index.max()} exists")
        codes = per_image[index - 1] - 1
    names = layout.get("classes")
    labels = [names[c] if names and 0 <= c < len(names) else f"class_{c + 1:03d}" for c in codes]
    manifest = Manifest([str(p) for p in files], labels)
    splits: dict[str, dict[str, np.ndarray]] = {}
    split_spec = layout.get("split_files")
    if split_spec and (root / split_spec["file"]).is_file():
        mat = _load_mat(root / split_spec["file"])
        row_of = {int(i): row for row, i in enumerate(index)}
        for k in range(1, split_spec["splits"] + 1):
            splits[str(k)] = {
                part: _rows([int(i) for i in np.ravel(mat[key.format(k=k)])], row_of, root / split_spec["file"])
                for part, key in split_spec["keys"].items()
            }
    return manifest, splits


def _id_lists(root: Path, layout: JSONObject) -> Loaded:
    top = root / layout["root"]

    def table(name: str) -> dict[str, str]:
        path = _require(top / layout[name], f"{name} list of the official layout {layout['pattern']}")
        rows = [line.split(maxsplit=1) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
        if any(len(r) != 2 for r in rows):
            raise DatasetError(f"{path}: every line must be '<id> <value>'")
        return dict(rows)

    images, labels, classes, is_train = table("images"), table("labels"), table("classes"), table("split")
    ids = sorted(images, key=int)
    missing = [i for i in ids if i not in labels or i not in is_train]
    if missing:
        raise DatasetError(f"{top}: image ids {missing[:5]} have no label or split entry")
    paths = [str(top / "images" / images[i]) for i in ids]
    manifest = Manifest(paths, [classes[labels[i]] for i in ids])
    train = np.array([row for row, i in enumerate(ids) if is_train[i] == "1"])
    test = np.array([row for row, i in enumerate(ids) if is_train[i] != "1"])
    return manifest, {"1": {"train": train, "test": test}}


def write_digits(root: Path) -> None:
    """scikit-learn's digits as PNG files, ``<label>/digit_NNNN.png`` (written once, then read like a folder)."""
    marker = root / ".complete"
    if marker.is_file():
        return
    from PIL import Image
    from sklearn.datasets import load_digits

    digits = load_digits()
    for n, (image, label) in enumerate(zip(digits.images, digits.target)):
        folder = root / str(label)
        folder.mkdir(parents=True, exist_ok=True)
        pixels = np.clip(image * 16, 0, 255).astype(np.uint8)
        Image.fromarray(pixels, mode="L").save(folder / f"digit_{n:04d}.png", optimize=False)
    marker.write_text("scikit-learn digits\n")


def _load_mat(path: Path) -> JSONObject:
    from scipy.io import loadmat
    from scipy.io.matlab import MatReadError

    _require(path, "a MATLAB file of the official download")
    try:
        return dict(loadmat(path))
    except (MatReadError, ValueError, OSError, TypeError) as exc:
        raise DatasetError(f"{path}: not a readable MATLAB file ({exc})") from exc


def _rows(keys: list[Any], row_of: dict[Any, int], where: Path) -> np.ndarray:
    unknown = [k for k in keys if k not in row_of]
    if unknown:
        raise DatasetError(f"{where}: {len(unknown)} entries name images that are not in the dataset, e.g. {unknown[:3]}")
    return np.array(sorted(row_of[k] for k in keys), dtype=int)


def _split_files(root: Path, layout: JSONObject, manifest: Manifest, base: Path) -> dict[str, dict[str, np.ndarray]]:
    """Official splits from list files (``path_list``: a relative path per line; ``path_label``: path and label)."""
    spec = layout.get("split_files")
    if not spec:
        return {}
    row_of = {Path(p).relative_to(base).as_posix(): row for row, p in enumerate(manifest.paths)}
    groups = layout["domains"] if spec["format"] == "path_label" else [str(k) for k in range(1, spec.get("splits", 1) + 1)]
    splits: dict[str, dict[str, np.ndarray]] = {}
    for group in groups:
        parts = {}
        for part, pattern in spec["files"].items():
            name = pattern.format(domain=group, k=int(group) if group.isdigit() else 0)
            candidates = [root / name, base / name, root / "Partitions" / name]
            path = next((c for c in candidates if c.is_file()), None)
            if path is None:
                logger.info("%s: official split file %s not found; official splits unavailable", root, name)
                return {}
            lines = [ln.split()[0].lstrip("/") for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
            parts[part] = _rows(lines, row_of, path)
        splits[group] = parts
    return splits


#: a catalog entry's ``layout.type`` -> how its folder is read
LAYOUTS = Registry[Callable[[Path, JSONObject], Loaded]]("dataset layout")
LAYOUTS.add("class_folders", _class_folders, help="<class>/<image>, optionally below a root folder")
LAYOUTS.add("sklearn_digits", _class_folders, help="scikit-learn's digits, written once to the cache")
LAYOUTS.add("package_folders", _class_folders, help="class folders shipped inside the package")
LAYOUTS.add("domain_class_folders", _domain_class_folders, help="<domain>/<class>/<image>")
LAYOUTS.add("indexed", _indexed, help="numbered images, labels and splits from MATLAB files")
LAYOUTS.add("id_lists", _id_lists, help="image id lists per split and a label list")
