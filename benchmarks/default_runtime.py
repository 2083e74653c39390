"""The library's default extraction against the bare Keras model: its speed, and its features against Keras'.

Contenders, each in a fresh process (its own thread pools), rounds interleaved, the best round of each kept:

- ``default``: ``extract_features(paths, layers="pool")`` with every other parameter at the library's default
  (EfficientNet-Lite0, ImageNet weights, ``runtime="auto"``, no cache), timed from the call to its return:
  building the extractor, loading the exported graph, reading, decoding, the forward passes;
- ``keras``: the same call with ``runtime="keras"`` (the library's default before it was ``auto``);
- ``bare_model``: the Keras model alone, ``predict_on_batch`` on uint8 tensors already in memory (the same
  network and batch size, preprocessing in the graph), built and warmed up outside the timing.

``auto`` measures the installed runtimes once per machine and network; that first use is made (and timed)
before the rounds. The features of ``default`` are then compared with ``keras``': the largest absolute
difference over the largest absolute feature.

    python benchmarks/default_runtime.py --json benchmarks/default_runtime.json   # Office-31 webcam
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "office31" / "webcam"
CONTENDERS = ("default", "keras", "bare_model")


def _paths(folder: Path) -> list[str]:
    from cnnfeat.inputs import Manifest

    return Manifest.from_folder(folder).paths


def _worker(name: str, folder: Path) -> float:
    from cnnfeat import extract_features

    paths = _paths(folder)
    if name == "bare_model":
        from cnnfeat import build_backbone

        built = build_backbone("efficientnet_lite0", weights="imagenet", taps=("pool",))
        size, batch = built.spec.input_size, 32
        x = np.random.default_rng(0).integers(0, 256, (batch, size, size, 3)).astype(np.uint8)
        built.model.predict_on_batch(x)
        n_batches = -(-len(paths) // batch)
        started = time.perf_counter()
        for _ in range(n_batches):
            built.model.predict_on_batch(x)
        return (time.perf_counter() - started) * len(paths) / (n_batches * batch)
    params = {} if name == "default" else {"runtime": "keras"}
    started = time.perf_counter()
    features, _ = extract_features(paths, layers="pool", **params)
    seconds = time.perf_counter() - started
    assert features is not None and not np.isnan(features["pool"]).any()
    return seconds


def _run(name: str, folder: Path) -> float:
    out = subprocess.run(
        [sys.executable, __file__, "--worker", name, "--images", str(folder)], check=True, capture_output=True, text=True
    )
    return float(json.loads(out.stdout.strip().splitlines()[-1])["seconds"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--worker", choices=CONTENDERS, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.worker:
        print(json.dumps({"seconds": _worker(args.worker, args.images)}))
        return 0

    from cnnfeat import CNNFeatures, extract_features
    from cnnfeat.config import cpu_name

    paths = _paths(args.images)
    started = time.perf_counter()
    extractor = CNNFeatures(layers="pool")
    runtime, why = extractor.resolved_runtime()
    first_use = time.perf_counter() - started
    print(f"{len(paths)} images; the default runtime resolves to {runtime} ({why}); first use {first_use:.1f} s", flush=True)

    best: dict[str, float] = {}
    for round_ in range(args.rounds):
        for name in CONTENDERS:
            seconds = _run(name, args.images)
            best[name] = min(best.get(name, np.inf), seconds)
            print(f"round {round_}: {name} {seconds:.1f} s ({len(paths) / seconds:.1f} img/s)", flush=True)

    default, _ = extract_features(paths, layers="pool")
    keras, _ = extract_features(paths, layers="pool", runtime="keras")
    assert default is not None and keras is not None
    difference = float(np.abs(default["pool"] - keras["pool"]).max() / np.abs(keras["pool"]).max())
    speed = {name: len(paths) / seconds for name, seconds in best.items()}
    print("| contender | seconds | img/s | × bare Keras |")
    print("|---|---|---|---|")
    for name in CONTENDERS:
        print(f"| {name} | {best[name]:.1f} | {speed[name]:.1f} | {speed[name] / speed['bare_model']:.2f} |")
    print(f"default vs Keras features: max |difference| / max |feature| = {difference:.2e}")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "cpu": cpu_name(),
                    "images": len(paths),
                    "runtime": runtime,
                    "why": why,
                    "first_use_seconds": first_use,
                    "seconds": best,
                    "images_per_second": speed,
                    "ratio_to_bare_keras": {n: speed[n] / speed["bare_model"] for n in CONTENDERS},
                    "relative_difference": difference,
                },
                indent=1,
            )
            + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
