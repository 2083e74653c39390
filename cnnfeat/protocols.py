"""Split protocols: a registry in which each protocol resolves per dataset, splits, and names its table column.

A protocol string is ``<name>[:<detail>]`` (``n_per_class:30``, ``kfold:5``, ``full:amazon->webcam``).
:class:`Protocol` parses it; :data:`PROTOCOLS` maps each name to a :class:`ProtocolKind`
that expands it into the runs a dataset needs (``default`` becomes the dataset's own,
``few_shot`` one run per shot count, ``full`` one per domain shift), makes each run's
:class:`~cnnfeat.splits.Split`, and says which column and metric the tables use. A new
protocol is one subclass and one :func:`register_protocol`.

Examples
--------
>>> from cnnfeat.protocols import PROTOCOLS, Protocol
>>> p = Protocol.parse("sampled_st:amazon->webcam")
>>> p.is_domain_shift, p.source, p.target, p.column("office31"), p.metric
(True, 'amazon', 'webcam', 'office31 amazon->webcam ST', 'accuracy')
>>> Protocol.parse("n_per_class:30").shots, Protocol.parse("kfold:5").column("mine")
(30, 'mine (5-fold)')
>>> "lodo" in PROTOCOLS
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import NoReturn

import numpy as np

from cnnfeat.catalog import Dataset
from cnnfeat.exceptions import ConfigError
from cnnfeat.hints import JSONObject
from cnnfeat.registry import Registry
from cnnfeat.splits import (
    Split,
    domain_shift_full,
    domain_shift_sampled,
    k_fold,
    leave_one_domain_out,
    n_per_class,
    official,
)

__all__ = [
    "FEW_SHOT",
    "PROTOCOLS",
    "Protocol",
    "ProtocolKind",
    "Split",
    "domain_shift_full",
    "domain_shift_sampled",
    "k_fold",
    "leave_one_domain_out",
    "n_per_class",
    "official",
    "register_protocol",
]

#: the shots per class of a few-shot curve
FEW_SHOT = (1, 2, 5, 10, 20, 30)

#: a protocol with its detail spelled out, and the split seeds (or folds, or official split numbers) it runs
Resolved = list[tuple[str, list[int]]]


class ProtocolKind:
    """What a protocol name means. Subclasses override what differs from a plain, seeded split."""

    #: trains on one domain and tests on another (adaptations apply)
    domain_shift = False
    #: labelled target images are among the training rows (feature augmentation needs them)
    labelled_target = False
    #: the published metric: plain accuracy under domain shift (DeCAF, DAN), else mean per-class accuracy
    metric = "mean_per_class_accuracy"

    def __init__(self, name: str, help: str, *, usage: str = "") -> None:
        self.name = name
        self.help = help
        self.usage = usage or name

    def resolve(self, detail: str, entry: JSONObject, seeds: Sequence[int], all_folds: bool) -> Resolved:
        """The protocols this one stands for on the dataset described by catalog entry ``entry``, with their seeds."""
        return [(f"{self.name}:{detail}" if detail else self.name, list(seeds))]

    def split(self, protocol: Protocol, dataset: Dataset, seed: int) -> Split:
        raise ConfigError(f"the {protocol.name} protocol expands into others before any split is made")

    def column(self, dataset: str, detail: str) -> str:
        return dataset

    def needed_per_class(self, detail: str) -> tuple[int, str] | None:
        """Images per class a run needs, and why; None when the split does not need a count per class."""
        return None

    def fitting(self, fewest: int) -> str | None:
        """This protocol as it fits data whose smallest class has ``fewest`` images (None: it cannot be fitted)."""
        return None


PROTOCOLS = Registry[ProtocolKind]("protocol")


@dataclass(frozen=True)
class Protocol:
    """A parsed protocol string; its meaning comes from the :data:`PROTOCOLS` entry of its name.

    Names no longer registered still parse (an old record sorts and tabulates) and mean a plain split.
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
    def kind(self) -> ProtocolKind:
        return PROTOCOLS.get(self.name) if self.name in PROTOCOLS else ProtocolKind(self.name, "")

    @property
    def is_domain_shift(self) -> bool:
        return self.kind.domain_shift

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
        return self.kind.metric

    def column(self, dataset: str) -> str:
        """A table column: the dataset and what this protocol varies (shots, folds, shift, S or ST)."""
        return self.kind.column(dataset, self.detail)

    def resolve(self, entry: JSONObject, seeds: Sequence[int], all_folds: bool = False) -> Resolved:
        return self.kind.resolve(self.detail, entry, seeds, all_folds) if self.name in PROTOCOLS else _unknown(self.text)

    def split(self, dataset: Dataset, seed: int) -> Split:
        return self.kind.split(self, dataset, seed) if self.name in PROTOCOLS else _unknown(self.text)


def _unknown(text: str) -> NoReturn:
    raise ConfigError(f"unknown protocol {text!r}; choose from {', '.join(PROTOCOLS)} (`cnnfeat benchmark --help`)")


class Default(ProtocolKind):
    def resolve(self, detail: str, entry: JSONObject, seeds: Sequence[int], all_folds: bool) -> Resolved:
        name = entry.get("protocols", {}).get("default", "n_per_class")
        return Protocol("full" if name == "domain_shift_full" else name).resolve(entry, seeds, all_folds)


class NPerClass(ProtocolKind):
    def resolve(self, detail: str, entry: JSONObject, seeds: Sequence[int], all_folds: bool) -> Resolved:
        return [(f"n_per_class:{detail or entry.get('protocols', {}).get('n_train', 30)}", list(seeds))]

    def split(self, protocol: Protocol, dataset: Dataset, seed: int) -> Split:
        n, defaults = int(protocol.detail), dataset.spec.get("protocols", {})
        standard = n == defaults.get("n_train")  # the dataset's own protocol: its validation rows and test cap
        return n_per_class(
            dataset.manifest.labels,
            n,
            seed,
            n_val=defaults.get("n_val", 0) if standard else 0,
            n_test_max=defaults.get("n_test_max") if standard else None,
        )

    def column(self, dataset: str, detail: str) -> str:
        return f"{dataset} ({detail}/class)"

    def needed_per_class(self, detail: str) -> tuple[int, str] | None:
        return int(detail) + 1, f"{detail} to train, 1 to test"

    def fitting(self, fewest: int) -> str | None:
        return f"n_per_class:{fewest - 1}" if fewest >= 2 else None


class FewShot(ProtocolKind):
    def resolve(self, detail: str, entry: JSONObject, seeds: Sequence[int], all_folds: bool) -> Resolved:
        return [(f"n_per_class:{k}", list(seeds)) for k in FEW_SHOT]


class KFold(ProtocolKind):
    def resolve(self, detail: str, entry: JSONObject, seeds: Sequence[int], all_folds: bool) -> Resolved:
        k = int(detail or 5)
        return [(f"kfold:{k}", list(range(k)) if all_folds else [s for s in seeds if s < k])]

    def split(self, protocol: Protocol, dataset: Dataset, seed: int) -> Split:
        return k_fold(dataset.manifest.labels, int(protocol.detail), seed)

    def column(self, dataset: str, detail: str) -> str:
        return f"{dataset} ({detail}-fold)"

    def needed_per_class(self, detail: str) -> tuple[int, str] | None:
        return int(detail), "one in each fold"

    def fitting(self, fewest: int) -> str | None:
        return f"kfold:{min(fewest, 5)}" if fewest >= 2 else None


class Official(ProtocolKind):
    def resolve(self, detail: str, entry: JSONObject, seeds: Sequence[int], all_folds: bool) -> Resolved:
        count = _official_split_count(entry)
        if not count and entry.get("user_data"):
            raise ConfigError(
                f"{entry['name']}: the official protocol needs a split: a 'split' column (train/val/test) in the CSV "
                "or a tree <train|val|test>/<class>/<file>; use kfold:<k> or n_per_class:<n> instead"
            )
        chosen = [s for s in seeds if s < count] if count else list(seeds)
        if not chosen:
            raise ConfigError(
                f"{entry['name']} has {count} official split(s); seed k runs split k, so seeds {list(seeds)} name none"
            )
        return [("official", chosen)]

    def split(self, protocol: Protocol, dataset: Dataset, seed: int) -> Split:
        if not dataset.official_splits:
            raise ConfigError(
                f"{dataset.name} ({dataset.layout} layout, {dataset.root}) has no official split files, which the "
                "official protocol reads; use a copy that has them (see `cnnfeat data layouts`) or another protocol"
            )
        return official(dataset.official_splits, seed)


def _official_split_count(entry: JSONObject) -> int:
    """How many official splits a catalog entry (or a user's dataset) defines; 0 when it has none."""
    if entry.get("user_data"):
        return 1 if entry["protocols"]["default"] == "official" else 0
    layout = entry["layout"]
    if layout["type"] == "id_lists":
        return 1
    files = layout.get("split_files")
    if not files:
        return 0
    return len(layout["domains"]) if files.get("format") == "path_label" else int(files.get("splits", 1))


class DomainShift(ProtocolKind):
    """Train on a source domain, test on a target: one run per ordered pair of domains (or the catalog's shifts)."""

    domain_shift = True
    metric = "accuracy"

    def __init__(self, name: str, help: str, *, sampled: bool, n_target_labelled: int = 0) -> None:
        super().__init__(name, help)
        self.sampled = sampled
        self.n_target_labelled = n_target_labelled
        self.labelled_target = n_target_labelled > 0

    def resolve(self, detail: str, entry: JSONObject, seeds: Sequence[int], all_folds: bool) -> Resolved:
        domains = entry["layout"].get("domains", [])
        shifts = entry.get("protocols", {}).get("shifts") or [f"{s}->{t}" for s in domains for t in domains if s != t]
        if not shifts and entry.get("user_data"):
            raise ConfigError(
                f"{entry['name']}: the {self.name} protocol needs two or more domains: a tree <domain>/<class>/<file> "
                "or a 'domain' column in the CSV; this data has none"
            )
        # the full protocol has no randomness in its split: one seed
        return [(f"{self.name}:{shift}", list(seeds) if self.sampled else list(seeds[:1])) for shift in shifts]

    def split(self, protocol: Protocol, dataset: Dataset, seed: int) -> Split:
        domains = dataset.manifest.domains
        if not self.sampled:
            return domain_shift_full(domains, protocol.source, protocol.target)
        split = domain_shift_sampled(
            dataset.manifest.labels, domains, protocol.source, protocol.target, seed, n_target_labelled=self.n_target_labelled
        )
        # the transductive adaptation methods see the unlabelled target (test) images
        return Split(train=split.train, test=split.test, unlabelled=split.test, description=split.description)

    def column(self, dataset: str, detail: str) -> str:
        if not self.sampled:
            return f"{dataset} {detail}"
        return f"{dataset} {detail} {'ST' if self.labelled_target else 'S'}"


class LeaveOneDomainOut(ProtocolKind):
    metric = "accuracy"

    def resolve(self, detail: str, entry: JSONObject, seeds: Sequence[int], all_folds: bool) -> Resolved:
        domains = entry["layout"].get("domains", [])
        if len(domains) < 2 and entry.get("user_data"):
            raise ConfigError(f"{entry['name']}: leave-one-domain-out needs two or more domains; this data has {len(domains)}")
        return [(f"lodo:{d}", list(seeds[:1])) for d in domains] if len(domains) >= 2 else []  # no randomness: one seed

    def split(self, protocol: Protocol, dataset: Dataset, seed: int) -> Split:
        return leave_one_domain_out(dataset.manifest.domains, protocol.target, dataset.official_splits)

    def column(self, dataset: str, detail: str) -> str:
        return f"{dataset} ->{detail}"  # every other domain -> this one (the multi-source table: a column per target)


class Holdout(ProtocolKind):
    """A seeded, stratified train/test split holding out ``<percent>`` % of each class (default 20)."""

    def resolve(self, detail: str, entry: JSONObject, seeds: Sequence[int], all_folds: bool) -> Resolved:
        return [(f"holdout:{detail or 20}", list(seeds))]

    def split(self, protocol: Protocol, dataset: Dataset, seed: int) -> Split:
        from sklearn.model_selection import train_test_split

        percent = int(protocol.detail)
        if not 0 < percent < 100:
            raise ConfigError(f"holdout:<percent> takes a percentage between 1 and 99; got {protocol.detail!r}")
        labels = dataset.manifest.labels
        rows = np.arange(len(labels))
        train, test = train_test_split(rows, test_size=percent / 100, random_state=seed, stratify=labels)
        return Split(
            train=np.sort(train), test=np.sort(test), description=f"{100 - percent}/{percent} stratified holdout, seed {seed}"
        )

    def column(self, dataset: str, detail: str) -> str:
        return f"{dataset} ({detail} % held out)"

    def needed_per_class(self, detail: str) -> tuple[int, str] | None:
        return 2, "one to train, one to test"


def register_protocol(kind: ProtocolKind) -> ProtocolKind:
    """Add a protocol to :data:`PROTOCOLS` under its name; ``--protocol`` accepts it from then on."""
    PROTOCOLS.add(kind.name, kind, help=kind.help, usage=kind.usage)
    return kind


for _kind in (
    Default("default", "the dataset's own"),
    KFold("kfold", "stratified k-fold, every fold", usage="kfold:<k>"),
    NPerClass("n_per_class", "n training images per class", usage="n_per_class:<n>"),
    FewShot("few_shot", f"n_per_class for n in {', '.join(map(str, FEW_SHOT))}"),
    Official("official", "the official split files; seed k runs split k"),
    DomainShift("full", "every source image -> every target image", sampled=False),
    DomainShift("sampled", "Saenko's sampled source -> target", sampled=True),
    DomainShift("sampled_st", "sampled, with 3 labelled target images", sampled=True, n_target_labelled=3),
    LeaveOneDomainOut("lodo", "leave one domain out"),
    Holdout("holdout", "a stratified split holding out this percentage of each class", usage="holdout:<percent>"),
):
    register_protocol(_kind)
