"""Histogram of oriented gradients (Dalal & Triggs 2005), OpenCV's implementation.

Examples
--------
>>> from cnnfeat.extractors.hog import HOGFeatures
>>> HOGFeatures(window=(64, 64)).fit().n_features_out_
1764
"""

from __future__ import annotations

import os
from collections.abc import Callable
from numbers import Integral
from typing import Any

import numpy as np
from sklearn.utils._param_validation import Interval

from cnnfeat.exceptions import ConfigError
from cnnfeat.extractors._base import COMMON_CONSTRAINTS, CachedImageFeatures
from cnnfeat.hints import ArrayLike, ImageInput, JSONObject, SourceData
from cnnfeat.images import DEFAULT_MAX_PIXELS, decode_image, to_gray
from cnnfeat.store import FEATURE_CODE_VERSION

__all__ = ["HOGFeatures"]


class HOGFeatures(CachedImageFeatures):
    """HOG of the whole image, warped to a fixed window; needs no ``fit``.

    Parameters
    ----------
    window : (width, height)
        The image (in grayscale) is resized to this size.
    cell : int
        Cell side in pixels.
    block : int
        Block side in cells (blocks are L2-Hys normalised).
    stride : int
        Block stride in cells.
    bins : int
        Orientation bins (unsigned gradients, 0-180 degrees).
    batch_size, dtype, cache, on_error, heal, max_pixels, n_jobs
        As in :class:`cnnfeat.CNNFeatures`.
    """

    _parameter_constraints: dict[str, list[object]] = {  # noqa: RUF012 (scikit-learn's own convention)
        **COMMON_CONSTRAINTS,
        "window": [tuple, list],
        "cell": [Interval(Integral, 1, None, closed="left")],
        "block": [Interval(Integral, 1, None, closed="left")],
        "stride": [Interval(Integral, 1, None, closed="left")],
        "bins": [Interval(Integral, 1, None, closed="left")],
    }

    def __init__(
        self,
        *,
        window: tuple[int, int] = (128, 128),
        cell: int = 8,
        block: int = 2,
        stride: int = 1,
        bins: int = 9,
        batch_size: int = 64,
        dtype: str = "float32",
        cache: str | os.PathLike[str] | None = None,
        on_error: str = "fail",
        heal: bool = True,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        n_jobs: int | None = None,
    ) -> None:
        self.window = window
        self.cell = cell
        self.block = block
        self.stride = stride
        self.bins = bins
        self.batch_size = batch_size
        self.dtype = dtype
        self.cache = cache
        self.on_error = on_error
        self.heal = heal
        self.max_pixels = max_pixels
        self.n_jobs = n_jobs

    def _descriptor(self) -> Any:
        import cv2

        w, h = (int(v) for v in self.window)
        cell, block = int(self.cell), int(self.block)
        if cell < 1 or block < 1 or self.stride < 1 or self.bins < 1:
            raise ConfigError(f"cell, block, stride and bins must be >= 1; got {cell}, {block}, {self.stride}, {self.bins}")
        if w % cell or h % cell or w < cell * block or h < cell * block:
            raise ConfigError(f"window {self.window} must be a multiple of cell={cell} and hold a block of {block} cells")
        return cv2.HOGDescriptor(
            (w, h), (cell * block, cell * block), (cell * self.stride, cell * self.stride), (cell, cell), self.bins
        )

    def extractor_config(self) -> JSONObject:
        self._descriptor()  # validates
        return {
            "extractor": "hog",
            "window": [int(v) for v in self.window],
            "cell": self.cell,
            "block": self.block,
            "stride": self.stride,
            "bins": self.bins,
            "dtype": self.dtype,
            "feature_code_version": FEATURE_CODE_VERSION,
        }

    def feature_taps(self) -> tuple[str, ...]:
        return ("hog",)

    def feature_dims(self) -> dict[str, int]:
        return {"hog": int(self._descriptor().getDescriptorSize())}

    def image_loader(self) -> Callable[[SourceData, str], np.ndarray]:
        size = (int(self.window[0]), int(self.window[1]))
        max_pixels = self.max_pixels
        descriptor = self._descriptor()  # compute() is const: one object serves every decode thread

        def load(data: SourceData, name: str) -> np.ndarray:
            image = data if isinstance(data, np.ndarray) else decode_image(data, name, max_pixels=max_pixels)
            return descriptor.compute(to_gray(image, size=size)).ravel()

        return load

    def compute_batch(self, items: list[np.ndarray]) -> dict[str, np.ndarray]:
        return {"hog": np.stack(items).astype(np.float32)}

    def fit(self, X: ImageInput | None = None, y: ArrayLike | None = None) -> HOGFeatures:
        """Validate the parameters; learns nothing."""
        self.extractor_config()
        self.n_features_out_ = self.feature_dims()["hog"]
        return self

    def get_feature_names_out(self, input_features: ArrayLike | None = None) -> np.ndarray:
        return np.asarray([f"hog_{i}" for i in range(self.feature_dims()["hog"])], dtype=object)
