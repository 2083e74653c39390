"""The Ray engine on a real local Ray cluster: the same rows as the local engine, resumable, fault tolerant.

One cluster (2 CPUs) serves the whole module; the command-line runs join it by its address.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from cnnfeat.exceptions import ConfigError, ImageError, SkippedImageWarning
from tests.support import make_bad_input_corpus, make_image, make_photos, ray_actor_pids, tiny

ray = pytest.importorskip("ray", reason="the ray extra is not installed")
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster() -> str:
    """A local cluster of 2 CPUs, its GCS address for commands that join it."""
    from cnnfeat.engines import RayEngine

    RayEngine().connect()
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture
def engine(cluster: str):
    from cnnfeat.engines import RayEngine

    return RayEngine(workers=2)


def _tree(root: Path, n: int) -> list[str]:
    return [str(make_image(root / f"c{i % 3}" / f"img_{i:03d}.jpg", seed=i)) for i in range(n)]


def test_rows_counts_and_keys_equal_the_local_engine(engine, tmp_path: Path) -> None:
    paths = _tree(tmp_path / "images", 30)
    paths.append(paths[3])  # the same bytes twice: one duplicate either way
    local, local_report = tiny(cache=tmp_path / "local.h5").extract(paths)
    remote, report = tiny(cache=tmp_path / "ray.h5").extract(paths, engine=engine)
    np.testing.assert_array_equal(remote["pool"], local["pool"])
    assert report.keys == local_report.keys
    assert (report.n_computed, report.n_duplicates, report.n_cached) == (30, 1, 0)
    assert sum(report.workers.values()) == 31 and "ray cluster: 1 node, 2 CPUs; 2 workers" in report.device

    again, rerun = tiny(cache=tmp_path / "ray.h5").extract(paths, engine=engine)
    assert (rerun.n_computed, rerun.n_cached, rerun.n_duplicates) == (0, 31, 0)  # as the local engine counts a rerun
    np.testing.assert_array_equal(again["pool"], local["pool"])


def test_lite0_rows_equal_the_local_engine(engine, tmp_path: Path) -> None:
    from cnnfeat import CNNFeatures

    paths = make_photos(tmp_path / "photos", 12, size=None)
    params = {"backbone": "efficientnet_lite0", "layers": "block6d_add,pool", "batch_size": 5}
    local, _ = CNNFeatures(**params, cache=tmp_path / "local.h5").extract(paths)
    remote, report = CNNFeatures(**params, cache=tmp_path / "ray.h5").extract(paths, engine=engine)
    assert report.n_computed == 12
    for tap in ("block6d_add", "pool"):
        np.testing.assert_allclose(remote[tap], local[tap], rtol=1e-5, atol=1e-5 * float(np.abs(local[tap]).max()))


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(cluster: str, tmp_path: Path) -> None:
    from cnnfeat.engines import RayEngine

    if not Path("/proc").is_dir():
        pytest.skip("finds the actor's process through /proc")
    paths = make_photos(tmp_path / "photos", 160, size=(320, 240))
    reference, _ = tiny(cache=tmp_path / "local.h5").extract(paths)
    killed: list[int] = []
    received = [0]

    def kill_one_worker(rows: int) -> None:  # at the first batch back, while the actors hold queued batches
        received[0] += rows
        if killed:
            return
        pid = next(iter(ray_actor_pids()), None)
        if pid is not None:
            os.kill(pid, signal.SIGKILL)
            killed.append(pid)
            killed.append(received[0])

    features, report = tiny(cache=tmp_path / "ray.h5", batch_size=4).extract(
        paths, engine=RayEngine(workers=2, batch_size=4), progress=kill_one_worker
    )
    assert killed, "no actor process was found to kill"
    assert killed[1] < 160  # killed mid-run: the batches it held were retried (else rows would be missing)
    assert report.n_computed == 160 and report.n_duplicates == 0 and not report.skipped
    with h5py.File(tmp_path / "ray.h5") as f:
        keys = [k.decode() for k in f["keys"][: f.attrs["n_rows"]]]
    assert len(keys) == len(set(keys)) == 160
    np.testing.assert_array_equal(features["pool"], reference["pool"])


def test_bad_images_follow_on_error_as_locally(engine, tmp_path: Path) -> None:
    corpus = make_bad_input_corpus(tmp_path / "corpus")
    paths = [c.path for c in corpus]
    with pytest.warns(SkippedImageWarning):
        local, local_report = tiny(on_error="skip", cache=tmp_path / "local.h5").extract(paths)
    with pytest.warns(SkippedImageWarning):
        remote, report = tiny(on_error="skip", cache=tmp_path / "ray.h5").extract(paths, engine=engine)
    assert sorted(report.skipped) == sorted(local_report.skipped)
    assert report.keys == local_report.keys
    np.testing.assert_array_equal(np.isnan(remote["pool"]), np.isnan(local["pool"]))
    np.testing.assert_allclose(remote["pool"], local["pool"], equal_nan=True)

    bad = next(c for c in corpus if c.expected == "error")
    with pytest.raises(ImageError) as caught:
        tiny(cache=tmp_path / "fail.h5").extract([paths[0], bad.path], engine=engine)
    assert caught.value.path == bad.path


def test_a_path_the_workers_cannot_see_says_what_the_cluster_needs(engine, tmp_path: Path) -> None:
    missing = str(tmp_path / "not-mounted" / "a.jpg")
    with pytest.warns(SkippedImageWarning):
        _, report = tiny(on_error="skip", cache=tmp_path / "s.h5").extract([missing], engine=engine)
    ((path, reason),) = report.skipped
    assert path == missing and "file not found on worker" in reason and "shared file system" in reason


def test_image_arrays_are_refused_with_the_way_out(engine, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"takes paths.*local engine"):
        tiny(cache=tmp_path / "a.h5").extract(np.zeros((2, 8, 8, 3), np.uint8), engine=engine)


def test_without_ray_the_engine_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnfeat.engines import make_engine

    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r'pip install "cnnfeat\[ray\]"'):
        make_engine("ray")


def _cli(args: list[str]) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cnnfeat.extract", *args, "--no-progress"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_cli_driver_killed_and_rerun_recomputes_nothing_committed(cluster: str, tmp_path: Path) -> None:
    make_photos(tmp_path / "photos" / "a", 150, size=(320, 240))
    make_photos(tmp_path / "photos" / "b", 150, size=(320, 240), seed=1)
    out = tmp_path / "f.h5"
    args = [str(tmp_path / "photos"), "--backbone", "tiny_test", "--weights", "none", "--batch-size", "4"]
    args += ["--output", str(out), "--engine", "ray", "--ray-address", cluster, "--ray-workers", "1", "--ray-batch-size", "4"]
    proc = _cli(args)
    journal = out.with_name("f.h5.journal")
    deadline = time.time() + 300
    while (not journal.exists() or journal.stat().st_size < 20_000) and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    from cnnfeat.store import FeatureStore

    with FeatureStore(out) as store:  # what the killed driver had committed (its journal, recovered)
        committed = len(store)
    assert 0 < committed < 300

    rerun = _cli(args)
    stdout, stderr = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, stderr
    assert f"cache hits: {committed}  newly computed: {300 - committed}  duplicates: 0" in stdout
    assert "workers: 1 (" in stdout
    with h5py.File(out) as f:
        assert f.attrs["n_rows"] == 300 and len(set(f["keys"][:])) == 300
        assert sorted({x.decode() for x in f["index/label"][:]}) == ["a", "b"]


def test_cli_skip_lists_bad_images_and_exits_3(cluster: str, tmp_path: Path) -> None:
    corpus = make_bad_input_corpus(tmp_path / "corpus")
    listing = tmp_path / "list.txt"
    listing.write_text("\n".join(c.path for c in corpus))
    args = [str(listing), "--backbone", "tiny_test", "--weights", "none", "--allow-outside-root"]
    args += ["--output", str(tmp_path / "f.h5"), "--engine", "ray", "--ray-address", cluster, "--on-error", "skip"]
    proc = _cli(args)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 3, stderr
    bad = [c for c in corpus if c.expected == "error"]
    assert f"skipped: {len(bad)}" in stdout
    for case in bad:
        assert f"skipped {case.path}: " in stdout


def test_a_runtime_takes_the_threads_ray_gives_its_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    from cnnfeat.config import cpu_threads

    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # what the extraction actor sets from cpus_per_worker
    assert cpu_threads() == 1
    monkeypatch.setenv("OMP_NUM_THREADS", "not a number")
    assert cpu_threads() == os.cpu_count()
    monkeypatch.delenv("OMP_NUM_THREADS")
    assert cpu_threads() == os.cpu_count()


SAME_IN_EVERY_ENGINE = ("status", "split", "n_train", "n_test", "accuracy", "mean_per_class_accuracy", "C", "val_accuracy_by_C")


def test_benchmark_records_are_the_same_locally_in_processes_and_on_the_cluster(cluster: str, tmp_path: Path) -> None:
    from cnnfeat.cli import main

    tree = tmp_path / "shop"
    for d, domain in enumerate(("studio", "phone")):
        for c in range(3):
            for i in range(6):
                make_image(tree / domain / f"class{c}" / f"{i}.jpg", seed=100 * d + 10 * c + i, size=(64, 48))
    argv = ["benchmark", "--data", f"shop={tree}", "--methods", "cnn:tiny_test/pool?weights=none", "color_hist", "sift_bovw"]
    argv += ["--protocol", "full", "--probes", "logreg", "knn", "--no-progress"]
    found = {}
    for name, extra in {"local": [], "jobs": ["--jobs", "2"], "ray": ["--engine", "ray", "--ray-address", cluster]}.items():
        out = tmp_path / name
        assert main([*argv, *extra, "--cache", str(tmp_path / f"cache-{name}"), "--out", str(out)]) == 0
        records = [json.loads(p.read_text()) for p in sorted((out / "records").glob("*.json"))]
        assert len(records) == 2 * 3 * 2  # shifts x methods x probes
        found[name] = {r["key"]: ({k: r[k] for k in SAME_IN_EVERY_ENGINE}, r["features"]["fingerprint"]) for r in records}
    assert found["jobs"] == found["local"]
    assert found["ray"] == found["local"]
    devices = {json.loads(p.read_text())["features"]["device"] for p in (tmp_path / "ray" / "records").glob("*.json")}
    assert all(d.startswith("ray cluster") for d in devices)
