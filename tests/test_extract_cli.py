"""`python -m cnnfeat.extract`: inputs, outputs, summary, exit codes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import h5py
import pytest

from cnnfeat.extract import EXIT_ERROR, EXIT_OK, EXIT_SKIPPED, EXIT_USAGE, main

TINY = ["--backbone", "tiny_test", "--weights", "none", "--batch-size", "4", "--no-progress"]


def test_folder_tree_to_hdf5_with_index(image_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "f.h5"
    assert main([str(image_tree), "--output", str(out), "--layers", "pool,block2_pool", *TINY]) == EXIT_OK
    text = capsys.readouterr().out
    assert "images: 13  cache hits: 0  newly computed: 13" in text
    extraction = float(text.split("time: ")[1].split()[0])
    wall = float(text.split("wall: ")[1].split()[0])
    assert wall >= extraction and "of start-up" in text  # the wall time includes what the extraction time leaves out
    with h5py.File(out) as f:
        assert f["features/pool"].shape == (13, 32) and f["features/block2_pool"].shape == (13, 16)
        labels = [x.decode() for x in f["index/label"][:]]
        assert sorted(set(labels)) == ["cat", "dog", "owl"]
        rows = f["index/row"][:]
        assert sorted(rows) == list(range(13))
        assert f["paths"][rows[0]] == f["index/path"][0]
    assert main([str(image_tree), "--output", str(out), "--layers", "pool,block2_pool", *TINY]) == EXIT_OK
    assert "cache hits: 13  newly computed: 0" in capsys.readouterr().out


def test_csv_and_list_inputs(image_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    csv = image_tree / "list.csv"
    csv.write_text("path,label,split\ncat/img_0.jpg,cat,train\ndog/img_1.jpg,dog,test\n")
    assert main([str(csv), "--output", str(tmp_path / "c.h5"), *TINY]) == EXIT_OK
    with h5py.File(tmp_path / "c.h5") as f:
        assert [s.decode() for s in f["index/split"][:]] == ["train", "test"]
    listing = image_tree / "paths.txt"
    listing.write_text("# two images\ncat/img_0.jpg\n\nowl/extra.png\n")
    assert main([str(listing), "--output", str(tmp_path / "l.h5"), *TINY]) == EXIT_OK
    assert "images: 2" in capsys.readouterr().out
    csv.write_text("path,label\ncat/img_0.jpg,cat\ndog/img_1.jpg,\n")  # a row without its label: said, not silent
    assert main([str(csv), "--output", str(tmp_path / "u.h5"), *TINY]) == EXIT_OK
    assert "note: 1 of 2 inputs have no label" in capsys.readouterr().err
    with h5py.File(tmp_path / "u.h5") as f:
        assert [s.decode() for s in f["index/label"][:]] == ["cat", ""]


def test_skip_lists_bad_files_and_exits_3(image_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (image_tree / "cat" / "bad.jpg").write_bytes(b"\x00" * 100)
    code = main([str(image_tree), "--output", str(tmp_path / "s.h5"), "--on-error", "skip", *TINY])
    out = capsys.readouterr().out
    assert code == EXIT_SKIPPED
    assert "skipped: 1" in out and "bad.jpg: not a recognised image format" in out
    with h5py.File(tmp_path / "s.h5") as f:
        assert f.attrs["n_rows"] == 13


def test_fail_stops_with_the_path_and_exit_1(image_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    (image_tree / "cat" / "bad.jpg").write_bytes(b"")
    code = main([str(image_tree), "--output", str(tmp_path / "s.h5"), *TINY])
    assert code == EXIT_ERROR
    assert "bad.jpg: empty file" in capsys.readouterr().err


def test_usage_errors(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main([str(tmp_path / "nothing_here"), *TINY]) == EXIT_ERROR
    assert "no such file or folder" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main([])
    assert info.value.code == 2
    assert main([str(tmp_path), "--backbone", "alexnet", "--no-progress"]) == EXIT_USAGE  # a bad command line


def test_list_backbones_and_layers(capsys: pytest.CaptureFixture) -> None:
    assert main(["--list-backbones"]) == EXIT_OK
    out = capsys.readouterr().out
    assert "efficientnet_lite0" in out and "offline (PyPI package)" in out and "vgg16" in out
    assert main(["--list-layers", "tiny_test"]) == EXIT_OK
    assert "block2_pool" in capsys.readouterr().out


def test_help_has_examples() -> None:
    result = subprocess.run([sys.executable, "-m", "cnnfeat.extract", "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert "examples:" in result.stdout and "--on-error" in result.stdout and "--no-progress" in result.stdout
