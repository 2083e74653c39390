"""L2 logistic regression for rows that do not fit in memory: every C of a sweep trained at once, a block at a time.

:mod:`cnnfeat.logistic_path` solves each C exactly with the rows in memory. Here the training rows come as
blocks (from a feature store, a block of keys at a time) and only ``d x d`` statistics, the weights and one
block are held:

1. one pass accumulates the rows' mean and scatter; its eigenvectors rotate the rows (as the path solver's
   basis does) and their energies bound the curvature along each direction;
2. ``epochs`` passes of minibatch SGD with Nesterov momentum on scikit-learn's objective for every C at
   once (one product of a minibatch with the weights of all C side by side), the step of each direction
   and C the inverse of that bound, decayed on a cosine;
3. C is then chosen on validation rows (in memory: a validation split is small) by the probes' rule.

This is the DINOv2 / Kornblith recipe for ImageNet-sized linear evaluation on a CPU; it is not exact:
``benchmarks/probe_stream.py`` measures it against the exact solver where both run.

Examples
--------
>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> X, y = rng.normal(size=(600, 8)) + np.repeat(np.eye(3, 8) * 3, 200, axis=0), np.repeat([0, 1, 2], 200)
>>> def blocks(epoch):  # a new order each epoch: these rows are sorted by class
...     order = np.random.default_rng(epoch + 1).permutation(600)
...     return ((X[order[i : i + 100]], y[order[i : i + 100]]) for i in range(0, 600, 100))
>>> fit = streamed_sweep(blocks, 3, [0.01, 1.0], X[::7], y[::7], epochs=5)
>>> fit.C in (0.01, 1.0), fit.coef.shape, max(fit.val_scores.values()) > 0.9
(True, (3, 8), True)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from cnnfeat.logistic_path import scatter_basis

__all__ = ["Blocks", "StreamedFit", "store_blocks", "streamed_sweep"]

#: ``blocks(epoch)``: the training rows as ``(X, codes)`` blocks, in a new random order for each epoch (rows are
#: shuffled within a block, but minibatches of a stream sorted by class would each hold one class); epoch -1 is
#: the pass that gathers statistics, where order does not matter
Blocks = Callable[[int], Iterable[tuple[np.ndarray, np.ndarray]]]
_FLUSH = float(np.finfo(np.float32).tiny)


@dataclass(frozen=True)
class StreamedFit:
    """The chosen C's weights on the original features, and each C's validation accuracy."""

    C: float
    coef: np.ndarray  # (n_classes, d); (1, d) for two classes, as scikit-learn's
    intercept: np.ndarray
    val_scores: dict[float, float]
    rows_seen: int


def store_blocks(path: str | os.PathLike[str], tap: str, keys: Sequence[str], codes: np.ndarray, *, block: int = 4096) -> Blocks:
    """The rows ``keys`` of a feature store's ``tap``, ``block`` at a time, in a new random order each epoch."""
    from cnnfeat.store import FeatureStore

    keys, codes = list(keys), np.asarray(codes)

    def blocks(epoch: int) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        order = np.arange(len(keys)) if epoch < 0 else np.random.default_rng(epoch).permutation(len(keys))
        with FeatureStore(path, mode="r") as store:
            for start in range(0, len(order), block):
                rows = order[start : start + block]
                yield store.get([keys[i] for i in rows], taps=[tap])[tap], codes[rows]

    return blocks


def _statistics(blocks: Blocks) -> tuple[int, np.ndarray, np.ndarray]:
    """Rows, mean and centred scatter of the training rows, in one pass (shifted by the first block's mean)."""
    n, shift, total, scatter = 0, None, None, None
    for X, _ in blocks(-1):
        X = np.asarray(X, dtype=np.float64)
        if shift is None:
            shift, total, scatter = X.mean(axis=0), np.zeros(X.shape[1]), np.zeros((X.shape[1], X.shape[1]))
        centred = X - shift
        n, total, scatter = n + len(X), total + centred.sum(axis=0), scatter + centred.T @ centred
    if shift is None or total is None or scatter is None:
        raise ValueError("no training rows")
    offset = total / n
    return n, shift + offset, scatter - n * np.outer(offset, offset)


def streamed_sweep(
    blocks: Blocks,
    n_classes: int,
    Cs: Sequence[float],
    X_val: np.ndarray,
    y_val: np.ndarray,
    *,
    epochs: int = 20,
    batch_size: int = 1024,
    momentum: float = 0.9,
    random_state: int = 0,
) -> StreamedFit:
    """Train every C on the rows ``blocks(epoch)`` yields (see :data:`Blocks`; :func:`store_blocks` reads a feature
    store so), choose C on ``(X_val, y_val)``.

    ``codes`` are class indices ``0 .. n_classes - 1``; ``y_val`` uses the same codes.
    """
    from cnnfeat.probes import choose_c  # the probes' rule for ties

    n, mean, scatter = _statistics(blocks)
    energies, V = scatter_basis(scatter)
    V = V.astype(np.float32)
    r, K, m = V.shape[1], n_classes, len(Cs)
    C = np.asarray(Cs, dtype=np.float64)
    # a bound on the mean loss' curvature along direction j (the softmax Hessian, diag(p) - p p^T, is at most
    # 1/2), plus the penalty's, for each C: each direction's step is its inverse
    curvature = (energies / n)[None, :] * 0.5 + 1.0 / (C[:, None] * n)  # (m, r)
    step = (1.0 / curvature).astype(np.float32)
    step_b = np.float32(2.0)  # the intercepts' curvature is at most 1/2
    A = np.zeros((m, r, K), np.float32)
    b = np.zeros((m, K), np.float32)
    velocity_A, velocity_b = np.zeros_like(A), np.zeros_like(b)
    rng = np.random.default_rng(random_state)
    steps_per_epoch = max(1, -(-n // batch_size))
    total_steps, t = epochs * steps_per_epoch, 0
    decay = (C[:, None, None] * n) ** -1.0
    for epoch in range(epochs):
        for X, codes in blocks(epoch):
            Z = ((np.asarray(X, np.float64) - mean).astype(np.float32)) @ V
            codes = np.asarray(codes)
            order = rng.permutation(len(Z))
            for start in range(0, len(Z), batch_size):
                rows = order[start : start + batch_size]
                Zb, cb = Z[rows], codes[rows]
                lr = np.float32(0.5 * (1 + np.cos(np.pi * min(t / total_steps, 1.0))))
                t += 1
                ahead_A, ahead_b = A + momentum * velocity_A, b + momentum * velocity_b  # Nesterov
                logits = (Zb @ ahead_A.transpose(1, 0, 2).reshape(r, m * K)).reshape(len(rows), m, K) + ahead_b
                logits -= logits.max(axis=2, keepdims=True)
                P = np.exp(logits)
                P /= P.sum(axis=2, keepdims=True)
                P[P < _FLUSH] = 0.0  # subnormal probabilities would make the product below crawl
                P[np.arange(len(rows)), :, cb] -= 1.0
                grad_A = (Zb.T @ P.reshape(len(rows), m * K)).reshape(r, m, K).transpose(1, 0, 2) / len(rows)
                grad_A += (decay * ahead_A).astype(np.float32)
                grad_b = P.mean(axis=0)
                velocity_A = momentum * velocity_A - lr * step[:, :, None] * grad_A
                velocity_b = momentum * velocity_b - lr * step_b * grad_b
                A += velocity_A
                b += velocity_b
    Z_val = ((np.asarray(X_val, np.float64) - mean).astype(np.float32)) @ V
    predicted = (Z_val @ A.transpose(1, 0, 2).reshape(r, m * K)).reshape(len(Z_val), m, K) + b
    scores = {float(c): float((predicted[:, i].argmax(axis=1) == np.asarray(y_val)).mean()) for i, c in enumerate(C)}
    chosen = choose_c(scores)
    i = [float(c) for c in C].index(chosen)
    coef = (V.astype(np.float64) @ A[i].astype(np.float64)).T
    intercept = b[i].astype(np.float64) - coef @ mean
    if K == 2:  # scikit-learn's binomial weights: the difference of the two classes'
        coef, intercept = (coef[1] - coef[0])[None], np.r_[intercept[1] - intercept[0]]
    return StreamedFit(chosen, coef, intercept, scores, n)
