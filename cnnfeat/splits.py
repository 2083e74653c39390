"""Seeded, reproducible index splits of the transfer-learning literature.

Each function returns index arrays into the dataset's rows, so the same features serve every
split; :mod:`cnnfeat.protocols` names them and decides which a benchmark runs. The protocols'
sources and the published numbers measured with them are in the documentation's results page.

Examples
--------
>>> from cnnfeat.splits import n_per_class
>>> split = n_per_class(["a", "a", "a", "b", "b", "b"], n_train=2, seed=0)
>>> len(split.train), len(split.test)
(4, 2)
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass, field

import numpy as np

from cnnfeat.exceptions import ConfigError

__all__ = ["Split", "domain_shift_full", "domain_shift_sampled", "k_fold", "leave_one_domain_out", "n_per_class", "official"]


@dataclass(frozen=True)
class Split:
    """Row indices of one split. ``train_domain`` marks source/target rows for adaptation."""

    train: np.ndarray
    test: np.ndarray
    val: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    unlabelled: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    description: str = ""


def _by_class(labels: Sequence[Hashable]) -> dict[Hashable, np.ndarray]:
    values = np.asarray(labels)
    return {c: np.flatnonzero(values == c) for c in sorted(set(values.tolist()))}


def n_per_class(
    labels: Sequence[Hashable], n_train: int, seed: int, *, n_val: int = 0, n_test_max: int | None = None, min_test: int = 1
) -> Split:
    """``n_train`` (and ``n_val``) random images per class for training, the rest (capped) for testing.

    Used for Caltech-101 (30 per class, test capped at 50), 15-Scene (100 per class)
    and Oxford-17 (40 train / 20 val / 20 test).

    Raises
    ------
    ConfigError
        A class has too few images for the request.
    """
    if n_train < 1 or n_val < 0:
        raise ConfigError(f"n_train must be >= 1 and n_val >= 0; got {n_train}, {n_val}")
    rng = np.random.default_rng(seed)
    train, val, test = [], [], []
    for cls, rows in _by_class(labels).items():
        if len(rows) < n_train + n_val + min_test:
            raise ConfigError(f"class {cls!r} has {len(rows)} images; {n_train} train + {n_val} val + {min_test} test requested")
        order = rng.permutation(rows)
        train.append(order[:n_train])
        val.append(order[n_train : n_train + n_val])
        test.append(order[n_train + n_val :][:n_test_max])
    return Split(
        train=np.sort(np.concatenate(train)),
        val=np.sort(np.concatenate(val)),
        test=np.sort(np.concatenate(test)),
        description=f"{n_train} train{f' + {n_val} val' if n_val else ''} per class, rest test"
        + (f" (at most {n_test_max} per class)" if n_test_max else "")
        + f", seed {seed}",
    )


def domain_shift_full(domains: Sequence[str], source: str, target: str) -> Split:
    """All labelled source images train; all target images are the (unlabelled) test set (DAN, DANN, CDAN)."""
    d = np.asarray(domains)
    src, tgt = np.flatnonzero(d == source), np.flatnonzero(d == target)
    if not len(src) or not len(tgt):
        raise ConfigError(f"no images in domain {source if not len(src) else target!r}; domains are {sorted(set(d.tolist()))}")
    return Split(train=src, test=tgt, unlabelled=tgt, description=f"{source}->{target}, full protocol")


def domain_shift_sampled(
    labels: Sequence[Hashable],
    domains: Sequence[str],
    source: str,
    target: str,
    seed: int,
    *,
    n_source: int | None = None,
    n_target_labelled: int = 0,
) -> Split:
    """Saenko et al. 2010 / DeCAF: a few source images per class, optionally 3 labelled target images per class.

    ``n_source`` defaults to 20 for amazon and 8 for dslr or webcam; a class with fewer
    source images (Office-31 dslr has 7 rulers) contributes all it has. Test: the target
    images not used as labelled targets.
    """
    y, d = np.asarray(labels), np.asarray(domains)
    n_source = n_source if n_source is not None else (20 if source == "amazon" else 8)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in sorted(set(y.tolist())):
        src = np.flatnonzero((y == cls) & (d == source))
        tgt = np.flatnonzero((y == cls) & (d == target))
        if not len(src) or len(tgt) <= n_target_labelled:
            raise ConfigError(f"class {cls!r}: {len(src)} source / {len(tgt)} target images; too few for this protocol")
        train.append(rng.permutation(src)[:n_source])  # all of them where a class has fewer (dslr 'ruler': 7)
        tgt = rng.permutation(tgt)
        train.append(tgt[:n_target_labelled])
        test.append(tgt[n_target_labelled:])
    setting = "ST" if n_target_labelled else "S"
    return Split(
        train=np.sort(np.concatenate(train)),
        test=np.sort(np.concatenate(test)),
        description=f"{source}->{target}, sampled ({setting}): {n_source} source"
        + (f" + {n_target_labelled} target" if n_target_labelled else "")
        + f" per class, seed {seed}",
    )


def k_fold(labels: Sequence[Hashable], k: int, fold: int, seed: int = 0) -> Split:
    """Fold ``fold`` of a stratified, shuffled ``k``-fold split (the fold is the test set)."""
    from sklearn.model_selection import StratifiedKFold

    if not 0 <= fold < k:
        raise ConfigError(f"fold must be in [0, {k}); got {fold}")
    y = np.asarray(labels)
    train, test = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(y)), y))[fold]
    return Split(train=train, test=test, description=f"stratified {k}-fold, fold {fold}, seed {seed}")


def leave_one_domain_out(
    domains: Sequence[str], target: str, official_splits: dict[str, dict[str, np.ndarray]] | None = None
) -> Split:
    """Multi-source domain generalisation: train on every domain but ``target``, test on all of ``target``.

    Where ``official_splits`` has a split per source domain (PACS' ``*_kfold.txt``), the training rows
    are each source domain's official train and validation rows; otherwise all of its rows.
    """
    d = np.asarray(domains)
    sources = sorted(set(d.tolist()) - {target})
    if target not in set(d.tolist()) or not sources:
        raise ConfigError(
            f"leave-one-domain-out needs the held-out domain {target!r} and one other; domains are {sorted(set(d.tolist()))}"
        )
    splits = official_splits or {}
    if all(s in splits for s in sources):
        train = np.concatenate([np.r_[splits[s]["train"], splits[s].get("val", np.zeros(0, int))] for s in sources])
        how = "their official train+val splits"
    else:
        train = np.flatnonzero(d != target)
        how = "all their images"
    return Split(
        train=np.sort(train.astype(int)),
        test=np.flatnonzero(d == target),
        description=f"leave one domain out: {', '.join(sources)} ({how}) -> all of {target}",
    )


def official(splits: dict[str, dict[str, np.ndarray]], index: int) -> Split:
    """Split number ``index`` (0-based) of a dataset's official split files (see :mod:`cnnfeat.catalog`)."""
    names = sorted(splits, key=lambda s: (not s.isdigit(), int(s) if s.isdigit() else 0, s))
    if not names:
        raise ConfigError("this dataset has no official split files (see `cnnfeat data verify`)")
    if not 0 <= index < len(names):
        raise ConfigError(f"official split {index} requested; the dataset has {len(names)}")
    parts = splits[names[index]]
    empty = np.zeros(0, int)
    return Split(
        train=parts["train"], val=parts.get("val", empty), test=parts["test"], description=f"official split {names[index]}"
    )
