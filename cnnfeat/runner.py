"""The benchmark runner: methods x probes x datasets x protocols x seeds, one JSON record per run.

A run is a :class:`RunSpec`. :func:`expand` turns lists of each into the runs a
suite needs (a domain-shift protocol becomes one run per shift; few-shot one per
shot count). :func:`run_all` extracts each (method, dataset) feature matrix once,
through the feature cache, never inside a split loop, then fits one probe per run
and writes ``records/<key>.json``. A run that fails is recorded with its error
and the others go on; with ``skip_existing`` a run whose record is already there
(same spec, same key) is not run again, which is how an interrupted suite resumes.

Methods
-------
``cnn:<backbone>/<tap>[@<views>][?<param>=<value>&...]``
    :class:`~cnnfeat.CNNFeatures`, e.g. ``cnn:efficientnet_lite0/pool``, ``cnn:vgg16/fc1@10crop``,
    ``cnn:resnet50/pool?weights=none`` (any CNNFeatures parameter; ``none`` means None).
``hog``, ``sift_bovw``, ``color_hist``
    The hand-crafted baselines (the SIFT codebook is learned on each split's training images).

Protocols
---------
``default`` (the dataset's own, from its catalog entry), ``n_per_class:<n>``,
``few_shot`` (1, 2, 5, 10, 20, 30 per class), ``official``, ``kfold:<k>``, and for
datasets with domains ``full`` and ``sampled`` / ``sampled_st`` (Saenko / DeCAF).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnfeat.catalog import Dataset, dataset_spec, load_dataset
from cnnfeat.exceptions import ConfigError, DatasetError
from cnnfeat.files import atomic_write
from cnnfeat.logistic_path import SOLVERS
from cnnfeat.methods import Method
from cnnfeat.protocols import (
    FEW_SHOT,
    Protocol,
    Split,
    domain_shift_full,
    domain_shift_sampled,
    k_fold,
    leave_one_domain_out,
    n_per_class,
    official,
)
from cnnfeat.store import fingerprint_of

__all__ = ["PROBES", "RunSpec", "default_cache", "expand", "load_records", "run_all", "sort_records"]

logger = logging.getLogger(__name__)

#: probe name -> SweptLinearClassifier parameters (``knn``: :class:`~cnnfeat.probes.KNNProbe`, DINOv2's k-NN)
PROBES: dict[str, dict[str, Any]] = {
    "logreg": {"kind": "logreg", "search": "kornblith"},
    "logreg+dropout": {"kind": "logreg", "search": "kornblith", "dropout": 0.5},
    "svm": {"kind": "svm", "search": "clip"},
    "svm+dropout": {"kind": "svm", "search": "clip", "dropout": 0.5},
    "knn": {},
}
ADAPTATIONS = ("none", "coral", "sa", "augment", "bda", "spl")
#: the probe field of a ``finetune:`` run, which trains its own classifier
FINETUNE = "finetune"
RECORD_VERSION = 1
#: the solver of every run recorded before ``solver`` was a field (scikit-learn's L-BFGS at tol 1e-4)
LEGACY_SOLVER = "lbfgs"


@dataclass(frozen=True)
class RunSpec:
    """One run: features, normalisation, probe and adaptation, on one split of one dataset."""

    method: str
    probe: str
    dataset: str
    protocol: str
    seed: int
    normalize: str = "none"
    adapt: str = "none"
    data_digest: str = ""  # the content digest of a user's dataset (catalog datasets are named by their name)
    solver: str = "path"  # logistic regression's (SweptLinearClassifier's ``solver``)
    # ``seed`` is the seed of a random split, and for ``kfold`` the fold, for ``official`` the official split:
    # the name stays, as it is part of every record's key

    def key(self) -> str:
        """A stable name for the run's record (sha256 of the spec)."""
        # records made before the path solver hold neither field: their keys stay as they were
        fields = {k: v for k, v in asdict(self).items() if (k != "data_digest" or v) and (k != "solver" or v != LEGACY_SOLVER)}
        text = json.dumps({**fields, "record_version": RECORD_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    @property
    def column(self) -> str:
        """The table column: the dataset and what its protocol varies (shots, shift, S or ST)."""
        return Protocol.parse(self.protocol).column(self.dataset)

    @property
    def row(self) -> str:
        """The table row: features, normalisation, probe and adaptation (a ``finetune:`` method alone)."""
        if self.probe == FINETUNE:
            return self.method
        parts = [self.method] + ([self.normalize] if self.normalize != "none" else []) + [self.probe]
        return " + ".join(parts + ([self.adapt] if self.adapt != "none" else []))


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
        if probe not in PROBES:
            raise ConfigError(f"unknown probe {probe!r}; choose from {', '.join(PROBES)}")
    if solver not in SOLVERS:
        raise ConfigError(f"unknown solver {solver!r}; choose from {', '.join(SOLVERS)}")
    for a in adapt:
        if a not in ADAPTATIONS:
            raise ConfigError(f"unknown adaptation {a!r}; choose from {', '.join(ADAPTATIONS)}")
    parsed = {method: Method.parse(method) for method in methods}
    norms = [normalize] if isinstance(normalize, str) else list(normalize or [])
    runs = []
    for dataset in datasets:
        loaded = dataset if isinstance(dataset, Dataset) else None
        if isinstance(dataset, Dataset):
            dataset, spec, digest = dataset.name, dataset.spec, dataset.digest
        else:
            spec, digest = dataset_spec(dataset), ""
        for protocol in protocols:
            for resolved, seeds_for in _resolve_protocol(protocol, spec, seeds, all_folds):
                if loaded is not None:
                    _check_fits(resolved, loaded)
                shift = Protocol.parse(resolved)
                for method in methods:
                    finetune = parsed[method].kind == "finetune"  # a classifier of its own, trained on the source only
                    for probe in [FINETUNE] if finetune else probes:
                        for a in adapt if shift.is_domain_shift and not finetune else ("none",):
                            if a == "augment" and shift.name != "sampled_st":
                                continue  # feature augmentation needs labelled target images
                            for norm in norms or [parsed[method].default_normalize]:
                                for seed in seeds_for:
                                    runs.append(RunSpec(method, probe, dataset, resolved, int(seed), norm, a, digest, solver))
    return list(dict.fromkeys(runs))


def _check_fits(protocol: str, dataset: Dataset) -> None:
    """Refuse a protocol the data is too small for, before any work, naming protocols that fit it."""
    parsed = Protocol.parse(protocol)
    if parsed.name not in ("kfold", "n_per_class"):
        return
    counts = Counter(dataset.manifest.labels)
    smallest, fewest = min(counts.items(), key=lambda kv: (kv[1], kv[0]))
    needed = int(parsed.detail) if parsed.name == "kfold" else int(parsed.detail) + 1
    if fewest >= needed:
        return
    fitting = [f"kfold:{min(fewest, 5)}", f"n_per_class:{fewest - 1}"] if fewest >= 2 else []
    what = "one in each fold" if parsed.name == "kfold" else f"{parsed.detail} to train, 1 to test"
    raise ConfigError(
        f"{dataset.name}: its smallest class ({smallest}) has {fewest} image{'s' * (fewest != 1)}; {protocol} needs "
        f"{needed} per class ({what}). "
        + (f"Use --protocol {' or '.join(fitting)}" if fitting else "Every protocol needs at least 2 images per class")
    )


def _resolve_protocol(
    protocol: str, spec: dict[str, Any], seeds: Sequence[int], all_folds: bool = False
) -> list[tuple[str, Sequence[int]]]:
    defaults = spec.get("protocols", {})
    parsed = Protocol.parse(protocol)
    name, arg = parsed.name, parsed.detail
    if name == "default":
        name = defaults.get("default", "n_per_class")
        if name == "domain_shift_full":
            name = "full"
        arg = ""
    if name == "n_per_class":
        n = arg or str(defaults.get("n_train", 30))
        return [(f"n_per_class:{n}", seeds)]
    if name == "few_shot":
        return [(f"n_per_class:{k}", seeds) for k in FEW_SHOT]
    if name == "kfold":
        k = int(arg or 5)
        return [(f"kfold:{k}", list(range(k)) if all_folds else [s for s in seeds if s < k])]
    if name == "official":
        count = _official_split_count(spec)
        if not count and spec.get("user_data"):
            raise ConfigError(
                f"{spec['name']}: the official protocol needs a split: a 'split' column (train/val/test) in the CSV "
                "or a tree <train|val|test>/<class>/<file>; use kfold:<k> or n_per_class:<n> instead"
            )
        chosen = [s for s in seeds if s < count] if count else seeds
        if not chosen:
            raise ConfigError(
                f"{spec['name']} has {count} official split(s); seed k runs split k, so seeds {list(seeds)} name none"
            )
        return [("official", chosen)]
    if name in ("full", "sampled", "sampled_st"):
        shifts = defaults.get("shifts") or [
            f"{s}->{t}" for s in spec["layout"].get("domains", []) for t in spec["layout"]["domains"] if s != t
        ]
        if not shifts and spec.get("user_data"):
            raise ConfigError(
                f"{spec['name']}: the {name} protocol needs two or more domains: a tree <domain>/<class>/<file> "
                "or a 'domain' column in the CSV; this data has none"
            )
        if not shifts:
            return []
        # the full protocol has no randomness in its split: one seed
        return [(f"{name}:{shift}", seeds[:1] if name == "full" else seeds) for shift in shifts]
    if name == "lodo":
        domains = spec["layout"].get("domains", [])
        if len(domains) < 2 and spec.get("user_data"):
            raise ConfigError(f"{spec['name']}: leave-one-domain-out needs two or more domains; this data has {len(domains)}")
        return [(f"lodo:{d}", seeds[:1]) for d in domains] if len(domains) >= 2 else []  # no randomness: one seed
    raise ConfigError(f"unknown protocol {protocol!r}; see `python -m cnnfeat.benchmark --help`")


def _official_split_count(spec: dict[str, Any]) -> int:
    """How many official splits a catalog entry (or a user's dataset) defines; 0 when it has none."""
    if spec.get("user_data"):
        return 1 if spec["protocols"]["default"] == "official" else 0
    layout = spec["layout"]
    if layout["type"] == "id_lists":
        return 1
    files = layout.get("split_files")
    if not files:
        return 0
    return len(layout["domains"]) if files.get("format") == "path_label" else int(files.get("splits", 1))


def make_split(spec: RunSpec, dataset: Dataset) -> Split:
    """The train/test (and unlabelled target) rows of one run."""
    protocol = Protocol.parse(spec.protocol)
    name, arg = protocol.name, protocol.detail
    labels, defaults = dataset.manifest.labels, dataset.spec.get("protocols", {})
    if name == "n_per_class":
        n = int(arg)
        standard = n == defaults.get("n_train")
        return n_per_class(
            labels,
            n,
            spec.seed,
            n_val=defaults.get("n_val", 0) if standard else 0,
            n_test_max=defaults.get("n_test_max") if standard else None,
        )
    if name == "kfold":
        return k_fold(labels, int(arg), spec.seed)
    if name == "official":
        if not dataset.official_splits:
            raise ConfigError(
                f"{dataset.name} ({dataset.layout} layout, {dataset.root}) has no official split files, which the "
                "official protocol reads; use a copy that has them (see `cnnfeat data layouts`) or another protocol"
            )
        return official(dataset.official_splits, spec.seed)
    source, target = protocol.source, protocol.target
    if name == "lodo":
        return leave_one_domain_out(dataset.manifest.domains, target, dataset.official_splits)
    if name == "full":
        return domain_shift_full(dataset.manifest.domains, source, target)
    if name in ("sampled", "sampled_st"):
        split = domain_shift_sampled(
            labels, dataset.manifest.domains, source, target, spec.seed, n_target_labelled=3 if name == "sampled_st" else 0
        )
        # the transductive adaptation methods see the unlabelled target (test) images
        return Split(train=split.train, test=split.test, unlabelled=split.test, description=split.description)
    raise ConfigError(f"unknown protocol {spec.protocol!r}")


def _make_probe(spec: RunSpec) -> Any:
    from sklearn.pipeline import make_pipeline

    from cnnfeat.adaptation import (
        CORAL,
        BalancedDistributionAdaptation,
        FeatureAugmentation,
        SelectivePseudoLabeling,
        SubspaceAlignment,
    )
    from cnnfeat.normalize import make_normalizer
    from cnnfeat.probes import KNNProbe, SweptLinearClassifier

    probe: Any = KNNProbe() if spec.probe == "knn" else SweptLinearClassifier(**PROBES[spec.probe], solver=spec.solver)
    if spec.adapt == "coral":
        probe = CORAL(probe)
    elif spec.adapt == "sa":
        probe = SubspaceAlignment(probe, n_components=100)
    elif spec.adapt == "augment":
        probe = FeatureAugmentation(probe)
    elif spec.adapt == "bda":
        probe = BalancedDistributionAdaptation(probe)
    elif spec.adapt == "spl":
        probe = SelectivePseudoLabeling(probe)
    if spec.normalize != "none":
        probe = make_pipeline(make_normalizer(spec.normalize), probe)
    return probe


def _innermost(model: Any, attribute: str) -> Any:
    """The estimator inside a pipeline / adaptation wrapper that has ``attribute`` (``C_``, ``k_``), or None."""
    while model is not None and not hasattr(model, attribute):
        model = model.steps[-1][1] if hasattr(model, "steps") else getattr(model, "estimator_", None)
    return model


def _fit_predict(
    spec: RunSpec, X: np.ndarray, labels: np.ndarray, domains: np.ndarray, split: Split, cache: Any = None
) -> tuple[Any, np.ndarray]:
    if spec.probe == FINETUNE:  # X holds the images' paths
        model = Method.parse(spec.method).make_classifier(cache, random_state=spec.seed)
        model.fit(list(X[split.train]), labels[split.train])
        return model, model.predict(list(X[split.test]))
    is_source = _is_source(spec, domains)
    model = _fit_rows(spec, X, split.train, labels[split.train], split.unlabelled, is_source)
    return model, model.predict(X[split.test])


def _is_source(spec: RunSpec, domains: np.ndarray) -> np.ndarray:
    """Which rows are the source domain of a domain-shift run (every row otherwise)."""
    protocol = Protocol.parse(spec.protocol)
    return domains == protocol.source if protocol.is_domain_shift else np.ones(len(domains), bool)


def _fit_rows(
    spec: RunSpec, X: np.ndarray, rows: np.ndarray, y: np.ndarray, unlabelled: np.ndarray, is_source: np.ndarray
) -> Any:
    """The run's probe fitted on ``X[rows]`` labelled ``y``; an adaptation also sees ``X[unlabelled]`` and the domains."""
    model = _make_probe(spec)
    if spec.adapt == "none":
        return model.fit(X[rows], y)
    both = np.r_[rows, unlabelled]
    labels = np.r_[np.asarray(y, dtype=object), np.full(len(unlabelled), -1, dtype=object)]
    domain = np.where(is_source[both], "source", "target")
    key = f"{model.steps[-1][0]}__domain" if hasattr(model, "steps") else "domain"
    return model.fit(X[both], labels, **{key: list(domain)})


def _cross_validation(item: tuple[ProbeJob | dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
    """A recipe search's first score of a run: k-fold accuracy on its training rows at its chosen C or k."""
    from cnnfeat.recipes import cross_validation

    job, choice = item
    if isinstance(job, dict):  # its features failed: nothing to score
        return {"cross_validation": None, "cross_validation_error": job.get("error")}
    started = time.perf_counter()
    try:
        score = cross_validation(_make_probe(job.spec), choice, job.X[job.split.train], job.labels[job.split.train])
    except Exception as exc:  # the run itself stands; the choice falls back to the validation scores
        logger.warning("cross-validation of %s failed: %s", job.spec, exc)
        return {"cross_validation": None, "cross_validation_error": f"{type(exc).__name__}: {exc}"}
    return {"cross_validation": score, "cross_validation_seconds": time.perf_counter() - started}


def _reverse_validation(item: tuple[ProbeJob | dict[str, Any], dict[str, Any]]) -> dict[str, Any]:
    """A recipe search's second score of a domain-shift run (:func:`cnnfeat.recipes.reverse_validation`)."""
    from cnnfeat.recipes import reverse_validation

    job, _ = item
    if isinstance(job, dict):  # its features failed: nothing to score
        return {"reverse_validation_error": job.get("error")}
    started = time.perf_counter()
    try:
        score = reverse_validation(
            lambda rows, y, unlabelled, source: _fit_rows(job.spec, job.X, rows, y, unlabelled, source),
            job.X, job.labels, job.split.train, job.split.unlabelled, _is_source(job.spec, job.domains),
        )  # fmt: skip
    except Exception as exc:  # the run itself stands; it is only not a candidate for the adaptation
        logger.warning("reverse validation of %s failed: %s", job.spec, exc)
        return {"reverse_validation_error": f"{type(exc).__name__}: {exc}"}
    return {"reverse_validation": score, "reverse_validation_seconds": time.perf_counter() - started}


def _versions() -> dict[str, str]:
    import h5py
    import sklearn

    import cnnfeat

    found = {"cnnfeat": cnnfeat.__version__, "scikit-learn": sklearn.__version__, "numpy": np.__version__}
    found |= {"h5py": h5py.__version__, "python": platform.python_version()}
    try:  # the installed version, without importing keras (and its backend) for it
        found["keras"] = importlib.metadata.version("keras")
    except importlib.metadata.PackageNotFoundError:
        pass
    return found


def machine_description() -> str:
    """Architecture, cores, CPU model and BLAS kernels: what decides the last bits of a result.

    Two CPUs that differ here can give tables that differ in the last printed digit (see docs/results.md).
    """
    from threadpoolctl import threadpool_info

    model = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.partition(":")[2].strip()
                break
    # the BLAS of numpy and scipy, which the probes run on (OpenCV brings its own, which they do not use)
    blas = [i for i in threadpool_info() if i.get("architecture") and ("numpy" in i["filepath"] or "scipy" in i["filepath"])]
    kernels = sorted({f"{i['internal_api']} {i['architecture']}" for i in blas})
    return ", ".join([f"{platform.machine()}, {os.cpu_count()} cores", *filter(None, [model]), *kernels])


def _features(
    method: str,
    dataset: Dataset,
    cache: str | os.PathLike[str] | None,
    engine: Any,
    rows: np.ndarray | None = None,
    fit_rows: Any = None,
    **overrides: Any,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """The method's features of the dataset's images (all rows, or ``rows``), per tap, and their provenance."""
    paths = dataset.manifest.paths
    extractor = Method.parse(method).make_features(cache, **overrides)
    started = time.perf_counter()
    if fit_rows is not None:
        extractor.fit([paths[i] for i in fit_rows])
    wanted = range(len(paths)) if rows is None else rows
    blocks, report = extractor.extract([paths[i] for i in wanted], engine=engine)
    config = extractor.store_config()  # the extractor's configuration and taps (hashing a weights file once)
    info = {
        "extractor": config,
        "fingerprint": fingerprint_of(config),
        "n_cached": report.n_cached,
        "n_computed": report.n_computed,
        "device": report.device,
        "seconds": time.perf_counter() - started,
    }
    if not report.n_computed and report.earlier_seconds_per_image:  # read from the cache: the speed measured then
        info["earlier_seconds_per_1k"] = 1000 * report.earlier_seconds_per_image
    if rows is not None:
        for tap, X in blocks.items():
            full = np.full((len(paths), X.shape[1]), np.nan, np.float32)
            full[rows] = X
            blocks[tap] = full
    return blocks, info


def _cnn_parts(method: str) -> tuple[Method, ...]:
    """The ``cnn:`` methods a method reads: itself, a ``concat`` method's parts, or none."""
    parsed = Method.parse(method)
    return parsed.parts if parsed.kind == "concat" else (parsed,) if parsed.kind == "cnn" else ()


def _cnn_taps(runs: Sequence[RunSpec]) -> dict[tuple[str, str], list[str]]:
    """Taps wanted per (dataset, CNN configuration): they are extracted together, in one forward pass each."""
    groups: dict[tuple[str, str], list[str]] = {}
    for spec in runs:
        for part in _cnn_parts(spec.method):
            taps = groups.setdefault((spec.dataset, part.network), [])
            if part.tap not in taps:
                taps.append(part.tap)
    return groups


def run_all(
    runs: Sequence[RunSpec],
    out: str | os.PathLike[str],
    *,
    data_root: str | os.PathLike[str] | None = None,
    cache: str | os.PathLike[str] | None = None,
    skip_existing: bool = False,
    strict: bool = True,
    command: str = "",
    on_run: Callable[[RunSpec, dict[str, Any]], None] | None = None,
    loaded: Sequence[Dataset] = (),
    engine: Any = None,
    jobs: int | None = 1,
    choose_recipe: bool = False,
) -> list[dict[str, Any]]:
    """Run ``runs`` and write one JSON record each under ``out/records``; returns the records.

    ``loaded`` holds datasets already loaded, such as a user's own
    (:func:`cnnfeat.catalog.dataset_from_inputs`); other names are read from the catalog.

    Features are computed once per (method, dataset) and shared by every probe, seed and
    protocol (the SIFT codebook, learned from training images, once per split). One run's
    failure is recorded (``"status": "failed"`` with the error) and the others go on.
    ``strict=False`` runs on a dataset whose counts differ from the official ones (a
    trimmed copy); each record then lists the differences under ``"dataset_problems"``.

    ``engine`` (:class:`cnnfeat.engines.RayEngine`) extracts the features on a Ray cluster
    and fits the probes there; ``jobs`` fits that many probes at once (in processes here, or
    as Ray tasks). The records are the same whichever way they were made, timings aside.

    ``choose_recipe`` marks the runs as candidates of a recipe search (:mod:`cnnfeat.recipes`):
    after them, each split's candidates are scored by cross-validation on their training rows
    and, on a domain shift, the adaptations of the features chosen so are scored by reverse
    validation; the report adds the chosen recipe's row.
    """
    from cnnfeat.engines.parallel import map_in_order

    records_dir = Path(out) / "records"
    records_dir.mkdir(parents=True, exist_ok=True)
    cache = cache if cache is not None else default_cache()
    versions, machine = _versions(), machine_description()
    datasets: dict[str, Dataset | Exception] = {d.name: d for d in loaded}
    features: dict[tuple[str, ...], tuple[dict[str, np.ndarray], dict[str, Any]] | Exception] = {}
    cnn_taps = _cnn_taps(runs)
    records: list[dict[str, Any]] = []
    todo: list[tuple[RunSpec, dict[str, Any]]] = []
    for spec in runs:
        path = records_dir / f"{spec.key()}.json"
        if skip_existing and path.is_file():
            record = json.loads(path.read_text())
            if record.get("status") == "ok" and record.get("recipe_search", False) >= choose_recipe:
                records.append(record)
                if on_run:
                    on_run(spec, record)
                continue
        record = {"key": spec.key(), **asdict(spec), "row": spec.row, "column": spec.column, "command": command}
        record["recipe_search"] = choose_recipe
        todo.append((spec, record | {"versions": versions, "machine": machine}))

    def jobs_of_runs() -> Any:  # features are extracted here, lazily, as the probes are handed out
        for spec, _ in todo:
            try:
                yield _prepare(spec, datasets, features, cnn_taps, data_root, cache, strict, engine)
            except Exception as exc:  # one run's failure must not stop the suite
                yield _failure(spec, exc)

    def write(record: dict[str, Any]) -> None:
        text = json.dumps(record, indent=1, default=str)
        atomic_write(records_dir / f"{record['key']}.json", lambda tmp: tmp.write_text(text))

    for (spec, record), fields in zip(todo, map_in_order(_probe, jobs_of_runs(), engine=engine, jobs=jobs)):
        record |= fields
        write(record)
        records.append(record)
        if on_run:
            on_run(spec, record)
    if choose_recipe:  # the search's scores (cnnfeat.recipes): cross-validation, then reverse validation on a shift
        from cnnfeat.recipes import needing_cross_validation, needing_reverse_validation

        specs = {spec.key(): spec for spec in runs}
        for needing, score in ((needing_cross_validation, _cross_validation), (needing_reverse_validation, _reverse_validation)):
            wanted = needing(records)

            def jobs_to_score(wanted: list[dict[str, Any]] = wanted) -> Any:
                for record in wanted:
                    spec = specs[record["key"]]
                    try:
                        job = _prepare(spec, datasets, features, cnn_taps, data_root, cache, strict, engine)
                    except Exception as exc:  # scored as failed; the run's own record stands
                        job = _failure(spec, exc)
                    yield job, {"C": record.get("C"), "k": record.get("k")}

            for record, fields in zip(wanted, map_in_order(score, jobs_to_score(), engine=engine, jobs=jobs)):
                record |= fields
                write(record)
    return records


def _failure(spec: RunSpec, exc: Exception) -> dict[str, Any]:
    logger.warning("run %s failed: %s", spec, exc)
    return {"status": "failed", "error": f"{type(exc).__name__}: {exc}", "traceback": traceback.format_exc(limit=5)}


def _memo(table: dict[Any, Any], key: Any, make: Callable[[], Any]) -> Any:
    """``table[key]``, made once; a failure is remembered too and raised for every run that needs it."""
    if key not in table:
        try:
            table[key] = make()
        except Exception as exc:  # recorded for every run that needs it
            table[key] = exc
    if isinstance(table[key], Exception):
        raise table[key]
    return table[key]


@dataclass
class ProbeJob:
    """One run's probe, ready to fit anywhere: the rows it needs (``split`` indexes ``X``) and its record's other fields."""

    spec: RunSpec
    X: np.ndarray
    labels: np.ndarray
    domains: np.ndarray
    split: Split
    sizes: dict[str, Any]  # the split and its sizes, before the metrics in a record
    provenance: dict[str, Any]  # the features and data, after them
    cache: str | None = None  # where a fine-tuned classifier's head-only path caches features


def _prepare(
    spec: RunSpec,
    datasets: dict[str, Any],
    features: dict[tuple[str, ...], Any],
    cnn_taps: dict[tuple[str, str], list[str]],
    data_root: str | os.PathLike[str] | None,
    cache: str | os.PathLike[str] | None,
    strict: bool,
    engine: Any,
) -> ProbeJob:
    """Split and features (shared through ``features``) of one run: everything its probe needs."""
    dataset: Dataset = _memo(datasets, spec.dataset, lambda: load_dataset(spec.dataset, data_root, strict=strict))
    split = make_split(spec, dataset)
    kind = Method.parse(spec.method).kind
    if kind == "finetune":  # trained on the images themselves
        blocks = {"paths": np.asarray(dataset.manifest.paths, dtype=object)[:, None]}
        info = {"classifier": Method.parse(spec.method).params}
    elif kind == "sift_bovw":  # the codebook is learned on the split's training images
        needed = np.unique(np.r_[split.train, split.val, split.test, split.unlabelled]).astype(int)
        key = (spec.method, spec.dataset, spec.protocol, str(spec.seed))
        blocks, info = _memo(
            features, key, lambda: _features(spec.method, dataset, cache, engine, needed, split.train, random_state=0)
        )
    elif kind in ("cnn", "concat"):  # every tap of each network on this dataset, in one pass per network
        parts = _cnn_parts(spec.method)
        extracted = [_cnn_features(part, spec.dataset, dataset, features, cnn_taps, cache, engine) for part in parts]
        info = extracted[0][1] if kind == "cnn" else {"parts": [i for _, i in extracted]}
    else:
        blocks, info = _memo(features, (spec.method, spec.dataset), lambda: _features(spec.method, dataset, cache, engine))
    train = np.r_[split.train, split.val].astype(int)
    # only the rows this run uses travel to where its probe is fitted
    rows = np.unique(np.r_[train, split.test, split.unlabelled]).astype(int)
    position = np.full(len(dataset.manifest), -1)
    position[rows] = np.arange(len(rows))
    if kind == "finetune":
        X = blocks["paths"][rows, 0]
    elif kind == "cnn" and "," not in parts[0].tap:  # one tap: as extracted
        X = extracted[0][0][parts[0].tap][rows]
    elif kind in ("cnn", "concat"):  # several taps or networks: each tap L2-normalised, then concatenated
        taps = [(blocks, tap) for part, (blocks, _) in zip(parts, extracted) for tap in part.tap.split(",")]
        X = np.concatenate([_unit_rows(blocks[tap][rows]) for blocks, tap in taps], axis=1)
    else:
        X = np.concatenate([b[rows] for b in blocks.values()], axis=1)
    local = Split(
        train=position[train], test=position[split.test], unlabelled=position[split.unlabelled], description=split.description
    )
    sizes = {"split": split.description, "n_train": len(train), "n_test": len(split.test), "n_unlabelled": len(split.unlabelled)}
    sizes["n_features"] = int(X.shape[1]) if X.ndim == 2 else 0
    provenance = {
        "features": info,
        "data": _data_provenance(dataset),
        **({"dataset_problems": dataset.problems} if dataset.problems else {}),
    }
    labels = np.asarray(dataset.manifest.labels, dtype=object)[rows]
    domains = np.asarray(dataset.manifest.domains)[rows]
    return ProbeJob(spec, X, labels, domains, local, sizes, provenance, None if cache is None else os.fspath(cache))


def _cnn_features(
    part: Method,
    name: str,
    dataset: Dataset,
    features: dict[tuple[str, ...], Any],
    cnn_taps: dict[tuple[str, str], list[str]],
    cache: str | os.PathLike[str] | None,
    engine: Any,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """A ``cnn:`` method's features per tap, with every tap the suite wants of its network (shared through ``features``)."""
    group = (name, part.network)
    layers = ",".join(cnn_taps.get(group, [part.tap]))
    return _memo(features, ("cnn", *group), lambda: _features(part.text, dataset, cache, engine, layers=layers))


def _unit_rows(X: np.ndarray) -> np.ndarray:
    return X / np.maximum(np.linalg.norm(X, axis=1, keepdims=True), 1e-12)


def _probe(job: ProbeJob | dict[str, Any]) -> dict[str, Any]:
    """Fit one run's probe and score it: the record's remaining fields (a failure's fields pass through)."""
    from cnnfeat.recipes import validation_score

    if isinstance(job, dict):
        return job
    try:
        started = time.perf_counter()
        model, predicted = _fit_predict(job.spec, job.X, job.labels, job.domains, job.split, job.cache)
        truth = job.labels[job.split.test]
        swept = _innermost(model, "C_")
        return {
            "status": "ok",
            **job.sizes,
            "accuracy": float(np.mean(predicted == truth)),
            "mean_per_class_accuracy": _mean_per_class(truth, predicted),
            "C": None if swept is None else float(swept.C_),
            "solver": _solver(swept),
            "val_accuracy_by_C": None if swept is None else {repr(C): s for C, s in sorted(swept.val_scores_.items())},
            **_knn_choice(model),
            **_training(model),
            "probe_seconds": time.perf_counter() - started,
            "validation_score": None if job.spec.probe == FINETUNE else validation_score(model),
            **job.provenance,
        }
    except Exception as exc:  # recorded, as every run's failure is
        return _failure(job.spec, exc)


def _training(model: Any) -> dict[str, Any]:
    """A fine-tuned classifier's training: seconds, epochs run, learning rates and the curves (nothing for probes)."""
    if not hasattr(model, "history_"):
        return {}
    return {
        "training": {
            "seconds": model.fit_seconds_,
            "path": model.training_path_,
            "epochs_run": model.epochs_run_,
            "learning_rates": model.learning_rates_,
            "history": model.history_,
        }
    }


def _solver(swept: Any) -> str | None:
    """What fitted a swept linear probe: the path solver, scikit-learn's L-BFGS, or liblinear (the SVM)."""
    if swept is None:
        return None
    return "liblinear" if swept.kind == "svm" else str(swept.solver)


def _knn_choice(model: Any) -> dict[str, Any]:
    """The k a k-NN probe chose and each k's validation accuracy (nothing for the linear probes)."""
    knn = _innermost(model, "k_")
    if knn is None:
        return {}
    return {"k": int(knn.k_), "val_accuracy_by_k": {str(k): s for k, s in sorted(knn.val_scores_.items())}}


def _data_provenance(dataset: Dataset) -> dict[str, Any]:
    """Which copy of the data a run read: its layout and folder, and for a user's data its size and digest."""
    found: dict[str, Any] = {"layout": dataset.layout, "root": str(dataset.root)}
    if dataset.is_user_data:
        found |= {"images": len(dataset.manifest), "classes": len(dataset.manifest.classes), "digest": dataset.digest}
    if dataset.skipped:
        found["skipped"] = [{"path": path, "reason": reason} for path, reason in dataset.skipped]
    return found


def _mean_per_class(truth: np.ndarray, predicted: np.ndarray) -> float:
    from cnnfeat.probes import mean_per_class_accuracy

    return mean_per_class_accuracy(truth.astype(str), predicted.astype(str))


def default_cache() -> Path:
    """The feature cache the benchmark uses unless told otherwise: ``<cnnfeat cache>/features``."""
    from cnnfeat.config import cache_dir

    return cache_dir() / "features"


def load_records(folder: str | os.PathLike[str]) -> list[dict[str, Any]]:
    """Every record under ``folder/records`` (or ``folder`` itself), by dataset, protocol, method, probe, seed."""
    folder = Path(folder)
    records_dir = folder / "records" if (folder / "records").is_dir() else folder
    return sort_records(json.loads(p.read_text()) for p in records_dir.glob("*.json"))


def sort_records(records: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Records by dataset, protocol, method, probe and seed: the order of every table, however they were run."""
    return sorted(records, key=_record_order)


def _record_order(record: dict[str, Any]) -> tuple[Any, ...]:
    """Dataset, protocol (shifts in the catalog's order, shots by number), method, probe, seed."""
    protocol = Protocol.parse(str(record.get("protocol", "")))
    name, detail = protocol.name, protocol.detail
    try:
        shifts = dataset_spec(record["dataset"]).get("protocols", {}).get("shifts", [])
    except DatasetError:  # a record of a dataset no longer in the catalog still sorts
        shifts = []
    rank = shifts.index(detail) if detail in shifts else int(detail) if detail.isdigit() else len(shifts)
    adapt = str(record.get("adapt", "none"))
    return (
        str(record.get("dataset")), name, rank, detail, *_method_order(record),
        *(str(record.get(f, "")) for f in ("normalize", "probe")), adapt != "none", adapt, record.get("seed", 0),
    )  # fmt: skip


def _method_order(record: dict[str, Any]) -> tuple[str, int, str]:
    """Methods by name, except that the taps of one network keep their extraction order (early to late)."""
    method = str(record.get("method", ""))
    taps = ((record.get("features") or {}).get("extractor") or {}).get("taps") or []
    try:
        parsed = Method.parse(method)
    except ConfigError:  # a record of a method this version no longer knows still sorts
        return method, -1, ""
    if parsed.kind == "cnn" and parsed.tap in taps:
        network = method.replace(f"/{parsed.tap}", "/", 1)  # the method without its tap: cnn:<backbone>/[@views][?...]
        return network, taps.index(parsed.tap), method
    return method, -1, ""
