"""The fuzz harness, CI-sized: mutated stores, weight pickles, model files, archives, CSVs and images, each read in a child
process with memory and time limits, end in a result or a clear error: no traceback, crash or hang (issue 27).

A longer run, with its figures: ``python benchmarks/reliability.py --fuzz-inputs 4000``.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.fuzzing import FAILURES, KINDS, fuzz, make_seeds, mutate


def test_the_seeds_are_valid_and_the_mutator_is_deterministic(tmp_path: Path) -> None:
    import random

    report = fuzz(n=0, folder=tmp_path / "none")  # nothing to read: an empty report, not an error
    assert report.n_inputs == 0
    for kind in KINDS:
        for seed in make_seeds(kind, tmp_path / kind):
            data = seed.read_bytes()
            assert mutate(data, random.Random(1)) == mutate(data, random.Random(1)) != data


@pytest.mark.slow
def test_mutated_inputs_of_every_kind_end_in_a_result_or_a_clear_error(tmp_path: Path) -> None:
    seed = int(os.environ.get("CNNFEAT_FUZZ_SEED", "0"))  # CI keeps 0; set it to look elsewhere
    report = fuzz(n=300, seed=seed, folder=tmp_path)
    assert report.n_inputs == 300 * len(KINDS)  # model files among them: damaged deflate data was a traceback
    assert {outcome: report.count(outcome) for outcome in FAILURES} == dict.fromkeys(FAILURES, 0), report.failures[:5]
    for kind in KINDS:  # each kind's mutants reached both ends: some still read, most refused
        assert report.outcomes[kind]["clear error"] > 0, kind
