"""The registry, preprocessing modes, taps and the feature-map rule."""

from __future__ import annotations

import numpy as np
import pytest

import cnnfeat
from cnnfeat.backbones import PREPROCESSING_MODES, build_backbone, get_backbone, list_backbones, preprocess
from cnnfeat.exceptions import ConfigError, UnknownBackboneError, UnknownLayerError, WeightsError

EXPECTED = {
    "vgg16", "vgg19", "resnet50", "resnet50v2", "resnet101", "inceptionv3", "xception", "mobilenet",
    "mobilenetv2", "mobilenetv3small", "mobilenetv3large", "densenet121", "efficientnetb0",
    "efficientnetb1", "efficientnetb2", "efficientnetb3", "convnext_tiny",
    "efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "tiny_test",
}  # fmt: skip


def test_registry_covers_the_keras_applications() -> None:
    assert set(cnnfeat.list_backbones()) >= EXPECTED
    assert get_backbone("EfficientNet-Lite0").name == "efficientnet_lite0"
    with pytest.raises(UnknownBackboneError, match=r"the registered ones are .*vgg16"):
        get_backbone("alexnet")
    with pytest.raises(UnknownBackboneError, match="did you mean 'resnet50'"):
        get_backbone("resnet5")


def test_specs_carry_their_data_config() -> None:
    assert get_backbone("vgg16").preprocessing == "caffe"
    assert get_backbone("densenet121").preprocessing == "torch"
    assert get_backbone("xception").input_size == 299
    lite = get_backbone("efficientnet_lite0")
    assert (lite.preprocessing, lite.interpolation, lite.imagenet_weights) == ("lite", "bicubic", "package")
    assert lite.crop_pct == pytest.approx(224 / 256)
    assert "builder" not in lite.data_config()


@pytest.mark.parametrize(
    ("mode", "module"),
    [("caffe", "vgg16"), ("tf", "mobilenet_v2"), ("torch", "densenet")],
)
@pytest.mark.slow
def test_preprocess_matches_keras_and_does_not_mutate(mode: str, module: str) -> None:
    import importlib

    keras_pre = importlib.import_module(f"keras.applications.{module}").preprocess_input
    x = np.random.default_rng(0).uniform(0, 255, (2, 5, 5, 3)).astype(np.float32)
    before = x.copy()
    ours = preprocess(x, mode)
    np.testing.assert_array_equal(x, before)  # Keras' version would have changed x in place
    np.testing.assert_allclose(ours, keras_pre(x.copy()), rtol=1e-5, atol=1e-4)


def test_preprocess_lite_and_unknown_mode() -> None:
    x = np.array([[[0, 127, 255]]], np.uint8)
    np.testing.assert_allclose(preprocess(x, "lite"), [[[-127 / 128, 0, 1]]])
    assert set(PREPROCESSING_MODES) == {"caffe", "tf", "torch", "lite", "none"}
    with pytest.raises(ConfigError):
        preprocess(x, "bgr")


def test_preprocess_in_graph_equals_numpy() -> None:
    """The model applies the same preprocessing as the NumPy function."""
    import keras

    x = np.random.default_rng(1).integers(0, 256, (3, 4, 4, 3)).astype(np.uint8)
    for mode in PREPROCESSING_MODES:
        inp = keras.Input((4, 4, 3))
        model = keras.Model(inp, preprocess(inp, mode))
        np.testing.assert_allclose(model.predict_on_batch(x), preprocess(x, mode), rtol=1e-5, atol=1e-4)


def test_tiny_backbone_taps_in_one_pass() -> None:
    built = build_backbone("tiny_test", weights=None, taps=("pool", "pool_max", "block2_pool", "predictions"))
    assert built.feature_dims() == {"pool": 32, "pool_max": 32, "block2_pool": 16, "predictions": 10}
    x = np.random.default_rng(0).integers(0, 256, (3, 32, 32, 3)).astype(np.uint8)
    pool, pool_max, block2, probs = built.model.predict_on_batch(x)
    assert (pool_max >= pool - 1e-6).all()
    np.testing.assert_allclose(probs.sum(axis=1), 1, rtol=1e-5)
    assert block2.dtype == np.float32 and not np.allclose(block2[0], block2[1])


def test_random_weights_are_seeded_and_reproducible() -> None:
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    a = build_backbone("tiny_test", weights=None, seed=1).model.predict_on_batch(x)
    b = build_backbone("tiny_test", weights=None, seed=1).model.predict_on_batch(x)
    c = build_backbone("tiny_test", weights=None, seed=2).model.predict_on_batch(x)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)


def test_unknown_layer_and_bad_options() -> None:
    with pytest.raises(UnknownLayerError, match="list_layers"):
        build_backbone("tiny_test", weights=None, taps=("fc7",))
    with pytest.raises(ConfigError, match="pooling"):
        build_backbone("tiny_test", weights=None, pooling="sum")
    with pytest.raises(WeightsError, match="not found"):
        build_backbone("tiny_test", weights="/nonexistent/w.weights.h5")
    with pytest.raises(WeightsError, match="no ImageNet weights"):
        build_backbone("tiny_test", weights="imagenet")


def test_list_layers_is_stable_and_starts_with_pool_taps() -> None:
    layers = cnnfeat.list_layers("tiny_test")
    assert layers[:2] == ["pool", "pool_max"] and "block3_conv" in layers and "predictions" in layers
    assert cnnfeat.list_layers("tiny_test") == layers
    shapes = dict(cnnfeat.list_layers("tiny_test", with_shapes=True))
    assert shapes["block2_pool"] == (None, 8, 8, 16)


@pytest.mark.parametrize("name", ["mobilenetv3small", "efficientnetb0"])
@pytest.mark.slow
def test_pool_is_the_last_conv_map_even_with_the_top_loaded(name: str) -> None:
    """Squeeze-excite blocks have global pools of their own; `pool` must not pick one of them."""
    spec = get_backbone(name)
    with_top = build_backbone(name, weights=None, taps=("pool", spec.top_layers[-1]))
    without = build_backbone(name, weights=None, taps=("pool",))
    assert with_top.feature_dims()["pool"] == without.feature_dims()["pool"] == spec.feature_dim
    x = np.random.default_rng(0).integers(0, 256, (2, 224, 224, 3)).astype(np.uint8)
    np.testing.assert_allclose(with_top.model.predict_on_batch(x)[0], without.model.predict_on_batch(x), rtol=1e-4, atol=1e-4)


def test_local_weights_file_round_trip(tmp_path) -> None:
    """weights=<file> loads exactly those weights (and names the file when it cannot)."""
    trained = build_backbone("tiny_test", weights=None, seed=7)
    # the backbone itself, wrapped inside the feature model
    inner = next(layer for layer in trained.model.layers if type(layer).__name__ in ("Functional", "Model"))
    saved = tmp_path / "tiny.weights.h5"
    inner.save_weights(saved)
    loaded = build_backbone("tiny_test", weights=saved)
    x = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)).astype(np.uint8)
    np.testing.assert_array_equal(loaded.model.predict_on_batch(x), trained.model.predict_on_batch(x))
    assert loaded.weights_id.startswith("file:sha256=")
    wrong = tmp_path / "wrong.weights.h5"
    build_backbone("tiny_test", weights=None, taps=("predictions",)).model.save_weights(wrong)
    with pytest.raises(WeightsError, match=r"wrong\.weights\.h5"):
        build_backbone("tiny_test", weights=wrong)


@pytest.mark.slow
@pytest.mark.parametrize("name", list_backbones())
def test_every_backbone_has_ordered_blocks_for_fine_tuning(name: str) -> None:
    """``top<k>`` needs block boundaries: each registered backbone's pattern finds several, in layer order."""
    from cnnfeat.backbones import block_ends, get_backbone, make_base

    base, _ = make_base(get_backbone(name), False, None, 0)
    ends = block_ends(base, get_backbone(name))
    names = [layer.name for layer in base.layers]
    positions = [names.index(end) for end in ends]
    assert len(ends) >= 3 and positions == sorted(positions) and len(set(ends)) == len(ends)
