"""The logistic probe's C sweep: the path solver against scikit-learn's L-BFGS sweep, interleaved.

Both are ``SweptLinearClassifier()`` (Kornblith's 45 values of C chosen on the same validation split,
then a refit on all the training rows at the chosen C); ``solver="lbfgs"`` is the sweep the committed
tables were made with (warm-started L-BFGS at tol 1e-4), ``solver="path"`` is
:mod:`cnnfeat.logistic_path`. Each problem is fitted old, new, old, new, ... (``--repeats``) so that both
see the same machine load; the median time of each is reported with:

- the chosen C of each, and whether the validation score at the other's C ties;
- the objective gap of the new probe's final weights against scikit-learn's at tol 1e-10 (negative:
  the path's weights are the better optimum), at the chosen C;
- how many of the 45 validation scores of each differ from those of the optima solved to a 1e-9 gap,
  and the C those exact scores choose;
- the path's iterations and its cost per iteration against the arithmetic floor of one pass
  (two products of the rows with the weights).

Problems: cached EfficientNet-Lite0 ``pool`` features of the built-in digits (30 per class, the
default command's probe), and where ``--data-root`` has them 15-Scene (16 and 100 per class) and
Office-31 amazon; and ``--sun397``: a SUN397-shaped problem (15,880 x 1,280, 397 classes, synthetic
non-negative correlated features, the catalog's 50 per class at 80 % training rows: no SUN397 copy is
here), where the old sweep is timed per L-BFGS iteration only (its whole sweep runs for hours).

Usage::

    python benchmarks/probe_speed.py --data-root ../shared/datasets --sun397 --json benchmarks/probe_speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from cnnfeat.probes import choose_c


def problems(data_root: Path | None) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Real feature matrices (Lite0 ``pool``, from the feature cache; extracted first if missing)."""
    from cnnfeat import CNNFeatures
    from cnnfeat.catalog import load_dataset
    from cnnfeat.config import cache_dir
    from cnnfeat.protocols import n_per_class

    extractor = CNNFeatures(backbone="efficientnet_lite0", layers="pool", cache=cache_dir() / "features")
    found: dict[str, tuple[np.ndarray, np.ndarray]] = {}

    def take(name: str, per_class: int, X: np.ndarray, labels: np.ndarray) -> None:
        rows = n_per_class(labels, per_class, seed=0).train
        found[name] = (X[rows], labels[rows])

    digits = load_dataset("digits", None)
    take("digits, 30 per class", 30, extractor.transform(digits.manifest.paths), np.asarray(digits.manifest.labels))
    if data_root is not None and (data_root / "scene15").is_dir():
        scene = load_dataset("scene15", data_root)
        X, labels = extractor.transform(scene.manifest.paths), np.asarray(scene.manifest.labels)
        take("15-Scene, 16 per class", 16, X, labels)
        take("15-Scene, 100 per class", 100, X, labels)
    if data_root is not None and (data_root / "office31").is_dir():
        office = load_dataset("office31", data_root)
        amazon = [i for i, d in enumerate(office.manifest.domains) if d == "amazon"]
        found["Office-31 amazon"] = (
            extractor.transform([office.manifest.paths[i] for i in amazon]),
            np.asarray(office.manifest.labels)[amazon],
        )
    return found


def sun397_shaped(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """15,880 rows x 1,280 non-negative, correlated features of 397 classes (40 per class), like pooled CNN features."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(397), 40)
    latent = rng.normal(size=(397, 96))[labels] + 1.2 * rng.normal(size=(len(labels), 96))
    mixing = rng.normal(size=(96, 1280)) * np.geomspace(1.0, 0.02, 96)[:, None]
    X = np.maximum(latent @ mixing + 0.05 * rng.normal(size=(len(labels), 1280)), 0)
    return X.astype(np.float32), labels


def _objective(model: object, X: np.ndarray, y: np.ndarray, C: float) -> float:
    """scikit-learn's objective times C * n, at a fitted LogisticRegression's weights."""
    from scipy.special import logsumexp

    coef, intercept, classes = model.coef_, model.intercept_, model.classes_  # type: ignore[attr-defined]
    codes = np.searchsorted(classes, y)
    X = X.astype(np.float64)
    if coef.shape[0] == 1:
        margin = (X @ coef[0] + intercept[0]) * (2 * codes - 1)
        loss = np.logaddexp(0, -margin).sum()
    else:
        logits = X @ coef.T + intercept
        loss = np.sum(logsumexp(logits, axis=1) - logits[np.arange(len(X)), codes])
    return float(C * loss + 0.5 * np.sum(coef * coef))


def compare(X: np.ndarray, y: np.ndarray, repeats: int) -> dict[str, object]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from cnnfeat.probes import SweptLinearClassifier

    seconds: dict[str, list[float]] = {"lbfgs": [], "path": []}
    fitted = {}
    for _ in range(repeats):
        for solver in ("lbfgs", "path"):
            started = time.perf_counter()
            fitted[solver] = SweptLinearClassifier(solver=solver).fit(X, y)
            seconds[solver].append(time.perf_counter() - started)
    old, new = fitted["lbfgs"], fitted["path"]
    exact = _exact_validation_scores(X, y, list(new.val_scores_))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        tight = LogisticRegression(C=new.C_, tol=1e-10, max_iter=100_000).fit(X.astype(np.float64), y)
    reference = _objective(tight, X, y, new.C_)
    old_s, new_s = statistics.median(seconds["lbfgs"]), statistics.median(seconds["path"])
    return {
        "n": len(y),
        "d": X.shape[1],
        "classes": len(np.unique(y)),
        "old_seconds": old_s,
        "new_seconds": new_s,
        "speedup": old_s / new_s,
        "old_C": old.C_,
        "new_C": new.C_,
        "same_C": old.C_ == new.C_,
        # the new sweep's score at the old choice: equal to its own best when the choice is a validation tie
        "new_val_at_old_C": new.val_scores_[old.C_],
        "new_val_at_new_C": new.val_scores_[new.C_],
        "objective_gap_vs_sklearn_tight": (_objective(new.estimator_, X, y, new.C_) - reference) / reference,
        # how many of the 45 validation scores differ from those of a sweep solved to a 1e-9 gap
        "new_val_scores_off_exact": sum(new.val_scores_[C] != exact[C] for C in exact),
        "old_val_scores_off_exact": sum(old.val_scores_[C] != exact[C] for C in exact),
        "exact_C": choose_c(exact),
        # the tight reference is at the new C: the old fit's gap where it chose the same
        "old_objective_gap_vs_sklearn_tight": (_objective(old.estimator_, X, y, old.C_) - reference) / reference
        if old.C_ == new.C_
        else None,
    }


def _exact_validation_scores(X: np.ndarray, y: np.ndarray, Cs: list[float]) -> dict[float, float]:
    """Each C's validation accuracy at its optimum solved to a 1e-9 gap, on the probes' own validation split."""
    from sklearn.model_selection import train_test_split

    from cnnfeat.logistic_path import logistic_path

    Xtr, Xva, ytr, yva = train_test_split(X, y, test_size=0.2, random_state=0, stratify=y)
    classes, codes = np.unique(ytr, return_inverse=True)
    fits = logistic_path(Xtr, codes, len(classes), Cs, gap_tol=1e-9, max_iter=10_000)
    return {C: float((classes[(Xva @ f.coef.T + f.intercept).argmax(axis=1)] == yva).mean()) for C, f in zip(Cs, fits)}


def per_iteration(X: np.ndarray, y: np.ndarray) -> dict[str, float]:
    """Seconds per L-BFGS iteration of scikit-learn's solver and of the path solver, and the floor of one pass."""
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    from cnnfeat.logistic_path import RowBasis, logistic_path

    classes, codes = np.unique(y, return_inverse=True)
    X64 = X.astype(np.float64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        started = time.perf_counter()
        model = LogisticRegression(C=1.0, max_iter=5, tol=1e-12).fit(X64, y)
        old = (time.perf_counter() - started) / max(int(model.n_iter_[0]), 1)
    basis = RowBasis(X)
    timed = {}
    for cap in (5, 20):  # the difference leaves out the rotation of the rows, paid once per sweep
        started = time.perf_counter()
        (fit,) = logistic_path(X, codes, len(classes), [1.0], max_iter=cap, basis=basis)
        timed[cap] = (time.perf_counter() - started, fit.n_iter)
    new = (timed[20][0] - timed[5][0]) / max(timed[20][1] - timed[5][1], 1)
    W = np.zeros((X.shape[1], len(classes)), np.float32)
    X32 = X.astype(np.float32)
    started = time.perf_counter()
    for _ in range(3):
        X32.T @ (X32 @ W)
    floor = (time.perf_counter() - started) / 3
    return {"old_seconds_per_iteration": old, "new_seconds_per_iteration": new, "two_products_seconds": floor}


def sun397(repeats: int) -> dict[str, object]:
    """The path sweep on the SUN397-shaped problem, whole; scikit-learn's per iteration."""
    from cnnfeat.probes import SweptLinearClassifier

    X, y = sun397_shaped()
    found: dict[str, object] = {"n": len(y), "d": X.shape[1], "classes": 397, **per_iteration(X, y)}
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        probe = SweptLinearClassifier().fit(X, y)
        times.append(time.perf_counter() - started)
    found |= {"new_seconds": statistics.median(times), "new_C": probe.C_, "new_val_at_new_C": probe.val_scores_[probe.C_]}
    return found


def main(argv: list[str] | None = None) -> int:
    from cnnfeat.runner import machine_description

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    parser.add_argument("--repeats", type=int, default=3, help="fits of each solver per problem, interleaved (default 3)")
    parser.add_argument("--sun397", action="store_true", help="also the SUN397-shaped problem (several minutes)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    data_root = args.data_root if args.data_root.is_dir() else None
    results: dict[str, dict[str, object]] = {}
    print(
        "| features | n x d, classes | old s | new s | speed-up | C old / new / exact | new val at old / new C | "
        "val scores off exact (old / new, of 45) | objective gap |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for name, (X, y) in problems(data_root).items():
        r = results[name] = compare(X, y, args.repeats)
        print(
            f"| {name} | {r['n']} x {r['d']}, {r['classes']} | {r['old_seconds']:.2f} | {r['new_seconds']:.2f} | "
            f"{r['speedup']:.1f}x | {r['old_C']:.3g} / {r['new_C']:.3g} / {r['exact_C']:.3g} | {r['new_val_at_old_C']:.4f} / "
            f"{r['new_val_at_new_C']:.4f} | {r['old_val_scores_off_exact']} / {r['new_val_scores_off_exact']} | "
            f"{r['objective_gap_vs_sklearn_tight']:.1e} |",
            flush=True,
        )
    if args.sun397:
        r = results["SUN397-shaped (synthetic)"] = sun397(1)
        print(
            f"\nSUN397-shaped, {r['n']} x {r['d']}, 397 classes: path sweep {r['new_seconds']:.0f} s (C {r['new_C']:.3g}); "
            f"per L-BFGS iteration: scikit-learn {r['old_seconds_per_iteration']:.2f} s, path "
            f"{r['new_seconds_per_iteration']:.2f} s, two products (floor) {r['two_products_seconds']:.2f} s"
        )
    machine = machine_description()
    print(f"\n45 values of C, one validation split, refit on all; {args.repeats} interleaved fits each, medians; {machine}")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine, "repeats": args.repeats, "results": results}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
