"""Manifests: which image files make a dataset, with their labels, splits and domains.

A :class:`Manifest` comes from a folder tree (label = the image's parent folder),
a CSV file (``path,label[,split,domain]``, paths relative to the CSV), or a
text list (one path per line). A folder tree whose images all lie two levels
down is a *domain tree* (``<domain>/<class>/<file>``: the top folder is the
domain) or, when its top folders are named ``train``/``val``/``test``, a
*split tree* (``<split>/<class>/<file>``). This is the one reader of a user's
inputs: ``cnnfeat extract`` and ``cnnfeat benchmark --data`` both use it.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cnnfeat.exceptions import InputListError

__all__ = ["IMAGE_EXTENSIONS", "Manifest", "load_inputs", "sample_images"]

IMAGE_EXTENSIONS = frozenset({".jpg", ".jpeg", ".jpe", ".jfif", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
#: top-level folder names (and CSV ``split`` values) that name a split, and the part each means
SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}


@dataclass
class Manifest:
    """Image paths with optional per-image label, split and domain (empty strings when unknown)."""

    paths: list[str]
    labels: list[str] = field(default_factory=list)
    splits: list[str] = field(default_factory=list)
    domains: list[str] = field(default_factory=list)
    source: str = ""

    def __post_init__(self) -> None:
        n = len(self.paths)
        for name in ("labels", "splits", "domains"):
            column = getattr(self, name)
            if not column:
                setattr(self, name, [""] * n)
            elif len(column) != n:
                raise InputListError(f"{self.source or 'manifest'}: {name} has {len(column)} entries for {n} paths")

    def __len__(self) -> int:
        return len(self.paths)

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    @property
    def classes(self) -> list[str]:
        """Sorted distinct non-empty labels."""
        return sorted({label for label in self.labels if label})

    @property
    def layout(self) -> str:
        """What the manifest carries: ``"labels"``, plus ``"+ splits"`` / ``"+ domains"`` where present."""
        parts = ["labels" if all(self.labels) else "unlabelled" if not any(self.labels) else "partly labelled"]
        parts += [name for name, column in (("splits", self.splits), ("domains", self.domains)) if any(column)]
        return " + ".join(parts)

    @classmethod
    def from_folder(cls, root: str | os.PathLike[str]) -> Manifest:
        """Every image below ``root`` (sorted), labelled by its parent folder's name.

        When every image lies exactly two folders down, the top folder is the image's
        split (if every top folder is named like ``train``, ``val``, ``test``) or else its
        domain: ``office31/amazon/<class>/<file>`` and ``data/train/<class>/<file>`` both read
        as one would expect.
        """
        root = Path(root)
        if not root.is_dir():
            raise InputListError(f"{root}: not a folder")
        paths, labels, tops, depths = [], [], [], set()
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))  # .git, .thumbnails, __MACOSX's kin
            for name in sorted(filenames):
                # hidden files are not images: macOS's AppleDouble ._x.jpg beside x.jpg, .DS_Store, editors' backups
                if Path(name).suffix.lower() in IMAGE_EXTENSIONS and not name.startswith("."):
                    path = Path(dirpath, name)
                    relative = path.relative_to(root).parts
                    paths.append(str(path))
                    labels.append(path.parent.name if path.parent != root else "")
                    tops.append(relative[0] if len(relative) > 1 else "")
                    depths.add(len(relative))
            # a folder named like an image (x.jpg/) is not an image: it is walked, not listed
        if not paths:
            raise InputListError(f"{root}: no image files found (looked for {', '.join(sorted(IMAGE_EXTENSIONS))})")
        splits: list[str] = []
        domains: list[str] = []
        if depths == {3}:
            if all(top.lower() in SPLIT_NAMES for top in tops):
                splits = [SPLIT_NAMES[top.lower()] for top in tops]
            else:
                domains = tops
        return cls(paths, labels, splits, domains, source=str(root))

    @classmethod
    def from_csv(
        cls, csv_path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None, allow_outside: bool = False
    ) -> Manifest:
        """A CSV with a header containing ``path`` and optionally ``label``, ``split``, ``domain``.

        Relative paths are read from the CSV's folder. A path that leads outside ``root``
        (default: the CSV's folder), by ``..`` or by being absolute, is refused unless
        ``allow_outside`` (a CSV from elsewhere must not make cnnfeat read arbitrary files).
        """
        csv_path = Path(csv_path)
        base = csv_path.parent
        try:
            with open(csv_path, newline="", encoding="utf-8-sig") as f:
                reader = csv.DictReader(f)
                if reader.fieldnames is None or "path" not in reader.fieldnames:
                    raise InputListError(f"{csv_path}: the header must have a 'path' column; got {reader.fieldnames}")
                rows = list(reader)
        except (OSError, UnicodeDecodeError, csv.Error) as exc:
            raise InputListError(f"{csv_path}: cannot read CSV ({exc})") from exc
        paths = []
        for line, row in enumerate(rows, start=2):
            if not (row.get("path") or "").strip():
                raise InputListError(f"{csv_path}, line {line}: empty path")
            paths.append(_contained(base / row["path"].strip(), root or base, allow_outside, f"{csv_path}, line {line}"))
        columns = {c: [(r.get(c) or "").strip() for r in rows] for c in ("label", "split", "domain")}
        return cls(paths, columns["label"], columns["split"], columns["domain"], source=str(csv_path))

    @classmethod
    def from_list(
        cls, list_path: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None, allow_outside: bool = False
    ) -> Manifest:
        """A text file of paths, one per line (relative to the file); ``#`` starts a comment.

        Paths outside ``root`` (default: the list's folder) are refused unless ``allow_outside``.
        """
        list_path = Path(list_path)
        try:
            lines = list_path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as exc:
            raise InputListError(f"{list_path}: cannot read path list ({exc})") from exc
        base = list_path.parent
        paths = [
            _contained(base / s, root or base, allow_outside, f"{list_path}, line {n}")
            for n, s in enumerate((ln.strip() for ln in lines), start=1)
            if s and not s.startswith("#")
        ]
        if not paths:
            raise InputListError(f"{list_path}: lists no paths")
        return cls(paths, source=str(list_path))


def _contained(path: Path, root: str | os.PathLike[str], allow_outside: bool, where: str) -> str:
    """``path`` as a string, refused when it leads outside ``root`` (checked lexically, so
    links inside a dataset folder that point elsewhere stay usable)."""
    resolved = os.path.normpath(os.path.abspath(path))
    top = os.path.normpath(os.path.abspath(root))
    if not allow_outside and os.path.commonpath([resolved, top]) != top:
        raise InputListError(
            f"{where}: path {str(path)!r} leads outside the data root {top}; refused "
            "(pass allow_outside=True / --allow-outside-root if that is intended)"
        )
    return str(path)


def load_inputs(
    source: str | os.PathLike[str], *, root: str | os.PathLike[str] | None = None, allow_outside: bool = False
) -> Manifest:
    """A folder tree, a ``.csv`` or a text list of paths, whichever ``source`` is.

    ``root`` and ``allow_outside`` apply to the paths listed in a CSV or text list.
    """
    path = Path(source)
    if path.is_dir():
        return Manifest.from_folder(path)
    if not path.exists():
        raise InputListError(f"{path}: no such file or folder")
    if path.suffix.lower() == ".csv":
        return Manifest.from_csv(path, root=root, allow_outside=allow_outside)
    if path.suffix.lower() in IMAGE_EXTENSIONS:
        return Manifest([str(path)], source=str(path))
    return Manifest.from_list(path, root=root, allow_outside=allow_outside)


def sample_images() -> Manifest:
    """The two photos scikit-learn ships (``china.jpg``, ``flower.jpg``): always available offline."""
    import sklearn.datasets

    folder = Path(sklearn.datasets.__file__).parent / "images"
    paths = sorted(str(p) for p in folder.glob("*.jpg"))
    if not paths:
        raise InputListError(f"{folder}: scikit-learn's sample images are missing")
    return Manifest(paths, [Path(p).stem for p in paths], source="scikit-learn sample images")
