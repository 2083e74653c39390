"""scikit-learn's estimator checks: all of them for 2-D estimators, the applicable ones for image readers."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.exceptions import NotFittedError
from sklearn.utils.estimator_checks import parametrize_with_checks

from cnnfeat import CNNFeatures
from cnnfeat.adaptation import (
    CORAL,
    BalancedDistributionAdaptation,
    FeatureAugmentation,
    LinearOTMapping,
    SelectivePseudoLabeling,
    SubspaceAlignment,
    TransferComponentAnalysis,
)
from cnnfeat.extractors.color import ColorHistogram
from cnnfeat.extractors.hog import HOGFeatures
from cnnfeat.extractors.sift_bovw import SIFTBoVW
from cnnfeat.normalize import SignedPower
from cnnfeat.probes import KNNProbe, SweptLinearClassifier


@parametrize_with_checks(
    [
        SignedPower(),
        SweptLinearClassifier(penalties=[1e-2, 1.0, 1e2]),
        SweptLinearClassifier(kind="svm", search="fixed"),
        KNNProbe(ks=(1, 3)),
        CORAL(),
        SubspaceAlignment(n_components=2),
        TransferComponentAnalysis(n_components=2),
        LinearOTMapping(),
        FeatureAugmentation(),
        BalancedDistributionAdaptation(n_components=2, n_iter=2),
        SelectivePseudoLabeling(n_components=2, n_iter=2),
    ]
)
def test_sklearn_compatible(estimator, check) -> None:
    check(estimator)


IMAGE_READERS = [
    CNNFeatures(backbone="tiny_test", weights=None),
    HOGFeatures(window=(32, 32)),
    ColorHistogram(bins=(4, 4, 4)),
    SIFTBoVW(n_words=8, pyramid_levels=1, step=4),
]


@pytest.mark.parametrize("estimator", IMAGE_READERS, ids=lambda e: type(e).__name__)
def test_image_readers_follow_the_applicable_contract(estimator, image_paths: list[str]) -> None:
    params = estimator.get_params()
    twin = clone(estimator)
    assert twin.get_params() == params and twin is not estimator
    if isinstance(estimator, SIFTBoVW):
        with pytest.raises(NotFittedError):
            estimator.transform(image_paths)
    fitted = clone(estimator).fit(image_paths)
    assert fitted is not None
    X = fitted.transform(image_paths)
    assert X.dtype == np.float32 and X.shape[0] == len(image_paths)
    assert len(fitted.get_feature_names_out()) == X.shape[1] == fitted.n_features_out_
    restored = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_allclose(restored.transform(image_paths), X, rtol=1e-5, atol=1e-6)
    assert fitted.set_params(n_jobs=1) is fitted
