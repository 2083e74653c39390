"""How far a few float32 rounding errors in the features move a linear-probe result.

Two CPUs compute the same features, and the same solver arithmetic, to slightly different
last bits (other SIMD widths, other BLAS kernels). This script measures what that costs
in a table: it fits the probe on the Office-31 full-protocol source features as they are,
then on copies whose every value is multiplied by ``1 + e`` with ``e ~ N(0, 3e-7)``
(about 2.5 float32 units in the last place), and scores each on all target images.
Reported per trial: the chosen C, the best validation accuracy and the target accuracy.

At L-BFGS tolerance 1e-4 (scikit-learn's default and cnnfeat's) the sweep stops short of
the optimum, so where the validation curve is flat the chosen C, and with it the target
accuracy, follows the rounding; a tighter tolerance brings the fits close to the unique
optimum and the result becomes nearly insensitive, at about ten times the cost.

Usage::

    python benchmarks/probe_sensitivity.py --data-root ../shared/datasets --json benchmarks/probe_sensitivity.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def shift_features(data_root: Path, source: str, target: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Lite0 ``pool`` features and labels of the source and target domains (from the feature cache)."""
    from cnnfeat import CNNFeatures
    from cnnfeat.catalog import load_dataset
    from cnnfeat.config import cache_dir

    office = load_dataset("office31", data_root)
    X = CNNFeatures(backbone="efficientnet_lite0", layers="pool", cache=cache_dir() / "features").transform(office.manifest.paths)
    domains, labels = np.asarray(office.manifest.domains), np.asarray(office.manifest.labels)
    s, t = domains == source, domains == target
    return X[s], labels[s], X[t], labels[t]


def trial(Xs: np.ndarray, ys: np.ndarray, Xt: np.ndarray, yt: np.ndarray, tol: float, max_iter: int) -> dict[str, float]:
    from cnnfeat.probes import SweptLinearClassifier

    started = time.perf_counter()
    probe = SweptLinearClassifier(kind="logreg", solver="lbfgs", tol=tol, max_iter=max_iter).fit(Xs, ys)
    return {
        "C": probe.C_,
        "best_val_accuracy": max(probe.val_scores_.values()),
        "target_accuracy": float((probe.predict(Xt) == yt).mean()),
        "seconds": time.perf_counter() - started,
    }


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-root", type=Path, default=Path("../shared/datasets"))
    p.add_argument("--shift", default="amazon->webcam", help="source->target (default amazon->webcam)")
    p.add_argument("--tols", type=float, nargs="+", default=[1e-4, 1e-7], help="L-BFGS tolerances to compare")
    p.add_argument("--trials", type=int, nargs="+", default=[5, 3], help="perturbed copies per tolerance (plus the original)")
    p.add_argument("--max-iters", type=int, nargs="+", default=[1000, 5000], help="L-BFGS iterations per --tols value")
    p.add_argument("--noise", type=float, default=3e-7, help="relative std of the perturbation")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    if not len(args.trials) == len(args.max_iters) == len(args.tols):
        p.error("give one --trials count and one --max-iters value per --tols value")

    from cnnfeat.runner import machine_description

    source, _, target = args.shift.partition("->")
    Xs, ys, Xt, yt = shift_features(args.data_root, source, target)
    results = []
    for tol, n, max_iter in zip(args.tols, args.trials, args.max_iters):
        rng = np.random.default_rng(0)
        for k in range(n + 1):
            X = Xs if k == 0 else (Xs * (1 + rng.normal(0, args.noise, Xs.shape))).astype(np.float32)
            row = {"tol": tol, "trial": k, "perturbed": k > 0, "max_iter": max_iter, **trial(X, ys, Xt, yt, tol, max_iter)}
            results.append(row)
            print(
                f"tol {tol:g} {'perturbed' if k else 'as is'}: C {row['C']:.4g}  best val {100 * row['best_val_accuracy']:.2f}"
                f"  {args.shift} {100 * row['target_accuracy']:.2f}  ({row['seconds']:.0f} s)",
                flush=True,
            )
    for tol in args.tols:
        accs = [100 * r["target_accuracy"] for r in results if r["tol"] == tol]
        cs = {r["C"] for r in results if r["tol"] == tol}
        print(f"tol {tol:g}: target accuracy {min(accs):.2f} to {max(accs):.2f} over {len(accs)} fits, {len(cs)} different C")
    if args.json:
        report = {"shift": args.shift, "noise": args.noise, "machine": machine_description()}
        args.json.write_text(json.dumps(report | {"results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
