"""The streamed sweep: rows a block at a time from a real feature store, against the exact path solver."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest

from cnnfeat.logistic_path import logistic_path
from cnnfeat.logistic_stream import store_blocks, streamed_sweep
from cnnfeat.probes import choose_c
from cnnfeat.store import FEATURE_CODE_VERSION, FeatureStore


@pytest.fixture(scope="module")
def problem() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Correlated, non-negative features of 8 classes, like pooled CNN features: 2,400 training and 800 validation rows."""
    rng = np.random.default_rng(3)
    codes = np.repeat(np.arange(8), 400)
    mixing = rng.normal(size=(24, 96)) * np.geomspace(3, 0.05, 24)[:, None]
    X = np.maximum(1.3 * rng.normal(size=(8, 24))[codes] + rng.normal(size=(len(codes), 24)), 0) @ mixing
    X = (X + 0.05 * rng.normal(size=X.shape)).astype(np.float32)
    val = np.arange(len(codes)) % 4 == 0
    return X[~val], codes[~val], X[val], codes[val]


def test_a_store_streamed_in_blocks_chooses_the_exact_solvers_c_and_matches_its_accuracy(problem: tuple, tmp_path) -> None:
    X, codes, X_val, y_val = problem
    order = np.argsort(codes, kind="stable")  # stored sorted by class, as a folder tree extracts
    X, codes = X[order], codes[order]
    keys = [f"{i:064x}" for i in range(len(X))]
    config = {"extractor": "test", "taps": ["pool"], "feature_code_version": FEATURE_CODE_VERSION}
    with FeatureStore(tmp_path / "train.h5", config, dims={"pool": X.shape[1]}) as store:
        store.append(keys, {"pool": X}, [f"{i}.jpg" for i in range(len(X))])
    read = store_blocks(tmp_path / "train.h5", "pool", keys, codes, block=500)
    epochs_read = []

    def blocks(epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        epochs_read.append(epoch)
        yield from read(epoch)

    Cs = [1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0]
    streamed = streamed_sweep(blocks, 8, Cs, X_val, y_val, epochs=15, batch_size=256)
    assert streamed.rows_seen == len(X)
    assert epochs_read == [-1, *range(15)]  # one pass for the statistics, then one per epoch, each in its own order
    exact = {C: f for C, f in zip(Cs, logistic_path(X, codes, 8, Cs))}
    exact_scores = {C: float(((X_val @ f.coef.T + f.intercept).argmax(axis=1) == y_val).mean()) for C, f in exact.items()}
    best = choose_c(exact_scores)
    # the streamed weights are not the exact optimum, but the choice and its accuracy are close to it
    assert abs(streamed.val_scores[streamed.C] - exact_scores[best]) <= 0.02
    assert abs(np.log10(streamed.C) - np.log10(best)) <= 1
    for C in (1e-4, 1e-2):  # strongly penalised: SGD reaches the optimum's predictions
        assert abs(streamed.val_scores[C] - exact_scores[C]) <= 0.02
    predicted = (X_val @ streamed.coef.T + streamed.intercept).argmax(axis=1)
    assert np.mean(predicted == y_val) == pytest.approx(streamed.val_scores[streamed.C])


def test_two_classes_give_scikit_learns_binomial_shapes(problem: tuple) -> None:
    X, codes, X_val, y_val = problem
    pair, pair_val = codes < 2, y_val < 2
    fit = streamed_sweep(lambda epoch: [(X[pair], codes[pair])], 2, [0.1, 1.0], X_val[pair_val], y_val[pair_val], epochs=10)
    assert fit.coef.shape == (1, X.shape[1]) and fit.intercept.shape == (1,)
    predicted = (X_val[pair_val] @ fit.coef[0] + fit.intercept[0] > 0).astype(int)
    assert np.mean(predicted == y_val[pair_val]) == pytest.approx(fit.val_scores[fit.C])


def test_no_rows_is_an_error() -> None:
    with pytest.raises(ValueError, match="no training rows"):
        streamed_sweep(lambda epoch: [], 3, [1.0], np.zeros((1, 4)), np.zeros(1))
