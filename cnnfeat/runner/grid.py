"""The grid of a benchmark: methods x probes x datasets x protocols x seeds, spelled out as :class:`RunSpec` s."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence

from cnnfeat.adaptation import adaptation_kind, make_adaptation
from cnnfeat.catalog import Dataset, dataset_spec
from cnnfeat.exceptions import ConfigError
from cnnfeat.logistic_path import SOLVERS
from cnnfeat.methods import Method
from cnnfeat.probes import PROBES
from cnnfeat.protocols import PROTOCOLS, Protocol
from cnnfeat.runner.spec import FINETUNE, RunSpec

__all__ = ["expand"]


def expand(
    methods: Sequence[str],
    probes: Sequence[str],
    datasets: Sequence[str | Dataset],
    protocols: Sequence[str],
    seeds: Sequence[int],
    *,
    adapt: Sequence[str] = ("none",),
    normalize: str | Sequence[str] | None = None,
    solver: str = "path",
    all_folds: bool = False,
) -> list[RunSpec]:
    """Every run of the grid, with ``default`` / ``full`` / ``sampled`` / ``few_shot`` spelled out per dataset.

    ``datasets`` holds catalog names or loaded datasets (a user's own, from
    :func:`cnnfeat.catalog.dataset_from_inputs`). Adaptation methods apply only to
    domain-shift protocols. A protocol that does not apply to a catalog dataset (``full``
    on 15-Scene) is left out, not run; on a user's dataset it is refused with the reason.
    ``official`` runs seed k on official split k, so a dataset with one official split runs once.
    ``normalize`` is one normalisation or several (each a run of its own); None: each method's default.
    ``solver`` is logistic regression's (:class:`~cnnfeat.probes.SweptLinearClassifier`'s ``solver``).
    ``all_folds``: ``kfold:k`` runs all its k folds, whatever ``seeds`` says (the command line's default).
    A user's dataset whose smallest class is too small for a protocol is refused, naming protocols that fit it.
    """
    for probe in probes:
        PROBES.get(probe)
    for a in adapt:  # a wrong name, parameter or value is refused before any work
        make_adaptation(a, PROBES.get("logreg")("path"))
    if solver not in SOLVERS:
        raise ConfigError(f"unknown solver {solver!r}; choose from {', '.join(SOLVERS)}")
    parsed = {method: Method.parse(method) for method in methods}
    norms = [normalize] if isinstance(normalize, str) else list(normalize or [])
    runs = []
    for named in datasets:
        loaded = named if isinstance(named, Dataset) else None
        if isinstance(named, Dataset):
            dataset, entry, digest = named.name, named.spec, named.digest
        else:
            dataset, entry, digest = named, dataset_spec(named), ""
        for protocol in protocols:
            for resolved, seeds_for in Protocol.parse(protocol).resolve(entry, seeds, all_folds):
                if loaded is not None:
                    _check_fits(resolved, loaded)
                kind = Protocol.parse(resolved).kind
                for method in methods:
                    finetune = parsed[method].kind == "finetune"  # a classifier of its own, trained on the source only
                    for probe in [FINETUNE] if finetune else probes:
                        for a in adapt if kind.domain_shift and not finetune else ("none",):
                            if adaptation_kind(a).needs_labelled_target and not kind.labelled_target:
                                continue
                            for norm in norms or [parsed[method].default_normalize]:
                                for seed in seeds_for:
                                    runs.append(RunSpec(method, probe, dataset, resolved, int(seed), norm, a, digest, solver))
    return list(dict.fromkeys(runs))


def _check_fits(protocol: str, dataset: Dataset) -> None:
    """Refuse a protocol the data is too small for, before any work, naming protocols that fit it."""
    parsed = Protocol.parse(protocol)
    needed = parsed.kind.needed_per_class(parsed.detail)
    if needed is None:
        return
    counts = Counter(dataset.manifest.labels)
    smallest, fewest = min(counts.items(), key=lambda kv: (kv[1], kv[0]))
    if fewest >= needed[0]:
        return
    fitting = [text for name in PROTOCOLS if (text := PROTOCOLS.get(name).fitting(fewest))]
    raise ConfigError(
        f"{dataset.name}: its smallest class ({smallest}) has {fewest} image{'s' * (fewest != 1)}; {protocol} needs "
        f"{needed[0]} per class ({needed[1]}). "
        + (f"Use --protocol {' or '.join(fitting)}" if fitting else "Every protocol needs at least 2 images per class")
    )
