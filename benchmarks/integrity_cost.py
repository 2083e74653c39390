"""What checksums at rest cost: store writes and cached reads, and extraction end to end, with and without fletcher32.

The two arms run interleaved in one process, on the same data, best of ``--rounds``:

- store: ``--rows`` rows of ``--dim`` float32 appended in batches of 256 and merged into the
  HDF5 file (the writer's path), then every row read back in blocks of 4096 (a cached run's read);
- extraction: EfficientNet-Lite0 ``pool`` features of ``--images`` (JPEG files) into a fresh store,
  then the same call again with every image cached (``return_features=False``, as the CLI runs,
  which now reads each served row through its checksum).

Usage::

    python benchmarks/integrity_cost.py --json benchmarks/integrity_cost.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

import cnnfeat.store.schema as store_schema
from cnnfeat import CNNFeatures
from cnnfeat.console import setup
from cnnfeat.runner import machine_description
from cnnfeat.store import FEATURE_CODE_VERSION, FeatureStore

DEFAULT_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "office31" / "webcam" / "images"


def store_round(folder: Path, rows: int, dim: int) -> tuple[float, float]:
    """(rows/s written and merged, rows/s read back) for one fresh store."""
    rng = np.random.default_rng(0)
    keys = [hashlib.sha256(str(i).encode()).hexdigest() for i in range(rows)]
    path = folder / f"store-{time.monotonic_ns()}.h5"
    started = time.perf_counter()
    config = {"extractor": "bench", "taps": ["pool"], "feature_code_version": FEATURE_CODE_VERSION}
    with FeatureStore(path, config, dims={"pool": dim}, durable=False) as store:
        for start in range(0, rows, 256):
            part = keys[start : start + 256]
            store.append(part, {"pool": rng.standard_normal((len(part), dim), dtype=np.float32)}, part)
    written = rows / (time.perf_counter() - started)
    started = time.perf_counter()
    with FeatureStore(path, mode="r") as store:
        for start in range(0, rows, 4096):
            store.get(keys[start : start + 4096])
    read = rows / (time.perf_counter() - started)
    path.unlink()
    return written, read


def extraction_round(folder: Path, images: list[str]) -> tuple[float, float]:
    """(images/s computed into a fresh store, images/s of the all-cached rerun)."""
    cache = folder / f"x-{time.monotonic_ns()}"
    extractor = CNNFeatures(layers="pool", cache=cache)
    started = time.perf_counter()
    extractor.extract(images, return_features=False)
    computed = len(images) / (time.perf_counter() - started)
    started = time.perf_counter()
    extractor.extract(images, return_features=False)
    cached = len(images) / (time.perf_counter() - started)
    return computed, cached


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--dim", type=int, default=1280)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="a folder of JPEGs (default: Office-31 webcam)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    setup()
    images = sorted(str(p) for p in args.images.rglob("*.jpg")) if args.images.is_dir() else []
    results: dict[str, dict[str, list[float]]] = {"checksums": {}, "no checksums": {}}
    with tempfile.TemporaryDirectory(prefix="cnnfeat-integrity-") as name:
        folder = Path(name)
        if images:
            CNNFeatures(layers="pool").extract(images[:2])  # build and convert the weights once, outside the timings
        for _ in range(args.rounds):
            for arm, checksums in (("checksums", True), ("no checksums", False)):
                store_schema.CHECKSUMS = checksums
                written, read = store_round(folder, args.rows, args.dim)
                found = results[arm]
                found.setdefault("store_rows_per_s_written", []).append(written)
                found.setdefault("store_rows_per_s_read", []).append(read)
                if images:
                    computed, cached = extraction_round(folder, images)
                    found.setdefault("extraction_images_per_s", []).append(computed)
                    found.setdefault("cached_rerun_images_per_s", []).append(cached)
        store_schema.CHECKSUMS = True
    best = {arm: {k: max(v) for k, v in found.items()} for arm, found in results.items()}
    print(f"{'':<28}{'checksums':>12}{'none':>12}{'ratio':>8}")
    for key in best["checksums"]:
        on, off = best["checksums"][key], best["no checksums"][key]
        print(f"{key:<28}{on:>12.1f}{off:>12.1f}{on / off:>8.2f}")
    if args.json:
        record = {
            "command": " ".join(["python", *sys.argv]),
            "machine": machine_description(),
            "python": platform.python_version(),
            "rows": args.rows,
            "dim": args.dim,
            "images": len(images),
            "best": best,
            "rounds": results,
        }
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
