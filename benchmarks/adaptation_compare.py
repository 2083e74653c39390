"""cnnfeat's CORAL against skada's, and the skada adaptations, on Office-31 full with Lite0 ``pool`` features.

Each of the six shifts: every labelled source image and the unlabelled target train the adaptation; the
accuracy is on every target image. The probe is the benchmark's (logistic regression, Kornblith's sweep, the
path solver). Rows: no adaptation; cnnfeat's CORAL (the paper's ``+ I`` ridge, no centring); skada's
``CORALAdapter`` with its default Ledoit-Wolf shrinkage (each domain centred); and the ``--adapt`` names that
are skada's maps (``sa``, ``tca``, ``ot``). Features come from the feature cache (extracted first if missing).

    python benchmarks/adaptation_compare.py --data-root ../shared/datasets --cache ~/.cache/cnnfeat/recipes \\
        --json benchmarks/adaptation_compare.json
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.utils._param_validation import HasMethods

from cnnfeat.adaptation import ADAPTATIONS
from cnnfeat.adaptation.mapping import _Mapped, skada
from cnnfeat.config import cpu_name
from cnnfeat.probes import PROBES
from cnnfeat.runner import expand
from cnnfeat.runner.features import FeatureBank

METHOD = "cnn:efficientnet_lite0/pool"


class SkadaCORAL(_Mapped):
    """skada's CORAL adapter in cnnfeat's wrapper (for this comparison only)."""

    _parameter_constraints: dict[str, list[Any]] = {"estimator": [HasMethods(["fit", "predict"]), None]}  # noqa: RUF012

    def __init__(self, estimator: Any = None) -> None:
        self.estimator = estimator

    def _adapter(self, n_source: int, n_target: int, n_features: int) -> Any:
        return skada().CORALAdapter()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-root", type=Path, required=True)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    runs = expand([METHOD], ["logreg"], ["office31"], ["full"], [0], normalize="none")
    bank = FeatureBank(runs, data_root=args.data_root, cache=args.cache, strict=True, engine=None)
    makers = {
        "none": lambda probe: probe,
        "coral (cnnfeat)": ADAPTATIONS.get("coral").make,
        "coral (skada, Ledoit-Wolf)": lambda probe: SkadaCORAL(probe),
        **{f"{name} (skada)": ADAPTATIONS.get(name).make for name in ("sa", "tca", "ot")},
    }
    table: dict[str, dict[str, float]] = {name: {} for name in makers}
    seconds: dict[str, float] = dict.fromkeys(makers, 0.0)
    for run in runs:
        job = bank.job(run)
        train, test, unlabelled = job.split.train, job.split.test, job.split.unlabelled
        for name, make in makers.items():
            model = make(PROBES.get("logreg")("path"))
            started = time.perf_counter()
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                if name == "none":
                    model.fit(job.X[train], job.labels[train])
                else:
                    rows = np.r_[train, unlabelled]
                    labels = np.r_[job.labels[train].astype(object), np.full(len(unlabelled), -1, dtype=object)]
                    model.fit(job.X[rows], labels, domain=["source"] * len(train) + ["target"] * len(unlabelled))
            seconds[name] += time.perf_counter() - started
            table[name][run.protocol] = float(np.mean(model.predict(job.X[test]) == job.labels[test]))
        print(run.protocol, {n: round(100 * t[run.protocol], 2) for n, t in table.items()}, flush=True)
    shifts = [r.protocol for r in runs]
    print("| adaptation | " + " | ".join(s.split(":")[1] for s in shifts) + " | average | s/shift |")
    print("|---|" + "---|" * (len(shifts) + 2))
    for name, cells in table.items():
        values = [100 * cells[s] for s in shifts]
        row = " | ".join(f"{v:.2f}" for v in values)
        print(f"| {name} | {row} | {np.mean(values):.2f} | {seconds[name] / len(shifts):.1f} |")
    if args.json:
        found = {"cpu": cpu_name(), "method": METHOD, "accuracy": table, "seconds_per_shift": seconds}
        args.json.write_text(json.dumps(found, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
