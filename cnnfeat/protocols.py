"""Split protocols of the transfer-learning literature, seeded and reproducible.

Each function returns index arrays into the dataset's rows, so the same
features serve every split. The protocols' sources and the published numbers
measured with them are in the documentation's results page.

Examples
--------
>>> from cnnfeat.protocols import n_per_class
>>> split = n_per_class(["a", "a", "a", "b", "b", "b"], n_train=2, seed=0)
>>> len(split.train), len(split.test)
(4, 2)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cnnfeat.exceptions import ConfigError

__all__ = [
    "DOMAIN_SHIFT",
    "FEW_SHOT",
    "PROTOCOL_PATTERNS",
    "Protocol",
    "Split",
    "domain_shift_full",
    "domain_shift_sampled",
    "k_fold",
    "leave_one_domain_out",
    "n_per_class",
    "official",
]

#: the shots per class of a few-shot curve
FEW_SHOT = (1, 2, 5, 10, 20, 30)
#: the protocols whose runs train on one domain and test on another
DOMAIN_SHIFT = ("full", "sampled", "sampled_st")
#: what ``--protocol`` accepts; ``default`` and ``few_shot`` expand to the others per dataset
PROTOCOL_PATTERNS = ("default", "n_per_class:<n>", "few_shot", "official", "kfold:<k>", "full", "sampled", "sampled_st", "lodo")


@dataclass(frozen=True)
class Protocol:
    """A parsed protocol string: ``n_per_class:30``, ``kfold:5``, ``official``, ``full:amazon->webcam``, ...

    The one owner of the protocol grammar: the runner expands and splits with it, the tables
    name their columns and pick the published metric with it.

    Examples
    --------
    >>> p = Protocol.parse("sampled_st:amazon->webcam")
    >>> p.is_domain_shift, p.source, p.target, p.column("office31"), p.metric
    (True, 'amazon', 'webcam', 'office31 amazon->webcam ST', 'accuracy')
    >>> Protocol.parse("n_per_class:30").shots, Protocol.parse("kfold:5").column("mine")
    (30, 'mine (5-fold)')
    """

    name: str
    detail: str = ""

    @classmethod
    def parse(cls, text: str) -> Protocol:
        name, _, detail = str(text).partition(":")
        return cls(name, detail)

    @property
    def text(self) -> str:
        return f"{self.name}:{self.detail}" if self.detail else self.name

    @property
    def is_domain_shift(self) -> bool:
        return self.name in DOMAIN_SHIFT

    @property
    def source(self) -> str:
        return self.detail.partition("->")[0] if self.is_domain_shift else ""

    @property
    def target(self) -> str:
        """The target domain of a shift, or the held-out domain of ``lodo``."""
        if self.name == "lodo":
            return self.detail
        return self.detail.partition("->")[2] if self.is_domain_shift else ""

    @property
    def shots(self) -> int | None:
        """Training images per class of an ``n_per_class`` protocol."""
        return int(self.detail) if self.name == "n_per_class" and self.detail.isdigit() else None

    @property
    def metric(self) -> str:
        """The published metric: plain accuracy under domain shift (DeCAF, DAN), else mean per-class accuracy."""
        return "accuracy" if self.is_domain_shift or self.name == "lodo" else "mean_per_class_accuracy"

    def column(self, dataset: str) -> str:
        """A table column: the dataset and what this protocol varies (shots, folds, shift, S or ST)."""
        if self.name == "n_per_class":
            return f"{dataset} ({self.detail}/class)"
        if self.name == "kfold":
            return f"{dataset} ({self.detail}-fold)"
        if self.name == "full":
            return f"{dataset} {self.detail}"
        if self.name in ("sampled", "sampled_st"):
            return f"{dataset} {self.detail} {'ST' if self.name == 'sampled_st' else 'S'}"
        if self.name == "lodo":  # every other domain -> this one (the multi-source table: a column per target)
            return f"{dataset} ->{self.detail}"
        return dataset


@dataclass(frozen=True)
class Split:
    """Row indices of one split. ``train_domain`` marks source/target rows for adaptation."""

    train: np.ndarray
    test: np.ndarray
    val: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    unlabelled: np.ndarray = field(default_factory=lambda: np.zeros(0, int))
    description: str = ""


def _by_class(labels: Sequence[Any]) -> dict[Any, np.ndarray]:
    labels = np.asarray(labels)
    return {c: np.flatnonzero(labels == c) for c in sorted(set(labels.tolist()))}


def n_per_class(
    labels: Sequence[Any], n_train: int, seed: int, *, n_val: int = 0, n_test_max: int | None = None, min_test: int = 1
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
    labels: Sequence[Any],
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
    labels, d = np.asarray(labels), np.asarray(domains)
    n_source = n_source if n_source is not None else (20 if source == "amazon" else 8)
    rng = np.random.default_rng(seed)
    train, test = [], []
    for cls in sorted(set(labels.tolist())):
        src = np.flatnonzero((labels == cls) & (d == source))
        tgt = np.flatnonzero((labels == cls) & (d == target))
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


def k_fold(labels: Sequence[Any], k: int, fold: int, seed: int = 0) -> Split:
    """Fold ``fold`` of a stratified, shuffled ``k``-fold split (the fold is the test set)."""
    from sklearn.model_selection import StratifiedKFold

    if not 0 <= fold < k:
        raise ConfigError(f"fold must be in [0, {k}); got {fold}")
    labels = np.asarray(labels)
    train, test = list(StratifiedKFold(n_splits=k, shuffle=True, random_state=seed).split(np.zeros(len(labels)), labels))[fold]
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
        raise ConfigError("this dataset has no official split files (see `python -m cnnfeat.data verify`)")
    if not 0 <= index < len(names):
        raise ConfigError(f"official split {index} requested; the dataset has {len(names)}")
    parts = splits[names[index]]
    empty = np.zeros(0, int)
    return Split(
        train=parts["train"], val=parts.get("val", empty), test=parts["test"], description=f"official split {names[index]}"
    )
