"""EfficientNet-Lite in Keras with the official weights: conversion proven three ways."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnfeat import CNNFeatures
from cnnfeat.backbones import efficientnet_lite as architecture
from cnnfeat.weights import efficientnet_lite as lite

# Top-5 (class, probability) of the reference PyTorch implementation (efficientnet-lite-pytorch)
# with the same weight files, on np.random.default_rng(0).uniform(-1, 1, (1, r, r, 3)).
# Made by tests/reference/make_lite_reference.py.
TORCH_REFERENCE = {
    "efficientnet_lite0": [(21, 0.255331), (92, 0.055767), (23, 0.054971), (128, 0.052935), (22, 0.052732)],
    "efficientnet_lite2": [(539, 0.07877), (549, 0.041138), (22, 0.034459), (92, 0.034367), (892, 0.031486)],
}


pytestmark = pytest.mark.slow  # real ImageNet weights, 224-px networks


@pytest.mark.parametrize("variant", sorted(TORCH_REFERENCE))
def test_matches_the_pytorch_reference(variant: str, tmp_path: Path) -> None:
    model = architecture.build_efficientnet_lite(variant)
    lite.load_lite_weights(model, variant, lite.packaged_weights_path(variant), tmp_path)
    r = architecture.LITE_VARIANTS[variant][2]
    x = np.random.default_rng(0).uniform(-1, 1, (1, r, r, 3)).astype("float32")
    p = model.predict_on_batch(x)[0]
    top = np.argsort(p)[::-1][:5]
    assert [int(i) for i in top] == [c for c, _ in TORCH_REFERENCE[variant]]
    np.testing.assert_allclose(p[top], [v for _, v in TORCH_REFERENCE[variant]], atol=2e-5)


def test_sample_images_classify_correctly() -> None:
    """scikit-learn's china.jpg is a palace (698) and flower.jpg a daisy (985), through the full pipeline."""
    from cnnfeat.inputs import sample_images

    samples = sample_images()
    probs = CNNFeatures(layers="predictions").transform(samples.paths)
    top1 = dict(zip(samples.labels, probs.argmax(axis=1)))
    assert top1 == {"china": 698, "flower": 985}


def test_structure_follows_the_lite_rules() -> None:
    blocks0 = architecture.lite_blocks(1.0, 1.0)
    blocks2 = architecture.lite_blocks(1.1, 1.2)
    assert len(blocks0) == 16 and len(blocks2) == 21  # first/last stage repeats are not scaled
    assert blocks2[-1].out_filters == 352 and blocks2[0].in_filters == 32
    model = architecture.build_efficientnet_lite("efficientnet_lite0", include_top=False)
    kinds = {type(layer).__name__ for layer in model.layers}
    assert "Multiply" not in kinds  # no squeeze-and-excitation
    relus = [layer for layer in model.layers if type(layer).__name__ == "ReLU"]
    assert relus and all(float(layer.max_value) == 6.0 for layer in relus)
    assert all(layer.epsilon == 1e-3 for layer in model.layers if type(layer).__name__ == "BatchNormalization")


def test_converted_weights_are_cached_and_reused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    source = lite.packaged_weights_path("efficientnet_lite0")
    first = architecture.build_efficientnet_lite("efficientnet_lite0", include_top=False)
    digest = lite.load_lite_weights(first, "efficientnet_lite0", source, tmp_path)
    cached = list(tmp_path.glob("efficientnet_lite0-*-notop.weights.h5"))
    assert len(cached) == 1 and digest[:16] in cached[0].name

    def no_conversion(*args: object) -> None:
        raise AssertionError("the .pth file was converted again instead of loading the cache")

    monkeypatch.setattr(lite, "load_state_dict", no_conversion)
    second = architecture.build_efficientnet_lite("efficientnet_lite0", include_top=False)
    lite.load_lite_weights(second, "efficientnet_lite0", source, tmp_path)
    for a, b in zip(first.weights, second.weights):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_damaged_cache_entry_is_rebuilt(tmp_path: Path) -> None:
    source = lite.packaged_weights_path("efficientnet_lite0")
    model = architecture.build_efficientnet_lite("efficientnet_lite0", include_top=False)
    digest = lite.load_lite_weights(model, "efficientnet_lite0", source, tmp_path)
    entry = tmp_path / f"efficientnet_lite0-{digest[:16]}-notop.weights.h5"
    entry.write_bytes(b"not hdf5")
    again = architecture.build_efficientnet_lite("efficientnet_lite0", include_top=False)
    lite.load_lite_weights(again, "efficientnet_lite0", source, tmp_path)
    np.testing.assert_array_equal(np.asarray(again.weights[0]), np.asarray(model.weights[0]))
