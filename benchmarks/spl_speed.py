"""Selective pseudo-labelling on wide features: the original against its PCA pre-reduction (``--adapt spl-pca``).

Office-31 full protocol, the six shifts, on the recipe search's widest single-view features (Lite0 and Lite2,
their last two stages: 2,960 dimensions), read from the feature cache. Each shift fits both variants with the
same probe, interleaved (spl, spl-pca, spl, spl-pca), and keeps the faster of two fits of each; the accuracy is
on every target image (the full protocol's test set).

    python benchmarks/spl_speed.py --data-root ../shared/datasets --cache ~/.cache/cnnfeat/recipes \\
        --json benchmarks/spl_speed.json
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from cnnfeat.config import cpu_name
from cnnfeat.runner import expand
from cnnfeat.runner.features import FeatureBank
from cnnfeat.runner.fitting import fit_rows, is_source

METHOD = "cnn:efficientnet_lite0/block6d_add,pool+cnn:efficientnet_lite2/block6e_add,pool"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    runs = expand([METHOD], ["logreg"], ["office31"], ["full"], [0], adapt=["spl", "spl-pca"], normalize="none")
    bank = FeatureBank(runs, data_root=args.data_root, cache=args.cache, strict=True, engine=None)
    rows = []
    for protocol in dict.fromkeys(r.protocol for r in runs):
        found: dict[str, dict[str, float]] = {}
        pair = [r for r in runs if r.protocol == protocol]
        for _ in range(args.repeats):
            for run in pair:
                job = bank.job(run)
                train, test = job.split.train, job.split.test
                started = time.perf_counter()
                model = fit_rows(run, job.X, train, job.labels[train], job.split.unlabelled, is_source(run, job.domains))
                seconds = time.perf_counter() - started
                accuracy = float(np.mean(model.predict(job.X[test]) == job.labels[test]))
                best = found.setdefault(run.adapt, {"seconds": seconds, "accuracy": accuracy})
                best["seconds"] = min(best["seconds"], seconds)
                assert best["accuracy"] == accuracy  # the fits are deterministic
        rows.append({"shift": protocol, "features": job.X.shape[1], **{a: v for a, v in found.items()}})
        print(protocol, {a: {k: round(x, 4) for k, x in v.items()} for a, v in found.items()}, flush=True)
    summary = {
        adapt: {
            "mean_accuracy": float(np.mean([r[adapt]["accuracy"] for r in rows])),
            "mean_seconds": float(np.mean([r[adapt]["seconds"] for r in rows])),
        }
        for adapt in ("spl", "spl-pca")
    }
    print("| shift | SPL accuracy | SPL s/fit | SPL-PCA accuracy | SPL-PCA s/fit | speed-up |")
    print("|---|---|---|---|---|---|")
    for r in [*rows, {"shift": "average", **summary}]:
        spl, pca = r["spl"], r["spl-pca"]
        acc = (spl.get("accuracy", spl.get("mean_accuracy")), pca.get("accuracy", pca.get("mean_accuracy")))
        sec = (spl.get("seconds", spl.get("mean_seconds")), pca.get("seconds", pca.get("mean_seconds")))
        print(
            f"| {r['shift']} | {100 * acc[0]:.2f} | {sec[0]:.1f} | {100 * acc[1]:.2f} | {sec[1]:.1f} | {sec[0] / sec[1]:.1f}x |"
        )
    if args.json:
        args.json.write_text(
            json.dumps({"cpu": cpu_name(), "method": METHOD, "shifts": rows, "summary": summary}, indent=1) + "\n"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
