"""Independent jobs (a benchmark's probe fits) run in parallel: processes here, or tasks on a Ray cluster."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

from cnnfeat.engines.ray_engine import RayEngine
from cnnfeat.exceptions import ConfigError
from cnnfeat.extractors.local import ExtractionEngine

__all__ = ["map_in_order"]

_T = TypeVar("_T")
_R = TypeVar("_R")


def map_in_order(
    fn: Callable[[_T], _R], items: Iterable[_T], *, engine: ExtractionEngine | None = None, jobs: int | None = 1
) -> Iterator[_R]:
    """``fn(item)`` for each item, yielded in order, with up to ``jobs`` running at once.

    ``items`` is consumed lazily (a few ahead of the results), so making an item (say,
    extracting its features) overlaps with fitting the ones before it. On the local engine
    ``jobs > 1`` runs in processes (joblib's loky); with a :class:`RayEngine` each call is a
    Ray task of one CPU, retried if its worker dies (``jobs=None``: as many as the cluster
    has CPUs). ``fn`` and the items must pickle.
    """
    if jobs is not None and jobs < 1:
        raise ConfigError(f"jobs must be >= 1; got {jobs}")
    if isinstance(engine, RayEngine):
        return _ray_map(fn, items, engine, jobs)
    if jobs is None or jobs > 1:
        from joblib import Parallel, delayed

        parallel = Parallel(n_jobs=jobs or -1, backend="loky", return_as="generator", pre_dispatch="2*n_jobs")
        return iter(parallel(delayed(fn)(item) for item in items))
    return (fn(item) for item in items)


def _ray_map(fn: Callable[[_T], _R], items: Iterable[_T], engine: RayEngine, jobs: int | None) -> Iterator[_R]:
    ray = engine.connect()
    jobs = jobs or max(1, int(ray.cluster_resources().get("CPU", 1)))
    remote = ray.remote(num_cpus=1, max_retries=3)(fn)
    window: deque[Any] = deque()
    for item in items:
        window.append(remote.remote(item))
        if len(window) >= 2 * jobs:
            yield ray.get(window.popleft())
    while window:
        yield ray.get(window.popleft())
