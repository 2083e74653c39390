"""The C sweep on cached features: cnnfeat's warm-started sweep vs a naive GridSearchCV over the same grid.

Both score Kornblith's 45 values of C = 1 / lambda on the same stratified
validation split (``PredefinedSplit``) and refit on train+val; GridSearchCV fits
every C from scratch, ``SweptLinearClassifier`` warm-starts L-BFGS along the
path from strong to weak regularisation. Reported: the chosen C of each, the
validation accuracy at it, seconds, and the time ratio, at two L-BFGS tolerances:
scikit-learn's default 1e-4 (cnnfeat's too), where both paths stop short of the optimum
and can pick different C on a flat validation curve, and 1e-6, where they agree.

Features: EfficientNet-Lite0 ``pool`` from the feature cache (extracted first if
missing): 15-Scene, 100 training images per class (1,500 x 1,280), and Office-31
amazon (2,817 x 1,280).

Usage::

    python benchmarks/probe_speed.py --data-root ../shared/datasets --json benchmarks/probe_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np


def problems(data_root: Path) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from cnnfeat import CNNFeatures
    from cnnfeat.catalog import load_dataset
    from cnnfeat.config import cache_dir
    from cnnfeat.protocols import n_per_class

    extractor = CNNFeatures(backbone="efficientnet_lite0", layers="pool", cache=cache_dir() / "features")
    scene = load_dataset("scene15", data_root)
    labels = np.asarray(scene.manifest.labels)
    train = n_per_class(labels, 100, seed=0).train
    X = extractor.transform([scene.manifest.paths[i] for i in train])
    office = load_dataset("office31", data_root)
    amazon = [i for i, d in enumerate(office.manifest.domains) if d == "amazon"]
    A = extractor.transform([office.manifest.paths[i] for i in amazon])
    return {
        "15-Scene, 100 per class": (X, labels[train]),
        "Office-31 amazon": (A, np.asarray(office.manifest.labels)[amazon]),
    }


def compare(X: np.ndarray, y: np.ndarray, tol: float) -> dict[str, float]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GridSearchCV, PredefinedSplit, train_test_split

    from cnnfeat.probes import KORNBLITH_PENALTIES, SweptLinearClassifier

    started = time.perf_counter()
    swept = SweptLinearClassifier(tol=tol).fit(X, y)
    swept_seconds = time.perf_counter() - started

    # the same validation rows as the sweep: its train_test_split with the same seed
    rows = np.arange(len(y))
    _, val_rows = train_test_split(rows, test_size=0.2, random_state=0, stratify=y)
    fold = np.full(len(y), -1)
    fold[val_rows] = 0
    grid = GridSearchCV(
        LogisticRegression(max_iter=1000, tol=tol),
        {"C": sorted(1.0 / KORNBLITH_PENALTIES)},  # ascending: ties go to the smallest C, as in the sweep
        cv=PredefinedSplit(fold),
        scoring="accuracy",
        refit=True,
    )
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid.fit(X, y)
    grid_seconds = time.perf_counter() - started
    grid_scores = dict(zip(grid.cv_results_["param_C"], grid.cv_results_["mean_test_score"]))
    return {
        "n": len(y),
        "tol": tol,
        "d": X.shape[1],
        "swept_C": swept.C_,
        "grid_C": float(grid.best_params_["C"]),
        "swept_val_accuracy": swept.val_scores_[swept.C_],
        "grid_val_accuracy": float(grid_scores[grid.best_params_["C"]]),
        "swept_seconds": swept_seconds,
        "grid_seconds": grid_seconds,
        "speedup": grid_seconds / swept_seconds,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    parser.add_argument("--tol", type=float, nargs="+", default=[1e-4, 1e-6], help="L-BFGS tolerances (default: %(default)s)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not args.data_root.is_dir():
        print(f"{args.data_root} not found", file=sys.stderr)
        return 2
    results = {
        f"{name}, tol {tol:g}": compare(X, y, tol) for name, (X, y) in problems(args.data_root).items() for tol in args.tol
    }
    print("| features, L-BFGS tol | n x d | chosen C (sweep / grid) | val acc (sweep / grid) | sweep s | grid s | speed-up |")
    print("|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(
            f"| {name} | {r['n']} x {r['d']} | {r['swept_C']:.3g} / {r['grid_C']:.3g} | "
            f"{r['swept_val_accuracy']:.4f} / {r['grid_val_accuracy']:.4f} | {r['swept_seconds']:.1f} | "
            f"{r['grid_seconds']:.1f} | {r['speedup']:.1f}x |"
        )
    machine = f"{platform.machine()}, {os.cpu_count()} cores"
    print(f"\n45 values of C, one validation split, refit on all; {machine}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
