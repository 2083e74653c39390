"""Extraction speed: cnnfeat end to end (JPEG files in, HDF5 rows out) vs the bare network.

Three measurements on the same images, network and batch size, interleaved over
rounds because shared machines are noisy:

- ``end_to_end``: ``CNNFeatures.extract`` into a fresh store (read, hash, decode,
  resize, forward pass, commit), the model already built;
- ``bare_model``: ``model.predict_on_batch`` on uint8 tensors already in memory
  (the same model, preprocessing in-graph): the ceiling on this machine;
- ``cached_rerun``: the same extraction again with every row in the store.

Usage::

    python benchmarks/extract_speed.py                          # Office-31 webcam if present
    python benchmarks/extract_speed.py --images DIR --batch-size 16 --rounds 3
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' support module, which is not shipped

DEFAULT_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "office31" / "webcam"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES, help="folder of images (default: Office-31 webcam)")
    parser.add_argument("--backbone", default="efficientnet_lite0")
    parser.add_argument("--weights", default="imagenet", help="'imagenet' or 'none'")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=2, help="interleaved rounds; the best of each is reported")
    parser.add_argument("--limit", type=int, default=0, help="use only the first N images")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)

    from cnnfeat import CNNFeatures
    from cnnfeat.inputs import Manifest
    from tests.support import make_photos

    with tempfile.TemporaryDirectory(prefix="cnnfeat-speed-") as tmp:
        if args.images.is_dir():
            paths = Manifest.from_folder(args.images).paths
            source = str(args.images)
        else:
            paths = make_photos(Path(tmp, "jpegs"), 400, size=None)
            source = f"{len(paths)} synthetic JPEGs, 300-800 px ({args.images} not found)"
        if args.limit:
            paths = paths[: args.limit]
        weights = None if args.weights == "none" else args.weights
        extractor = CNNFeatures(backbone=args.backbone, weights=weights, batch_size=args.batch_size)
        model = extractor.network().model  # built once, outside every timing
        size = extractor.image_transform().size
        x = np.random.default_rng(0).integers(0, 256, (args.batch_size, size, size, 3)).astype(np.uint8)
        model.predict_on_batch(x)  # warm-up: graph tracing
        n_batches = max(1, len(paths) // args.batch_size)

        best = {"end_to_end": 0.0, "bare_model": 0.0, "cached_rerun": 0.0}
        for round_ in range(args.rounds):
            store = Path(tmp, f"round{round_}.h5")
            extractor.set_params(cache=store)
            started = time.perf_counter()
            _, report = extractor.extract(paths, return_features=False)
            best["end_to_end"] = max(best["end_to_end"], len(paths) / (time.perf_counter() - started))

            started = time.perf_counter()
            for _ in range(n_batches):
                model.predict_on_batch(x)
            best["bare_model"] = max(best["bare_model"], n_batches * args.batch_size / (time.perf_counter() - started))

            started = time.perf_counter()
            _, rerun = extractor.extract(paths, return_features=False)
            assert rerun.n_cached == len(paths) - report.n_duplicates - len(report.skipped)
            best["cached_rerun"] = max(best["cached_rerun"], len(paths) / (time.perf_counter() - started))
            print(f"round {round_ + 1}: " + ", ".join(f"{k} {v:.1f} img/s" for k, v in best.items()), file=sys.stderr)

    figures = {
        "images": source,
        "n_images": len(paths),
        "backbone": args.backbone,
        "weights": args.weights,
        "batch_size": args.batch_size,
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()}",
        "device": report.device,
        **{f"{k}_images_per_s": round(v, 1) for k, v in best.items()},
        "end_to_end_over_bare_model": round(best["end_to_end"] / best["bare_model"], 3),
        "cached_rerun_speedup": round(best["cached_rerun"] / best["end_to_end"], 1),
    }
    print(f"| {'measure':<28} | {'value':>10} |\n|{'-' * 30}|{'-' * 12}|")
    for key in ("end_to_end_images_per_s", "bare_model_images_per_s", "end_to_end_over_bare_model",
                "cached_rerun_images_per_s", "cached_rerun_speedup"):  # fmt: skip
        print(f"| {key:<28} | {figures[key]:>10} |")
    print(
        f"\n{figures['n_images']} images from {figures['images']}; {args.backbone}, batch {args.batch_size}; {figures['machine']}"
    )
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
