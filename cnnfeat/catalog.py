"""The dataset catalog: one JSON manifest per benchmark dataset, and loaders for their official layouts.

Each entry of ``cnnfeat/data_manifests/`` names the official download(s) and
checksum(s), the licence and citation, the expected image and class counts, the
layout the official archive unpacks to, and how labels, domains and official
splits are read from it. :func:`load_dataset` turns a dataset folder into a
:class:`~cnnfeat.inputs.Manifest` plus its official splits, and checks the
counts; :func:`verify_dataset` lists everything that does not match.

The data root is ``data_root=``, else ``$CNNFEAT_DATA``, else
``<cache>/data``; dataset ``name`` lives in ``<root>/<folder>``. Two datasets
are built in and need no data root: ``eurosat_mini`` (1,000 satellite photos,
shipped inside the package with their MIT notice; the default benchmark's data)
and ``digits`` (scikit-learn's, written once to ``<cache>/data/digits``).

Examples
--------
>>> from cnnfeat.catalog import list_datasets, load_dataset
>>> "scene15" in list_datasets()
True
>>> ds = load_dataset("eurosat_mini")
>>> len(ds.manifest), len(ds.manifest.classes), ds.layout
(1000, 10, 'built in')
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np

from cnnfeat.config import cache_dir
from cnnfeat.exceptions import DatasetError, ImageDecodeError, ImageError
from cnnfeat.hints import JSONObject
from cnnfeat.images import DECODE_BUDGET, declared_pixels, decode_image, map_ordered, read_image_file
from cnnfeat.inputs import Manifest
from cnnfeat.layouts import LAYOUTS, write_digits

__all__ = [
    "Dataset",
    "check_dataset",
    "configured_data_root",
    "content_digest",
    "dataset_from_inputs",
    "dataset_spec",
    "inputs_digest",
    "layouts_of",
    "list_datasets",
    "load_dataset",
    "present_folder",
    "resolve_data_root",
    "verify_dataset",
]

logger = logging.getLogger(__name__)

MANIFEST_DIR = Path(__file__).parent / "data_manifests"
#: the datasets that ship inside the package (catalog layout type ``package_folders``)
BUILTIN_DATA = Path(__file__).parent / "builtin_data"
BUILT_IN = "built in"


@dataclass
class Dataset:
    """A loaded dataset: its rows (paths, labels, domains), official splits and catalog entry.

    ``official_splits`` maps a split name (``"1"``, ``"2"``, ... or a domain name for
    PACS) to ``{"train": rows, "val": rows, "test": rows}`` (row indices).
    ``problems`` lists what did not match the expected counts (empty when verified).
    """

    name: str
    spec: JSONObject
    root: Path
    manifest: Manifest
    official_splits: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    layout: str = "official archive"
    digest: str = ""
    #: ``(path, reason)`` of the images left out before any split was made (a user's data, screened)
    skipped: list[tuple[str, str]] = field(default_factory=list)

    @property
    def is_user_data(self) -> bool:
        """The user's own images (:func:`dataset_from_inputs`), not a catalog entry."""
        return bool(self.spec.get("user_data"))


def list_datasets() -> list[str]:
    """Names of the datasets in the catalog."""
    return sorted(p.stem for p in MANIFEST_DIR.glob("*.json"))


@cache
def _read_spec(name: str) -> str:
    path = MANIFEST_DIR / f"{name}.json"
    if not path.is_file():
        raise DatasetError(f"unknown dataset {name!r}; the catalog has {', '.join(list_datasets())}")
    return path.read_text(encoding="utf-8")


def dataset_spec(name: str) -> JSONObject:
    """The catalog entry (a fresh dict parsed from ``data_manifests/<name>.json``)."""
    entry: JSONObject = json.loads(_read_spec(name))
    return entry


def resolve_data_root(explicit: str | os.PathLike[str] | None = None) -> Path:
    """``explicit``, else ``$CNNFEAT_DATA``, else ``<cnnfeat cache>/data``."""
    return configured_data_root(explicit) or cache_dir() / "data"


def configured_data_root(explicit: str | os.PathLike[str] | None = None) -> Path | None:
    """``explicit``, else ``$CNNFEAT_DATA`` (the one place it is read), else None: no data root was given."""
    if explicit:
        return Path(explicit).expanduser()
    if os.environ.get("CNNFEAT_DATA"):
        return Path(os.environ["CNNFEAT_DATA"]).expanduser()
    return None


def content_digest(folder: str | os.PathLike[str]) -> str:
    """sha256 of the ``sha256sum`` listing of every file below ``folder``, sorted by path.

    The same as ``find . -type f | LC_ALL=C sort | xargs sha256sum | sha256sum`` run in the folder.
    """
    folder = Path(folder)
    relative = sorted(("./" + p.relative_to(folder).as_posix()).encode() for p in folder.rglob("*") if p.is_file())
    listing = hashlib.sha256()
    for name in relative:
        digest = hashlib.sha256((folder / name.decode()[2:]).read_bytes()).hexdigest()
        listing.update(digest.encode() + b"  " + name + b"\n")
    return listing.hexdigest()


def load_dataset(name: str, data_root: str | os.PathLike[str] | None = None, *, strict: bool = True) -> Dataset:
    """Read dataset ``name`` from its folder under the data root, in its official layout or a known alternative.

    The official archive's layout is tried first, then the catalog entry's
    ``alternative_layouts`` (e.g. the copies that DomainBed's or torchvision's
    download scripts make); ``Dataset.layout`` names the one that matched.

    Parameters
    ----------
    name : str
        A catalog name (:func:`list_datasets`).
    data_root : path, optional
        The data root (see :func:`resolve_data_root`).
    strict : bool
        Raise :class:`DatasetError` when the counts differ from the official ones;
        with ``False`` they are only listed in ``Dataset.problems``.

    Raises
    ------
    DatasetError
        No layout matches (the message lists each layout tried and what was found,
        and where to put the download), a label or split file is malformed, or
        (``strict``) the counts differ.
    """
    spec = dataset_spec(name)
    if spec["layout"]["type"] == "sklearn_digits":  # built in: written to the cache, never into a user's data root
        root = cache_dir() / "data" / spec["folder"]
        write_digits(root)
        candidates = [(BUILT_IN, root, spec["layout"])]
    elif spec["layout"]["type"] == "package_folders":
        candidates = [(BUILT_IN, BUILTIN_DATA / spec["folder"], spec["layout"])]
    else:
        base = resolve_data_root(data_root)
        candidates = [(layout_name, base / folder, layout) for layout_name, folder, layout in layouts_of(spec)]
    tried = []
    for layout_name, root, layout in candidates:
        if not root.is_dir():
            tried.append(f"{layout_name}: {root}/{layout['pattern']} ({root} does not exist)")
            continue
        try:
            manifest, splits = LAYOUTS.get(layout["type"])(root, layout)
        except DatasetError as exc:
            tried.append(f"{layout_name}: {root}/{layout['pattern']} ({exc}; the folder holds {_listing(root)})")
            continue
        manifest.source = f"{name} ({root})"
        dataset = Dataset(name, spec, root, manifest, splits, layout=layout_name)
        dataset.problems = _count_problems(dataset)
        if dataset.problems and strict:
            raise DatasetError(f"{name} at {root} does not match the official counts: " + "; ".join(dataset.problems))
        return dataset
    files = ", ".join(f["filename"] for f in spec["files"]) or "nothing"
    raise DatasetError(
        f"{name}: no copy found in a layout cnnfeat knows. Tried:\n  " + "\n  ".join(tried) + "\n"
        f"Run `cnnfeat data download {name}` or put the official download ({files}) unpacked in "
        f"{candidates[0][1]} (see {spec['homepage']})"
    )


def layouts_of(spec: JSONObject) -> list[tuple[str, str, JSONObject]]:
    """``(name, folder, layout)`` of every layout a catalog entry accepts: the official archive's first.

    An alternative layout is the official one with the keys it names replaced (its
    ``folder``, ``pattern``, roots, and ``split_files: null`` where that copy has none).
    """
    found = [("official archive", spec["folder"], spec["layout"])]
    for alternative in spec.get("alternative_layouts", []):
        layout = {k: v for k, v in {**spec["layout"], **alternative}.items() if v is not None}
        found.append((alternative["name"], alternative.get("folder", spec["folder"]), layout))
    return found


def _listing(folder: Path, most: int = 8) -> str:
    names = sorted(p.name + ("/" if p.is_dir() else "") for p in folder.iterdir())
    if not names:
        return "nothing"
    return ", ".join(names[:most]) + (f", ... ({len(names)} entries)" if len(names) > most else "")


def dataset_from_inputs(
    source: str | os.PathLike[str],
    name: str | None = None,
    *,
    root: str | os.PathLike[str] | None = None,
    allow_outside: bool = False,
    screen: bool = False,
) -> Dataset:
    """A user's own images as a benchmark dataset: a folder tree, a domain or split tree, or a CSV.

    With ``screen``, every image is read and decoded once first, and those that cannot be
    (corrupt, not an image, missing, too large) are left out, with their reasons in
    ``Dataset.skipped``, before any split is made: a messy folder costs its bad files only.

    The inputs are read by :func:`cnnfeat.inputs.load_inputs`, as ``cnnfeat extract``
    reads them. Domains come from a domain tree or a ``domain`` column; an official split
    from a split tree or a ``split`` column (``train``, ``val``, ``test``). The dataset's
    default protocol is that split where there is one, else the shifts between its domains,
    else stratified 5-fold. ``Dataset.digest`` is the sha256 of every image's bytes with
    its label, split and domain, so that records of changed data are never reused.

    Raises
    ------
    DatasetError
        An image has no label, a ``split`` value is not a split name, or fewer than two classes.
    """
    from cnnfeat.inputs import SPLIT_NAMES, load_inputs

    manifest = load_inputs(source, root=root, allow_outside=allow_outside)
    skipped, content = _screen(manifest) if screen else ([], {})
    if skipped:
        bad = {path for path, _ in skipped}
        keep = [i for i, path in enumerate(manifest.paths) if path not in bad]
        manifest = Manifest(
            [manifest.paths[i] for i in keep],
            [manifest.labels[i] for i in keep],
            [manifest.splits[i] for i in keep],
            [manifest.domains[i] for i in keep],
            source=manifest.source,
        )
        if not manifest.paths:
            raise DatasetError(f"{source}: none of its {len(skipped)} images can be read (e.g. {skipped[0][0]}: {skipped[0][1]})")
    name = name or Path(source).stem
    unlabelled = [p for p, label in zip(manifest.paths, manifest.labels) if not label]
    if unlabelled:
        raise DatasetError(
            f"{source}: {len(unlabelled)} of {len(manifest)} images have no label (e.g. {unlabelled[0]}); "
            "the benchmark needs a class per image: a folder tree <class>/<file>, <domain>/<class>/<file>, "
            "or a CSV with a 'label' column"
        )
    if len(manifest.classes) < 2:
        raise DatasetError(
            f"{source}: {len(manifest.classes)} class found ({', '.join(manifest.classes)}); a probe needs two or more"
        )
    splits: dict[str, dict[str, np.ndarray]] = {}
    if any(manifest.splits):
        unknown = sorted({s for s in manifest.splits if s.lower() not in SPLIT_NAMES})
        if unknown:
            raise DatasetError(f"{source}: split values {unknown[:5]} are not split names; use {', '.join(SPLIT_NAMES)}")
        parts = np.array([SPLIT_NAMES[s.lower()] for s in manifest.splits])
        splits = {"1": {part: np.flatnonzero(parts == part) for part in ("train", "val", "test")}}
        if not len(splits["1"]["train"]) or not len(splits["1"]["test"]):
            raise DatasetError(f"{source}: the split column needs both 'train' and 'test' rows")
    domains = sorted({d for d in manifest.domains if d})
    default = "official" if splits else "domain_shift_full" if len(domains) >= 2 else "kfold"
    kind = "CSV" if Path(source).suffix.lower() == ".csv" else "folder tree"
    spec = {
        "name": name,
        "title": f"{name}: {kind} {source}",
        "task": "your data",
        "folder": str(source),
        "files": [],
        "layout": {"type": "user", "pattern": manifest.layout, "domains": domains},
        "expected": {"images": len(manifest), "classes": len(manifest.classes)},
        "protocols": {"default": default},
        "user_data": True,
    }
    manifest.source = f"{name} ({source})"
    digest = inputs_digest(manifest, content)
    return Dataset(name, spec, Path(source), manifest, splits, layout=kind, digest=digest, skipped=skipped)


def _screen(manifest: Manifest) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """``(path, reason)`` of every image that cannot be read and decoded, and the sha256 of those that can.

    Decoded at reduced size where it can be; the digests spare :func:`inputs_digest` a second read.
    """

    def check(path: str) -> str:
        data, sha256 = read_image_file(path)
        with DECODE_BUDGET.hold(declared_pixels(data)):  # the same memory bound as extraction's decoding
            decode_image(data, path, min_side=64)
        return sha256

    skipped: list[tuple[str, str]] = []
    content: dict[str, str] = {}
    for path, sha256, error in map_ordered(check, manifest.paths, workers=max(2, os.cpu_count() or 1), max_ahead=64):
        if isinstance(error, ImageError):
            skipped.append((path, error.reason))
        elif error is not None:
            raise error
        elif sha256 is not None:
            content[path] = sha256
    return skipped, content


def inputs_digest(manifest: Manifest, known: Mapping[str, str] | None = None) -> str:
    """sha256 over every image's bytes, label, split and domain, in the manifest's order.

    ``known`` maps paths to the sha256 of their bytes where they were already read.
    """
    digest = hashlib.sha256()
    for path, label, split, domain in zip(manifest.paths, manifest.labels, manifest.splits, manifest.domains):
        try:
            content = (known or {}).get(path) or read_image_file(path)[1]  # bounded: a link to /dev/zero is refused
        except ImageDecodeError as exc:  # the extractor reports the file by its policy; the digest only notes it
            content = f"unreadable: {exc.reason}"
        digest.update(f"{content}\t{label}\t{split}\t{domain}\n".encode())
    return digest.hexdigest()


def verify_dataset(name: str, data_root: str | os.PathLike[str] | None = None, *, content: bool = False) -> list[str]:
    """Everything about the dataset folder that differs from the catalog (empty: verified).

    ``content=True`` also compares the folder's :func:`content_digest` where the catalog has one.
    """
    try:
        dataset = load_dataset(name, data_root, strict=False)
    except DatasetError as exc:
        return [str(exc)]
    return check_dataset(dataset, content=content)


def check_dataset(dataset: Dataset, *, content: bool = False) -> list[str]:
    """What differs from the catalog in a loaded dataset (its counts; with ``content``, its digest)."""
    problems = list(dataset.problems)
    expected = dataset.spec.get("content_sha256")
    if content and expected and dataset.layout in ("official archive", BUILT_IN):
        found = content_digest(dataset.root)
        if found != expected:
            problems.append(f"content digest is {found}, expected {expected} (some file differs, is missing or is extra)")
    return problems


def present_folder(name: str, data_root: str | os.PathLike[str] | None = None) -> Path | None:
    """The folder of a downloadable dataset under the data root, in any known layout; None if absent."""
    spec = dataset_spec(name)
    if not spec["files"]:
        return None
    base = resolve_data_root(data_root)
    return next((base / folder for _, folder, _ in layouts_of(spec) if (base / folder).is_dir()), None)


# --- layouts ------------------------------------------------------------------------------------


def _count_problems(dataset: Dataset) -> list[str]:
    expected, manifest = dataset.spec["expected"], dataset.manifest
    problems = []
    if len(manifest) != expected["images"]:
        problems.append(f"{len(manifest)} images, expected {expected['images']}")
    if len(manifest.classes) != expected["classes"]:
        problems.append(f"{len(manifest.classes)} classes, expected {expected['classes']}")
    per_class = expected.get("per_class")
    counts = Counter(manifest.labels)
    if isinstance(per_class, int):
        wrong = {c: n for c, n in counts.items() if n != per_class}
        if wrong:
            problems.append(f"classes without {per_class} images: {dict(sorted(wrong.items())[:5])}")
    elif isinstance(per_class, dict):
        for cls, n in per_class.items():
            if counts.get(cls, 0) != n:
                problems.append(f"class {cls!r} has {counts.get(cls, 0)} images, expected {n}")
    for domain, n in expected.get("per_domain", {}).items():
        found = sum(d == domain for d in manifest.domains)
        if found != n:
            problems.append(f"domain {domain!r} has {found} images, expected {n}")
    official = expected.get("official_split")
    if official and dataset.official_splits:
        first = dataset.official_splits[min(dataset.official_splits)]
        for part, n in official.items():
            if len(first.get(part, ())) != n:
                problems.append(f"official {part} split has {len(first.get(part, ()))} images, expected {n}")
    elif official:
        problems.append("the official split files are missing")
    return problems
