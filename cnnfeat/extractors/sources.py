"""An extractor's inputs: image paths or arrays, their names in messages, their content keys."""

from __future__ import annotations

import hashlib
import os

import numpy as np

from cnnfeat.exceptions import ConfigError
from cnnfeat.hints import ImageInput, ImageSource, SourceData
from cnnfeat.images import read_image_file

__all__ = ["array_key", "as_sources", "default_workers", "read_source", "source_name"]


def as_sources(X: ImageInput) -> list[ImageSource]:
    """Validate extractor input: paths, or images as arrays. Returns a list of sources.

    Accepted: a sequence of paths (str / PathLike); an array of images of shape
    (n, h, w, 3) or (n, h, w); a sequence of (h, w[, 3]) arrays.
    """
    if isinstance(X, str | bytes | os.PathLike):
        raise ConfigError(f"expected a list of image paths or an array of images; got a single path {X!r}. Wrap it in a list.")
    if isinstance(X, np.ndarray) and X.dtype.kind in "uifb":
        if X.ndim not in (3, 4) or (X.ndim == 4 and X.shape[-1] not in (1, 3, 4)):
            raise ConfigError(f"an image array must have shape (n, h, w) or (n, h, w, 3); got {X.shape}")
        return list(X)
    try:
        sources = list(X)
    except TypeError:
        raise ConfigError(f"expected a list of image paths or an array of images; got {type(X).__name__}") from None
    for i, s in enumerate(sources):
        if isinstance(s, np.ndarray):
            if s.ndim not in (2, 3):
                raise ConfigError(f"image {i} must be a (h, w) or (h, w, 3) array; got shape {s.shape}")
        elif not isinstance(s, str | os.PathLike):
            raise ConfigError(f"input {i} is a {type(s).__name__}; expected a path or an image array")
    return sources


def source_name(source: ImageSource, index: int) -> str:
    return os.fspath(source) if isinstance(source, str | os.PathLike) else f"<array {index}>"


def array_key(image: np.ndarray) -> str:
    """Content key of an in-memory image: sha256 of its dtype, shape and bytes."""
    digest = hashlib.sha256(f"{image.dtype.str}{image.shape}".encode())
    digest.update(np.ascontiguousarray(image).tobytes())
    return digest.hexdigest()


def read_source(source: ImageSource) -> tuple[SourceData, str]:
    """An input's data (file bytes, or the array itself) and its content key."""
    if isinstance(source, np.ndarray):
        return source, array_key(source)
    return read_image_file(source)


def default_workers() -> int:
    """Decode threads: one per core, at least 2 (decoding waits on I/O too)."""
    return max(2, os.cpu_count() or 1)
