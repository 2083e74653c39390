"""Fine-tuning's images: decoded once as uint8 squares, then each epoch's random crops and flips."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

import numpy as np

from cnnfeat.backbones import get_backbone
from cnnfeat.extractors.sources import as_sources, default_workers, read_source, source_name
from cnnfeat.hints import ImageInput, ImageSource
from cnnfeat.images import ImageTransform

if TYPE_CHECKING:
    from cnnfeat.finetune.estimator import FineTunedCNN

__all__ = ["AUGMENTATIONS", "augment_batch", "image_transform", "load_images", "network_inputs"]

#: ``flip+crop``: a random crop of the network's size from the image resized as for the centre
#: crop, and a random horizontal flip; ``strong``: a random resized crop (35-100 % of the area,
#: aspect 3/4-4/3) and a flip
AUGMENTATIONS = ("none", "flip+crop", "strong")


def image_transform(est: FineTunedCNN, training: bool) -> ImageTransform:
    """The centre crop of ``CNNFeatures``; for augmentation, the image before that crop (a square)."""
    centre = est._feature_extractor().image_transform()
    if training and est.augment != "none":
        return dataclasses.replace(centre, size=centre.resize_to, crop_pct=1.0)
    return centre


def load_images(est: FineTunedCNN, X: ImageInput, training: bool) -> np.ndarray:
    """Every image decoded and resized once: uint8 ``(n, s, s, 3)``; a bad image raises, naming its file."""
    from cnnfeat.exceptions import ImageError
    from cnnfeat.images import map_ordered

    sources = as_sources(X)
    transform = image_transform(est, training)
    out = np.empty((len(sources), transform.size, transform.size, 3), np.uint8)

    def load(indexed: tuple[int, ImageSource]) -> np.ndarray:
        index, source = indexed
        return transform.apply(read_source(source)[0], source_name(source, index))[0]

    workers = est.n_jobs or default_workers()
    for (index, source), image, error in map_ordered(load, enumerate(sources), workers=workers, max_ahead=4 * workers):
        if error is not None:
            raise error if isinstance(error, ImageError) else ImageError(source_name(source, index), str(error))
        if image is not None:
            out[index] = image
    return out


def network_inputs(est: FineTunedCNN, images: np.ndarray, rng: np.random.Generator, *, training: bool, crops: bool) -> np.ndarray:
    """The network's inputs: random crops and flips of the stored squares, or their centre crops.

    Without ``crops`` the data are the inputs already (features, maps, or centre crops).
    """
    size = get_backbone(est.backbone).input_size
    if not crops:
        return images
    if not training:
        start = (images.shape[1] - size) // 2
        return images[:, start : start + size, start : start + size]
    return augment_batch(images, size, est.augment, rng)


def augment_batch(images: np.ndarray, size: int, augment: str, rng: np.random.Generator) -> np.ndarray:
    """Random crops (``flip+crop``: of the network's size; ``strong``: resized, 35-100 % of the area) and flips."""
    from cnnfeat.images import _cv2

    n, side = len(images), images.shape[1]
    out = np.empty((n, size, size, 3), np.uint8)
    flips = rng.random(n) < 0.5
    for i in range(n):
        if augment == "strong":
            area = rng.uniform(0.35, 1.0) * side * side
            aspect = np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
            w = int(min(side, round(np.sqrt(area * aspect))))
            h = int(min(side, round(np.sqrt(area / aspect))))
            top, left = rng.integers(0, side - h + 1), rng.integers(0, side - w + 1)
            crop = _cv2().resize(images[i, top : top + h, left : left + w], (size, size), interpolation=_cv2().INTER_AREA)
        else:
            top, left = rng.integers(0, side - size + 1, 2)
            crop = images[i, top : top + size, left : left + size]
        out[i] = crop[:, ::-1] if flips[i] else crop
    return out
