"""Run by run, two record folders of the same grid made with different solvers: chosen C, validation and test scores.

For each run (method, probe, dataset, protocol, seed, normalisation, adaptation) found in both folders it
prints each solver's chosen C and test accuracy, each one's validation accuracy at both choices, and why a
cell moved: the same C with other validation scores at it (the old weights were off their optimum), a
validation tie, or a tie for the old solver only (its weights at one of the two C values were off their
optimum; the exact solutions score differently).

Usage (after remaking a committed table with the path solver)::

    python -m cnnfeat.benchmark --data-root ../shared/datasets --no-progress --datasets scene15 \\
        --methods cnn:efficientnet_lite0/pool --probes logreg --seeds 0 1 2 3 4 --out /tmp/scene15_path
    python benchmarks/compare_solvers.py results/scene15 /tmp/scene15_path
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    from cnnfeat.runner import load_records
    from cnnfeat.runner.records import run_identity

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("old", type=Path, help="a results folder (its records/)")
    parser.add_argument("new", type=Path)
    args = parser.parse_args(argv)
    old = {run_identity(r): r for r in load_records(args.old) if r.ok}
    new = {run_identity(r): r for r in load_records(args.new) if r.ok}
    shared = [key for key in old if key in new]
    if not shared:
        print("no run in both folders", file=sys.stderr)
        return 1
    print("| run | C old / new | val old at old / new C | val new at old / new C | test old / new | moved on |")
    print("|---|---|---|---|---|---|")
    for key in shared:
        a, b = old[key], new[key]
        if a.C is None or b.C is None:
            continue
        va, vb = a.val_accuracy_by_C or {}, b.val_accuracy_by_C or {}
        ca, cb = repr(float(a.C)), repr(float(b.C))
        same = ca == cb
        if same:  # the same choice; the weights at it differ where the old solver stopped short of its optimum
            verdict = "same C" if va.get(ca) == vb.get(ca) else "same C, old weights off their optimum"
        elif vb.get(ca) == vb.get(cb):
            verdict = "a validation tie for the new solver"
        elif va.get(ca) == va.get(cb):
            verdict = "tied for the old solver only: the exact solutions score differently"
        else:
            verdict = "validation differs"
        nan = float("nan")
        cells = [
            f"{key[0]} {key[1]} {key[3]} seed {key[4]}",
            f"{a.C:.3g} / {b.C:.3g}",
            f"{va.get(ca, nan):.4f} / {va.get(cb, nan):.4f}",
            f"{vb.get(ca, nan):.4f} / {vb.get(cb, nan):.4f}",
            f"{100 * a.metric('accuracy'):.2f} / {100 * b.metric('accuracy'):.2f}",
            verdict,
        ]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
