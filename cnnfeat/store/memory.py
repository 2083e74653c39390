"""Where an extraction's rows go: the interface a feature store offers an engine, and rows kept in memory.

:class:`RowStore` is what an extraction engine needs of a store (membership, append, read).
:class:`~cnnfeat.store.FeatureStore` is the persistent one; :class:`MemoryRows` holds the rows
of an extraction asked for without a cache (``cache=None``): no file, no journal, no fsync.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Protocol

import numpy as np

from cnnfeat.exceptions import ConfigError

__all__ = ["MemoryRows", "RowStore"]


class RowStore(Protocol):
    """The part of a feature store an extraction engine uses."""

    path: Path

    def __contains__(self, key: object) -> bool: ...

    def keys(self) -> list[str]: ...

    def append(self, keys: Sequence[str], features: Mapping[str, np.ndarray], paths: Sequence[str]) -> int: ...

    def get(self, keys: Sequence[str], taps: Iterable[str] | None = None) -> dict[str, np.ndarray]: ...

    def note_speed(self, seconds_per_image: float) -> None: ...

    @property
    def measured_speed(self) -> float | None: ...


class MemoryRows:
    """Feature rows of one extraction, in memory, by content key (float32, one array per tap)."""

    def __init__(self, taps: Sequence[str]) -> None:
        self.path = Path("(memory)")
        self.taps = list(taps)
        self._rows: dict[str, dict[str, np.ndarray]] = {}

    def __contains__(self, key: object) -> bool:
        return key in self._rows

    def keys(self) -> list[str]:
        return list(self._rows)

    def append(self, keys: Sequence[str], features: Mapping[str, np.ndarray], paths: Sequence[str]) -> int:
        if set(features) != set(self.taps):
            raise ConfigError(f"features must have exactly the taps {self.taps}; got {sorted(features)}")
        added = 0
        for i, key in enumerate(keys):
            if key not in self._rows:
                self._rows[key] = {t: np.asarray(features[t][i], dtype=np.float32) for t in self.taps}
                added += 1
        return added

    def get(self, keys: Sequence[str], taps: Iterable[str] | None = None) -> dict[str, np.ndarray]:
        wanted = list(taps) if taps is not None else self.taps
        missing = next((k for k in keys if k not in self._rows), None)
        if missing is not None:
            raise KeyError(f"key {missing} was not extracted")
        return {t: np.array([self._rows[k][t] for k in keys], dtype=np.float32).reshape(len(keys), -1) for t in wanted}

    def note_speed(self, seconds_per_image: float) -> None:
        """Nothing to keep: the rows go when the extraction returns."""

    @property
    def measured_speed(self) -> float | None:
        return None
