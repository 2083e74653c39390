"""Where work runs: this process (the default) or a Ray cluster.

An engine runs an extraction's batches (:meth:`CachedImageFeatures.extract(engine=...)
<cnnfeat.extractors._base.CachedImageFeatures.extract>`) and a benchmark's independent
runs (:func:`cnnfeat.engines.parallel.map_in_order`). Both engines produce the same rows and
the same records.
"""

from __future__ import annotations

from typing import Any

from cnnfeat.engines.ray_engine import RayEngine, require_ray
from cnnfeat.exceptions import ConfigError
from cnnfeat.extractors.local import ExtractionEngine, LocalEngine

__all__ = ["ENGINES", "ExtractionEngine", "LocalEngine", "RayEngine", "make_engine", "require_ray"]

ENGINES = ("local", "ray")


def make_engine(name: str, **options: Any) -> ExtractionEngine:
    """The engine called ``name``, with ``options`` for :class:`RayEngine`."""
    if name == "local":
        return LocalEngine()
    if name == "ray":
        require_ray()
        return RayEngine(**options)
    raise ConfigError(f"engine must be one of {', '.join(ENGINES)}; got {name!r}")
