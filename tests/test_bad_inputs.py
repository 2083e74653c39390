"""The bad-input corpus through the decoder, the library and the CLI: each kind has a defined outcome."""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import pytest

from cnnfeat.exceptions import ImageError, SkippedImageWarning
from cnnfeat.extract import EXIT_ERROR, EXIT_SKIPPED, main
from cnnfeat.images import decode_image, read_image_file
from tests.support import make_bad_input_corpus, tiny


@pytest.fixture
def corpus(tmp_path: Path) -> list:
    return make_bad_input_corpus(tmp_path / "corpus")


def test_every_kind_has_its_promised_outcome_in_the_decoder(corpus: list) -> None:
    assert len(corpus) >= 22
    for case in corpus:
        try:
            data, _ = read_image_file(case.path)
            image = decode_image(data, case.path)
        except ImageError as exc:
            assert case.expected == "error", f"{case.kind}: refused ({exc}) but should decode"
            assert case.reason in exc.reason, f"{case.kind}: reason {exc.reason!r} lacks {case.reason!r}"
            assert exc.path == case.path
            continue
        assert case.expected == "decoded", f"{case.kind}: decoded but should be refused ({case.reason})"
        assert image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
        if case.shape:
            assert image.shape[:2] == case.shape, case.kind


def test_library_skip_returns_rows_for_good_and_nan_for_bad(corpus: list) -> None:
    est = tiny(on_error="skip")
    with pytest.warns(SkippedImageWarning):
        X = est.transform([c.path for c in corpus])
    report = est.last_report_
    bad = [c for c in corpus if c.expected == "error"]
    assert sorted(p for p, _ in report.skipped) == sorted(c.path for c in bad)
    for case, row in zip(corpus, X):
        assert np.isnan(row).all() == (case.expected == "error"), case.kind
    assert report.n_duplicates == 1
    a, b = (i for i, c in enumerate(corpus) if c.kind.startswith("duplicate"))
    np.testing.assert_array_equal(X[a], X[b])


@pytest.mark.slow
def test_cli_skip_completes_lists_reasons_and_exits_3(corpus: list, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    listing = tmp_path / "corpus" / "all.txt"
    listing.write_text("\n".join(Path(c.path).name for c in corpus) + "\n", encoding="utf-8")
    out = tmp_path / "skip.h5"
    code = main(
        [
            str(listing),
            "--output",
            str(out),
            "--on-error",
            "skip",
            "--backbone",
            "tiny_test",
            "--weights",
            "none",
            "--no-progress",
        ]
    )
    text = capsys.readouterr().out
    assert code == EXIT_SKIPPED
    bad = [c for c in corpus if c.expected == "error"]
    assert f"skipped: {len(bad)}" in text
    for case in bad:
        assert f"skipped {case.path}: " in text and case.reason in text.split(f"skipped {case.path}: ")[1].splitlines()[0]
    with h5py.File(out) as f:
        good = len(corpus) - len(bad) - 1  # one duplicate
        assert f.attrs["n_rows"] == good
        assert (f["index/row"][:] == -1).sum() == len(bad)


def test_cli_fail_stops_at_first_bad_file_with_nothing_half_written(
    corpus: list, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    good = [c for c in corpus if c.expected == "decoded"][:5]
    first_bad = next(c for c in corpus if c.expected == "error")
    listing = tmp_path / "corpus" / "some.txt"
    listing.write_text("\n".join(Path(c.path).name for c in [*good, first_bad, *good]) + "\n", encoding="utf-8")
    out = tmp_path / "fail.h5"
    args = [
        str(listing),
        "--output",
        str(out),
        "--backbone",
        "tiny_test",
        "--weights",
        "none",
        "--batch-size",
        "2",
        "--no-progress",
    ]
    assert main(args) == EXIT_ERROR
    assert f"{first_bad.path}: " in capsys.readouterr().err
    with h5py.File(out) as f:  # the file opens; it holds only complete, committed batches
        n = f.attrs["n_rows"]
        assert n == 4 and f["features/pool"].shape[0] == n and np.isfinite(f["features/pool"][:n]).all()
    assert not (tmp_path / "fail.h5.journal").exists() and not (tmp_path / "fail.h5.lock").exists()
