"""Joint HSV colour histogram: the cheap, standard colour baseline (e.g. on flowers)."""

from __future__ import annotations

import os
from collections.abc import Callable
from numbers import Integral

import numpy as np
from sklearn.utils._param_validation import Interval

from cnnfeat.exceptions import ConfigError
from cnnfeat.extractors._base import COMMON_CONSTRAINTS, CachedImageFeatures
from cnnfeat.hints import ArrayLike, ImageInput, JSONObject, SourceData
from cnnfeat.images import DEFAULT_MAX_PIXELS, decode_image
from cnnfeat.store import FEATURE_CODE_VERSION

__all__ = ["ColorHistogram"]


class ColorHistogram(CachedImageFeatures):
    """L1-normalised joint histogram over hue, saturation and value; needs no ``fit``.

    Parameters
    ----------
    bins : (int, int, int)
        Bins for hue, saturation and value.
    max_side : int
        Images are shrunk to at most this side first (a histogram needs no more).
    batch_size, dtype, cache, on_error, heal, max_pixels, n_jobs
        As in :class:`cnnfeat.CNNFeatures`.
    """

    _parameter_constraints: dict[str, list[object]] = {  # noqa: RUF012 (scikit-learn's own convention)
        **COMMON_CONSTRAINTS,
        "bins": [tuple, list],
        "max_side": [Interval(Integral, 8, None, closed="left")],
    }

    def __init__(
        self,
        *,
        bins: tuple[int, int, int] = (8, 8, 8),
        max_side: int = 256,
        batch_size: int = 64,
        dtype: str = "float32",
        cache: str | os.PathLike[str] | None = None,
        on_error: str = "fail",
        heal: bool = True,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        n_jobs: int | None = None,
    ) -> None:
        self.bins = bins
        self.max_side = max_side
        self.batch_size = batch_size
        self.dtype = dtype
        self.cache = cache
        self.on_error = on_error
        self.heal = heal
        self.max_pixels = max_pixels
        self.n_jobs = n_jobs

    def _bins(self) -> tuple[int, int, int]:
        bins = tuple(int(b) for b in self.bins)
        if len(bins) != 3 or min(bins) < 1:
            raise ConfigError(f"bins must be three positive integers (hue, saturation, value); got {self.bins!r}")
        return bins

    def extractor_config(self) -> JSONObject:
        return {
            "extractor": "hsv_histogram",
            "bins": list(self._bins()),
            "max_side": self.max_side,
            "dtype": self.dtype,
            "feature_code_version": FEATURE_CODE_VERSION,
        }

    def feature_taps(self) -> tuple[str, ...]:
        return ("hsv",)

    def feature_dims(self) -> dict[str, int]:
        return {"hsv": int(np.prod(self._bins()))}

    def image_loader(self) -> Callable[[SourceData, str], np.ndarray]:
        import cv2

        bins, max_side, max_pixels = self._bins(), int(self.max_side), self.max_pixels

        def load(data: SourceData, name: str) -> np.ndarray:
            rgb = data if isinstance(data, np.ndarray) else decode_image(data, name, max_pixels=max_pixels)
            if rgb.ndim == 2:
                rgb = np.repeat(rgb[..., None], 3, axis=2)
            rgb = np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)
            h, w = rgb.shape[:2]
            if max(h, w) > max_side:
                scale = max_side / max(h, w)
                rgb = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=cv2.INTER_AREA)
            hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)  # H in 0..179, S and V in 0..255
            hist = cv2.calcHist([hsv], [0, 1, 2], None, list(bins), [0, 180, 0, 256, 0, 256]).ravel()
            return hist / max(hist.sum(), 1.0)

        return load

    def compute_batch(self, items: list[np.ndarray]) -> dict[str, np.ndarray]:
        return {"hsv": np.stack(items).astype(np.float32)}

    def fit(self, X: ImageInput | None = None, y: ArrayLike | None = None) -> ColorHistogram:
        """Validate the parameters; learns nothing."""
        self.n_features_out_ = self.feature_dims()["hsv"]
        return self

    def get_feature_names_out(self, input_features: ArrayLike | None = None) -> np.ndarray:
        h, s, v = self._bins()
        return np.asarray([f"hsv_{i}_{j}_{k}" for i in range(h) for j in range(s) for k in range(v)], dtype=object)
