"""CNNFeatures: the scikit-learn contract, caching by content, error policy."""

from __future__ import annotations

import pickle
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline

from cnnfeat import CNNFeatures, extract_features
from cnnfeat.exceptions import ConfigError, ImageDecodeError, SkippedImageWarning, StoreLockedError
from cnnfeat.store import FeatureStore
from tests.support import make_image, tiny


def test_transform_shape_dtype_and_names(image_paths: list[str]) -> None:
    est = tiny(layers=["pool", "block2_pool"])
    X = est.transform(image_paths)  # no fit needed
    assert X.shape == (len(image_paths), 32 + 16) and X.dtype == np.float32
    assert np.isfinite(X).all() and X.std(axis=0).max() > 0
    names = est.fit().get_feature_names_out()
    assert len(names) == 48 and names[0] == "tiny_test_pool_0" and names[-1] == "tiny_test_block2_pool_15"
    assert est.n_features_out_ == 48 and est.feature_dims_ == {"pool": 32, "block2_pool": 16}


def test_init_only_stores_and_clone_and_pickle_round_trip(image_paths: list[str]) -> None:
    est = tiny(layers=("pool",), views="center+flip")
    assert est.get_params()["views"] == "center+flip"
    X = est.transform(image_paths[:3])
    restored = pickle.loads(pickle.dumps(est))  # the Keras model is not pickled, rebuilt on demand
    assert "_built_backbone" not in restored.__dict__
    np.testing.assert_allclose(restored.transform(image_paths[:3]), X, rtol=1e-6)
    np.testing.assert_allclose(clone(est).transform(image_paths[:3]), X, rtol=1e-6)


def test_arrays_and_paths_give_the_same_features(image_paths: list[str]) -> None:
    from PIL import Image

    pngs = [p for p in image_paths if p.endswith(".png")]
    arrays = np.stack([np.asarray(Image.open(p).convert("RGB")) for p in pngs])
    est = tiny()
    np.testing.assert_allclose(est.transform(arrays), est.transform(pngs), rtol=1e-5, atol=1e-6)


def test_cache_hits_renames_and_edits(image_tree: Path, tmp_path: Path) -> None:
    paths = sorted(str(p) for p in image_tree.rglob("*.jpg"))
    cache = tmp_path / "cache"
    est = tiny(cache=cache)
    first = est.transform(paths)
    assert est.last_report_.n_computed == len(paths) and est.last_report_.n_cached == 0
    store_files = list(cache.glob("tiny_test-*.h5"))
    assert len(store_files) == 1

    renamed = Path(paths[0]).with_name("renamed.jpg")
    shutil.move(paths[0], renamed)
    make_image(Path(paths[1]), seed=1234)  # edited in place: new bytes, same name
    paths2 = [str(renamed), *paths[1:]]
    second = est.transform(paths2)
    report = est.last_report_
    assert report.n_computed == 1 and report.n_cached == len(paths) - 1  # only the edited one
    np.testing.assert_array_equal(second[0], first[0])  # renamed: a hit, same row
    assert not np.allclose(second[1], first[1])


def test_a_full_cache_hit_reads_while_another_process_writes_the_store(image_paths: list[str], tmp_path: Path) -> None:
    est = tiny(cache=tmp_path)
    first = est.transform(image_paths[:4])
    store_file = est.store_path()
    # another writer holds the lock (flock conflicts between two open() calls, even in one process)
    with FeatureStore(store_file):
        again = est.transform(image_paths[:4][::-1])  # every row cached: read without the lock
        assert est.last_report_.n_cached == 4 and est.last_report_.device.startswith("none")
        np.testing.assert_array_equal(again, first[::-1])
        with pytest.raises(StoreLockedError, match=r"\.h5\.lock"):  # a miss needs the writer's lock
            est.transform(image_paths[:5])
    est.transform(image_paths[:5])  # lock released: the miss is computed, nothing was lost
    assert est.last_report_.n_computed == 1 and est.last_report_.n_cached == 4


def test_duplicate_images_are_computed_once(image_paths: list[str]) -> None:
    est = tiny()
    X = est.transform([image_paths[0], image_paths[1], image_paths[0]])
    assert est.last_report_.n_duplicates == 1 and est.last_report_.n_computed == 2
    np.testing.assert_array_equal(X[0], X[2])


@pytest.mark.parametrize(
    "change",
    [
        {"layers": ("pool_max",)},
        {"pooling": "max"},
        {"views": "10crop"},
        {"resize": "warp"},
        {"crop_pct": 0.5},
        {"interpolation": "area"},
        {"dtype": "float16"},
        {"seed": 3},
    ],
)
def test_every_setting_that_changes_features_changes_the_fingerprint(change: dict, tmp_path: Path) -> None:
    base = tiny(cache=tmp_path)
    other = tiny(cache=tmp_path, **change)
    assert base.store_path() != other.store_path()


def test_batch_size_does_not_change_fingerprint_or_values(image_paths: list[str], tmp_path: Path) -> None:
    a, b = tiny(cache=tmp_path, batch_size=2), tiny(cache=tmp_path, batch_size=5)
    assert a.store_path() == b.store_path()
    np.testing.assert_allclose(tiny(batch_size=2).transform(image_paths), tiny(batch_size=5).transform(image_paths), atol=1e-5)


def test_ten_crop_views_average(image_paths: list[str]) -> None:
    one = tiny(views="center").transform(image_paths[:2])
    ten = tiny(views="10crop").transform(image_paths[:2])
    assert ten.shape == one.shape and not np.allclose(ten, one)


def test_bad_image_fail_names_the_file(image_paths: list[str], tmp_path: Path) -> None:
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"<html>not found</html>")
    with pytest.raises(ImageDecodeError, match=r"broken\.jpg: not an image"):
        tiny().transform([image_paths[0], str(bad)])


def test_bad_image_skip_warns_and_returns_nan_row(image_paths: list[str], tmp_path: Path) -> None:
    bad = tmp_path / "empty.jpg"
    bad.write_bytes(b"")
    est = tiny(on_error="skip")
    with pytest.warns(SkippedImageWarning, match=r"empty\.jpg: empty file"):
        X = est.transform([image_paths[0], str(bad), image_paths[1]])
    assert np.isnan(X[1]).all() and np.isfinite(X[[0, 2]]).all()
    assert est.last_report_.skipped == [(str(bad), "empty file (0 bytes)")]
    assert est.last_report_.keys[1] is None


def test_input_validation() -> None:
    with pytest.raises(ConfigError, match="single path"):
        tiny().transform("photo.jpg")
    with pytest.raises(ConfigError, match="expected a path or an image array"):
        tiny().transform([1, 2])
    # scikit-learn's parameter validation, before anything is built
    with pytest.raises(ValueError, match=r"'batch_size' parameter of CNNFeatures must be an int in the range \[1, inf\)"):
        tiny(batch_size=0).fit()
    with pytest.raises(ValueError, match=r"'pooling' parameter of CNNFeatures must be a str among .*Got 'median'"):
        tiny(pooling="median").fit()


def test_in_a_pipeline_with_a_linear_classifier(image_tree: Path) -> None:
    paths = sorted(str(p) for p in image_tree.rglob("*.jpg"))
    labels = [Path(p).parent.name for p in paths]
    clf = make_pipeline(tiny(), LogisticRegression(max_iter=2000))
    clf.fit(paths, labels)
    assert clf.score(paths, labels) > 0.5  # 3 classes: well above chance on its own training set
    assert set(clf.predict(paths[:2])) <= {"cat", "dog", "owl"}


def test_extract_features_function(image_paths: list[str], tmp_path: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing to warn about
        features, report = extract_features(image_paths, backbone="tiny_test", weights=None, cache=tmp_path / "x.h5")
    assert features["pool"].shape == (len(image_paths), 32)
    assert report.n_computed == len(image_paths) and report.store_path == str(tmp_path / "x.h5")
    assert "newly computed" in report.summary()
    _, again = extract_features(image_paths, backbone="tiny_test", weights=None, cache=tmp_path / "x.h5")
    assert again.n_cached == len(image_paths) and again.device.startswith("none")


def test_cnnfeatures_repr_is_sklearn_style() -> None:
    assert repr(CNNFeatures(layers="fc2", backbone="vgg16")) == "CNNFeatures(backbone='vgg16', layers='fc2')"
