"""The `cnnfeat` command: subcommands, info and export round trips, quiet start-up, errors a user meets first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from cnnfeat.console import is_startup_noise

NOISE_WORDS = ("absl::InitializeLog", "cuInit", "oneDNN", "cpu_feature_guard", "cudart_stub", "rebuild TensorFlow")


def _run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=env or dict(os.environ)
    )


def _noise(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if is_startup_noise(line) or any(w in line for w in NOISE_WORDS)]


def test_the_filter_drops_tensorflows_native_lines_and_passes_the_rest(tmp_path: Path) -> None:
    # written straight to descriptor 2, as TensorFlow's C++ core does, around ordinary output and a progress bar
    script = textwrap.dedent(
        r"""
        import os, sys
        from cnnfeat.console import setup
        setup(verbose=False)
        lines = [
            b"WARNING: All log messages before absl::InitializeLog() is called are written to STDERR\n",
            b"I0000 00:00:1796160469.265116    2681 port.cc:153] oneDNN custom operations are on.\n",
            b"W0000 00:00:1796160469.266260    2681 cudart_stub.cc:31] Could not find cuda drivers\n",
            b"E0000 00:00:1796160472.109914    2681 cuda_platform.cc:52] failed call to cuInit: INTERNAL: CUDA error\n",
            b"To enable the following instructions: AVX2 FMA, in other operations, "
            b"rebuild TensorFlow with the appropriate compiler flags.\n",
            b"E0000 00:00:1796160472.1 2681 loader.cc:9] a real native error\n",
            b"\r 50%|#####     | 1/2",
            b"\r100%|##########| 2/2\n",
            b"WARNING something: kept\n",
        ]
        for line in lines:
            os.write(2, line)
        print("error: from Python", file=sys.stderr)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, timeout=60)
    assert done.returncode == 0
    assert done.stderr == (
        b"E0000 00:00:1796160472.1 2681 loader.cc:9] a real native error\n"
        b"\r 50%|#####     | 1/2\r100%|##########| 2/2\n"
        b"WARNING something: kept\nerror: from Python\n"
    )


@pytest.mark.slow
def test_no_command_prints_tensorflow_start_up_noise(tmp_path: Path, image_tree: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    store, tiny, out = tmp_path / "s.h5", str(tmp_path / "t.h5"), str(tmp_path / "b")
    runs = [
        ("-m", "cnnfeat.extract", "--samples", "--runtime", "keras", "--output", str(store)),  # real Lite0 in TensorFlow
        ("-m", "cnnfeat", "info", str(store)),
        ("-m", "cnnfeat", "export", str(store), "--output", str(tmp_path / "s.npz")),
        ("-m", "cnnfeat", "data", "list"),
        ("-m", "cnnfeat", "extract", "--samples", "--backbone", "tiny_test", "--weights", "none", "--output", tiny),
        ("-m", "cnnfeat", "benchmark", "--methods", "hog", "--protocol", "kfold:2", "--data", str(image_tree), "--out", out),
    ]
    for args in runs:
        done = _run(*args, cwd=tmp_path, env=env)
        assert done.returncode == 0, (args, done.stderr)
        assert _noise(done.stderr) == [], args
    # the same command with -v shows what TensorFlow says (the filter, not TensorFlow, made the quiet run quiet)
    verbose_args = ["-m", "cnnfeat.extract", "--samples", "--runtime", "keras", "-v", "--output", str(tmp_path / "v.h5")]
    verbose = _run(*verbose_args, cwd=tmp_path, env=env)
    assert verbose.returncode == 0
    if not _noise(verbose.stderr):
        pytest.skip("this TensorFlow prints no start-up lines, so the quiet run proves nothing here")


@pytest.mark.slow
def test_library_use_is_quiet_when_asked_and_tensorflow_speaks_when_not(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    code = (
        "import numpy as np, cnnfeat\n{}"
        "cnnfeat.CNNFeatures(backbone='tiny_test', weights=None, runtime='keras').transform(np.zeros((2, 32, 32, 3), np.uint8))"
    )
    quiet = subprocess.run([sys.executable, "-c", code.format("cnnfeat.quiet_tensorflow()\n")], capture_output=True,
                           text=True, cwd=tmp_path, env=env, timeout=300)  # fmt: skip
    assert quiet.returncode == 0, quiet.stderr
    assert _noise(quiet.stderr) == []
    plain = subprocess.run([sys.executable, "-c", code.format("")], capture_output=True, text=True, cwd=tmp_path, env=env,
                           timeout=300)  # fmt: skip
    if not _noise(plain.stderr):
        pytest.skip("this TensorFlow prints no start-up lines, so the quiet run proves nothing here")


def test_info_and_export_round_trip_in_the_order_of_the_index(
    image_tree: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    import h5py

    from cnnfeat.cli import main
    from cnnfeat.store import FeatureStore

    store = tmp_path / "f.h5"
    args = ["extract", str(image_tree), "--backbone", "tiny_test", "--weights", "none", "-l", "pool,block2_conv"]
    assert main([*args, "--output", str(store), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["info", str(store)]) == 0
    shown = capsys.readouterr().out
    assert "rows:" in shown and "pool (" in shown and "block2_conv (" in shown and "backbone tiny_test" in shown
    assert main(["info", str(store), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    with h5py.File(store, "r") as f:
        index_paths = [p.decode() for p in f["index"]["path"][:]]
        index_keys = [k.decode() for k in f["index"]["key"][:]]
        index_labels = [v.decode() for v in f["index"]["label"][:]]
    assert info["rows"] == len(set(index_keys)) and info["index"]["inputs"] == len(index_paths)
    with FeatureStore(store, mode="r") as s:
        expected = s.get(index_keys)

    for fmt in ("parquet", "csv", "npz"):
        out = tmp_path / f"f.{fmt}"
        assert main(["export", str(store), "--output", str(out)]) == 0
        if fmt == "npz":
            data = np.load(out)
            assert data["path"].tolist() == index_paths and data["key"].tolist() == index_keys
            assert np.array_equal(data["pool"], expected["pool"]) and np.array_equal(data["block2_conv"], expected["block2_conv"])
            continue
        frame = pd.read_parquet(out) if fmt == "parquet" else pd.read_csv(out, keep_default_na=False)
        assert frame["path"].tolist() == index_paths and frame["label"].tolist() == index_labels
        pool = frame[[f"pool_{i}" for i in range(expected["pool"].shape[1])]].to_numpy(np.float32)
        assert np.array_equal(pool, expected["pool"])  # bit-identical, also through CSV text
    assert main(["export", str(store), "--tap", "nope", "--output", str(tmp_path / "x.npz")]) == 1
    assert "no tap 'nope'; the store holds pool, block2_conv" in capsys.readouterr().err
    assert not (tmp_path / "x.npz").exists()


def test_unknown_backbone_is_a_bad_command_line_said_before_any_work(
    image_tree: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cnnfeat.extract import main

    assert main([str(image_tree), "--backbone", "resnet5", "--output", "/nonexistent/x.h5"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'resnet50'" in err and "--list-backbones" in err and "images from" not in err
    assert main([str(image_tree), "--backbone", "tiny_test", "--weights", "none", "-l", "block2_cnv", "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "did you mean 'block2_conv'" in err and "cnnfeat extract --list-layers tiny_test" in err


def test_the_cnnfeat_command_dispatches_and_names_what_it_does_not_know(capsys: pytest.CaptureFixture[str]) -> None:
    from cnnfeat.cli import main

    assert main(["--help"]) == 0 and "export" in capsys.readouterr().out
    assert main(["benchmrk"]) == 2 and "did you mean 'benchmark'" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        main(["extract", "--help"])
    assert exited.value.code == 0 and "usage: cnnfeat extract" in capsys.readouterr().out
    assert main(["data", "layouts", "pacs"]) == 0
    assert "DomainBed" in capsys.readouterr().out


def test_the_baselines_are_importable_from_the_package() -> None:
    import cnnfeat
    from cnnfeat import ColorHistogram, HOGFeatures, SIFTBoVW

    assert {"HOGFeatures", "SIFTBoVW", "ColorHistogram"} <= set(cnnfeat.__all__)
    assert HOGFeatures().get_params() and SIFTBoVW().get_params() and ColorHistogram().get_params()


def test_every_commands_help_says_cnnfeat_renders_no_markup_and_explains_every_option() -> None:
    # issue 25, item 7: --help said `python -m cnnfeat.benchmark`, showed raw ``...``, and --out and --seeds had no help
    import argparse

    from cnnfeat import benchmark, data, extract

    parsers = {"benchmark": benchmark._parser(), "extract": extract.build_parser()}
    with pytest.raises(SystemExit):
        data.main(["--help"])  # builds its parser inside main: its help is checked through the output below
    for name, parser in parsers.items():
        text = parser.format_help()
        assert parser.prog == f"cnnfeat {name}" and "``" not in text and "python -m" not in text, name
        for action in parser._actions:
            if not isinstance(action, argparse._HelpAction):
                assert action.help, f"cnnfeat {name} {action.option_strings or action.dest} has no help"
