"""The streamed sweep (rows a block at a time from a feature store) against the exact path solver, where both run.

For each problem both probes choose C among Kornblith's 45 values on the same stratified validation split
(20 % of the training rows). The exact probe is ``SweptLinearClassifier()`` (the path solver, refit on all
training rows at its C); the streamed one is :func:`cnnfeat.logistic_stream.streamed_sweep`, its training
rows written to a feature store in a temporary folder and read back ``--block`` rows at a time in a new random
order each epoch (:func:`cnnfeat.logistic_stream.store_blocks`), trained on
the 80 % (no refit: a streamed refit would be another run). Reported: each one's C, test accuracy and
seconds.

Problems: cached EfficientNet-Lite0 ``pool`` features of 15-Scene (100 per class, seed 0; tested on the
rest) and Office-31 amazon -> webcam (trained on amazon, tested on webcam).

Usage::

    python benchmarks/probe_stream.py --data-root ../shared/datasets --json benchmarks/probe_stream.json
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def problems(data_root: Path) -> dict[str, tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    from cnnfeat import CNNFeatures
    from cnnfeat.catalog import load_dataset
    from cnnfeat.config import cache_dir
    from cnnfeat.protocols import n_per_class

    extractor = CNNFeatures(backbone="efficientnet_lite0", layers="pool", cache=cache_dir() / "features")
    scene = load_dataset("scene15", data_root)
    X, labels = extractor.transform(scene.manifest.paths), np.asarray(scene.manifest.labels)
    split = n_per_class(labels, 100, seed=0)
    office = load_dataset("office31", data_root)
    features = extractor.transform(office.manifest.paths)
    domains, office_labels = np.asarray(office.manifest.domains), np.asarray(office.manifest.labels)
    source, target = domains == "amazon", domains == "webcam"
    return {
        "15-Scene, 100 per class": (X[split.train], labels[split.train], X[split.test], labels[split.test]),
        "Office-31 amazon -> webcam": (features[source], office_labels[source], features[target], office_labels[target]),
    }


def compare(X: np.ndarray, y: np.ndarray, X_test: np.ndarray, y_test: np.ndarray, block: int, epochs: int) -> dict[str, object]:
    from sklearn.model_selection import train_test_split

    from cnnfeat.logistic_stream import store_blocks, streamed_sweep
    from cnnfeat.probes import KORNBLITH_PENALTIES, SweptLinearClassifier
    from cnnfeat.store import FEATURE_CODE_VERSION, FeatureStore

    started = time.perf_counter()
    exact = SweptLinearClassifier().fit(X, y)
    exact_seconds = time.perf_counter() - started
    classes = np.unique(y)
    Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    codes, val_codes = np.searchsorted(classes, ytr), np.searchsorted(classes, yva)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "train.h5"
        keys = [f"{i:064x}" for i in range(len(Xtr))]
        config = {"benchmark": "probe_stream", "taps": ["pool"], "feature_code_version": FEATURE_CODE_VERSION}
        with FeatureStore(path, config, dims={"pool": Xtr.shape[1]}) as store:
            store.append(keys, {"pool": Xtr}, [f"{i}.jpg" for i in range(len(Xtr))])
        started = time.perf_counter()
        blocks = store_blocks(path, "pool", keys, codes, block=block)
        streamed = streamed_sweep(blocks, len(classes), list(1.0 / KORNBLITH_PENALTIES), Xva, val_codes, epochs=epochs)
        streamed_seconds = time.perf_counter() - started
    predicted = classes[(X_test @ streamed.coef.T + streamed.intercept).argmax(axis=1)]
    return {
        "n": len(y),
        "d": X.shape[1],
        "classes": len(classes),
        "exact_C": exact.C_,
        "streamed_C": streamed.C,
        "exact_test_accuracy": float(exact.score(X_test, y_test)),
        "streamed_test_accuracy": float(np.mean(predicted == y_test)),
        "exact_val_accuracy": exact.val_scores_[exact.C_],
        "streamed_val_accuracy": streamed.val_scores[streamed.C],
        "exact_seconds": exact_seconds,
        "streamed_seconds": streamed_seconds,
    }


def main(argv: list[str] | None = None) -> int:
    from cnnfeat.runner import machine_description

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    parser.add_argument("--block", type=int, default=512, help="rows read from the store at a time (default 512)")
    parser.add_argument("--epochs", type=int, default=20, help="passes of the streamed sweep (default 20)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not args.data_root.is_dir():
        print(f"{args.data_root} not found", file=sys.stderr)
        return 2
    results = {name: compare(*data, args.block, args.epochs) for name, data in problems(args.data_root).items()}
    columns = ["features", "n x d, classes", "C exact / streamed", "val acc exact / streamed", "test acc exact / streamed"]
    print("| " + " | ".join([*columns, "s exact / streamed"]) + " |")
    print("|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['n']} x {r['d']}, {r['classes']} | {r['exact_C']:.3g} / {r['streamed_C']:.3g} | "
            f"{r['exact_val_accuracy']:.4f} / {r['streamed_val_accuracy']:.4f} | "
            f"{100 * r['exact_test_accuracy']:.2f} / {100 * r['streamed_test_accuracy']:.2f} | "
            f"{r['exact_seconds']:.1f} / {r['streamed_seconds']:.1f} |"
        )
    machine = machine_description()
    print(f"\nblocks of {args.block} rows from a feature store, {args.epochs} epochs; {machine}")
    if args.json:
        payload = {"machine": machine, "block": args.block, "epochs": args.epochs, "results": results}
        args.json.write_text(json.dumps(payload, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
