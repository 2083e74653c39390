"""FineTunedCNN: it learns, keeps frozen layers and BatchNorm statistics as they were, resumes exactly, persists."""

from __future__ import annotations

import json
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError

from cnnfeat.exceptions import ConfigError, UnknownLayerError

pytestmark = pytest.mark.slow

COLOURS = ((200, 40, 40), (40, 190, 40), (40, 40, 200))


def colour_classes(root: Path, per_class: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """Noisy images whose class is their hue: separable, but only by learning."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    paths, labels = [], []
    for c, colour in enumerate(COLOURS):
        for i in range(per_class):
            path = root / f"class{c}" / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            pixels = np.clip(np.array(colour) + rng.normal(0, 40, (36 + i % 5, 44, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(path)
            paths.append(str(path))
            labels.append(f"class{c}")
    return paths, labels


def tiny_finetuned(**params: object):
    from cnnfeat import FineTunedCNN

    defaults: dict[str, object] = {"backbone": "tiny_test", "weights": None, "learning_rate": 0.05, "epochs": 12}
    return FineTunedCNN(**(defaults | params))


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[str]]:
    root = tmp_path_factory.mktemp("colours")
    train, train_labels = colour_classes(root / "train", 16)
    test, test_labels = colour_classes(root / "test", 8, seed=1)
    return {"train": train, "train_labels": train_labels, "test": test, "test_labels": test_labels}


@pytest.mark.parametrize(
    "params",
    [
        {"trainable": "head"},
        {"trainable": "top1", "head": "mlp", "augment": "flip+crop", "fine_tune_epochs": 4},
        {"trainable": "all", "truncate_at": "block2_pool", "augment": "strong", "fine_tune_epochs": 4},
    ],
    ids=["head-on-cached-features", "top1-mlp-flip+crop", "truncated-all-strong"],
)
def test_it_learns_a_separable_set_far_above_chance(data: dict, params: dict, tmp_path: Path) -> None:
    clf = tiny_finetuned(cache=tmp_path / "features", **params).fit(data["train"], data["train_labels"])
    assert clf.score(data["test"], data["test_labels"]) > 0.9  # chance is 1/3
    assert clf.training_path_ == {"head": "features", "top1": "images", "all": "images"}[params["trainable"]]  # augmented
    stages = ["head"] + (["fine_tune"] if params["trainable"] != "head" else [])
    assert list(clf.history_) == stages and all(len(clf.history_[s]["val_loss"]) == clf.epochs_run_[s] for s in stages)
    if "fine_tune" in stages:
        assert clf.learning_rates_ == {"head": 0.05, "fine_tune": pytest.approx(0.005)}  # 10x lower, as the guide says
    proba = clf.predict_proba(data["test"])
    assert proba.shape == (24, 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)


@pytest.mark.parametrize("augment", ["none", "flip+crop"], ids=["maps", "images"])
def test_frozen_layers_and_every_batchnorm_statistic_stay_as_they_were(data: dict, augment: str) -> None:
    from cnnfeat.backbones import get_backbone, make_base

    clf = tiny_finetuned(trainable="top1", augment=augment, epochs=3, fine_tune_epochs=3).fit(data["train"], data["train_labels"])
    # without augmentation the frozen front's maps come from the feature cache; the model holds block3 on
    assert clf.training_path_ == {"none": "maps", "flip+crop": "images"}[augment]
    fresh, _ = make_base(get_backbone("tiny_test"), False, None, 0)
    trained = {layer.name: layer for layer in clf.model_._flatten_layers()}
    held = [layer for layer in fresh.layers if layer.name in trained and layer.weights]
    assert {layer.name for layer in held} >= {"block3_conv", "block3_bn"}
    for layer in held:
        after = trained[layer.name]
        if "_bn" in layer.name:  # moving mean and variance: ImageNet's (here: the seeded ones), untouched
            np.testing.assert_array_equal(after.moving_mean.numpy(), layer.moving_mean.numpy())
            np.testing.assert_array_equal(after.moving_variance.numpy(), layer.moving_variance.numpy())
        if layer.name.startswith(("block1_", "block2_")):  # frozen: everything, gamma and beta included
            for before, now in zip(layer.get_weights(), after.get_weights()):
                np.testing.assert_array_equal(now, before)
    kernel = fresh.get_layer("block3_conv").get_weights()[0]
    assert not np.allclose(trained["block3_conv"].get_weights()[0], kernel)  # top1 = block3 was trained


def test_estimator_contract_clone_pickle_save_load(data: dict, tmp_path: Path) -> None:
    from cnnfeat import FineTunedCNN

    clf = tiny_finetuned(trainable="top1", epochs=2, fine_tune_epochs=1)
    assert clone(clf).get_params() == clf.get_params()
    with pytest.raises(NotFittedError):
        clf.predict(data["test"])
    clf.fit(data["train"], data["train_labels"])
    expected = clf.predict_proba(data["test"])

    restored = pickle.loads(pickle.dumps(clf))  # the Keras model travels in its own format
    np.testing.assert_allclose(restored.predict_proba(data["test"]), expected, rtol=1e-6, atol=1e-7)
    assert "model_" not in pickle.loads(pickle.dumps(clf)).__dict__  # rebuilt lazily, not unpickled

    saved = clf.save(tmp_path / "colours.cnnfeat")
    loaded = FineTunedCNN.load(saved, classes=["class0", "class1", "class2"])
    np.testing.assert_allclose(loaded.predict_proba(data["test"]), expected, rtol=1e-6, atol=1e-7)
    assert loaded.get_params() == clf.get_params() and loaded.epochs_run_ == clf.epochs_run_
    with pytest.raises(ConfigError, match="fitted on classes"):
        FineTunedCNN.load(saved, classes=["class0", "class1", "dog"])
    (tmp_path / "junk.cnnfeat").write_bytes(b"not a zip")
    with pytest.raises(ConfigError, match=r"junk\.cnnfeat: not a classifier"):
        FineTunedCNN.load(tmp_path / "junk.cnnfeat")


def test_bad_parameters_are_clear_errors(data: dict) -> None:
    with pytest.raises(ConfigError, match="trainable must be"):
        tiny_finetuned(trainable="top0").fit(data["train"], data["train_labels"])
    with pytest.raises(UnknownLayerError, match="no layer 'block9_pool'"):
        tiny_finetuned(truncate_at="block9_pool", epochs=1).fit(data["train"], data["train_labels"])
    with pytest.raises(ConfigError, match="at least 2 classes"):
        tiny_finetuned().fit(data["train"][:3], ["a"] * 3)


_RUN = """
import sys
sys.path.insert(0, {root!r})
from tests.test_finetune import colour_classes, tiny_finetuned
from pathlib import Path
paths, labels = colour_classes(Path({images!r}), 16)
tiny_finetuned(trainable="top1", epochs=6, fine_tune_epochs=4, dropout=0.3, checkpoint_dir={checkpoints!r}).fit(paths, labels)
"""


def test_a_training_killed_mid_run_resumes_to_the_uninterrupted_model(tmp_path: Path) -> None:
    images, checkpoints = tmp_path / "images", tmp_path / "checkpoints"
    paths, labels = colour_classes(images, 16)
    script = _RUN.format(root=str(Path(__file__).resolve().parents[1]), images=str(images), checkpoints=str(checkpoints))
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while time.time() < deadline and proc.poll() is None:
        states = list(checkpoints.glob("*/head.json"))
        if states and json.loads(states[0].read_text())["epoch"] >= 3:
            break
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    _, err = proc.communicate()
    assert proc.returncode == -signal.SIGKILL, f"the training ended before it could be killed: {err[-2000:]}"
    (state,) = checkpoints.glob("*/head.json")
    assert 3 <= json.loads(state.read_text())["epoch"] < 6

    resumed = tiny_finetuned(trainable="top1", epochs=6, fine_tune_epochs=4, dropout=0.3, checkpoint_dir=checkpoints)
    resumed.fit(paths, labels)
    uninterrupted = tiny_finetuned(trainable="top1", epochs=6, fine_tune_epochs=4, dropout=0.3).fit(paths, labels)
    assert resumed.epochs_run_ == uninterrupted.epochs_run_ == {"head": 6, "fine_tune": 4}
    assert resumed.history_["head"]["loss"] == pytest.approx(uninterrupted.history_["head"]["loss"], rel=1e-5)
    for a, b in zip(resumed.model_.get_weights(), uninterrupted.model_.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


def test_benchmark_runs_finetune_methods_next_to_the_probe(tmp_path: Path) -> None:
    from cnnfeat.cli import main
    from cnnfeat.methods import Method

    colour_classes(tmp_path / "colours", 10)
    out = tmp_path / "out"
    finetune = "finetune:tiny_test/top1?weights=none&epochs=6&fine_tune_epochs=2&learning_rate=0.05"
    argv = ["benchmark", "--data", str(tmp_path / "colours"), "--methods", "cnn:tiny_test/pool?weights=none", finetune]
    assert main([*argv, "--protocol", "kfold:2", "--probes", "logreg", "knn", "--out", str(out), "--no-progress"]) == 0
    records = [json.loads(p.read_text()) for p in (out / "records").glob("*.json")]
    tuned = [r for r in records if r["method"] == finetune]
    assert len(records) == 2 * 2 + 2 and len(tuned) == 2  # the probes multiply the cnn: method, not the finetune: one
    for r in tuned:
        assert r["probe"] == "finetune" and r["row"] == finetune and r["C"] is None
        assert r["training"]["epochs_run"]["fine_tune"] == 2 and r["training"]["learning_rates"]["fine_tune"] == pytest.approx(
            0.005
        )
        assert len(r["training"]["history"]["head"]["loss"]) == r["training"]["epochs_run"]["head"] == 6
        assert "val_loss" not in r["training"]["history"]["head"]  # 5 images per class: all of them train
        assert r["features"] == {"classifier": Method.parse(finetune).params}
    assert f"| {finetune} |" in (out / "table.md").read_text()
    assert (out / "training_colours.png").stat().st_size > 5000


def test_two_images_per_class_still_train_every_class_for_enough_steps(data: dict) -> None:
    """No validation split takes a class's only examples, and an epoch makes min_steps_per_epoch updates."""
    few = [data["train"][i] for i in (0, 1, 16, 17, 32, 33)]
    labels = [data["train_labels"][i] for i in (0, 1, 16, 17, 32, 33)]
    clf = tiny_finetuned(trainable="head", augment="flip+crop", epochs=4).fit(few, labels)
    assert "val_loss" not in clf.history_["head"] and clf.epochs_run_ == {"head": 4}
    assert clf.score(data["test"], data["test_labels"]) > 0.8  # chance is 1/3
