"""How much faster a finished benchmark reruns: first run vs features cached vs finished runs reused.

Three wall-clock timings of the same ``python -m cnnfeat.benchmark`` command, each in a fresh
process, on an empty feature cache made for the purpose:

- ``first``: nothing cached (model built, every image decoded and passed through the network);
- ``features cached``: the same command into a new ``--out``: features come from the HDF5
  cache, the probes are fitted again (TensorFlow is never imported);
- ``--skip-existing``: the same command into the first ``--out``: finished runs' records are
  reused and only the tables and figures are written.

Usage::

    python benchmarks/rerun_speed.py                       # the old built-in default (digits, 3 seeds)
    python benchmarks/rerun_speed.py -- --datasets scene15 --data-root ../shared/datasets --seeds 0
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def timed(command: list[str]) -> float:
    started = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "benchmark_args", nargs="*", help="after --: arguments for cnnfeat.benchmark (default: digits, Lite0 and HOG)"
    )
    args = parser.parse_args(argv)
    bench_args = args.benchmark_args or ["--datasets", "digits", "--methods", "cnn:efficientnet_lite0/pool", "hog"]
    with tempfile.TemporaryDirectory(prefix="cnnfeat-rerun-") as tmp:
        base = [sys.executable, "-m", "cnnfeat.benchmark", *bench_args, "--cache", f"{tmp}/cache", "--no-progress"]
        seconds = {
            "first": timed([*base, "--out", f"{tmp}/first"]),
            "features cached": timed([*base, "--out", f"{tmp}/second"]),
            "--skip-existing": timed([*base, "--out", f"{tmp}/first", "--skip-existing"]),
        }
    print("| run | wall s | speed-up over the first |")
    print("|---|---|---|")
    for name, s in seconds.items():
        print(f"| {name} | {s:.1f} | {seconds['first'] / s:.1f}x |")
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"\npython -m cnnfeat.benchmark {' '.join(bench_args)}; {machine}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "benchmark_args": bench_args, "seconds": seconds}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
