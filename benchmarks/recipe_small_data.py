"""Does the recipe search ever do worse than the plain baseline on small data? Measured on folders of 50-300 images.

Builds small class-folder copies of the shared data sets (seeded choice of images), runs
``cnnfeat benchmark --suite best`` on each (stratified 5-fold, every fold), and compares, fold by
fold, the recipe chosen on validation with ``cnn:efficientnet_lite0/pool + logreg``: under the
one-standard-error rule (the search's rule) and under the rule it replaced (the highest
cross-validation score), both applied to the same records. Prints a Markdown table.

    python benchmarks/recipe_small_data.py --shared ../shared/datasets --out /tmp/recipe_small

Resumable: the folders and the runs are reused (``--skip-existing``).
"""

from __future__ import annotations

import argparse
import random
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np

BASELINE = "cnn:efficientnet_lite0/pool + logreg"

#: name -> (source folder below the shared data, class folders or "flowers17", classes, images per class)
FOLDERS = {
    "flowers17 5x10": ("flowers17", "flowers17", 5, 10),
    "scene15 5x20": ("scene15", ".", 5, 20),
    "office31 amazon 10x10": ("office31/amazon/images", ".", 10, 10),
    "office31 webcam 10x12": ("office31/webcam/images", ".", 10, 12),
    "scene15 15x20": ("scene15", ".", 15, 20),
}


def build(shared: Path, target: Path, source: str, layout: str, classes: int, per_class: int, seed: int = 0) -> None:
    """Copy ``per_class`` seeded images of the first ``classes`` classes into ``target/<class>/``."""
    if target.is_dir():
        return
    rng = random.Random(seed)
    if layout == "flowers17":  # one flat folder, 80 consecutive images per class
        images = sorted((shared / source / "jpg").glob("*.jpg"))
        groups = {f"flower{c:02d}": images[80 * c : 80 * (c + 1)] for c in range(classes)}
    else:
        folders = sorted(p for p in (shared / source).iterdir() if p.is_dir())[:classes]
        groups = {p.name: sorted(p.glob("*.jpg")) for p in folders}
    for name, files in groups.items():
        (target / name).mkdir(parents=True)
        for f in rng.sample(files, per_class):
            shutil.copyfile(f, target / name / f.name)


def per_fold(records: list, row: str) -> dict[int, float]:
    return {r.seed: 100 * r.metric(r.parsed_protocol.metric) for r in records if r.ok and r.row == row}


def extraction(record: object) -> float:
    """Seconds per 1,000 images the record's features took to extract (measured now or when they were cached)."""
    from cnnfeat.tables import known_seconds_per_1k

    seconds = known_seconds_per_1k(record)
    return float("nan") if seconds is None else seconds


def main() -> int:
    from scipy.stats import ttest_rel

    from cnnfeat.recipes import _candidates, choose
    from cnnfeat.runner import load_records

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shared", type=Path, default=Path("../shared/datasets"))
    parser.add_argument("--out", type=Path, default=Path("/tmp/recipe_small"))
    args = parser.parse_args()
    columns = ["folder", "images", "baseline", "chosen, one-SE rule", "p", "chosen, highest CV", "p"]
    columns += ["extract s/1k: baseline, one-SE, CV", "one-SE chose"]
    print("| " + " | ".join(columns) + " |")
    print("|---" * len(columns) + "|")
    for name, (source, layout, classes, per_class) in FOLDERS.items():
        slug = name.replace(" ", "_")
        data, out = args.out / "data" / slug, args.out / "results" / slug
        build(args.shared, data, source, layout, classes, per_class)
        command = [sys.executable, "-m", "cnnfeat.benchmark", "--suite", "best", "--data", str(data), "--out", str(out)]
        subprocess.run([*command, "--no-progress", "--skip-existing"], check=True, stdout=subprocess.DEVNULL)
        records = load_records(out)
        baseline = per_fold(records, BASELINE)
        new = {r.seed: 100 * r.metric(r.parsed_protocol.metric) for r in choose(records)}
        by_row = {(r.row, r.seed): r for r in records}
        new_cost = [extraction(by_row[(r.chosen, r.seed)]) for r in choose(records)]
        old, old_cost = {}, []
        for (_, _, seed), group in _candidates(records).items():  # the rule it replaced: the highest CV score
            top = min(group, key=lambda r: (-(r.cross_validation or 0.0), r.n_features or 0, r.row))
            old[seed] = 100 * top.metric(top.parsed_protocol.metric)
            old_cost.append(extraction(top))
        base_cost = [extraction(by_row[(BASELINE, seed)]) for seed in baseline]
        folds = sorted(baseline)
        cells = [name, str(classes * per_class), f"{np.mean([baseline[f] for f in folds]):.2f}"]
        for chosen in (new, old):
            a, b = [chosen[f] for f in folds], [baseline[f] for f in folds]
            p = 1.0 if np.allclose(a, b) else float(ttest_rel(a, b).pvalue)
            cells += [f"{np.mean(a):.2f} ({np.mean(a) - np.mean(b):+.2f})", f"{p:.2f}"]
        cells.append(" / ".join(f"{np.mean(c):.1f}" for c in (base_cost, new_cost, old_cost)))
        rows = [r.chosen for r in choose(records)]
        cells.append(", ".join(f"{rows.count(r)}x {r}" for r in dict.fromkeys(rows)))
        print("| " + " | ".join(cells) + " |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
