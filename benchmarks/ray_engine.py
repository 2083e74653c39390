"""What the Ray engine costs against the local engine at the same core count, and what its commit path sustains.

Three parts, in one process, on this machine:

- extraction: EfficientNet-Lite0 ``pool`` features of ``--images`` (Office-31 webcam, 795 JPEGs)
  into a fresh store, by the local engine and by the Ray engine on a local cluster of the same
  cores (2 actors of 1 CPU, and 1 actor of 2 CPUs), arms interleaved, ``--rounds`` rounds, best
  of each. The runtime is pinned (ONNX Runtime float32, what ``auto`` picks here) so every arm
  computes the same. Per arm: images/s of the whole call; the same call on one image (the fixed
  cost: for Ray, the actor pool's start, its imports and the network's build); and from the two,
  the marginal rate ``(n - 1) / (T(n) - T(1))`` and the number of images from which the arm
  reaches 0.85x the local engine (``T(N) = fixed + N / marginal`` for both);
- commit path: rows of 1280 float32 produced instantly by ``--producers`` Ray tasks and committed
  by the driver's one FeatureStore (journal, fsync per batch), the rate the driver sustains
  whatever the workers' speed; and the store alone (appends of 32-row batches, no Ray);
- the cluster's start (``ray.init``), once.

Usage::

    python benchmarks/ray_engine.py --json benchmarks/ray_engine.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cnnfeat import CNNFeatures
from cnnfeat.console import quiet_ray, setup
from cnnfeat.engines import RayEngine
from cnnfeat.runner import machine_description
from cnnfeat.store import FEATURE_CODE_VERSION, FeatureStore

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the tests' support module, which is not shipped
from tests.support import ray_actor_pids

DEFAULT_IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "datasets" / "office31" / "webcam" / "images"
CONFIG = {"extractor": "bench", "taps": ["pool"], "feature_code_version": FEATURE_CODE_VERSION}


def settle(limit: float = 15.0) -> None:
    """Wait until the last arm's actors have exited, so that no arm is timed against another's leftovers."""
    deadline = time.monotonic() + limit
    while ray_actor_pids() and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)


def timed_extraction(paths: list[str], store: Path, engine: RayEngine | None) -> float:
    """Seconds of one extraction call into a fresh store (after the last arm's actors are gone)."""
    settle()
    started = time.perf_counter()
    _, report = CNNFeatures(runtime="onnxruntime", cache=store).extract(paths, return_features=False, engine=engine)
    seconds = time.perf_counter() - started
    assert report.n_computed == len(paths), report.summary()
    return seconds


def _rows(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    n = len(batch["index"])
    keys = [hashlib.sha256(str(int(i)).encode()).hexdigest() for i in batch["index"]]
    pool = np.random.default_rng(int(batch["index"][0])).standard_normal((n, 1280), dtype=np.float32)
    return {"key": np.asarray(keys, dtype=object), "pool": pool}


def commit_path(folder: Path, rows: int, producers: int, batch: int) -> float:
    """Rows/s of Ray-produced rows committed by the driver's store, batch by batch."""
    import ray

    dataset = ray.data.range(rows, override_num_blocks=max(1, rows // batch)).rename_columns({"id": "index"})
    dataset = dataset.map_batches(
        _rows, batch_size=batch, batch_format="numpy", compute=ray.data.TaskPoolStrategy(size=producers)
    )
    path = folder / f"commit-{time.monotonic_ns()}.h5"
    started = time.perf_counter()
    with FeatureStore(path, CONFIG, dims={"pool": 1280}) as store:
        for out in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            keys = [str(k) for k in out["key"]]
            store.append(keys, {"pool": out["pool"]}, keys)
    return rows / (time.perf_counter() - started)


def store_only(folder: Path, rows: int, batch: int) -> float:
    rng = np.random.default_rng(0)
    keys = [hashlib.sha256(f"s{i}".encode()).hexdigest() for i in range(rows)]
    path = folder / f"store-{time.monotonic_ns()}.h5"
    started = time.perf_counter()
    with FeatureStore(path, CONFIG, dims={"pool": 1280}) as store:
        for start in range(0, rows, batch):
            part = keys[start : start + batch]
            store.append(part, {"pool": rng.standard_normal((len(part), 1280), dtype=np.float32)}, part)
    return rows / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=DEFAULT_IMAGES)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=20_000, help="rows through the commit path")
    parser.add_argument("--producers", type=int, default=2)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    setup()
    paths = sorted(str(p) for p in args.images.rglob("*.jpg"))
    if not paths:
        print(f"no JPEGs under {args.images}", file=sys.stderr)
        return 1
    CNNFeatures(runtime="onnxruntime").extract(paths[:8])  # the exported graph, made once, outside the timings

    started = time.perf_counter()
    cluster = RayEngine()
    cluster.connect()
    start_seconds = time.perf_counter() - started
    quiet_ray()  # after Ray Data's import, which sets its own loggers' levels
    arms: dict[str, RayEngine | None] = {
        "local": None,
        "ray 2 actors x 1 CPU": RayEngine(workers=2, cpus_per_worker=1),
        "ray 1 actor x 2 CPUs": RayEngine(workers=1, cpus_per_worker=2),
    }
    seconds: dict[str, dict[str, list[float]]] = {name: {"one": [], "all": []} for name in arms}
    commits: dict[int, list[float]] = {32: [], 256: []}
    stores: list[float] = []
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for r in range(args.rounds):
            for i, (name, engine) in enumerate(arms.items()):
                seconds[name]["one"].append(timed_extraction(paths[:1], folder / f"{r}-{i}-one.h5", engine))
                seconds[name]["all"].append(timed_extraction(paths, folder / f"{r}-{i}-all.h5", engine))
                print(f"round {r} {name}: {seconds[name]}", file=sys.stderr)
            for batch, rates in commits.items():
                rates.append(commit_path(folder, args.rows, args.producers, batch))
            stores.append(store_only(folder, args.rows, 32))
            print(f"round {r} commit path {commits} rows/s, store alone {stores[-1]:.0f} rows/s", file=sys.stderr)
    cluster.close()

    n = len(paths)
    fixed = {name: min(times["one"]) for name, times in seconds.items()}
    total = {name: min(times["all"]) for name, times in seconds.items()}
    marginal = {name: (n - 1) / (total[name] - fixed[name]) for name in arms}

    def images_for(name: str, ratio: float = 0.85) -> int | None:
        """N where T_local(N) / T_arm(N) reaches ``ratio`` (None: never)."""
        # fixed_l + N / m_l = ratio * (fixed_a + N / m_a)  ->  N (1 / m_l - ratio / m_a) = ratio fixed_a - fixed_l
        slope = 1 / marginal["local"] - ratio / marginal[name]
        gap = ratio * fixed[name] - fixed["local"]
        if gap <= 0:
            return 1
        return round(gap / slope) if slope > 0 else None

    summary = {
        "machine": machine_description(),
        "python": platform.python_version(),
        "images": len(paths),
        "rounds": args.rounds,
        "ray_init_s": round(start_seconds, 2),
        "arms": {
            name: {
                "images_per_s": round(n / total[name], 1),
                "ratio_to_local": round(total["local"] / total[name], 3),
                "one_image_s": round(fixed[name], 2),
                "marginal_images_per_s": round(marginal[name], 1),
                "marginal_ratio_to_local": round(marginal[name] / marginal["local"], 3),
                "images_for_0.85x_local": images_for(name),
            }
            for name in arms
        },
        "commit_path_rows_per_s_by_batch": {str(batch): round(max(rates)) for batch, rates in commits.items()},
        "store_alone_rows_per_s": round(max(stores)),
        "command": "python benchmarks/ray_engine.py" + ("" if args.images == DEFAULT_IMAGES else f" --images {args.images}"),
    }
    text = json.dumps(summary, indent=1)
    print(text)
    if args.json:
        args.json.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
