"""What FineTunedCNN's cheap paths save: seconds per training epoch of each path, on the same images.

EfficientNet-Lite0 on ``--images`` 15-Scene images (the first of each class, in order; with 450, an
epoch is one pass over the 405 training images, 13 steps, more than ``min_steps_per_epoch``), one
process, the arms interleaved, best of ``--rounds``:

- ``head`` on cached pooled features (the features path: no forward pass per epoch);
- ``top2`` on the cached output maps of block 6c (the maps path: the epochs run the last two blocks, the
  top convolution and the head);
- ``top2`` with ``augment="flip+crop"`` (the images path: every epoch runs the whole network, as any
  augmentation, truncation or ``trainable="all"`` must).

Each arm fits with the features or maps already in the cache (a warm-up fit fills it), for
``--epochs`` head epochs and as many fine-tuning epochs, without early stopping; the figure is the fit's
seconds divided by the epochs run. The one-time cost of filling the cache is reported apart.

Usage::

    python benchmarks/finetune_paths.py --json benchmarks/finetune_paths.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

from cnnfeat import FineTunedCNN
from cnnfeat.console import setup
from cnnfeat.runner import machine_description

DEFAULT_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "scene15"
ARMS = {
    "head (features path)": {"trainable": "head"},
    "top2 (maps path)": {"trainable": "top2"},
    "top2 + flip+crop (images path)": {"trainable": "top2", "augment": "flip+crop"},
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--images", type=int, default=450)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    setup()
    classes = sorted(p for p in args.data.rglob("*") if p.is_dir() and any(p.glob("*.jpg")))
    per_class = max(1, args.images // max(1, len(classes)))
    paths = [str(f) for c in classes for f in sorted(c.glob("*.jpg"))[:per_class]]
    labels = [Path(p).parent.name for p in paths]
    if len(set(labels)) < 2:
        print(f"no class folders of JPEGs under {args.data}", file=sys.stderr)
        return 1
    per_epoch: dict[str, list[float]] = {name: [] for name in ARMS}
    fill: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        common = {"epochs": args.epochs, "fine_tune_epochs": args.epochs, "patience": 10 * args.epochs, "cache": Path(tmp)}
        for name, params in ARMS.items():  # fill the cache (features, maps); the images path has nothing to fill
            started = time.perf_counter()
            FineTunedCNN(**common, **params).fit(paths, labels)
            fill[name] = time.perf_counter() - started
        for r in range(args.rounds):
            for name, params in ARMS.items():
                clf = FineTunedCNN(**common, **params).fit(paths, labels)
                per_epoch[name].append(clf.fit_seconds_ / sum(clf.epochs_run_.values()))
                print(f"round {r} {name}: {per_epoch[name][-1]:.2f} s/epoch", file=sys.stderr)
    summary = {
        "machine": machine_description(),
        "images": len(paths),
        "epochs_per_stage": args.epochs,
        "seconds_per_epoch": {name: round(min(v), 2) for name, v in per_epoch.items()},
        "first_fit_seconds_with_cache_filling": {name: round(v, 1) for name, v in fill.items()},
        "command": "python benchmarks/finetune_paths.py",
    }
    text = json.dumps(summary, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
