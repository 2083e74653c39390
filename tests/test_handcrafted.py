"""HOG, HSV histograms and SIFT bag of words on synthetic images whose answer is known."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnfeat.exceptions import ConfigError
from cnnfeat.extractors.color import ColorHistogram
from cnnfeat.extractors.hog import HOGFeatures
from cnnfeat.extractors.sift_bovw import SIFTBoVW, _octave_of, dense_sift, pyramid_histogram


def _stripes(vertical: bool, size: int = 64) -> np.ndarray:
    a = np.zeros((size, size, 3), np.uint8)
    if vertical:
        a[:, ::8] = 255
    else:
        a[::8, :] = 255
    return a


def test_hog_sees_orientation() -> None:
    X = HOGFeatures(window=(64, 64)).transform(np.stack([_stripes(True), _stripes(False), _stripes(True)]))
    assert X.shape == (3, 1764)
    assert np.allclose(X[0], X[2]) and not np.allclose(X[0], X[1], atol=0.05)


def test_hog_validates_geometry() -> None:
    with pytest.raises(ConfigError, match="multiple of cell"):
        HOGFeatures(window=(30, 30)).fit()


def test_color_histogram_sums_to_one_and_finds_the_colour() -> None:
    red = np.zeros((20, 20, 3), np.uint8)
    red[..., 0] = 255
    X = ColorHistogram(bins=(6, 2, 2)).transform(red[None])
    assert X.shape == (1, 24) and X.sum() == pytest.approx(1.0)
    assert X[0].argmax() == 3  # hue bin 0, saturation high, value high


def test_dense_sift_grid_and_octaves() -> None:
    gray = (np.random.default_rng(0).random((64, 96)) * 255).astype(np.uint8)
    d, p = dense_sift(gray, step=8, patch_sizes=(16,))
    assert d.shape == (7 * 11, 128) and p.shape == (77, 2)
    assert _octave_of(16) & 255 == 2 and (_octave_of(16) >> 8) == 1  # as SIFT's detector codes a size-16 keypoint


@pytest.mark.parametrize("patch", [16, 32])
def test_a_dense_sift_descriptor_sees_its_patch_and_nothing_beyond(patch: int) -> None:
    """Lazebnik's 16x16 patch: a dot inside the patch changes the descriptor, one well outside does not."""

    def descriptor_with_dot(offset: int) -> np.ndarray:
        gray = np.zeros((129, 129), np.uint8)
        gray[63:66, 64 + offset - 1 : 64 + offset + 2] = 255
        d, p = dense_sift(gray, step=64 - patch // 2, patch_sizes=(patch,))
        return d[np.argmin(np.abs(p - 64).sum(1))] if len(d) else np.zeros(128)

    gray = np.zeros((129, 129), np.uint8)
    _, positions = dense_sift(gray, step=64 - patch // 2, patch_sizes=(patch,))
    assert [patch // 2, patch // 2] in positions.tolist()
    assert descriptor_with_dot(patch // 4).sum() > 0
    # cells interpolate into their neighbours and the dot has edges: "outside" starts a little beyond patch / 2
    assert descriptor_with_dot(patch * 5 // 4 + 4).sum() == 0  # a keypoint of size=patch reached 4x further


def test_pyramid_weights_follow_lazebnik() -> None:
    weights = np.eye(2)[[0, 1, 1, 1]]  # 4 descriptors, 2 words
    positions = np.array([[1, 1], [9, 1], [1, 9], [9, 9]], float)
    hist = pyramid_histogram(weights, positions, (10, 10), levels=2)
    assert hist.shape == (2 * (1 + 4 + 16),)
    np.testing.assert_allclose(hist[:2], np.array([1, 3]) / 4 * 0.25)  # level 0 weight 1/4 of L=2
    assert hist[2:10].sum() == pytest.approx(0.25) and hist[10:].sum() == pytest.approx(0.5)


def test_sift_bovw_learns_a_codebook_that_separates_textures(tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    paths, labels = [], []
    for k in range(12):
        img = _stripes(k % 2 == 0, 96)
        img = np.clip(img.astype(int) + rng.normal(0, 20, img.shape), 0, 255).astype(np.uint8)
        path = tmp_path / f"{k}.png"
        Image.fromarray(img).save(path)
        paths.append(str(path))
        labels.append(k % 2)
    bow = SIFTBoVW(n_words=16, pyramid_levels=1, step=8).fit(paths)
    assert bow.codebook_.shape == (16, 128)
    X = bow.transform(paths)
    assert X.shape == (12, 16 * 5) and np.allclose(X.sum(1), 1, atol=1e-5)
    from sklearn.linear_model import LogisticRegression

    assert LogisticRegression(max_iter=1000).fit(X[:8], labels[:8]).score(X[8:], labels[8:]) == 1.0


def test_sift_bovw_cache_is_keyed_by_codebook(tmp_path: Path, image_paths: list[str]) -> None:
    a = SIFTBoVW(n_words=8, step=6, cache=tmp_path, random_state=0).fit(image_paths)
    b = SIFTBoVW(n_words=8, step=6, cache=tmp_path, random_state=1).fit(image_paths)
    assert a.store_path() != b.store_path()
    a.transform(image_paths)
    a.transform(image_paths)
    assert a.last_report_.n_cached == len(image_paths)


def test_sift_bovw_too_few_descriptors_is_a_clear_error(tmp_path: Path) -> None:
    tiny = np.zeros((2, 20, 20, 3), np.uint8)
    with pytest.raises(ConfigError, match="fewer than n_words"):
        SIFTBoVW(n_words=500).fit(tiny)
