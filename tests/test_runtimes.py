"""Runtimes: the exported graph in ONNX Runtime and OpenVINO gives Keras' features; cached, verified, chosen by measurement."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from cnnfeat.exceptions import ConfigError
from cnnfeat.runtimes import EXACT_TOLERANCE, installed
from tests.support import tiny

EXACT = [r for r in ("onnxruntime", "openvino") if installed(r)]
needs_runtimes = pytest.mark.skipif(not EXACT, reason="neither onnxruntime nor openvino is installed")


def _relative(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a - b).max() / np.abs(b).max())


@needs_runtimes
@pytest.mark.parametrize("runtime", EXACT)
def test_exported_graph_matches_keras_on_every_tap_of_the_tiny_network(image_paths: list[str], runtime: str) -> None:
    taps = ["pool", "pool_max", "block1_conv", "block2_conv"]
    reference, _ = tiny(layers=taps, runtime="keras").extract(image_paths)
    features, report = tiny(layers=taps, runtime=runtime).extract(image_paths)
    for tap in taps:
        assert features[tap].shape == reference[tap].shape
        assert _relative(features[tap], reference[tap]) <= EXACT_TOLERANCE, tap
    assert runtime in report.device


def test_the_library_default_is_the_fastest_exact_runtime_with_keras_features(image_paths: list[str]) -> None:
    from cnnfeat import CNNFeatures, extract_features

    assert CNNFeatures().runtime == "auto"
    default, report = extract_features(image_paths, backbone="tiny_test", weights=None, layers="pool")
    reference, _ = extract_features(image_paths, backbone="tiny_test", weights=None, layers="pool", runtime="keras")
    assert "; auto: " in report.device  # the runtime it resolved to, and why
    assert _relative(default["pool"], reference["pool"]) <= EXACT_TOLERANCE


@needs_runtimes
def test_runtime_is_in_the_fingerprint_and_never_mixed_in_one_store(image_paths: list[str], tmp_path: Path) -> None:
    keras_store = tiny(cache=tmp_path, runtime="keras").store_path()
    other = tiny(cache=tmp_path, runtime=EXACT[0])
    assert other.extractor_config()["runtime"] == EXACT[0] and "runtime" not in tiny(runtime="keras").extractor_config()
    assert other.store_path() != keras_store  # rows of two runtimes never share a store


@needs_runtimes
def test_the_graph_is_cached_verified_and_rebuilt_when_damaged(
    image_paths: list[str], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from cnnfeat.config import cache_dir
    from cnnfeat.runtimes.graphs import graph_key

    extractor = tiny(runtime=EXACT[0], layers=["pool", "block1_conv"])
    first, _ = extractor.extract(image_paths)
    graph = cache_dir() / "graphs" / f"{graph_key(extractor._model_config())}.onnx"
    assert graph.is_file() and json.loads(graph.with_suffix(".json").read_text())["taps"] == ["pool", "block1_conv"]
    made = graph.stat().st_mtime_ns
    again, _ = tiny(runtime=EXACT[0], layers=["pool", "block1_conv"]).extract(image_paths)
    assert graph.stat().st_mtime_ns == made and np.array_equal(first["pool"], again["pool"])
    graph.write_bytes(graph.read_bytes()[: graph.stat().st_size // 2])  # truncated on disk
    with caplog.at_level("WARNING"):
        healed, _ = tiny(runtime=EXACT[0], layers=["pool", "block1_conv"]).extract(image_paths)
    assert "does not match its sha256" in caplog.text and graph.stat().st_mtime_ns != made
    assert np.array_equal(first["pool"], healed["pool"])


@needs_runtimes
def test_a_run_whose_graph_is_cached_does_not_import_tensorflow(image_paths: list[str], tmp_path: Path) -> None:
    tiny(runtime=EXACT[0]).extract(image_paths[:2])  # exports the graph into the (test-isolated) cache
    script = (
        "import sys\nfrom tests.support import tiny\n"
        f"features, _ = tiny(runtime={EXACT[0]!r}).extract({image_paths!r})\n"
        "print(features['pool'].shape, 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split()[-2:] == ["False", "False"]


@needs_runtimes
def test_auto_measures_once_and_records_its_choice_and_reason(image_paths: list[str]) -> None:
    from cnnfeat.runtimes.auto import measurement_path

    extractor = tiny(runtime="auto")
    runtime, reason = extractor.resolved_runtime()
    assert runtime in ("keras", *EXACT) and "img/s" in reason
    record = json.loads(measurement_path(extractor._model_config()).read_text())
    assert record["choice"] == runtime and set(record["images_per_second"]) >= {"keras"}
    assert all(d <= EXACT_TOLERANCE for r, d in record["max_relative_difference"].items() if r in record["images_per_second"])
    _, report = extractor.extract(image_paths)
    assert f"{runtime} float32; auto: fastest exact runtime" in report.device
    assert tiny(runtime="auto").resolved_runtime() == (runtime, reason)  # read back, not measured again


@needs_runtimes
def test_a_damaged_auto_measurement_is_measured_again_not_trusted(caplog: pytest.LogCaptureFixture) -> None:
    # issue 27, finding 7: every derived artefact is checked on load, the auto timings too
    from cnnfeat.files import checksum_matches
    from cnnfeat.runtimes.auto import measurement_path

    extractor = tiny(runtime="auto")
    extractor.resolved_runtime()
    path = measurement_path(extractor._model_config())
    record = json.loads(path.read_text())
    path.write_text(json.dumps({**record, "choice": "keras", "reason": "tampered"}))  # still valid JSON
    with caplog.at_level("WARNING"):
        _, reason = tiny(runtime="auto").resolved_runtime()
    assert "does not match its recorded sha256" in caplog.text and reason != "tampered"
    assert checksum_matches(path) and json.loads(path.read_text())["reason"] == reason


def test_unknown_or_missing_runtimes_and_impossible_precisions_are_clear_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    import cnnfeat.runtimes as runtimes

    with pytest.raises(ConfigError, match=r"unknown runtime 'onnx'"):
        tiny(runtime="onnx").extractor_config()
    monkeypatch.setattr(runtimes, "installed", lambda name: False)
    with pytest.raises(ConfigError, match=r"not installed: pip install \"cnnfeat\[openvino\]\""):
        tiny(runtime="openvino").extractor_config()
    with pytest.raises(ConfigError, match="bf16' runs in OpenVINO"):
        tiny(runtime="keras", precision="bf16").extractor_config()
    with pytest.raises(ValueError, match=r"'precision' parameter of CNNFeatures must be a str among .*Got 'int4'"):
        tiny(precision="int4").fit()


@pytest.mark.skipif(not installed("openvino"), reason="openvino is not installed")
def test_bf16_is_refused_on_a_cpu_without_it_and_differs_from_float32_where_it_runs(
    image_paths: list[str], tmp_path: Path
) -> None:
    from cnnfeat.runtimes.sessions import cpu_has_bf16

    if not cpu_has_bf16():
        with pytest.raises(ConfigError, match="no bf16 instructions"):
            tiny(runtime="openvino", precision="bf16").extract(image_paths)
        return
    exact, _ = tiny(runtime="openvino").extract(image_paths)
    reduced, _ = tiny(runtime="openvino", precision="bf16").extract(image_paths)
    bf16_store = tiny(cache=tmp_path, runtime="openvino", precision="bf16").store_path()
    assert bf16_store != tiny(cache=tmp_path, runtime="openvino").store_path()
    assert 0 < _relative(reduced["pool"], exact["pool"]) < 0.1  # bf16 has 8 bits of mantissa: close, not equal


@pytest.mark.slow
@pytest.mark.skipif(not installed("onnxruntime"), reason="onnxruntime is not installed")
def test_lite0_through_onnxruntime_matches_keras_on_the_layer_taps_and_classifies_the_samples() -> None:
    from cnnfeat import CNNFeatures
    from cnnfeat.inputs import sample_images
    from cnnfeat.suites import LITE0_TAPS

    photos = sample_images().paths  # china.jpg, flower.jpg
    reference, _ = CNNFeatures(layers=LITE0_TAPS, runtime="keras").extract(photos)
    features, _ = CNNFeatures(layers=LITE0_TAPS, runtime="onnxruntime").extract(photos)
    for tap in LITE0_TAPS:
        assert _relative(features[tap], reference[tap]) <= EXACT_TOLERANCE, tap
    logits, _ = CNNFeatures(layers="predictions", runtime="onnxruntime").extract(photos)
    assert logits["predictions"].argmax(axis=1).tolist() == [698, 985]  # palace, daisy


@pytest.mark.skipif(not installed("onnxruntime"), reason="onnxruntime is not installed")
def test_int8_is_calibrated_on_the_users_images_and_fingerprinted_by_them(image_tree: Path, tmp_path: Path) -> None:
    from tests.support import make_photos

    paths = sorted(str(p) for p in image_tree.rglob("*.jpg"))
    exact, _ = tiny(runtime="onnxruntime").extract(paths)
    quantized, report = tiny(precision="int8", runtime="auto", calibration=image_tree).extract(paths)
    assert "onnxruntime int8" in report.device
    assert not np.array_equal(quantized["pool"], exact["pool"])  # int8 is not exact ...
    assert np.corrcoef(quantized["pool"].ravel(), exact["pool"].ravel())[0, 1] > 0.95  # ... but close
    config = tiny(precision="int8", calibration=image_tree, runtime="onnxruntime").store_config()
    make_photos(tmp_path / "other", 6, size=(64, 48))
    other = tiny(precision="int8", calibration=tmp_path / "other", runtime="onnxruntime").store_config()
    assert len(config["calibration"]) == 64 and config["calibration"] != other["calibration"]  # never one store
    with pytest.raises(ConfigError, match="needs calibration="):
        tiny(precision="int8", runtime="onnxruntime").store_config()
    with pytest.raises(ConfigError, match="int8' runs in ONNX Runtime"):
        tiny(precision="int8", runtime="keras", calibration=image_tree).store_config()


@needs_runtimes
@pytest.mark.parametrize("cache", ["f.h5", "folder"])
def test_auto_reuses_the_runtime_of_an_existing_store_whatever_it_measures_now(
    cache: str, image_paths: list[str], tmp_path: Path
) -> None:
    # issue 27, finding 8: when auto's cached measurement named another runtime (a new CPU model, a new onnxruntime,
    # a cleared cache), the same command on the same output failed ("differs in: runtime")
    from cnnfeat.files import write_checksummed
    from cnnfeat.runtimes.auto import measurement_path

    first = tiny(runtime="auto", cache=tmp_path / cache)
    made_by = first.resolved_runtime()[0]
    _, report = first.extract(image_paths)
    assert report.n_computed == len(image_paths)
    other = "onnxruntime" if made_by == "keras" else "keras"
    record = measurement_path(first._model_config())  # auto now measures the other one as fastest
    write_checksummed(record, lambda tmp: tmp.write_text(json.dumps({"choice": other, "reason": "measured again"})))
    assert tiny(runtime="auto").resolved_runtime() == (other, "measured again")  # no store: the new measurement
    rerun = tiny(runtime="auto", cache=tmp_path / cache)
    runtime, reason = rerun.resolved_runtime()
    assert runtime == made_by and "existing store" in reason
    _, again = rerun.extract(image_paths)
    assert again.n_cached == len(image_paths) and again.n_computed == 0
