"""Seconds from a command's start to its first batch of features, with and without the exported graph cached.

Each measurement is one fresh ``cnnfeat extract`` process on ``--images`` images (one batch), into a new
output file, so it times the start-up: imports, building or loading the network, and one forward pass.
The converted Lite0 weights are cached first, so that their one-time conversion is not counted:

- ``keras``: TensorFlow imported, the Keras model built;
- ``<runtime>, graph exported``: the graph cache emptied first, so the run builds the Keras model and exports it;
- ``<runtime>, graph cached``: the graph read back (checked against its sha256): no TensorFlow import.

Usage::

    python benchmarks/first_batch.py --json benchmarks/first_batch.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' support module, which is not shipped
from tests.support import make_photos


def run(images: Path, runtime: str, out: Path, env: dict[str, str]) -> float:
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "cnnfeat", "extract", str(images), "--runtime", runtime, "--output", str(out), "--no-progress"]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=32, help="images (one batch) (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runtimes", nargs="+", default=["onnxruntime", "openvino"])
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    results: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="cnnfeat-first-batch-") as name:
        tmp = Path(name)
        env = {**os.environ, "CNNFEAT_CACHE": str(tmp / "cache")}
        images = tmp / "images"
        make_photos(images, args.images, size=(640, 480))
        run(images, "keras", tmp / "warm.h5", env)  # converts and caches the Lite0 weights, outside the timings
        for _ in range(args.rounds):
            results.setdefault("keras", []).append(run(images, "keras", tmp / f"k{time.monotonic_ns()}.h5", env))
            for runtime in args.runtimes:
                shutil.rmtree(tmp / "cache" / "graphs", ignore_errors=True)
                exported = run(images, runtime, tmp / f"e{time.monotonic_ns()}.h5", env)
                cached = run(images, runtime, tmp / f"c{time.monotonic_ns()}.h5", env)
                results.setdefault(f"{runtime}, graph exported", []).append(exported)
                results.setdefault(f"{runtime}, graph cached", []).append(cached)
    print(f"seconds from start to the first batch of {args.images} images (best of {args.rounds}):")
    for name, values in results.items():
        print(f"  {name:<32} {min(values):6.2f}")
    if args.json:
        from cnnfeat.runtimes.auto import cpu_model

        record = {"command": " ".join(["python", *sys.argv]), "cpu": cpu_model(), "images": args.images, "seconds": results}
        args.json.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
