"""The benchmark: grid expansion, splits, the runner's records, failure isolation, resuming, tables, figures, CLI."""

from __future__ import annotations

import json
import os
import platform
import shlex
from pathlib import Path

import numpy as np
import pytest

from cnnfeat.exceptions import ConfigError
from cnnfeat.runner import Record, RunSpec, expand, load_records, machine_description, run_all
from cnnfeat.tables import pivot, to_csv, to_json, to_markdown

TINY = "cnn:tiny_test/pool?weights=none&batch_size=8"


@pytest.fixture
def office_root(tmp_path: Path) -> Path:
    """A trimmed Office-31 in its official layout: 3 domains x 2 classes, real (synthetic) JPEGs."""
    from PIL import Image

    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    for d, (domain, n) in enumerate((("amazon", 22), ("dslr", 10), ("webcam", 10))):
        for c, cls in enumerate(("bike", "mug")):
            for i in range(n):
                # the class sets the hue (red or blue), the domain the brightness: separable, with a shift
                colour = np.array([200, 60, 40] if c == 0 else [40, 60, 200]) * (0.6 + 0.2 * d)
                pixels = np.clip(colour + rng.normal(0, 25, (40, 48, 3)), 0, 255).astype(np.uint8)
                path = root / "office31" / domain / "images" / cls / f"frame_{i:04d}.jpg"
                path.parent.mkdir(parents=True, exist_ok=True)
                Image.fromarray(pixels).save(path)
    return root


def test_expand_spells_out_default_protocols_shifts_and_seeds() -> None:
    runs = expand(["hog"], ["logreg"], ["scene15"], ["default"], [0, 1])
    assert [(r.protocol, r.seed, r.normalize) for r in runs] == [("n_per_class:100", 0, "chi2"), ("n_per_class:100", 1, "chi2")]
    full = expand([TINY], ["logreg"], ["office31"], ["full"], [0, 1, 2], adapt=["none", "coral"])
    assert len(full) == 6 * 2  # six shifts x two adaptations, one seed: the full protocol has no randomness
    assert {r.column for r in full} == {f"office31 {s}" for s in ("amazon->webcam", "dslr->webcam", "webcam->dslr",
                                                                  "amazon->dslr", "dslr->amazon", "webcam->amazon")}  # fmt: skip
    sampled = expand([TINY], ["svm"], ["office31"], ["sampled", "sampled_st"], [0, 1], adapt=["none", "augment"])
    assert {r.adapt for r in sampled if r.protocol.startswith("sampled:")} == {"none"}  # augmentation needs target labels
    assert len([r for r in sampled if r.protocol.startswith("sampled_st:")]) == 6 * 2 * 2
    assert expand(["hog"], ["logreg"], ["scene15"], ["full"], [0]) == []  # no domains: not applicable
    few = expand(["hog"], ["logreg"], ["flowers17"], ["few_shot"], [0])
    assert [r.protocol for r in few] == [f"n_per_class:{k}" for k in (1, 2, 5, 10, 20, 30)]
    for bad in ({"probes": ["ridge"]}, {"methods": ["surf"]}, {"protocols": ["loo"]}, {"methods": ["cnn:vgg16"]}):
        kwargs = {"methods": ["hog"], "probes": ["logreg"], "protocols": ["default"]} | bad
        with pytest.raises(ConfigError):
            expand(kwargs["methods"], kwargs["probes"], ["scene15"], kwargs["protocols"], [0])


def test_splits_follow_the_protocols(office_root: Path) -> None:
    from cnnfeat.catalog import load_dataset

    ds = load_dataset("office31", office_root, strict=False)
    domains = np.asarray(ds.manifest.domains)
    full = RunSpec(TINY, "logreg", "office31", "full:amazon->webcam", 0).split(ds)
    assert set(domains[full.train]) == {"amazon"} and set(domains[full.test]) == {"webcam"} and len(full.test) == 20
    st = RunSpec(TINY, "logreg", "office31", "sampled_st:dslr->webcam", 3).split(ds)
    assert (domains[st.train] == "dslr").sum() == 2 * 8 and (domains[st.train] == "webcam").sum() == 2 * 3
    assert len(st.test) == 20 - 6 and not set(st.train) & set(st.test)
    again = RunSpec(TINY, "logreg", "office31", "sampled_st:dslr->webcam", 3).split(ds)
    other = RunSpec(TINY, "logreg", "office31", "sampled_st:dslr->webcam", 4).split(ds)
    assert np.array_equal(st.train, again.train) and not np.array_equal(st.train, other.train)


@pytest.mark.slow
def test_runner_records_isolates_failures_resumes_and_tables(office_root: Path, tmp_path: Path) -> None:
    runs = expand([TINY, "color_hist", "cnn:no_such_net/pool"], ["logreg"], ["office31"], ["full"], [0], adapt=["none", "coral"])
    runs = [r for r in runs if r.protocol in ("full:amazon->webcam", "full:dslr->webcam")]
    out = tmp_path / "out"
    seen: list[str] = []
    records = run_all(runs, out, data_root=office_root, cache=tmp_path / "cache", strict=False,
                      command="test", on_run=lambda spec, rec: seen.append(rec.status))  # fmt: skip
    assert len(records) == len(runs) == 12 and len(seen) == 12
    failed = [r for r in records if r.status == "failed"]
    assert len(failed) == 4 and all("no_such_net" in r.error for r in failed)  # the others ran
    ok = [r for r in records if r.status == "ok"]
    for r in ok:
        assert 0 <= r.accuracy <= 1 and r.n_train == (44 if "amazon" in r.protocol else 20) and r.C > 0
        assert r.n_test == 20 and r.n_unlabelled == 20  # the target images, seen unlabelled by CORAL
        assert r.val_accuracy_by_C[repr(r.C)] == max(r.val_accuracy_by_C.values())
        assert r.features.fingerprint and r.versions["scikit-learn"] and r.command == "test"
        assert "images, expected 4110" in r.dataset_problems[0]
        assert r.machine == machine_description() and "cores" in r.machine
    colour = [r for r in ok if r.method == "color_hist" and r.adapt == "none"]
    assert max(r.accuracy for r in colour) >= 0.9  # the classes differ in colour: a probe that could fail, works
    assert len(list((out / "records").glob("*.json"))) == 12

    # features were computed once per (method, dataset): the second shift and CORAL read them
    tiny = [r for r in ok if r.method == TINY]
    assert len({r.features.seconds for r in tiny}) == 1

    # resume: finished runs are not run again, failed ones are
    seen.clear()
    again = run_all(runs, out, data_root=office_root, cache=tmp_path / "cache", strict=False, skip_existing=True,
                    on_run=lambda spec, rec: seen.append(rec.status))  # fmt: skip
    assert [r.probe_seconds for r in again if r.status == "ok"] == [r.probe_seconds for r in ok]
    assert seen.count("failed") == 4

    table = pivot(load_records(out))
    assert len(table.rows) == 4 and table.columns == ["office31 amazon->webcam", "office31 dslr->webcam"]
    text = to_markdown(table, average=True)
    assert "| method | office31 amazon->webcam | office31 dslr->webcam | average |" in text
    assert "4 run(s) failed" in text and "full (accuracy)" in text
    row = next(r for r in table.rows if r.startswith("color_hist") and "coral" not in r)
    a, b = (table.mean_std(row, c)[0] for c in table.columns)  # type: ignore[index]
    assert f"{(a + b) / 2:.2f} |" in text
    assert to_csv(table).count("\n") == 1 + 8
    assert len(json.loads(to_json(table))["cells"]) == 8


def test_strict_refuses_a_trimmed_dataset(office_root: Path, tmp_path: Path) -> None:
    runs = expand(["color_hist"], ["logreg"], ["office31"], ["full"], [0])[:1]
    (record,) = run_all(runs, tmp_path / "out", data_root=office_root, cache=tmp_path / "cache")
    assert record.status == "failed" and "does not match the official counts" in (record.error or "")


def test_footer_names_every_command_that_wrote_into_the_folder() -> None:
    from cnnfeat.tables import footer_for

    base = {"status": "ok", "seed": 0, "protocol": "full", "versions": {"cnnfeat": "0.1.0"}, "machine": "x86_64, 2 cores"}
    resumed = base | {"command": "bench --methods a --skip-existing", "seed": 1}
    one = footer_for([Record.from_dict(base | {"command": "bench --methods a"}), Record.from_dict(resumed)])
    assert one.startswith("Command: `bench --methods a`\nSeeds: 0, 1.")
    two = footer_for(
        [
            Record.from_dict(base | {"command": "bench --methods a"}),
            Record.from_dict(base | {"command": "bench --methods b"}),
            Record.from_dict(base | {"status": "failed", "command": "x"}),
        ]
    )
    assert two.startswith("Commands: `bench --methods a`; `bench --methods b`\n")


def test_footer_names_the_runtime_of_the_cnn_features_and_how_to_ask_for_it() -> None:
    from cnnfeat.tables import footer_for

    base = {"status": "ok", "seed": 0, "protocol": "full", "versions": {}, "machine": "x", "command": "bench --methods cnn:a"}
    keras = base | {"features": {"extractor": {"extractor": "cnn", "taps": ["pool"]}, "seconds": 1.0}}
    onnx = base | {"features": {"extractor": {"extractor": "cnn", "runtime": "onnxruntime"}, "seconds": 1.0}, "seed": 1}
    hog = base | {"features": {"extractor": {"extractor": "hog"}, "seconds": 1.0}}
    assert "CNN features computed by keras: `--runtime keras` reproduces these digits." in footer_for([Record.from_dict(keras)])
    both = footer_for([Record.from_dict(keras), Record.from_dict(onnx)])
    assert "CNN features computed by keras and onnxruntime.\n" in both
    pinned = footer_for([Record.from_dict(keras | {"command": "bench --methods cnn:a --runtime keras"})])
    assert "CNN features computed by keras.\n" in pinned
    assert "CNN features" not in footer_for([Record.from_dict(hog)])


@pytest.mark.slow
def test_the_runtime_flag_runs_every_cnn_method_that_names_none(office_root: Path, tmp_path: Path) -> None:
    from cnnfeat.runtimes import installed

    if not installed("onnxruntime"):
        pytest.skip("onnxruntime is not installed")
    every = expand([TINY, TINY.replace("?", "?runtime=keras&", 1)], ["logreg"], ["office31"], ["full"], [0])
    runs = sorted((r for r in every if r.protocol == every[0].protocol), key=lambda r: "runtime=" in r.method)
    out, cache = tmp_path / "out", tmp_path / "cache"
    records = run_all(runs, out, data_root=office_root, cache=cache, strict=False, runtime="onnxruntime")
    runtimes = [(r.features.extractor or {}).get("runtime", "keras") for r in records]
    assert [r.status for r in records] == ["ok", "ok"] and runtimes == ["onnxruntime", "keras"]  # the method's own wins
    assert abs(records[0].accuracy - records[1].accuracy) < 0.05


def test_machine_names_the_cpu_and_blas_kernel() -> None:
    machine = machine_description()
    assert machine.startswith(f"{platform.machine()}, {os.cpu_count()} cores")
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():  # Linux: the model name, as the kernel reports it
        models = [line.partition(":")[2].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")]
        assert not models or models[0] in machine
    from threadpoolctl import threadpool_info

    numpy_blas = [i for i in threadpool_info() if "numpy" in i["filepath"] and i.get("architecture")]
    for kernel in {f"{i['internal_api']} {i['architecture']}" for i in numpy_blas}:
        assert kernel in machine  # e.g. "openblas SkylakeX" on an AVX-512 Xeon


def test_table_rows_keep_a_networks_taps_in_extraction_order(tmp_path: Path) -> None:
    taps = ["stem", "block2", "block10", "pool"]  # alphabetically: block10, block2, pool, stem
    records = tmp_path / "records"
    records.mkdir()
    methods = [f"cnn:net/{t}" for t in taps] + ["hog", "cnn:alexnet/fc7"]
    for i, method in enumerate(methods):
        extractor = {"taps": taps if method.startswith("cnn:net/") else ["fc7"]}
        record = {"status": "ok", "method": method, "row": method, "dataset": "scene15", "protocol": "n_per_class:100",
                  "seed": 0, "probe": "logreg", "accuracy": 0.5, "mean_per_class_accuracy": 0.5,
                  "features": {"extractor": extractor}}  # fmt: skip
        (records / f"{i}.json").write_text(json.dumps(record))
    assert pivot(load_records(tmp_path)).rows == ["cnn:alexnet/fc7", *(f"cnn:net/{t}" for t in taps), "hog"]


def test_a_runs_cost_is_its_extraction_plus_its_probe_per_thousand_images() -> None:
    from cnnfeat.plots import run_cost

    computed = {"n_computed": 500, "n_cached": 0, "seconds": 4.0}  # 8 s per 1,000 images
    record = {"n_train": 100, "n_test": 300, "probe_seconds": 2.0, "probe": "logreg", "features": computed}
    assert run_cost(Record.from_dict(record)) == (8.0 + 5.0, True)
    cached = {**record, "features": {**computed, "n_cached": 10}}
    assert run_cost(Record.from_dict(cached)) == (5.0, False)  # cached: the probe only
    two = {"parts": [computed, {"n_computed": 500, "n_cached": 0, "seconds": 1.0}]}  # two networks: both extractions
    assert run_cost(Record.from_dict({**record, "features": two})) == (8.0 + 2.0 + 5.0, True)
    finetuned = {"n_train": 100, "n_test": 300, "probe_seconds": 40.0, "probe": "finetune", "features": {"classifier": {}}}
    assert run_cost(Record.from_dict(finetuned)) == (100.0, True)  # its training (maps included) is the whole cost


def test_plots_write_png_files(tmp_path: Path) -> None:
    from cnnfeat import plots

    records = [
        Record.from_dict({"row": f"m{m}", "column": "d", "dataset": "d", "protocol": f"n_per_class:{k}", "seed": s,
         "method": f"cnn:net/tap{m}", "probe": "logreg", "accuracy": 0.5, "mean_per_class_accuracy": 0.3 + 0.1 * m + 0.01 * k,
         "n_train": 10 * k, "n_test": 50, "probe_seconds": 0.1 * (m + 1)})
        for m in range(3) for k in (1, 5, 10) for s in (0, 1)
    ]  # fmt: skip
    paths = [
        plots.bar_chart(records, tmp_path / "bars.png"),
        plots.cost_chart(records, tmp_path / "cost.png"),
        plots.few_shot_curve(records, tmp_path / "shots.png"),
        plots.layer_curve(records, tmp_path / "layers.png", taps=["tap0", "tap1", "tap2"]),
        plots.tsne_map({"a": np.random.default_rng(0).random((60, 2))}, np.arange(60) % 3, tmp_path / "tsne.png"),
    ]
    for path in paths:
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 2000


@pytest.mark.slow
def test_cli_default_runs_the_built_in_photos_offline_and_rebuilds_tables(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from cnnfeat.benchmark import main

    out = tmp_path / "results"
    args = ["--methods", TINY, "--seeds", "0", "--out", str(out), "--no-progress", "--cache", str(tmp_path / "c")]
    assert main(args) == 0
    printed = capsys.readouterr().out
    assert "| method | eurosat_mini (30/class) |" in printed and "cnn:tiny_test/pool" in printed
    assert (out / "table.md").read_text().startswith("| method | eurosat_mini (30/class) |")
    assert (out / "bars_eurosat_mini.png").is_file() and len(list((out / "records").glob("*.json"))) == 1
    assert (out / "cost_eurosat_mini.png").stat().st_size > 2000
    (record,) = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    assert shlex.split(record["command"])[2:4] == ["--methods", TINY]  # shell-quoted: TINY's & reruns when pasted
    (out / "table.md").unlink()
    assert main(["--tables-only", "--out", str(out)]) == 0 and (out / "table.md").is_file()
    assert main(["--datasets", "digits", "--probes", "ridge", "--out", str(out)]) == 2
    assert main(["--list-datasets"]) == 0 and "office31" in capsys.readouterr().out


@pytest.mark.slow
def test_taps_of_one_network_come_from_one_forward_pass(office_root: Path, tmp_path: Path) -> None:
    methods = [TINY, TINY.replace("/pool?", "/block2_pool?")]
    runs = expand(methods, ["logreg"], ["office31"], ["full"], [0])[:2]
    records = run_all(runs, tmp_path / "out", data_root=office_root, cache=tmp_path / "cache", strict=False)
    assert [r.status for r in records] == ["ok", "ok"]
    assert [r.features.taps for r in records] == [["pool", "block2_pool"]] * 2
    assert records[0].features.fingerprint == records[1].features.fingerprint


@pytest.mark.filterwarnings("error::UserWarning")  # e.g. a curve with no line in it
@pytest.mark.slow
def test_cli_draws_accuracy_per_layer_and_tsne_when_a_network_is_probed_at_several_taps(tmp_path: Path) -> None:
    from cnnfeat.benchmark import main

    taps = ["block1_pool", "block2_pool", "pool"]
    methods = [TINY.replace("/pool?", f"/{tap}?") for tap in taps]
    out = tmp_path / "results"
    assert main(["--methods", *methods, "--seeds", "0", "--out", str(out), "--no-progress", "--cache", str(tmp_path / "c")]) == 0
    assert (out / "layers_eurosat_mini_tiny_test.png").stat().st_size > 2000
    assert (out / "tsne_eurosat_mini_tiny_test.png").stat().st_size > 2000


def test_several_taps_of_one_network_are_one_method_and_knn_is_a_probe(office_root: Path, tmp_path: Path) -> None:
    combined = "cnn:tiny_test/block2_conv,pool?weights=none&batch_size=8"
    runs = [r for r in expand([combined], ["logreg", "knn"], ["office31"], ["full"], [0]) if r.protocol == "full:amazon->webcam"]
    records = run_all(runs, tmp_path / "out", data_root=office_root, cache=tmp_path / "cache", strict=False)
    assert [r.status for r in records] == ["ok", "ok"], [r.error for r in records]
    knn = next(r for r in records if r.probe == "knn")
    assert knn.k in (10, 20, 100, 200) and set(knn.val_accuracy_by_k) == {"10", "20", "100", "200"}
    assert knn.C is None and knn.accuracy > 0.5  # hue separates the two classes in every domain
    assert records[0].features.taps == ["block2_conv", "pool"]  # one forward pass, both taps


def test_several_networks_are_concatenated_each_tap_normalised_from_one_pass_each(office_root: Path, tmp_path: Path) -> None:
    from cnnfeat.runner.features import FeatureBank

    two_taps = "cnn:tiny_test/block2_conv,pool?weights=none&batch_size=8"
    flipped = "cnn:tiny_test/pool@center+flip?weights=none&batch_size=8"
    runs = expand([two_taps, flipped, f"{two_taps}+{flipped}"], ["logreg"], ["office31"], ["full"], [0])
    runs = [r for r in runs if r.protocol == "full:amazon->webcam"]
    records = run_all(runs, tmp_path / "out", data_root=office_root, cache=tmp_path / "cache", strict=False)
    assert [r.status for r in records] == ["ok"] * 3, [r.error for r in records]
    combined = next(r for r in records if r.method == runs[2].method)
    parts = [next(r for r in records if r.method == m).features for m in (two_taps, flipped)]
    assert [p.fingerprint for p in combined.features.parts or []] == [p.fingerprint for p in parts]
    assert combined.accuracy > 0.5

    bank = FeatureBank(runs, data_root=office_root, cache=tmp_path / "cache", strict=False, engine=None)
    jobs = [bank.job(r) for r in runs]  # one bank, as in a suite: each network is extracted once and its rows shared
    assert len(bank._features) == 2
    unit_flipped = jobs[1].X / np.linalg.norm(jobs[1].X, axis=1, keepdims=True)
    np.testing.assert_allclose(jobs[2].X, np.hstack([jobs[0].X, unit_flipped]), rtol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(jobs[2].X, axis=1), np.sqrt(3), rtol=1e-5)  # three unit parts


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("hog+cnn:tiny_test/pool", "only cnn: methods are concatenated"),
        ("cnn:tiny_test/pool+cnn:tiny_test/pool", "the same features twice"),
        ("cnn:tiny_test/pool+cnn:tiny_test", "write cnn:<backbone>/<tap>"),
    ],
)
def test_a_malformed_concatenation_says_how_to_write_it(text: str, message: str) -> None:
    from cnnfeat.methods import Method

    with pytest.raises(ConfigError, match=message):
        Method.parse(text)


def _pid(_: object) -> int:
    import os

    return os.getpid()


def test_independent_runs_go_in_order_here_or_in_processes() -> None:
    import os

    from cnnfeat.engines.parallel import map_in_order

    assert list(map_in_order(_pid, range(4))) == [os.getpid()] * 4  # the default: one at a time, in this process
    elsewhere = list(map_in_order(_pid, range(6), jobs=2))
    assert len(elsewhere) == 6 and os.getpid() not in elsewhere
    assert list(map_in_order(abs, [-3, 2, -1], jobs=2)) == [3, 2, 1]


def test_skip_existing_says_when_the_records_were_made_with_another_solver() -> None:
    from cnnfeat.benchmark import solver_mismatch
    from cnnfeat.suites import SUITES

    best = SUITES["best"]
    existing = load_records(Path(__file__).resolve().parents[1] / "results" / "office31_full_best")  # L-BFGS records

    def runs(solver: str) -> list[RunSpec]:
        return expand(best["methods"], ["logreg"], ["office31"], ["default"], [0], adapt=best["adapt"], normalize="none",
                      solver=solver)  # fmt: skip

    note = solver_mismatch(runs("path"), existing)
    assert note is not None and "--solver lbfgs" in note and "none is reused" in note
    assert solver_mismatch(runs("lbfgs"), existing) is None  # its footer's runs, as made: every record is reused
    assert {r.key() for r in runs("lbfgs")} <= {r.key for r in existing}
    assert solver_mismatch(runs("path"), []) is None
