"""Linear probes: C selection that follows the data, warm starts, dropout."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import make_classification

from cnnfeat.exceptions import ConfigError
from cnnfeat.probes import KORNBLITH_PENALTIES, SweptLinearClassifier, make_probe, mean_per_class_accuracy


@pytest.fixture(scope="module")
def problem() -> tuple[np.ndarray, np.ndarray]:
    X, y = make_classification(
        n_samples=600, n_features=40, n_informative=10, n_classes=3, class_sep=0.8, flip_y=0.05, random_state=0
    )
    return X, y


def test_grid_is_kornbliths() -> None:
    assert len(KORNBLITH_PENALTIES) == 45
    assert KORNBLITH_PENALTIES[0] == pytest.approx(1e-6) and KORNBLITH_PENALTIES[-1] == pytest.approx(1e5)


def test_grid_is_the_same_to_the_last_bit_on_every_cpu() -> None:
    # the correctly rounded values; np.logspace on an AVX-512 CPU gives 4 of the 45 one bit off
    assert KORNBLITH_PENALTIES.tolist() == [10.0 ** (k / 4 - 6) for k in range(45)]
    assert 1.0 / KORNBLITH_PENALTIES[34] == 0.003162277660168379  # C of penalty 10^2.5, as records print it
    assert 1.0 / KORNBLITH_PENALTIES[27] == 0.17782794100389226


def test_sweep_picks_c_that_follows_the_feature_scale(problem: tuple) -> None:
    """Scaling the features by s moves the best C by 1/s^2 (the L2 term sees w ~ 1/s): the sweep must follow."""
    X, y = problem
    small = SweptLinearClassifier().fit(X * 1e-2, y)
    large = SweptLinearClassifier().fit(X * 10, y)
    ratio = small.C_ / large.C_
    assert 1e5 < ratio < 1e7, (small.C_, large.C_)  # 1e6 expected, one grid step of slack each way
    assert abs(small.val_scores_[small.C_] - large.val_scores_[large.C_]) < 0.03  # the same problem underneath
    assert small.penalty_ == pytest.approx(1 / small.C_)
    assert len(small.val_scores_) == 45


def test_warm_start_chooses_the_same_c_as_cold_fits(problem: tuple) -> None:
    X, y = problem  # scikit-learn's solver: the path solver is always warm
    warm = SweptLinearClassifier(solver="lbfgs", warm_start=True, tol=1e-6, max_iter=5000).fit(X, y)
    cold = SweptLinearClassifier(solver="lbfgs", warm_start=False, tol=1e-6, max_iter=5000).fit(X, y)
    assert warm.C_ == cold.C_
    assert max(abs(warm.val_scores_[c] - cold.val_scores_[c]) for c in cold.val_scores_) <= 1 / 120 + 1e-9


def test_clip_search_refines_near_kornblith(problem: tuple) -> None:
    X, y = problem
    clip = SweptLinearClassifier(search="clip").fit(X, y)
    kornblith = SweptLinearClassifier().fit(X, y)
    assert len(clip.val_scores_) < 20
    assert abs(np.log10(clip.C_) - np.log10(kornblith.C_)) < 2.5
    assert clip.val_scores_[clip.C_] >= kornblith.val_scores_[kornblith.C_] - 0.03


def test_svm_and_fixed(problem: tuple) -> None:
    X, y = problem
    svm = SweptLinearClassifier(kind="svm", penalties=[1e-2, 1, 1e2]).fit(X, y)
    assert svm.C_ in (1e2, 1.0, 1e-2) and not hasattr(svm, "predict_proba")
    fixed = SweptLinearClassifier(search="fixed", C=0.5).fit(X, y)
    assert fixed.C_ == 0.5 and fixed.val_scores_ == {}
    assert fixed.predict_proba(X[:3]).shape == (3, 3)


def test_dropout_trains_on_masked_copies(problem: tuple) -> None:
    X, y = problem
    plain = SweptLinearClassifier(search="fixed").fit(X, y)
    dropped = SweptLinearClassifier(search="fixed", dropout=0.5, dropout_copies=3).fit(X, y)
    assert not np.allclose(plain.estimator_.coef_, dropped.estimator_.coef_)
    assert dropped.score(X, y) > 0.6


def test_bad_parameters_are_clear(problem: tuple) -> None:
    X, y = problem
    # scikit-learn's own parameter validation: the parameter, what it accepts, what it got
    with pytest.raises(ValueError, match=r"'search' parameter of SweptLinearClassifier must be a str among .*Got 'grid'"):
        SweptLinearClassifier(search="grid").fit(X, y)
    with pytest.raises(ValueError, match=r"'dropout' parameter .* in the range \[0.0, 1.0\). Got 1.0"):
        SweptLinearClassifier(dropout=1.0).fit(X, y)
    with pytest.raises(ConfigError, match="kind"):
        make_probe("knn")


def test_two_shots_hold_out_one_image_per_class() -> None:
    # 15 classes x 2 images: 20% would be 6 validation images, too few for a stratified split
    rng = np.random.default_rng(0)
    centres = rng.normal(scale=4.0, size=(15, 20))
    y = np.repeat(np.arange(15), 2)
    X = centres[y] + rng.normal(size=(30, 20))
    probe = SweptLinearClassifier().fit(X, y)
    scores = np.array(list(probe.val_scores_.values()))
    assert len(scores) == len(KORNBLITH_PENALTIES)
    np.testing.assert_allclose(scores * 15, np.round(scores * 15))  # scored on 15 images
    y_new = np.arange(15).repeat(10)
    assert probe.score(centres[y_new] + rng.normal(size=(150, 20)), y_new) > 0.9


def test_mean_per_class_accuracy() -> None:
    assert mean_per_class_accuracy([0, 0, 0, 1], [0, 0, 0, 0]) == pytest.approx(0.5)


@pytest.mark.parametrize("kind", ["logreg", "svm"])
def test_wide_features_are_fitted_in_the_row_span_with_the_same_solution(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """n << d: the fit in the span of the rows must give the weights of the direct fit, on the original features.

    scikit-learn's solvers (the path solver works in the span of the rows always: tests/test_logistic_path.py)."""
    from cnnfeat import probes

    X, y = make_classification(n_samples=60, n_features=600, n_informative=20, n_classes=3, random_state=1)
    X = X.astype(np.float64)
    spanned = SweptLinearClassifier(kind=kind, search="fixed", C=0.1, solver="lbfgs", tol=1e-10, max_iter=20000).fit(
        X[:45], y[:45]
    )
    assert probes._row_span(X[:45]) is not None
    monkeypatch.setattr(probes, "_SPAN_RATIO", 10**9)
    direct = SweptLinearClassifier(kind=kind, search="fixed", C=0.1, solver="lbfgs", tol=1e-10, max_iter=20000).fit(
        X[:45], y[:45]
    )
    assert spanned.estimator_.coef_.shape == direct.estimator_.coef_.shape == (3, 600)
    np.testing.assert_allclose(spanned.decision_function(X[45:]), direct.decision_function(X[45:]), atol=1e-4)
    np.testing.assert_array_equal(spanned.predict(X[45:]), direct.predict(X[45:]))


def test_ties_choose_the_strongest_regularisation_unless_every_c_ties() -> None:
    from cnnfeat.probes import choose_c

    assert choose_c({1e-4: 0.4, 1e-2: 0.3, 1.0: 0.4, 1e2: 0.4}) == 1e-4
    assert choose_c({1e-3: 0.2, 1e-2: 0.5, 1e-1: 0.4}) == 1e-2
    assert choose_c({1e-5: 0.0, 1e-4: 0.0, 1e-3: 0.0, 1e-2: 0.0, 0.1: 0.0}) == 1e-3  # nothing learned: the middle
    assert choose_c({1.0: 0.5, 10.0: 0.5}) == 1.0  # two equally central values: the smaller C
    assert choose_c({1e-6: 0.3, 1e-2: 0.3, 0.03: 0.3, 0.1: 0.3}) == 1e-2  # nearest the middle (1e-3.5) in decades


def test_one_image_per_class_takes_the_middle_of_the_grid() -> None:
    """The held-out images' classes are missing from the rest, so no C can score above 0."""
    X, y = make_classification(n_samples=10, n_features=8, n_informative=6, n_classes=10, n_clusters_per_class=1, random_state=0)
    model = SweptLinearClassifier().fit(X, y)
    assert set(model.val_scores_.values()) == {0.0}
    assert abs(np.log10(model.C_) - 0.5) < 1e-9  # the 45 values span 1e-5 .. 1e6


def test_float32_features_fit_the_same_model_as_float64() -> None:
    """L-BFGS on a float32 loss stopped early at strong regularisation (4% off the optimum here)."""
    rng = np.random.default_rng(0)
    d, n_classes = 2000, 15
    y = np.repeat(np.arange(n_classes), 5)
    X = np.outer(1 + 0.3 * y, rng.random(d) + 0.5) / np.sqrt(d) * 30 + rng.random((len(y), d))
    single = SweptLinearClassifier(search="fixed", C=1e-4).fit(X.astype(np.float32), y).estimator_.coef_
    double = SweptLinearClassifier(search="fixed", C=1e-4).fit(X, y).estimator_.coef_
    assert np.linalg.norm(single - double) < 1e-3 * np.linalg.norm(double)


def test_knn_probe_matches_a_brute_force_reference_and_chooses_k_on_validation() -> None:
    from cnnfeat.probes import KNNProbe

    rng = np.random.default_rng(0)
    centres = rng.normal(0, 1, (4, 16))
    y = rng.integers(0, 4, 300)
    X = centres[y] + rng.normal(0, 1.2, (300, 16))
    Xq = centres[rng.integers(0, 4, 50)] + rng.normal(0, 1.2, (50, 16))
    probe = KNNProbe(ks=(5, 20, 100), temperature=0.07).fit(X, y)
    assert set(probe.val_scores_) == {5, 20, 100} and probe.k_ in (5, 20, 100)
    assert probe.val_scores_[probe.k_] == max(probe.val_scores_.values())

    # brute force, one query at a time: cosine similarity, the k most similar, exp(sim / T) votes
    unit = X / np.linalg.norm(X, axis=1, keepdims=True)
    expected = []
    for q in Xq / np.linalg.norm(Xq, axis=1, keepdims=True):
        sims = unit @ q
        nearest = np.argsort(-sims, kind="stable")[: probe.k_]
        votes = np.zeros(4)
        for i in nearest:
            votes[y[i]] += np.exp(sims[i] / 0.07)
        expected.append(votes / votes.sum())
    np.testing.assert_allclose(probe.predict_proba(Xq), np.array(expected), rtol=1e-5, atol=1e-9)
    assert (probe.predict(Xq) == np.array(expected).argmax(axis=1)).all()
    with pytest.raises(ValueError, match="'temperature' parameter"):
        KNNProbe(temperature=0).fit(X, y)
