"""Feature-level domain adaptation on a synthetic shift where the answer is known."""

from __future__ import annotations

import numpy as np
import pytest

from cnnfeat.adaptation import (
    CORAL,
    BalancedDistributionAdaptation,
    FeatureAugmentation,
    LinearOTMapping,
    SelectivePseudoLabeling,
    SubspaceAlignment,
    TransferComponentAnalysis,
    split_domains,
)
from cnnfeat.adaptation.mapping import skada
from cnnfeat.exceptions import ConfigError


def _shifted(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Two classes apart along 3 of 12 dimensions; in the target those shrink 10x and the rest grow 10x."""
    rng = np.random.default_rng(seed)
    d, n = 12, 400
    mu = np.zeros(d)
    mu[:3] = 1.0
    ys, yt = rng.integers(0, 2, n), rng.integers(0, 2, n)
    xs = np.where(ys[:, None] == 1, mu, -mu) + rng.normal(0, 1, (n, d))
    scale = np.r_[np.full(3, 0.1), np.full(d - 3, 10.0)]
    xt = (np.where(yt[:, None] == 1, mu, -mu) + rng.normal(0, 1, (n, d))) * scale
    return xs, ys, xt, yt


def _fit_score(model, xs, ys, xt, yt) -> float:
    X = np.r_[xs, xt]
    y = np.r_[ys, -np.ones(len(xt), int)]
    domain = ["source"] * len(xs) + ["target"] * len(xt)
    return model.fit(X, y, domain=domain).score(xt, yt)


@pytest.mark.parametrize("seed", range(3))
def test_coral_undoes_a_covariance_shift_that_defeats_source_only(seed: int) -> None:
    from sklearn.linear_model import LogisticRegression

    xs, ys, xt, yt = _shifted(seed)
    source_only = LogisticRegression(max_iter=2000).fit(xs, ys).score(xt, yt)
    coral = _fit_score(CORAL(), xs, ys, xt, yt)
    assert source_only < 0.65 < coral - 0.1, (source_only, coral)


def test_subspace_alignment_of_identical_domains_is_the_pca_classifier() -> None:
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    xs, ys, _, _ = _shifted(0)
    model = SubspaceAlignment(n_components=5)
    score = _fit_score(model, xs, ys, xs.copy(), ys)
    np.testing.assert_allclose(np.abs(model.adapter_.M_), np.eye(5), atol=1e-6)  # M = Ps^T Pt = I up to signs
    baseline = make_pipeline(PCA(5, random_state=0), LogisticRegression(max_iter=2000)).fit(xs, ys).score(xs, ys)
    assert abs(score - baseline) < 0.02


def test_coral_recolours_source_to_target_covariance() -> None:
    xs, ys, xt, _ = _shifted(1)
    model = CORAL(regularization=1e-6).fit(np.r_[xs, xt], np.r_[ys, -np.ones(len(xt), int)], domain=[0] * len(xs) + [1] * len(xt))
    aligned = xs @ model.transform_
    np.testing.assert_allclose(
        np.cov(aligned, rowvar=False), np.cov(xt, rowvar=False), rtol=0.05, atol=0.05 * np.abs(np.cov(xt, rowvar=False)).max()
    )


def test_feature_augmentation_uses_labelled_target_rows() -> None:
    xs, ys, xt, yt = _shifted(2)
    X = np.r_[xs, xt[:30]]
    y = np.r_[ys, yt[:30]]  # 30 labelled target images
    domain = ["source"] * len(xs) + ["target"] * 30
    model = FeatureAugmentation().fit(X, y, domain=domain)
    assert model.estimator_.n_features_in_ == 3 * xs.shape[1]
    assert model.score(xt[30:], yt[30:]) > 0.6


@pytest.mark.parametrize(
    "adaptation",
    [
        CORAL,
        SubspaceAlignment,
        TransferComponentAnalysis,
        LinearOTMapping,
        BalancedDistributionAdaptation,
        SelectivePseudoLabeling,
    ],
)
def test_without_domain_each_is_its_plain_classifier(adaptation: type) -> None:
    from sklearn.linear_model import LogisticRegression

    xs, ys, _, _ = _shifted(3)
    plain = LogisticRegression(max_iter=2000).fit(xs, ys).predict(xs)
    np.testing.assert_array_equal(adaptation().fit(xs, ys).predict(xs), plain)


def test_without_domain_feature_augmentation_is_the_plain_classifier_on_source_copies() -> None:
    from sklearn.linear_model import LogisticRegression

    xs, ys, _, _ = _shifted(3)
    zeros = np.zeros_like(xs)  # Daume's (common, source, target) copies: all rows are source; predict sees targets
    plain = LogisticRegression(max_iter=2000).fit(np.hstack([xs, xs, zeros]), ys).predict(np.hstack([xs, zeros, xs]))
    np.testing.assert_array_equal(FeatureAugmentation().fit(xs, ys).predict(xs), plain)


def test_domain_validation() -> None:
    with pytest.raises(ConfigError, match="source' or 'target"):
        split_domains(np.zeros(2), ["src", "target"], 2)
    with pytest.raises(ConfigError, match="one entry per row"):
        split_domains(np.zeros(3), ["source"], 3)
    with pytest.raises(ConfigError, match="no labelled source"):
        split_domains(np.array([-1, 0]), ["source", "target"], 2)


def test_coral_refuses_features_too_wide_for_its_covariances() -> None:

    X = np.zeros((6, CORAL.MAX_DIMENSIONS + 1), np.float32)
    with pytest.raises(ConfigError, match="reduce the features"):
        CORAL().fit(X, [0, 1, 0, -1, -1, -1], domain=["source"] * 3 + ["target"] * 3)


def _translated(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Three classes around random centres; the target domain is the same, moved by a random offset."""
    rng = np.random.default_rng(seed)
    d, n = 10, 300
    ys, yt = rng.integers(0, 3, n), rng.integers(0, 3, n)
    centres = rng.normal(0, 3, (3, d))
    xs = centres[ys] + rng.normal(0, 1, (n, d))
    xt = centres[yt] + rng.normal(0, 1, (n, d)) + rng.normal(0, 5, d)
    return xs, ys, xt, yt


@pytest.mark.parametrize("seed", [1, 2])
def test_bda_undoes_a_shift_of_the_marginals_that_defeats_source_only(seed: int) -> None:
    from sklearn.linear_model import LogisticRegression

    from cnnfeat.adaptation import BalancedDistributionAdaptation

    xs, ys, xt, yt = _translated(seed)
    source_only = LogisticRegression(max_iter=2000).fit(xs, ys).score(xt, yt)
    model = BalancedDistributionAdaptation(n_components=5)
    adapted = _fit_score(model, xs, ys, xt, yt)
    assert source_only < 0.75 and adapted > max(0.85, source_only + 0.15), (source_only, adapted)
    # in the learned subspace the two domains' means (the marginal MMD) are closer than the classes are apart
    zs, zt = model._target_view(xs), model._target_view(xt)
    gap = np.linalg.norm(zs.mean(axis=0) - zt.mean(axis=0))
    spread = np.linalg.norm(zs[ys == 0].mean(axis=0) - zs[ys == 1].mean(axis=0))
    assert gap < 0.25 * spread, (gap, spread)


def test_bda_is_jda_at_mu_one_half() -> None:
    from cnnfeat.adaptation import BalancedDistributionAdaptation

    xs, ys, xt, _ = _translated(2)
    X, y = np.r_[xs, xt], np.r_[ys, -np.ones(len(xt), int)]
    domain = ["source"] * len(xs) + ["target"] * len(xt)
    jda = BalancedDistributionAdaptation(n_components=5, mu=None).fit(X, y, domain=domain)
    bda = BalancedDistributionAdaptation(n_components=5, mu=0.5).fit(X, y, domain=domain)
    np.testing.assert_array_equal(jda.predict(xt), bda.predict(xt))  # equal weights, up to M's normalisation


@pytest.mark.parametrize("seed", [1, 2])
def test_selective_pseudo_labelling_undoes_a_shift_that_defeats_source_only(seed: int) -> None:
    from sklearn.linear_model import LogisticRegression

    from cnnfeat.adaptation import SelectivePseudoLabeling

    xs, ys, xt, yt = _translated(seed)
    source_only = LogisticRegression(max_iter=2000).fit(xs, ys).score(xt, yt)
    model = SelectivePseudoLabeling(n_components=5)
    adapted = _fit_score(model, xs, ys, xt, yt)
    assert source_only < 0.75 and adapted > max(0.9, source_only + 0.2), (source_only, adapted)
    assert np.mean(model.pseudo_labels_ == yt) > 0.9  # the classifier learned the target's pseudo labels
    assert model.projection_.shape == (10, 5)


@pytest.mark.parametrize("seed", range(3))
def test_spl_on_principal_components_of_wide_rows_keeps_the_adaptation(seed: int) -> None:
    """``spl-pca``: the rows, embedded in 400 dimensions, reduced to 20 principal components first."""
    xs, ys, xt, yt = _translated(seed)
    embed = np.random.default_rng(seed).normal(size=(xs.shape[1], 400))
    xs, xt = xs @ embed, xt @ embed
    reduced = SelectivePseudoLabeling(n_components=5, pca_components=20)
    full = SelectivePseudoLabeling(n_components=5)
    assert _fit_score(reduced, xs, ys, xt, yt) > max(0.9, _fit_score(full, xs, ys, xt, yt) - 0.03)
    assert reduced.reduction_.shape == (400, 20) and reduced.projection_.shape == (20, 5)
    assert full.reduction_ is None and full.projection_.shape == (400, 5)


def test_selection_is_per_predicted_class_and_grows_to_every_row() -> None:
    from cnnfeat.adaptation.projection import _select_per_class

    pseudo = np.array([0] * 10 + [1] * 2)
    confidence = np.r_[np.linspace(1.0, 0.5, 10), [0.1, 0.05]]  # class 1 is never confident
    half = _select_per_class(pseudo, confidence, 0.5)
    assert half.tolist() == [True] * 5 + [False] * 5 + [True, False]  # class 1 keeps its share
    assert _select_per_class(pseudo, confidence, 1.0).all()


def test_selective_pseudo_labelling_keeps_labelled_target_rows_and_needs_no_target() -> None:
    from cnnfeat.adaptation import SelectivePseudoLabeling

    xs, ys, xt, yt = _translated(1)
    plain = SelectivePseudoLabeling(n_components=5).fit(xs, ys)  # no domain: the classifier on the source
    assert plain.score(xs, ys) > 0.95 and not hasattr(plain, "pseudo_labels_")
    y = np.r_[ys, yt[:30], -np.ones(len(xt) - 30, int)]
    model = SelectivePseudoLabeling(n_components=5).fit(np.r_[xs, xt], y, domain=[0] * len(xs) + [1] * len(xt))
    assert len(model.pseudo_labels_) == len(xt) - 30 and model.score(xt, yt) > 0.9


def _centred_pair(n: int = 600, d: int = 6, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Equal-sized domains, each centred on zero, with different (well-conditioned) covariances."""
    rng = np.random.default_rng(seed)
    xs = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    xt = rng.normal(size=(n, d)) @ rng.normal(size=(d, d))
    ys = (xs[:, 0] > 0).astype(int)
    return xs - xs.mean(axis=0), ys, xt - xt.mean(axis=0)


def test_coral_agrees_with_skadas_where_the_two_are_one_method() -> None:
    """Centred domains, no ridge: the same whitening and re-colouring, the same predictions."""
    from sklearn.linear_model import LogisticRegression

    xs, ys, xt = _centred_pair()
    ours = CORAL(LogisticRegression(), regularization=1e-12)
    ours.fit(np.r_[xs, xt], np.r_[ys, -np.ones(len(xt), int)], domain=[0] * len(xs) + [1] * len(xt))
    theirs = skada().CORALAdapter(reg=None).fit(np.r_[xs, xt], sample_domain=np.r_[np.ones(len(xs)), -2 * np.ones(len(xt))])
    np.testing.assert_allclose(ours.transform_, theirs.cov_source_inv_sqrt_ @ theirs.cov_target_sqrt_, rtol=1e-6, atol=1e-9)
    mapped = theirs.transform(xs, sample_domain=np.ones(len(xs)), allow_source=True)
    np.testing.assert_allclose(ours.adapted_rows(xs, source=True), mapped, rtol=1e-6, atol=1e-9)
    skada_predictions = LogisticRegression().fit(mapped, ys).predict(theirs.transform(xt, sample_domain=-2 * np.ones(len(xt))))
    np.testing.assert_array_equal(ours.predict(xt), skada_predictions)


def test_coral_keeps_its_ridge_where_skadas_covariances_are_singular() -> None:
    """Why cnnfeat's CORAL stays: CNN features of a few hundred images have more dimensions than rows."""
    rng = np.random.default_rng(0)
    xs, xt = rng.normal(size=(40, 80)), rng.normal(size=(40, 80)) * 2
    ys = np.arange(40) % 2
    marks = np.r_[np.ones(40), -2 * np.ones(40)]
    with np.errstate(all="ignore"):
        theirs = skada().CORALAdapter(reg=None).fit(np.r_[xs, xt], sample_domain=marks)
        assert not np.isfinite(theirs.cov_source_inv_sqrt_).all()
    ours = CORAL().fit(np.r_[xs, xt], np.r_[ys, -np.ones(40, int)], domain=[0] * 40 + [1] * 40)
    assert np.isfinite(ours.transform_).all()


def test_subspace_alignment_is_fernandos_method_as_cnnfeat_wrote_it() -> None:
    """skada's adapter against the formulas cnnfeat used before it: PCA bases, M = Ps^T Pt, Xs Ps M and Xt Pt."""
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression

    xs, ys, xt, yt = _shifted(4)
    model = SubspaceAlignment(LogisticRegression(), n_components=4)
    _fit_score(model, xs, ys, xt, yt)
    source_pca, target_pca = PCA(4, random_state=0).fit(xs), PCA(4, random_state=0).fit(xt)
    alignment = source_pca.components_ @ target_pca.components_.T
    np.testing.assert_allclose(model.adapted_rows(xs, source=True), source_pca.transform(xs) @ alignment, atol=1e-8)
    np.testing.assert_allclose(model.adapted_rows(xt), target_pca.transform(xt), atol=1e-8)
    by_hand = LogisticRegression().fit(source_pca.transform(xs) @ alignment, ys).predict(target_pca.transform(xt))
    np.testing.assert_array_equal(model.predict(xt), by_hand)


@pytest.mark.parametrize("seed", range(3))
def test_the_linear_ot_mapping_undoes_a_shift_of_mean_and_covariance(seed: int) -> None:
    from sklearn.linear_model import LogisticRegression

    xs, ys, xt, yt = _shifted(seed)
    xt = xt + 20.0  # and a translation CORAL does not see
    source_only = LogisticRegression(max_iter=2000).fit(xs, ys).score(xt, yt)
    mapped = _fit_score(LinearOTMapping(), xs, ys, xt, yt)
    coral = _fit_score(CORAL(), xs, ys, xt, yt)
    assert source_only < 0.6 and coral < 0.6 and mapped > 0.7, (source_only, coral, mapped)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [
        (
            lambda: TransferComponentAnalysis(n_components=3),
            lambda: skada().TransferComponentAnalysisAdapter(kernel="linear", n_components=3, mu=0.1),
        ),
        (lambda: LinearOTMapping(), lambda: skada().LinearOTMappingAdapter(reg=1.0)),
    ],
    ids=["tca", "ot"],
)
def test_the_skada_adaptations_train_their_probe_on_skadas_map(ours, theirs) -> None:
    """The wrapper adds the domain marks and the probe; the map is skada's, fitted on both domains' rows."""
    from sklearn.linear_model import LogisticRegression

    xs, ys, xt, yt = _shifted(5)
    model = ours().set_params(estimator=LogisticRegression())
    _fit_score(model, xs, ys, xt, yt)
    marks = np.r_[np.ones(len(xs)), -2 * np.ones(len(xt))]
    adapter = theirs().fit(np.r_[xs, xt], sample_domain=marks)
    source_rows = adapter.transform(xs, sample_domain=np.ones(len(xs)), allow_source=True)
    target_rows = adapter.transform(xt, sample_domain=-2 * np.ones(len(xt)))
    np.testing.assert_allclose(model.adapted_rows(xs, source=True), source_rows, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(model.predict(xt), LogisticRegression().fit(source_rows, ys).predict(target_rows))


def test_the_skada_adaptations_use_labelled_target_rows_and_leave_scikit_learns_settings_alone() -> None:
    import sklearn

    xs, ys, xt, yt = _shifted(2)
    X, y = np.r_[xs, xt], np.r_[ys, yt[:30], -np.ones(len(xt) - 30, int)]
    domain = ["source"] * len(xs) + ["target"] * len(xt)
    for model in (TransferComponentAnalysis(n_components=5), LinearOTMapping(), SubspaceAlignment(n_components=5)):
        model.fit(X, y, domain=domain)
        assert model.estimator_.classes_.tolist() == [0, 1] and len(model.predict(xt)) == len(xt)
    assert sklearn.get_config()["enable_metadata_routing"] is False  # import skada switches it on; we do not


def test_an_adaptations_hyper_parameters_are_set_by_its_text_and_checked_before_any_work() -> None:
    from sklearn.linear_model import LogisticRegression

    from cnnfeat.adaptation import adaptation_kind, make_adaptation
    from cnnfeat.runner import expand

    probe = LogisticRegression()
    assert make_adaptation("ot?regularization=10", probe).regularization == 10
    assert make_adaptation("ot", probe).regularization == 1.0  # the registered default
    spl = make_adaptation("spl-pca?n_iter=3", probe)
    assert (spl.pca_components, spl.n_iter) == (256, 3)  # the registered parameter kept, the other set
    assert make_adaptation("none", probe) is probe and adaptation_kind("augment?mu=1").needs_labelled_target
    for text, message in [
        ("ot?regularisation=10", "unexpected keyword argument 'regularisation'"),
        ("ot?regularization=-1", "'regularization' parameter of LinearOTMapping must be a float in the range"),
        ("coral?regularization", r"write \?<param>=<value>"),
        ("none?mu=1", "takes no parameters"),
        ("otx?regularization=1", "unknown adaptation 'otx'"),
    ]:
        with pytest.raises(ConfigError, match=message):
            make_adaptation(text, probe)
    runs = expand(["hog"], ["logreg"], ["office31"], ["full"], [0], adapt=["ot?regularization=0.1", "ot"])
    assert {r.adapt for r in runs} == {"ot?regularization=0.1", "ot"} and len({r.key() for r in runs}) == len(runs)
    with pytest.raises(ConfigError, match="regularisation"):
        expand(["hog"], ["logreg"], ["office31"], ["full"], [0], adapt=["ot?regularisation=0.1"])
