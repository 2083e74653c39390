"""Errors and warnings raised by cnnfeat.

Every error derives from :class:`CnnfeatError`, so callers can catch one class.
Messages say what was expected, what was received and what to do.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "CnnfeatError",
    "ConfigError",
    "DatasetError",
    "DownloadError",
    "HealedStoreWarning",
    "ImageDecodeError",
    "ImageError",
    "ImageTooLargeError",
    "InputListError",
    "SkippedImageWarning",
    "StoreCorruptError",
    "StoreError",
    "StoreLockedError",
    "StoreMismatchError",
    "UnknownBackboneError",
    "UnknownLayerError",
    "UnsafeArchiveError",
    "UnsafePickleError",
    "WeightsError",
    "did_you_mean",
    "row_spans",
]


class CnnfeatError(Exception):
    """Root of every error cnnfeat raises on purpose."""


class ConfigError(CnnfeatError, ValueError):
    """An argument or option has a value cnnfeat cannot use."""


class DatasetError(CnnfeatError):
    """A dataset is missing, incomplete or not in a layout cnnfeat knows."""


class DownloadError(CnnfeatError):
    """A download failed or its content does not match the expected checksum."""


class UnsafeArchiveError(CnnfeatError):
    """An archive member would land outside the target folder (zip-slip / tar-slip) or is not a plain file."""


class UnknownBackboneError(CnnfeatError, KeyError):
    """A backbone name is not in the registry."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0]) if self.args else ""


class UnknownLayerError(CnnfeatError, ValueError):
    """A requested tap (layer) does not exist in the backbone."""


class WeightsError(CnnfeatError):
    """Weights could not be found, read or loaded into the model."""


class UnsafePickleError(WeightsError):
    """A pickle asked for a global outside the allow-list; nothing was executed."""


class ImageError(CnnfeatError):
    """An image file could not be turned into pixels.

    Attributes
    ----------
    path : str
        The file that failed.
    reason : str
        Why, in words.
    """

    def __init__(self, path: str, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


class ImageDecodeError(ImageError):
    """The file is unreadable, empty, truncated or not an image."""


class ImageTooLargeError(ImageError):
    """The image declares more pixels than the configured limit (a decompression bomb guard)."""


class InputListError(CnnfeatError, ValueError):
    """An input folder, CSV or list file is missing or malformed."""


class StoreError(CnnfeatError):
    """The HDF5 feature store cannot be opened, read or written."""


class StoreLockedError(StoreError):
    """Another live process is writing to the same feature store."""


class StoreCorruptError(StoreError):
    """Data in a feature store no longer matches its checksum: the file changed on disk after it was written.

    Attributes
    ----------
    path : str
        The store file.
    dataset : str
        The HDF5 dataset holding the damage, e.g. ``"features/pool"`` or ``"keys"``.
    rows : list of int
        The rows whose data is damaged (every row of each damaged chunk); empty when the
        damage cannot be placed on rows (a string column's digest).
    """

    def __init__(self, path: str, dataset: str, rows: list[int]) -> None:
        where = f"rows {row_spans(rows)}" if rows else "a string column (rows unknown)"
        super().__init__(
            f"{path}: damaged data in /{dataset}, {where}: a checksum does not match, so the file changed on disk "
            "after it was written. Nothing was read from it. Extracting again heals it (the damaged rows are dropped "
            f"and recomputed from the images; the default); `cnnfeat info {path} --check` lists all damage"
        )
        self.path, self.dataset, self.rows = str(path), dataset, list(rows)


def row_spans(rows: list[int], most: int = 4) -> str:
    """``"0-203, 408-611 (408 rows)"``: consecutive rows as ranges."""
    spans: list[list[int]] = []
    for r in sorted(rows):
        if spans and r == spans[-1][1] + 1:
            spans[-1][1] = r
        else:
            spans.append([r, r])
    text = ", ".join(f"{a}-{b}" if a != b else str(a) for a, b in spans[:most]) + (", ..." if len(spans) > most else "")
    return f"{text} ({len(rows)} rows)"


class StoreMismatchError(StoreError):
    """A store file was made by a different extractor configuration or format version."""


class HealedStoreWarning(UserWarning):
    """Cached rows failed their checksum and were dropped and recomputed (``heal=True``)."""


class SkippedImageWarning(UserWarning):
    """Images were skipped (``on_error='skip'``); the message lists them."""


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """``" (did you mean 'x'?)"`` for the closest of ``choices``, or ``""``: to follow an unknown name in a message."""
    close = difflib.get_close_matches(word.lower().replace("-", "_"), list(choices), n=1, cutoff=0.75)
    return f" (did you mean {close[0]!r}?)" if close else ""
