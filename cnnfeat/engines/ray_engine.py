"""Extraction on a Ray cluster: Ray Data's ``map_batches`` over a pool of stateful actors.

The driver sends image *paths* (never bytes). Each actor builds the network once, then for
each batch reads, hashes (the sha256 row key), decodes and runs the forward pass; rows whose
key the store already holds are only hashed. The rows come back to the driver, whose one
:class:`~cnnfeat.store.FeatureStore` commits them to its journal batch by batch, so a stopped
run resumes from its last committed batch, as the local engine's does.

A worker that dies mid-batch loses nothing: Ray Data restarts the actor and retries the
batch (its output reaches the driver only when the batch is complete), and the driver drops
rows of an input it already has, so nothing is counted or committed twice.
"""

from __future__ import annotations

import copy
import logging
import math
import os
import socket
from collections.abc import Callable, Sequence
from types import ModuleType
from typing import Any

import numpy as np

from cnnfeat.exceptions import ConfigError, ImageError
from cnnfeat.extractors._base import CachedImageFeatures
from cnnfeat.extractors.local import ExtractionReport, Ledger
from cnnfeat.extractors.sources import default_workers, read_source, source_name
from cnnfeat.hints import ImageSource
from cnnfeat.store import RowStore

__all__ = ["RayEngine", "require_ray"]

logger = logging.getLogger(__name__)

_TAP_PREFIX = "tap:"  # feature columns of a worker's output batch
_SHARED_FS = "every worker must see the input paths (a shared file system mounted at the same place)"


def require_ray() -> ModuleType:
    """The ``ray`` module, or an error saying how to install it."""
    try:
        import ray
        import ray.data  # the extra's other half
    except ImportError:
        raise ConfigError('the ray engine needs Ray Data: pip install "cnnfeat[ray]" (or: pip install "ray[data]")') from None
    return ray


class RayEngine:
    """Run extractions (and independent benchmark runs) on a Ray cluster.

    Parameters
    ----------
    address : str or None
        ``None``: use the cluster this process is already connected to, else start a local
        one (all of this machine's cores); ``"auto"``: join the running cluster that
        ``ray start`` made; or a cluster address (``"ray://host:10001"``, ``"host:6379"``).
    workers : int or None
        Extraction actors (each builds the network once). Default: the cluster's CPUs
        divided by ``cpus_per_worker`` (or its GPUs by ``gpus_per_worker``).
    cpus_per_worker, gpus_per_worker : float
        Resources each actor holds; a runtime in an actor uses ``cpus_per_worker`` threads.
    batch_size : int or None
        Images per task sent to an actor, which runs them through the network in forward passes
        of the extractor's own ``batch_size``. Each task costs the driver a fixed overhead, so
        the default is large: a quarter of each worker's share of the images, between the
        extractor's ``batch_size`` and 256.

    Examples
    --------
    >>> from cnnfeat import CNNFeatures
    >>> from cnnfeat.engines import RayEngine
    >>> with RayEngine(address="auto") as engine:  # doctest: +SKIP
    ...     features, report = CNNFeatures(cache="w.h5").extract(paths, engine=engine)
    """

    name = "ray"

    distributed = True

    def __init__(
        self,
        *,
        address: str | None = None,
        workers: int | None = None,
        cpus_per_worker: float = 1.0,
        gpus_per_worker: float = 0.0,
        batch_size: int | None = None,
    ) -> None:
        if workers is not None and workers < 1:
            raise ConfigError(f"workers must be >= 1; got {workers}")
        if cpus_per_worker < 0 or gpus_per_worker < 0 or cpus_per_worker + gpus_per_worker == 0:
            raise ConfigError(
                f"a worker needs CPUs or GPUs (>= 0, not both 0); got cpus_per_worker={cpus_per_worker}, "
                f"gpus_per_worker={gpus_per_worker}"
            )
        if batch_size is not None and batch_size < 1:
            raise ConfigError(f"batch_size must be >= 1; got {batch_size}")
        self.address = address
        self.workers = workers
        self.cpus_per_worker = cpus_per_worker
        self.gpus_per_worker = gpus_per_worker
        self.batch_size = batch_size
        self._started = False

    # ------------------------------------------------------------------ the cluster

    def connect(self) -> ModuleType:
        """Join (or start) the cluster; returns the ``ray`` module. Idempotent."""
        ray = require_ray()
        if not ray.is_initialized():
            if self.address is None:
                ray.init(include_dashboard=False, configure_logging=False, log_to_driver=False)
                self._started = True
            else:
                try:
                    ray.init(address=self.address, configure_logging=False, log_to_driver=False)
                except (ConnectionError, RuntimeError, ValueError) as exc:
                    raise ConfigError(
                        f"could not join the Ray cluster at {self.address!r} ({exc}); start one with `ray start --head`, "
                        "or leave the address out to start a local cluster"
                    ) from None
            context = ray.data.DataContext.get_current()
            context.enable_progress_bars = False  # the CLI draws its own bar
            context.print_on_execution_start = False
        return ray

    def close(self) -> None:
        """Shut down the local cluster this engine started (a joined one keeps running)."""
        if self._started:
            import ray

            ray.shutdown()
            self._started = False

    def __enter__(self) -> RayEngine:
        self.connect()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def n_workers(self) -> int:
        """The number of extraction actors on the connected cluster."""
        if self.workers is not None:
            return self.workers
        resources = self.connect().cluster_resources()
        counts = []
        if self.cpus_per_worker > 0:
            counts.append(int(resources.get("CPU", 1) // self.cpus_per_worker))
        if self.gpus_per_worker > 0:
            counts.append(int(resources.get("GPU", 0) // self.gpus_per_worker))
        n = max(1, min(counts))
        if self.gpus_per_worker > 0 and counts[-1] < 1:
            raise ConfigError(f"the cluster has no GPU for gpus_per_worker={self.gpus_per_worker}")
        return n

    def describe(self) -> str:
        """The cluster in words: nodes and resources."""
        ray = self.connect()
        resources = ray.cluster_resources()
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        gpus = f", {resources['GPU']:g} GPUs" if resources.get("GPU") else ""
        return f"ray cluster: {nodes} node{'s' if nodes != 1 else ''}, {resources.get('CPU', 0):g} CPUs{gpus}"

    # ------------------------------------------------------------------ extraction

    def run(
        self,
        extractor: CachedImageFeatures,
        sources: Sequence[ImageSource],
        store: RowStore,
        *,
        progress: Callable[[int], None] | None = None,
    ) -> ExtractionReport:
        """Commit to ``store`` the features of every source not in it (as :class:`~cnnfeat.extractors.local.LocalEngine`)."""
        ray = self.connect()
        for i, source in enumerate(sources):
            if not isinstance(source, str | os.PathLike):
                raise ConfigError(
                    f"input {i} is an image array: the ray engine takes paths, which its workers read ({_SHARED_FS}); "
                    "use the local engine for images in memory"
                )
        ledger = Ledger(sources, store, extractor.on_error)
        worker_extractor = _pinned(extractor)
        n_workers = self.n_workers()
        batch_size = self.batch_size or min(256, max(extractor.batch_size, math.ceil(len(sources) / (4 * n_workers))))
        paths = [(i, s) for i, s in enumerate(sources) if not isinstance(s, np.ndarray)]  # arrays were refused above
        items = [{"index": i, "path": os.path.abspath(os.fspath(s))} for i, s in paths]
        if not items:
            return ledger.finish()
        known = ray.put(frozenset(store.keys()))
        n_batches = math.ceil(len(items) / batch_size)
        n_workers = min(n_workers, n_batches)
        dataset = ray.data.from_items(items, override_num_blocks=n_batches)
        dataset = dataset.map_batches(
            _ExtractionWorker,
            fn_constructor_kwargs={"extractor": worker_extractor, "known": [known], "threads": self.cpus_per_worker},
            batch_size=batch_size,
            batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(
                size=n_workers, max_concurrent_calls_per_actor=2, enable_true_multi_threading=True
            ),
            num_cpus=self.cpus_per_worker,
            num_gpus=self.gpus_per_worker or None,
        )
        seen = np.zeros(len(sources), dtype=bool)
        devices: set[str] = set()
        for batch in dataset.iter_batches(batch_size=None, batch_format="numpy"):
            fresh = ~seen[batch["index"]]  # a retried batch may repeat inputs the driver already has
            seen[batch["index"]] = True
            _commit(batch, fresh, ledger, devices)
            if progress is not None:
                progress(int(fresh.sum()))
        report = ledger.finish()
        report.device = "none (all features from the cache)"
        if devices:
            report.device = f"{self.describe()}; {n_workers} workers: {', '.join(sorted(devices))}"
        return report


def _pinned(extractor: CachedImageFeatures) -> CachedImageFeatures:
    """A copy of ``extractor`` (fitted state included) whose workers compute what the store's fingerprint says.

    ``runtime="auto"`` is resolved here, once: a worker measuring on its own machine might
    choose another runtime than the one the store was named for.
    """
    pinned = copy.copy(extractor)  # shallow: the network and sessions are not pickled (__getstate__)
    resolved = getattr(extractor, "resolved_runtime", None)
    if resolved is not None and extractor.get_params().get("runtime") == "auto":
        pinned.set_params(runtime=resolved()[0])
    return pinned


def _commit(batch: dict[str, np.ndarray], fresh: np.ndarray, ledger: Ledger, devices: set[str]) -> None:
    """Count one worker batch through the ledger and commit its computed rows (each key once per run)."""
    taps = [column[len(_TAP_PREFIX) :] for column in batch if column.startswith(_TAP_PREFIX)]
    take: list[int] = []
    first_error: ImageError | None = None
    for row in np.flatnonzero(fresh):
        index, status, key = int(batch["index"][row]), str(batch["status"][row]), str(batch["key"][row])
        worker = str(batch["worker"][row])
        ledger.report.workers[worker] = ledger.report.workers.get(worker, 0) + 1
        if status == "error":
            first_error = first_error or ledger.unreadable(index, str(batch["reason"][row]))
        elif ledger.claim(index, key, cached=status == "cached", duplicate=status == "duplicate"):
            take.append(int(row))
            devices.add(str(batch["device"][row]))
    if take:
        features = {tap: batch[_TAP_PREFIX + tap][take] for tap in taps}
        indices = [int(batch["index"][r]) for r in take]
        ledger.commit([str(batch["key"][r]) for r in take], features, [source_name(ledger.sources[i], i) for i in indices])
    if first_error is not None:  # the batch's good rows are committed first, as the local engine's are
        raise first_error


class _ExtractionWorker:
    """A Ray Data actor: builds the network once, then reads, hashes, decodes and computes batches of paths."""

    def __init__(self, extractor: CachedImageFeatures, known: list[Any], threads: float) -> None:
        import ray

        if threads >= 1:
            os.environ["OMP_NUM_THREADS"] = str(int(threads))  # read by the runtimes' thread pools (cnnfeat.config)
        self.extractor = extractor
        self.known: frozenset[str] = ray.get(known[0])
        self.load = extractor.image_loader()
        self.dims = extractor.feature_dims()  # builds the network (or opens the runtime's session) once per actor
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        self.device = extractor.device_name()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        from cnnfeat.images import map_ordered

        paths, n = [str(p) for p in batch["path"]], len(batch["path"])
        status, keys, reasons = ["computed"] * n, [""] * n, [""] * n
        items: list[np.ndarray] = []
        rows: list[int] = []
        queued: set[str] = set()

        def prepare(path: str) -> tuple[str, np.ndarray | None]:
            data, key = read_source(path)
            return key, None if key in self.known else self.load(data, path)

        for row, (path, result, error) in enumerate(map_ordered(prepare, paths, workers=default_workers(), max_ahead=n)):
            if error is not None:
                status[row] = "error"
                reasons[row] = _reason(error, path, self.name)
                continue
            if result is None:
                continue
            key, item = result
            keys[row] = key
            if item is None:
                status[row] = "cached"
            elif key in queued:
                status[row] = "duplicate"
            else:
                queued.add(key)
                items.append(item)
                rows.append(row)
        out: dict[str, np.ndarray] = {
            "index": np.asarray(batch["index"], dtype=np.int64),
            "key": np.asarray(keys, dtype=object),
            "status": np.asarray(status, dtype=object),
            "reason": np.asarray(reasons, dtype=object),
            "worker": np.asarray([self.name] * n, dtype=object),
            "device": np.asarray([self.device] * n, dtype=object),
        }
        for tap, width in self.dims.items():
            out[_TAP_PREFIX + tap] = np.zeros((n, width), dtype=np.float32)
        step = self.extractor.batch_size  # the forward passes the local engine would make
        for start in range(0, len(items), step):
            computed = self.extractor.compute_batch(items[start : start + step])
            for tap in self.dims:
                out[_TAP_PREFIX + tap][rows[start : start + step]] = computed[tap]
        return out


def _reason(error: BaseException, path: str, worker: str) -> str:
    """Why a worker could not use ``path``; a file it cannot see says what the cluster needs."""
    if not isinstance(error, ImageError):
        return f"{type(error).__name__}: {error}"
    if error.reason == "file not found" and not os.path.lexists(os.path.dirname(path)):
        return f"file not found on worker {worker}: {_SHARED_FS}"
    return error.reason
