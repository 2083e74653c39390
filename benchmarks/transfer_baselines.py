"""CNN features vs hand-crafted baselines on 15-Scene, and domain adaptation on Office-31 (full protocol).

15-Scene (Lazebnik 2006 protocol): 100 train images per class, the rest test,
5 seeded splits, mean per-class accuracy. Methods:

- SIFT-BoVW: dense SIFT (16 px patches every 8 px), 200 words learned per split
  on its training images, spatial pyramid levels 0-2, chi-squared feature map,
  linear SVM with C chosen by CLIP-style search on a validation split;
- HOG (128x128 window, 8 px cells) with the same chi-squared map and SVM;
- EfficientNet-Lite0 ``pool`` features (offline ImageNet weights), multinomial
  logistic regression with C chosen by Kornblith's 45-value sweep.

Office-31, full protocol (all labelled source images train, all target images
test, accuracy), Lite0 ``pool`` features, for the six shifts: source only,
CORAL and subspace alignment, each around the same swept logistic regression
(C chosen on the source alone: no target label is used).

Usage::

    python benchmarks/transfer_baselines.py --data-root ../shared/datasets --out results/transfer_baselines
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

SHIFTS = [
    ("amazon", "webcam"),
    ("dslr", "webcam"),
    ("webcam", "dslr"),
    ("amazon", "dslr"),
    ("dslr", "amazon"),
    ("webcam", "amazon"),
]
LETTER = {"amazon": "A", "dslr": "D", "webcam": "W"}


def versions() -> dict[str, str]:
    import h5py
    import keras
    import sklearn

    import cnnfeat

    return {
        "cnnfeat": cnnfeat.__version__,
        "keras": keras.__version__,
        "scikit-learn": sklearn.__version__,
        "numpy": np.__version__,
        "h5py": h5py.__version__,
        "python": platform.python_version(),
    }


SCENE15_METHODS = ("sift_bovw_spm", "hog", "efficientnet_lite0_pool")


def scene15(root: Path, cache: Path, seeds: list[int], methods: tuple[str, ...] = SCENE15_METHODS) -> dict[str, Any]:
    from sklearn.pipeline import make_pipeline

    from cnnfeat import CNNFeatures
    from cnnfeat.datasets import Manifest
    from cnnfeat.extractors.hog import HOGFeatures
    from cnnfeat.extractors.sift_bow import SIFTBoVW
    from cnnfeat.normalize import make_normalizer
    from cnnfeat.probes import SweptLinearClassifier, mean_per_class_accuracy
    from cnnfeat.protocols import n_per_class

    manifest = Manifest.from_folder(root / "scene15")
    paths, labels = np.asarray(manifest.paths), np.asarray(manifest.labels)
    print(f"15-Scene: {len(paths)} images, {len(manifest.classes)} classes", flush=True)
    started = time.perf_counter()
    cnn = CNNFeatures(backbone="efficientnet_lite0", cache=cache).transform(list(paths))
    hog = HOGFeatures(cache=cache).transform(list(paths)) if "hog" in methods else None
    print(f"  Lite0 and HOG features in {time.perf_counter() - started:.0f} s", flush=True)

    def svm() -> Any:
        return make_pipeline(make_normalizer("chi2"), SweptLinearClassifier(kind="svm", search="clip"))

    runs: dict[str, list[dict[str, Any]]] = {m: [] for m in methods}
    for seed in seeds:
        split = n_per_class(labels, 100, seed)
        tr, te = split.train, split.test
        t = time.perf_counter()
        bow_x = None
        if "sift_bovw_spm" in methods:
            bow = SIFTBoVW(n_words=200, pyramid_levels=2, random_state=seed).fit(list(paths[tr]))
            bow_x = bow.transform(list(paths))
        feature_seconds = time.perf_counter() - t
        for name, X, model in (
            ("sift_bovw_spm", bow_x, svm()),
            ("hog", hog, svm()),
            ("efficientnet_lite0_pool", cnn, SweptLinearClassifier()),
        ):
            if name not in methods:
                continue
            t = time.perf_counter()
            model.fit(X[tr], labels[tr])
            pred = model.predict(X[te])
            probe = model[-1] if hasattr(model, "steps") else model
            runs[name].append(
                {
                    "seed": seed,
                    "mean_per_class_accuracy": mean_per_class_accuracy(labels[te], pred),
                    "accuracy": float((pred == labels[te]).mean()),
                    "C": probe.C_,
                    "n_train": len(tr),
                    "n_test": len(te),
                    "probe_seconds": time.perf_counter() - t,
                    **({"feature_seconds": feature_seconds} if name == "sift_bovw_spm" else {}),
                }
            )
        print(
            f"  seed {seed}: "
            + ", ".join(f"{k} {v[-1]['mean_per_class_accuracy'] * 100:.2f}" for k, v in runs.items())
            + f" (SIFT-BoVW features {feature_seconds:.0f} s)",
            flush=True,
        )
    return {"protocol": "15-Scene, 100 train per class, rest test, mean per-class accuracy", "runs": runs}


def office31_full(root: Path, cache: Path) -> dict[str, Any]:
    from cnnfeat import CNNFeatures
    from cnnfeat.adaptation import CORAL, SubspaceAlignment
    from cnnfeat.datasets import Manifest
    from cnnfeat.probes import SweptLinearClassifier
    from cnnfeat.protocols import domain_shift_full

    paths, labels, domains = [], [], []
    for domain in ("amazon", "dslr", "webcam"):
        m = Manifest.from_folder(root / "office31" / domain / "images")
        paths += m.paths
        labels += m.labels
        domains += [domain] * len(m)
    labels_a, domains_a = np.asarray(labels), np.asarray(domains)
    started = time.perf_counter()
    X = CNNFeatures(backbone="efficientnet_lite0", cache=cache).transform(paths)
    print(f"Office-31: {len(paths)} images, Lite0 features in {time.perf_counter() - started:.0f} s", flush=True)
    methods = {
        "source_only": lambda: SweptLinearClassifier(),
        "coral": lambda: CORAL(SweptLinearClassifier()),
        "subspace_alignment": lambda: SubspaceAlignment(SweptLinearClassifier(), n_components=100),
    }
    results: dict[str, dict[str, float]] = {m: {} for m in methods}
    for source, target in SHIFTS:
        split = domain_shift_full(domains_a, source, target)
        shift = f"{LETTER[source]}->{LETTER[target]}"
        rows = np.r_[split.train, split.unlabelled]
        y = np.r_[labels_a[split.train], np.full(len(split.unlabelled), -1, dtype=object)]
        domain = ["source"] * len(split.train) + ["target"] * len(split.unlabelled)
        for name, make in methods.items():
            model = make()
            if name == "source_only":
                model.fit(X[split.train], labels_a[split.train])
            else:
                model.fit(X[rows], y, domain=domain)
            results[name][shift] = float((model.predict(X[split.test]) == labels_a[split.test]).mean())
        print(f"  {shift}: " + ", ".join(f"{m} {results[m][shift] * 100:.1f}" for m in methods), flush=True)
    for name in methods:
        results[name]["average"] = float(np.mean([results[name][s] for s in results[name]]))
    return {"protocol": "Office-31 full: all labelled source train, all target test, accuracy", "results": results}


def markdown(report: dict[str, Any]) -> str:
    lines = [f"# CNN features vs hand-crafted baselines, and domain adaptation\n\nCommand: `{report['command']}`\n"]
    if "scene15" in report:
        lines += ["## 15-Scene (100 train per class, rest test, 5 splits; mean per-class accuracy %, mean ± std)\n"]
        lines += ["| method | accuracy | chosen C (per split) |", "|---|---|---|"]
        for name, runs in report["scene15"]["runs"].items():
            acc = np.array([r["mean_per_class_accuracy"] for r in runs]) * 100
            cs = ", ".join(f"{r['C']:.3g}" for r in runs)
            lines.append(f"| {name} | {acc.mean():.2f} ± {acc.std(ddof=1) if len(acc) > 1 else 0:.2f} | {cs} |")
        lines.append("")
    if "office31_full" in report:
        res = report["office31_full"]["results"]
        shifts = [f"{LETTER[s]}->{LETTER[t]}" for s, t in SHIFTS]
        lines += ["## Office-31, full protocol (accuracy %), EfficientNet-Lite0 pool features\n"]
        lines += ["| method | " + " | ".join(shifts) + " | average |", "|---" * (len(shifts) + 2) + "|"]
        for name, row in res.items():
            lines.append(f"| {name} | " + " | ".join(f"{row[s] * 100:.1f}" for s in shifts) + f" | {row['average'] * 100:.1f} |")
        lines.append("")
    lines.append("Versions: " + ", ".join(f"{k} {v}" for k, v in report["versions"].items()) + f"; machine: {report['machine']}.")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-root", type=Path, default=Path(__file__).resolve().parents[2] / "shared" / "datasets")
    parser.add_argument("--out", type=Path, default=Path("results/transfer_baselines"))
    parser.add_argument("--cache", type=Path, help="feature cache folder (default: the user cache)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    parser.add_argument("--only", choices=("scene15", "office31"), help="run one part")
    parser.add_argument("--methods", nargs="+", choices=SCENE15_METHODS, default=list(SCENE15_METHODS), help="15-Scene methods")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    if not args.data_root.is_dir():
        print(f"datasets not found at {args.data_root}", file=sys.stderr)
        return 2
    from cnnfeat.config import cache_dir

    cache = args.cache or cache_dir() / "features"
    report: dict[str, Any] = {
        "command": " ".join(["python", *sys.argv]),
        "versions": versions(),
        "machine": f"{platform.machine()}, {__import__('os').cpu_count()} cores",
    }
    started = time.perf_counter()
    if args.only in (None, "scene15"):
        report["scene15"] = scene15(args.data_root, cache, args.seeds, tuple(args.methods))
    if args.only in (None, "office31"):
        report["office31_full"] = office31_full(args.data_root, cache)
    report["seconds"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "report.json").write_text(json.dumps(report, indent=1))
    (args.out / "README.md").write_text(markdown(report))
    print(markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
