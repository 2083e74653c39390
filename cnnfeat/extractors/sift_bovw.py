"""SIFT bag of visual words with a spatial pyramid (Csurka 2004; Lazebnik, Schmid & Ponce 2006).

This is the "SURF/SIFT bag of words" baseline of DeCAF and Razavian et al. SURF
itself is patented and not in OpenCV, so cnnfeat uses SIFT (in OpenCV's main
module since its patent expired in 2020).

Pipeline: grayscale image (shorter side capped) -> SIFT descriptors, on a dense
grid at several patch sizes (or at detected keypoints) -> nearest visual word
of a codebook learned by MiniBatchKMeans in ``fit`` (hard assignment, or soft
"kernel codebook" weights) -> word histograms over a spatial pyramid (levels
0..L, Lazebnik's level weights) -> normalised.

Examples
--------
>>> from cnnfeat.extractors.sift_bovw import SIFTBoVW
>>> bow = SIFTBoVW(n_words=200, pyramid_levels=2)
>>> bow.fit(train_paths).transform(test_paths).shape  # doctest: +SKIP
(n_test, 4200)
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable
from numbers import Integral, Real

import numpy as np
from sklearn.utils import Tags
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from cnnfeat.exceptions import ConfigError
from cnnfeat.extractors._base import COMMON_CONSTRAINTS, CachedImageFeatures
from cnnfeat.extractors.sources import as_sources, default_workers, source_name
from cnnfeat.hints import ArrayLike, ImageInput, JSONObject, SourceData
from cnnfeat.images import DEFAULT_MAX_PIXELS, decode_image, map_ordered, read_image_file, to_gray
from cnnfeat.store import FEATURE_CODE_VERSION

__all__ = ["SIFTBoVW", "dense_sift", "pyramid_histogram"]


#: OpenCV's SIFT descriptor spans 4 cells of 3 * size / 2 pixels: 6 * size in all
_PATCH_PER_KEYPOINT_SIZE = 6.0


def dense_sift(
    gray: np.ndarray, *, step: int = 8, patch_sizes: tuple[int, ...] = (16,), detector: str = "dense", max_keypoints: int = 1000
) -> tuple[np.ndarray, np.ndarray]:
    """SIFT descriptors of a grayscale image and their (x, y) positions.

    ``detector="dense"``: a grid with ``step`` pixels spacing, one descriptor per patch size.
    A patch size is the width in pixels of the region the 4x4 descriptor cells cover
    (Lazebnik's and VLFeat's convention: 16 = 4 px cells). OpenCV's keypoint ``size``
    means something else: its cells are ``1.5 * size`` wide, so the keypoint size is ``patch / 6``.
    ``detector="sift"``: the strongest ``max_keypoints`` keypoints of SIFT's own detector.
    Returns ``(descriptors (m, 128) float32, positions (m, 2) float32)``; m may be 0.
    """
    import cv2

    sift = cv2.SIFT_create(nfeatures=max_keypoints if detector == "sift" else 0)  # type: ignore[attr-defined]
    if detector == "sift":
        keypoints = sift.detect(gray, None)
    elif detector == "dense":
        h, w = gray.shape
        keypoints = []
        for patch in patch_sizes:
            size = patch / _PATCH_PER_KEYPOINT_SIZE
            octave = _octave_of(size)
            for y in range(patch // 2, h - patch // 2 + 1, step):
                for x in range(patch // 2, w - patch // 2 + 1, step):
                    keypoint = cv2.KeyPoint(float(x), float(y), size)
                    keypoint.octave = octave
                    keypoints.append(keypoint)
    else:
        raise ConfigError(f"detector must be 'dense' or 'sift'; got {detector!r}")
    if not keypoints:
        return np.zeros((0, 128), np.float32), np.zeros((0, 2), np.float32)
    keypoints, descriptors = sift.compute(gray, keypoints)
    if descriptors is None:
        return np.zeros((0, 128), np.float32), np.zeros((0, 2), np.float32)
    positions = np.array([kp.pt for kp in keypoints], np.float32)
    return descriptors.astype(np.float32), positions


def _octave_of(size: float, n_octave_layers: int = 3, sigma: float = 1.6) -> int:
    """SIFT's packed octave/layer code for a keypoint of diameter ``size`` (as its detector would set it).

    Without it OpenCV describes every patch on the full-resolution layer with a
    window far too wide: much slower, and at the wrong blur.
    """
    level = np.log2(size / (2 * sigma))
    octave = int(np.floor(level))
    layer = round((level - octave) * n_octave_layers)
    if layer == n_octave_layers:
        octave, layer = octave + 1, 0
    return (octave & 255) | (layer << 8)


def _assign(descriptors: np.ndarray, codebook: np.ndarray, soft_sigma: float | None) -> np.ndarray:
    """Word weights per descriptor: one-hot (hard) or Gaussian kernel-codebook weights (soft)."""
    d2 = (descriptors**2).sum(1)[:, None] - 2 * descriptors @ codebook.T + (codebook**2).sum(1)[None, :]
    if soft_sigma is None:
        weights = np.zeros_like(d2, dtype=np.float32)
        weights[np.arange(len(d2)), d2.argmin(1)] = 1.0
        return weights
    logits = -(np.maximum(d2, 0) - np.maximum(d2, 0).min(1, keepdims=True)) / (2 * soft_sigma**2)
    weights = np.exp(logits)
    return weights / weights.sum(1, keepdims=True)


def pyramid_histogram(weights: np.ndarray, positions: np.ndarray, shape: tuple[int, int], levels: int) -> np.ndarray:
    """Spatial-pyramid word histogram with Lazebnik's weights (1/2^L for level 0, 1/2^(L-l+1) above).

    Each cell's histogram is divided by the image's number of descriptors, so images with
    more descriptors do not get larger values.
    """
    n_words = weights.shape[1]
    h, w = shape
    blocks = []
    total = max(len(weights), 1)
    for level in range(levels + 1):
        cells = 2**level
        factor = 1.0 / 2**levels if level == 0 else 1.0 / 2 ** (levels - level + 1)
        hist = np.zeros((cells * cells, n_words), np.float32)
        if len(weights):
            cx = np.minimum((positions[:, 0] * cells / w).astype(int), cells - 1)
            cy = np.minimum((positions[:, 1] * cells / h).astype(int), cells - 1)
            membership = np.zeros((cells * cells, len(weights)), np.float32)
            membership[cy * cells + cx, np.arange(len(weights))] = 1.0
            hist = membership @ weights  # per-cell sums of word weights
        blocks.append(hist.ravel() * factor / total)
    return np.concatenate(blocks)


class SIFTBoVW(CachedImageFeatures):
    """SIFT bag of visual words over a spatial pyramid; learns its codebook in ``fit``.

    Parameters
    ----------
    n_words : int
        Codebook size (Lazebnik: 200-400; Nilsback/Razavian flowers: up to 4000).
    detector : {"dense", "sift"}
        Dense grid, or SIFT's own keypoint detector.
    step : int
        Grid spacing in pixels (dense).
    patch_sizes : tuple of int
        Keypoint sizes (patch scales) at every grid point (dense).
    max_keypoints : int
        Keypoints kept per image (``detector="sift"``).
    max_side : int
        Images are shrunk so that their longer side is at most this.
    assignment : {"hard", "soft"}
        Nearest word, or kernel-codebook weights with ``soft_sigma``.
    soft_sigma : float
        Width of the soft-assignment kernel, in descriptor distance units.
    pyramid_levels : int
        Levels 0..L of the spatial pyramid (0 = a plain bag of words).
    normalize : {"l1", "l2", None}
        Final normalisation of the whole vector.
    max_fit_images, max_fit_descriptors : int
        How many training images and descriptors the codebook is learned from.
    random_state : int
        Seeds image sampling and k-means.
    batch_size, dtype, cache, on_error, heal, max_pixels, n_jobs
        As in :class:`cnnfeat.CNNFeatures`. The cache is keyed by the learned codebook too.

    Attributes
    ----------
    codebook_ : ndarray of shape (n_words, 128)
    n_features_out_ : int
        ``n_words * sum(4**l for l in 0..L)``.
    """

    _parameter_constraints: dict[str, list[object]] = {  # noqa: RUF012 (scikit-learn's own convention)
        **COMMON_CONSTRAINTS,
        "n_words": [Interval(Integral, 2, 100_000, closed="both")],
        "detector": [StrOptions({"dense", "sift"})],
        "step": [Interval(Integral, 1, None, closed="left")],
        "patch_sizes": [tuple, list],
        "max_keypoints": [Interval(Integral, 1, None, closed="left")],
        "max_side": [Interval(Integral, 16, None, closed="left")],
        "assignment": [StrOptions({"hard", "soft"})],
        "soft_sigma": [Interval(Real, 0, None, closed="neither")],
        "pyramid_levels": [Interval(Integral, 0, 4, closed="both")],
        "normalize": [StrOptions({"l1", "l2"}), None],
        "max_fit_images": [Interval(Integral, 1, None, closed="left")],
        "max_fit_descriptors": [Interval(Integral, 1, None, closed="left")],
        "random_state": ["random_state"],
    }

    def __init__(
        self,
        *,
        n_words: int = 200,
        detector: str = "dense",
        step: int = 8,
        patch_sizes: tuple[int, ...] = (16,),
        max_keypoints: int = 1000,
        max_side: int = 300,
        assignment: str = "hard",
        soft_sigma: float = 100.0,
        pyramid_levels: int = 2,
        normalize: str | None = "l1",
        max_fit_images: int = 500,
        max_fit_descriptors: int = 100_000,
        random_state: int = 0,
        batch_size: int = 64,
        dtype: str = "float32",
        cache: str | os.PathLike[str] | None = None,
        on_error: str = "fail",
        heal: bool = True,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        n_jobs: int | None = None,
    ) -> None:
        self.n_words = n_words
        self.detector = detector
        self.step = step
        self.patch_sizes = patch_sizes
        self.max_keypoints = max_keypoints
        self.max_side = max_side
        self.assignment = assignment
        self.soft_sigma = soft_sigma
        self.pyramid_levels = pyramid_levels
        self.normalize = normalize
        self.max_fit_images = max_fit_images
        self.max_fit_descriptors = max_fit_descriptors
        self.random_state = random_state
        self.batch_size = batch_size
        self.dtype = dtype
        self.cache = cache
        self.on_error = on_error
        self.heal = heal
        self.max_pixels = max_pixels
        self.n_jobs = n_jobs

    def _validate(self) -> None:
        """scikit-learn's parameter constraints, and what they cannot say: patch sizes of 4 pixels or more."""
        self._validate_params()
        if not self.patch_sizes or min(self.patch_sizes) < 4:
            raise ConfigError(f"patch_sizes must be 4 pixels or more; got {self.patch_sizes}")

    def _descriptors(self, image: np.ndarray) -> tuple[np.ndarray, np.ndarray, tuple[int, int]]:
        gray = to_gray(image, max_side=int(self.max_side))
        d, p = dense_sift(
            gray,
            step=int(self.step),
            patch_sizes=tuple(int(s) for s in self.patch_sizes),
            detector=self.detector,
            max_keypoints=int(self.max_keypoints),
        )
        return d, p, gray.shape

    def _decode(self, data: SourceData, name: str) -> np.ndarray:
        return data if isinstance(data, np.ndarray) else decode_image(data, name, max_pixels=self.max_pixels)

    def fit(self, X: ImageInput, y: ArrayLike | None = None) -> SIFTBoVW:
        """Learn the visual codebook from descriptors of (a sample of) the images in ``X``."""
        from sklearn.cluster import MiniBatchKMeans

        self._validate()
        sources = as_sources(X)
        rng = np.random.default_rng(self.random_state)
        chosen = rng.permutation(len(sources))[: int(self.max_fit_images)]
        per_image = max(1, int(self.max_fit_descriptors) // max(len(chosen), 1))

        def sample(index: int) -> np.ndarray:
            source = sources[index]
            data = source if isinstance(source, np.ndarray) else read_image_file(source)[0]
            d, _, _ = self._descriptors(self._decode(data, source_name(source, index)))
            keep = np.random.default_rng([self.random_state, index]).permutation(len(d))[:per_image]
            return d[keep]

        pool = []
        samples = map_ordered(sample, chosen.tolist(), workers=self.n_jobs or default_workers(), max_ahead=64)
        with contextlib.closing(samples):
            for _, descriptors, error in samples:
                if error is not None:
                    if self.on_error == "fail":
                        raise error
                    continue
                if descriptors is not None:
                    pool.append(descriptors)
        stacked = np.concatenate(pool) if pool else np.zeros((0, 128), np.float32)
        if len(stacked) < self.n_words:
            raise ConfigError(
                f"only {len(stacked)} SIFT descriptors were found in {len(chosen)} training images; "
                f"fewer than n_words={self.n_words}. Use fewer words, a smaller step or larger images."
            )
        kmeans = MiniBatchKMeans(
            n_clusters=int(self.n_words), random_state=self.random_state, batch_size=4096, n_init=3, max_no_improvement=20
        ).fit(stacked)
        self.codebook_ = kmeans.cluster_centers_.astype(np.float32)
        self.n_fit_descriptors_ = len(stacked)
        self.n_features_out_ = self.feature_dims()["bovw"]
        return self

    def extractor_config(self) -> JSONObject:
        check_is_fitted(self, "codebook_")
        self._validate()
        return {
            "extractor": "sift_bovw",
            "codebook_sha256": hashlib.sha256(np.ascontiguousarray(self.codebook_).tobytes()).hexdigest(),
            "n_words": int(self.n_words),
            "detector": self.detector,
            "step": int(self.step),
            "patch_sizes": [int(s) for s in self.patch_sizes],
            "patch_per_keypoint_size": _PATCH_PER_KEYPOINT_SIZE,
            "max_keypoints": int(self.max_keypoints),
            "max_side": int(self.max_side),
            "assignment": self.assignment,
            "soft_sigma": float(self.soft_sigma) if self.assignment == "soft" else None,
            "pyramid_levels": int(self.pyramid_levels),
            "normalize": self.normalize,
            "dtype": self.dtype,
            "feature_code_version": FEATURE_CODE_VERSION,
        }

    def feature_taps(self) -> tuple[str, ...]:
        return ("bovw",)

    def feature_dims(self) -> dict[str, int]:
        return {"bovw": int(self.n_words) * sum(4**level for level in range(int(self.pyramid_levels) + 1))}

    def image_loader(self) -> Callable[[SourceData, str], np.ndarray]:
        check_is_fitted(self, "codebook_")
        codebook = self.codebook_
        sigma = float(self.soft_sigma) if self.assignment == "soft" else None

        def load(data: SourceData, name: str) -> np.ndarray:
            descriptors, positions, shape = self._descriptors(self._decode(data, name))
            hist = pyramid_histogram(_assign(descriptors, codebook, sigma), positions, shape, int(self.pyramid_levels))
            if self.normalize == "l2":
                hist = hist / max(np.linalg.norm(hist), 1e-12)
            elif self.normalize == "l1":
                hist = hist / max(hist.sum(), 1e-12)
            return hist.astype(np.float32)

        return load

    def compute_batch(self, items: list[np.ndarray]) -> dict[str, np.ndarray]:
        return {"bovw": np.stack(items)}

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.requires_fit = True
        return tags

    def get_feature_names_out(self, input_features: ArrayLike | None = None) -> np.ndarray:
        check_is_fitted(self, "codebook_")
        names = []
        for level in range(int(self.pyramid_levels) + 1):
            for cell in range(4**level):
                names += [f"bovw_l{level}_c{cell}_w{k}" for k in range(int(self.n_words))]
        return np.asarray(names, dtype=object)
