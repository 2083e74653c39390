"""Split protocols: sizes, disjointness, determinism by seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from cnnfeat.exceptions import ConfigError
from cnnfeat.protocols import domain_shift_full, domain_shift_sampled, n_per_class


def test_n_per_class_sizes_disjoint_and_seeded() -> None:
    labels = np.repeat(["a", "b", "c"], [10, 12, 8])
    split = n_per_class(labels, 3, seed=0, n_val=2, n_test_max=4)
    assert len(split.train) == 9 and len(split.val) == 6 and len(split.test) == 4 + 4 + 3  # c keeps 8 - 5
    assert not set(split.train) & set(split.test) and not set(split.val) & set(split.test)
    for cls in "abc":
        assert (labels[split.train] == cls).sum() == 3
    again = n_per_class(labels, 3, seed=0, n_val=2, n_test_max=4)
    other = n_per_class(labels, 3, seed=1, n_val=2, n_test_max=4)
    np.testing.assert_array_equal(split.train, again.train)
    assert not np.array_equal(split.train, other.train)
    assert "seed 0" in split.description


def test_n_per_class_refuses_small_classes() -> None:
    with pytest.raises(ConfigError, match="class 'b' has 2 images"):
        n_per_class(["a"] * 5 + ["b"] * 2, 2, seed=0)


def test_full_domain_shift() -> None:
    domains = ["amazon"] * 5 + ["webcam"] * 3
    split = domain_shift_full(domains, "amazon", "webcam")
    assert list(split.train) == [0, 1, 2, 3, 4] and list(split.test) == [5, 6, 7]
    np.testing.assert_array_equal(split.unlabelled, split.test)
    with pytest.raises(ConfigError, match="dslr"):
        domain_shift_full(domains, "dslr", "webcam")


def test_sampled_domain_shift_saenko_counts() -> None:
    labels = np.tile(np.arange(3), 40)
    domains = np.array(["amazon"] * 90 + ["webcam"] * 30)
    s = domain_shift_sampled(labels, domains, "amazon", "webcam", seed=0)
    assert len(s.train) == 3 * 20 and set(domains[s.train]) == {"amazon"}
    st = domain_shift_sampled(labels, domains, "amazon", "webcam", seed=0, n_target_labelled=3)
    assert (domains[st.train] == "webcam").sum() == 9 and len(st.test) == 30 - 9
    assert not set(st.train) & set(st.test)
    assert "(ST)" in st.description


def test_k_fold_tests_every_row_once_and_keeps_class_balance() -> None:
    from cnnfeat.protocols import k_fold

    labels = ["a"] * 30 + ["b"] * 10
    tested = np.concatenate([k_fold(labels, 5, fold, seed=1).test for fold in range(5)])
    assert sorted(tested.tolist()) == list(range(40))
    fold = k_fold(labels, 5, 2, seed=1)
    assert np.sum(np.asarray(labels)[fold.test] == "b") == 2 and not set(fold.train) & set(fold.test)
    with pytest.raises(ConfigError, match="fold"):
        k_fold(labels, 5, 5)


def test_official_split_by_number() -> None:
    from cnnfeat.protocols import official

    splits = {str(k): {"train": np.array([k]), "test": np.array([10 + k])} for k in (1, 2, 10)}
    assert official(splits, 2).train.tolist() == [10]  # numeric order: 1, 2, 10
    assert official(splits, 0).val.tolist() == []
    with pytest.raises(ConfigError, match="has 3"):
        official(splits, 3)
    with pytest.raises(ConfigError, match="no official split"):
        official({}, 0)


def test_sampled_domain_shift_takes_all_of_a_small_source_class() -> None:
    labels = np.array([0] * 7 + [1] * 10 + [0] * 5 + [1] * 5)
    domains = np.array(["dslr"] * 17 + ["webcam"] * 10)
    split = domain_shift_sampled(labels, domains, "dslr", "webcam", seed=0)
    assert (labels[split.train] == 0).sum() == 7 and (labels[split.train] == 1).sum() == 8


def test_holdout_is_a_seeded_stratified_split_named_by_its_percentage(tmp_path: Path) -> None:
    from cnnfeat.catalog import dataset_from_inputs
    from cnnfeat.protocols import PROTOCOLS, Protocol
    from cnnfeat.runner import RunSpec, expand
    from tests.support import make_image

    for c, n in (("a", 10), ("b", 5)):
        for i in range(n):
            make_image(tmp_path / "photos" / c / f"{i}.png", seed=i)
    ds = dataset_from_inputs(tmp_path / "photos")
    (run,) = expand(["hog"], ["logreg"], [ds], ["holdout:20"], [3])
    split = run.split(ds)
    labels = np.asarray(ds.manifest.labels)
    assert sorted(labels[split.test].tolist()) == ["a", "a", "b"] and len(split.train) == 12  # 20 % of each class
    assert set(split.train).isdisjoint(split.test) and split.test.tolist() == RunSpec(**{**run.__dict__}).split(ds).test.tolist()
    assert split.test.tolist() != RunSpec(**{**run.__dict__, "seed": 4}).split(ds).test.tolist()
    assert run.column == "photos (20 % held out)" and Protocol.parse("holdout").resolve({}, [0]) == [("holdout:20", [0])]
    assert "holdout:<percent>" in PROTOCOLS.describe()
    with pytest.raises(ConfigError, match="between 1 and 99"):
        RunSpec("hog", "logreg", "photos", "holdout:100", 0).split(ds)
