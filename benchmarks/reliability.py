"""Reliability checks, one line each with its counts: bad input, crashes, locks, concurrent writers, write
errors, cache correctness, bit flips at rest, untrusted files, fuzzing, and memory.

Usage::

    python benchmarks/reliability.py                 # about 4 minutes on 2 cores
    python benchmarks/reliability.py --kill-trials 20 --rss-images 300 --fuzz-inputs 4000 --rounds 20
    python benchmarks/reliability.py --fuzz-only store --fuzz-inputs 4000 --fuzz-seed 1   # one kind, one seed

Exit status 0 when every check holds, 1 otherwise.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' support module, which is not shipped
from tests.support import make_photos, peak_rss_mb

CLI = [sys.executable, "-m", "cnnfeat.extract"]
TINY = ["--backbone", "tiny_test", "--weights", "none", "--no-progress"]


def line(ok: bool, name: str, detail: str) -> bool:
    print(f"[{'ok' if ok else 'FAIL'}] {name}: {detail}", flush=True)
    return ok


def check_bad_inputs(tmp: Path) -> bool:
    from cnnfeat import CNNFeatures
    from cnnfeat.extract import main
    from tests.support import make_bad_input_corpus

    corpus = make_bad_input_corpus(tmp / "corpus")
    est = CNNFeatures(backbone="tiny_test", weights=None, on_error="skip")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        X = est.transform([c.path for c in corpus])
    skipped = dict(est.last_report_.skipped)
    wrong = [
        c.kind
        for c, row in zip(corpus, X)
        if (c.expected == "error") != (c.path in skipped)
        or (c.path in skipped and c.reason not in skipped[c.path])
        or (c.expected == "decoded" and not np.isfinite(row).all())
    ]
    decoded = sum(c.expected == "decoded" for c in corpus)
    ok = line(
        not wrong,
        "bad-input kinds",
        f"{len(corpus)} tried: {decoded} decoded, {len(corpus) - decoded} refused with a reason naming the file; "
        f"{len(wrong)} outcomes differ from the promise{': ' + ', '.join(wrong) if wrong else ''}",
    )
    listing = tmp / "corpus" / "all.txt"
    listing.write_text("\n".join(Path(c.path).name for c in corpus), encoding="utf-8")
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        skip_code = main([str(listing), "--output", str(tmp / "skip.h5"), "--on-error", "skip", *TINY])
        fail_code = main([str(listing), "--output", str(tmp / "fail.h5"), "--on-error", "fail", *TINY])
    return ok & line(
        skip_code == 3 and fail_code == 1,
        "CLI exit status",
        f"--on-error skip -> {skip_code}, fail -> {fail_code} (3 and 1 expected)",
    )


def check_writer_kills(tmp: Path, trials: int) -> bool:
    from tests.support import kill_and_resume_trial

    results = [kill_and_resume_trial(tmp / f"writer{t}", seed=t) for t in range(trials)]
    results += [kill_and_resume_trial(tmp / f"merge{t}", seed=t, in_merge=True) for t in range(3)]
    lost, dup = sum(r.lost for r in results), sum(r.duplicated for r in results)
    again, wrong = sum(r.recomputed for r in results), sum(r.wrong_values for r in results)
    merges = sum(r.killed_during_merge for r in results)
    return line(
        lost == dup == again == wrong == 0,
        "store writer SIGKILL trials",
        f"{len(results)} trials ({trials} at random moments, 3 inside a merge; {merges} killed while the HDF5 file "
        f"was being written); rows lost/duplicated {lost}/{dup}, "
        f"committed rows recomputed {again}, wrong values {wrong}",
    )


def _audit(store: Path, reference: dict[str, np.ndarray]) -> tuple[int, int, int]:
    """(rows lost, rows duplicated, rows differing from ``reference``) of a finished store's ``pool`` tap."""
    import h5py

    with h5py.File(store) as f:
        keys = [k.decode() for k in f["keys"][: f.attrs["n_rows"]]]
        rows = f["features/pool"][: len(keys)]
    differing = sum(not np.allclose(r, reference[k], atol=1e-5) for k, r in zip(keys, rows))
    return len(set(reference) - set(keys)), len(keys) - len(set(keys)), differing


def check_extraction_kills(tmp: Path, trials: int) -> bool:
    import h5py

    images = tmp / "kill_images"
    n = 1500
    make_photos(images, n, size=(320, 240))
    clean = tmp / "clean.h5"
    done = subprocess.run(
        [*CLI, str(images), "--output", str(clean), "--batch-size", "8", *TINY], check=True, capture_output=True, text=True
    )
    seconds = float(done.stdout.split("time: ")[1].split()[0])
    with h5py.File(clean) as f:
        reference = dict(zip((k.decode() for k in f["keys"][:]), f["features/pool"][:]))
    lost = dup = recomputed = differing = mid_run = 0
    rng = random.Random(0)
    for t in range(trials):
        out = tmp / f"killed{t}.h5"
        command = [*CLI, str(images), "--output", str(out), "--batch-size", "8", *TINY]
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        journal = out.with_name(out.name + ".journal")
        while not journal.exists() and proc.poll() is None:
            time.sleep(0.02)
        time.sleep(rng.uniform(0.1, 0.9) * seconds)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        resumed = subprocess.run([*CLI, str(images), "--output", str(out), *TINY], capture_output=True, text=True, check=True)
        cached = int(resumed.stdout.split("cache hits: ")[1].split()[0])
        computed = int(resumed.stdout.split("newly computed: ")[1].split()[0])
        recomputed += max(0, cached + computed - n)
        mid_run += 0 < cached < n
        found = _audit(out, reference)
        lost, dup, differing = lost + found[0], dup + found[1], differing + found[2]
    return line(
        lost == dup == recomputed == differing == 0 and mid_run > 0,
        f"extraction SIGKILL trials (CLI, {n} images)",
        f"{trials} trials ({mid_run} killed mid-run with rows committed); rows lost/duplicated {lost}/{dup}, "
        f"recomputed {recomputed}, differing from a clean run {differing}",
    )


def check_ray_faults(tmp: Path, trials: int) -> bool:
    """On a local Ray cluster: drivers SIGKILLed and rerun, and extraction actors SIGKILLed mid-run."""

    from cnnfeat import CNNFeatures
    from cnnfeat.console import quiet_ray
    from cnnfeat.engines import RayEngine
    from cnnfeat.store import FeatureStore

    try:
        cluster = RayEngine()
        ray = cluster.connect()
    except Exception as exc:  # the extra is not installed: say so, as a failed check
        return line(False, "Ray engine faults", f"no local Ray cluster: {exc}")
    quiet_ray()
    address = ray.get_runtime_context().gcs_address
    n = 600
    images = tmp / "images"
    make_photos(images, n, size=(320, 240))
    paths = sorted(str(p) for p in images.glob("*.jpg"))
    extractor = {"backbone": "tiny_test", "weights": None, "batch_size": 8}
    reference, report = CNNFeatures(**extractor, cache=tmp / "clean.h5").extract(paths)
    by_key = dict(zip(report.keys, reference["pool"]))
    rng = random.Random(0)
    lost = dup = recomputed = differing = mid_run = restarted = 0
    kills: list[int] = []

    def audit(out: Path) -> None:
        nonlocal lost, dup, differing
        found = _audit(out, by_key)
        lost, dup, differing = lost + found[0], dup + found[1], differing + found[2]

    command = [*CLI, str(images), *TINY, "--batch-size", "8", "--ray-batch-size", "8"]
    command += ["--engine", "ray", "--ray-address", address]
    for t in range(trials):  # the driver killed at a random moment, then the same command again
        out = tmp / f"driver{t}.h5"
        proc = subprocess.Popen([*command, "--output", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        journal = out.with_name(out.name + ".journal")
        while (not journal.exists() or journal.stat().st_size == 0) and proc.poll() is None:
            time.sleep(0.02)  # the first batch is committed: the actors are up
        time.sleep(rng.uniform(0.0, 1.0))
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        with FeatureStore(out) as store:
            committed = len(store)
        mid_run += 0 < committed < n
        resumed = subprocess.run([*command, "--output", str(out)], capture_output=True, text=True, check=True)
        cached = int(resumed.stdout.split("cache hits: ")[1].split()[0])
        recomputed += committed - cached
        audit(out)
    for t in range(trials):  # one actor SIGKILLed after a random number of committed batches
        out = tmp / f"worker{t}.h5"
        killed: list[int] = []
        progress = _killer(rng.randint(1, 4), killed)
        _, report = CNNFeatures(**extractor, cache=out).extract(
            paths, return_features=False, engine=RayEngine(workers=2, batch_size=16), progress=progress
        )
        restarted += len(report.workers) > 2
        kills.extend(killed)
        audit(out)
    cluster.close()
    return line(
        lost == dup == recomputed == differing == 0 and mid_run > 0 and len(kills) == trials,
        f"Ray engine faults (local cluster, {n} images)",
        f"{trials} drivers SIGKILLed and rerun ({mid_run} mid-run with rows committed), {len(kills)} actors SIGKILLed "
        f"mid-run ({restarted} times its restarted self took batches before the end); "
        f"rows lost/duplicated {lost}/{dup}, committed rows recomputed "
        f"{recomputed}, differing from a clean run {differing}",
    )


def _killer(after: int, killed: list[int]) -> Callable[[int], None]:
    """A progress callback that SIGKILLs one extraction actor when batch ``after`` arrives (its pid into ``killed``)."""
    from tests.support import ray_actor_pids

    batches = [0]

    def progress(count: int) -> None:
        batches[0] += 1
        if batches[0] == after and ray_actor_pids():
            killed.append(ray_actor_pids()[0])
            os.kill(killed[-1], signal.SIGKILL)

    return progress


def check_locks(tmp: Path) -> bool:
    from cnnfeat.exceptions import StoreLockedError
    from cnnfeat.store import FEATURE_CODE_VERSION, FeatureStore

    config = {"extractor": "lock", "taps": ["a"], "feature_code_version": FEATURE_CODE_VERSION}
    path = tmp / "locked.h5"
    refused = False
    with FeatureStore(path, config, dims={"a": 1}):
        try:
            FeatureStore(path, config, dims={"a": 1})
        except StoreLockedError as exc:
            refused = "locked.h5.lock" in str(exc) and "pid" in str(exc)
    code = f"from cnnfeat.store import FeatureStore; import os; FeatureStore({str(path)!r}, {config!r}); os._exit(0)"
    subprocess.run([sys.executable, "-c", code], check=True)  # dies holding the lock
    try:
        FeatureStore(path, config, dims={"a": 1}).close()
        taken_over = True
    except StoreLockedError:
        taken_over = False
    return line(
        refused and taken_over,
        "locking",
        f"second writer refused naming the lock: {refused}; lock of a dead process taken over: {taken_over}",
    )


def check_concurrent_writers(tmp: Path, writers: int, appends: int, rounds: int) -> bool:
    """N writers x M appends on one store, several rounds: a second writer only ever gets StoreLockedError."""
    from tests.support import concurrent_writers_trial

    tmp.mkdir(parents=True, exist_ok=True)
    committed = found = refused = 0
    lost: set[str] = set()
    errors: list[str] = []
    for r in range(rounds):
        trial = concurrent_writers_trial(tmp / f"writers_{r}.h5", writers, appends)
        committed += len(trial["committed"])
        found += len(trial["found"])
        refused += trial["refused"]
        lost |= set(trial["committed"]) - trial["found"]
        errors += trial["errors"]
    return line(
        not lost and not errors and committed == rounds * writers * appends * 5,
        "concurrent writers",
        f"{rounds} rounds of {writers} writers x {appends} appends: {committed} rows committed, {found} in the stores, "
        f"{len(lost)} lost, {refused} waits on the lock, {len(errors)} other errors{': ' + errors[0] if errors else ''}",
    )


def check_fuzz(tmp: Path, n: int, seed: int, kinds: tuple[str, ...] | None = None) -> bool:
    """Mutated files of each kind read in child processes: a result or a clear error, never anything else."""
    from tests.fuzzing import FAILURES, KINDS, fuzz

    started = time.perf_counter()
    report = fuzz(kinds or KINDS, n=n, seed=seed, folder=tmp)
    kinds = "; ".join(f"{kind} {c['result']} read, {c['clear error']} refused" for kind, c in report.outcomes.items())
    failures = {outcome: report.count(outcome) for outcome in FAILURES}
    detail = f"{report.n_inputs} inputs (seed {seed}, {time.perf_counter() - started:.0f} s): {kinds}; " + ", ".join(
        f"{v} {k}es" if k == "crash" else f"{v} {k}s" for k, v in failures.items()
    )
    for kind, path, what in report.failures[:3]:
        detail += f"\n    {kind} {path}: {what[-300:]}"
    return line(not report.failures, "fuzzing", detail)


def check_write_error(tmp: Path) -> bool:
    """A real EFBIG from RLIMIT_FSIZE, the same errno path as a full disk."""
    code = f"""
import resource, signal, numpy as np
from cnnfeat.store import FeatureStore, FEATURE_CODE_VERSION
from cnnfeat.exceptions import StoreError
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
resource.setrlimit(resource.RLIMIT_FSIZE, (60000, 60000))
n = 0
try:
    s = FeatureStore({str(tmp / "full.h5")!r}, {{"taps": ["a"], "feature_code_version": FEATURE_CODE_VERSION}}, dims={{"a": 300}})
    for i in range(1000):
        s.append([f"{{i:064x}}"], {{"a": np.full((1, 300), i, np.float32)}}, ["p"]); n += 1
except StoreError as e:
    print(n, "|", e)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip()
    committed = int(out.split("|")[0]) if "|" in out else -1
    from cnnfeat.store import FeatureStore

    with FeatureStore(tmp / "full.h5", mode="a") as store:
        readable = len(store)
    return line(
        committed > 0 and readable == committed,
        "write error (file size limit)",
        f"error said: {out.split('|', 1)[-1].strip()[:90]}...; rows committed {committed}, readable afterwards {readable}",
    )


def check_cache(tmp: Path) -> bool:
    import shutil

    from cnnfeat import CNNFeatures

    paths = make_photos(tmp / "cache_images", 6, size=(80, 60))
    est = CNNFeatures(backbone="tiny_test", weights=None, cache=tmp / "cache")
    est.transform(paths)
    shutil.move(paths[0], paths[0] + ".renamed.jpg")
    make_photos(tmp / "edit", 1, size=(80, 60), seed=99)
    shutil.copyfile(tmp / "edit" / "photo_00000.jpg", paths[1])
    est.transform([paths[0] + ".renamed.jpg", *paths[1:]])
    report = est.last_report_
    variants = [
        {"layers": "pool_max"}, {"pooling": "max"}, {"views": "10crop"}, {"resize": "warp"}, {"crop_pct": 0.5},
        {"interpolation": "area"}, {"dtype": "float16"}, {"seed": 1}, {"precision": "mixed"},
        {"backbone": "efficientnet_lite0", "weights": "imagenet"},
    ]  # fmt: skip
    stores = {CNNFeatures(backbone="tiny_test", weights=None, cache=tmp).set_params(**v).store_path() for v in variants}
    stores.add(est.store_path())
    ok = report.n_computed == 1 and report.n_cached == 5 and len(stores) == len(variants) + 1
    return line(
        ok,
        "cache correctness",
        f"renamed image a hit, edited one recomputed ({report.n_cached} hits, {report.n_computed} computed); "
        f"{len(variants)} configuration changes -> {len(stores) - 1} new fingerprints",
    )


def check_bit_flips(tmp: Path, trials: int) -> bool:
    """Single bits flipped at random offsets of a finished store: detected, never served, healed from the images."""
    from collections import Counter

    from cnnfeat import CNNFeatures
    from tests.support import bit_flip_trials

    paths = sorted(make_photos(tmp / "photos", 30, size=(64, 48)))
    store = tmp / "flips.h5"

    def make(heal: bool) -> CNNFeatures:
        return CNNFeatures(backbone="tiny_test", weights=None, layers=["pool", "block2_conv"], cache=store, heal=heal)

    make(True).transform(paths)
    inside = bit_flip_trials(store, paths, make, trials=trials, seed=0)
    outside = bit_flip_trials(store, paths, make, trials=trials, inside=False, seed=1)
    changed = [t for t in inside if t.changed_value]
    ok_inside = all(t.detected for t in changed) and not any(t.served_wrong for t in inside)
    ok_inside = ok_inside and all(t.healed_identical for t in inside)
    ok_outside = not any(t.served_wrong for t in outside) and all(t.healed_identical in (True, None) for t in outside)
    where = Counter(t.where.split("/")[0] for t in inside)
    reported = sum(t.detected for t in outside)
    unopenable = sum(t.healed_identical is None for t in outside)
    return line(
        ok_inside and ok_outside,
        "bit flips at rest",
        f"{len(inside)} inside the data ({dict(sorted(where.items()))}; {len(changed)} changed a value): "
        f"{sum(t.detected for t in changed)} detected, {sum(t.served_wrong for t in inside)} served, "
        f"{sum(bool(t.healed_identical) for t in inside)} healed bit-identical; {len(outside)} outside: "
        f"{len(outside) - reported} harmless, {reported} reported ({unopenable} leave a file that no longer opens), "
        f"{sum(t.served_wrong for t in outside)} served",
    )


def check_untrusted(tmp: Path) -> bool:
    from cnnfeat.download import download, safe_extract
    from cnnfeat.exceptions import DownloadError, InputListError, UnsafeArchiveError, UnsafePickleError
    from cnnfeat.inputs import Manifest
    from cnnfeat.weights.torch_pickle import load_state_dict
    from tests.support import make_unsafe_archives, make_unsafe_pickles

    marker = tmp / "pwned"
    pickles = make_unsafe_pickles(tmp / "pickles", marker)
    refused_pickles = 0
    for path in pickles.values():
        with contextlib.suppress(UnsafePickleError):
            load_state_dict(path)
            continue
        refused_pickles += 1
    archives = make_unsafe_archives(tmp / "archives")
    refused_archives = 0
    for archive in archives.values():
        with contextlib.suppress(UnsafeArchiveError):
            safe_extract(archive, tmp / "out" / archive.stem)
            continue
        refused_archives += 1
    payload = tmp / "payload.bin"
    payload.write_bytes(b"data")
    try:
        download(payload.as_uri(), tmp / "dl" / "x.bin", "0" * 64)
        checksum_refused = False
    except DownloadError:
        checksum_refused = not (tmp / "dl" / "x.bin").exists()
    (tmp / "escape.csv").write_text("path,label\n../../etc/passwd,x\n")
    try:
        Manifest.from_csv(tmp / "escape.csv")
        outside_refused = False
    except InputListError:
        outside_refused = True
    ok = refused_pickles == len(pickles) and refused_archives == len(archives) and checksum_refused and outside_refused
    ok = ok and not marker.exists()
    return line(
        ok,
        "untrusted files",
        f"crafted pickles refused {refused_pickles}/{len(pickles)} (nothing executed: {not marker.exists()}); "
        f"unsafe archives refused {refused_archives}/{len(archives)}; bad checksum refused: {checksum_refused}; "
        f"CSV path outside the data root refused: {outside_refused}",
    )


def check_memory(tmp: Path, n: int, backbone: str) -> bool:
    images = tmp / "rss_images"
    make_photos(images, 10 * n)
    few = tmp / "few.txt"
    few.write_text("\n".join(f"photo_{i:05d}.jpg" for i in range(n)))
    (images / "few.txt").write_text(few.read_text())
    weights = ["--weights", "none"] if backbone == "tiny_test" else []
    small = peak_rss_mb(
        [*CLI, str(images / "few.txt"), "--backbone", backbone, *weights, "--output", str(tmp / "r1.h5"), "--no-progress"]
    )
    large = peak_rss_mb([*CLI, str(images), "--backbone", backbone, *weights, "--output", str(tmp / "r10.h5"), "--no-progress"])
    ratio = large / small
    return line(
        ratio < 1.2,
        "peak RSS",
        f"{backbone}: {n} images {small:.0f} MB, {10 * n} images {large:.0f} MB, ratio {ratio:.3f} (< 1.2 required)",
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--kill-trials", type=int, default=12, help="store-writer SIGKILL trials (default: %(default)s)")
    parser.add_argument("--extraction-kills", type=int, default=4, help="CLI extraction SIGKILL trials (default: %(default)s)")
    parser.add_argument(
        "--flip-trials", type=int, default=40, help="bit flips inside and outside a store's data (default: %(default)s)"
    )
    parser.add_argument("--ray-trials", type=int, default=4, help="Ray driver and actor SIGKILL trials (default: %(default)s)")
    parser.add_argument("--rss-images", type=int, default=150, help="N for the N vs 10N peak-RSS check (default: %(default)s)")
    parser.add_argument("--rss-backbone", default="efficientnet_lite0")
    parser.add_argument("--fuzz-inputs", type=int, default=1000, help="mutated inputs per file kind (default: %(default)s)")
    parser.add_argument("--fuzz-seed", type=int, default=0)
    parser.add_argument(
        "--fuzz-only",
        nargs="+",
        metavar="KIND",
        help="run only the fuzzing, of these kinds (store, weights, model, archive, csv, image)",
    )
    parser.add_argument("--writers", type=int, default=4, help="concurrent writers on one store (default: %(default)s)")
    parser.add_argument("--appends", type=int, default=50, help="appends per writer and round (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=5, help="rounds of the concurrent-writer trial (default: %(default)s)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    with tempfile.TemporaryDirectory(prefix="cnnfeat-reliability-") as name:
        tmp = Path(name)
        os.environ["CNNFEAT_CACHE"] = str(tmp / "cache_dir")
        if args.fuzz_only:
            return 0 if check_fuzz(tmp / "fuzz", args.fuzz_inputs, args.fuzz_seed, tuple(args.fuzz_only)) else 1
        results = [
            check_bad_inputs(tmp / "bad"),
            check_writer_kills(tmp / "kills", args.kill_trials),
            check_extraction_kills(tmp / "xkills", args.extraction_kills),
            check_ray_faults(tmp / "ray", args.ray_trials),
            check_locks(tmp),
            check_concurrent_writers(tmp / "writers", args.writers, args.appends, args.rounds),
            check_write_error(tmp),
            check_cache(tmp / "cache"),
            check_bit_flips(tmp / "flips", args.flip_trials),
            check_untrusted(tmp / "untrusted"),
            check_fuzz(tmp / "fuzz", args.fuzz_inputs, args.fuzz_seed),
            check_memory(tmp / "rss", args.rss_images, args.rss_backbone),
        ]
    print(f"{sum(results)} of {len(results)} checks hold")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
