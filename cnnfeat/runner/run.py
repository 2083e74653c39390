"""Running a grid: each run's probe fitted and its record written, then a recipe search's scores."""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from cnnfeat.catalog import Dataset
from cnnfeat.extractors.local import ExtractionEngine
from cnnfeat.runner.embeddings import write_layer_maps
from cnnfeat.runner.features import FeatureBank, ProbeJob
from cnnfeat.runner.fitting import Failure, cross_validation_fields, probe_fields, selection_fields
from cnnfeat.runner.provenance import machine_description, versions
from cnnfeat.runner.records import Record, RecordStore
from cnnfeat.runner.spec import RunSpec

__all__ = ["default_cache", "run_all"]

logger = logging.getLogger(__name__)


def default_cache() -> Path:
    """The feature cache the benchmark uses unless told otherwise: ``<cnnfeat cache>/features``."""
    from cnnfeat.config import cache_dir

    return cache_dir() / "features"


def run_all(
    runs: Sequence[RunSpec],
    out: str | os.PathLike[str],
    *,
    data_root: str | os.PathLike[str] | None = None,
    cache: str | os.PathLike[str] | None = None,
    skip_existing: bool = False,
    strict: bool = True,
    command: str = "",
    on_run: Callable[[RunSpec, Record], None] | None = None,
    on_score: Callable[[str, int, int], None] | None = None,
    loaded: Sequence[Dataset] = (),
    engine: ExtractionEngine | None = None,
    jobs: int | None = 1,
    choose_recipe: bool = False,
    selector: str | None = None,
    dg_validation: str | None = None,
    runtime: str | None = None,
) -> list[Record]:
    """Run ``runs`` and write one JSON record each under ``out/records``; returns the records.

    ``loaded`` holds datasets already loaded, such as a user's own
    (:func:`cnnfeat.catalog.dataset_from_inputs`); other names are read from the catalog.

    Features are computed once per (method, dataset) and shared by every probe, seed and
    protocol (the SIFT codebook, learned from training images, once per split). One run's
    failure is recorded (``status="failed"`` with the error) and the others go on.
    ``strict=False`` runs on a dataset whose counts differ from the official ones (a
    trimmed copy); each record then lists the differences in ``dataset_problems``.

    ``engine`` (:class:`cnnfeat.engines.RayEngine`) extracts the features on a Ray cluster
    and fits the probes there; ``jobs`` fits that many probes at once (in processes here, or
    as Ray tasks). The records are the same whichever way they were made, timings aside.

    ``choose_recipe`` marks the runs as candidates of a recipe search (:mod:`cnnfeat.recipes`):
    after them, each split's candidates are scored by cross-validation on their training rows
    and, on a domain shift, the adaptations of the features chosen so are scored without target
    labels, and chosen by ``selector`` (:mod:`cnnfeat.selection`; default
    :data:`~cnnfeat.selection.DEFAULT_SELECTOR`); under leave-one-domain-out the features are chosen by
    ``dg_validation`` (:data:`cnnfeat.recipes.DG_RULES`; default training-domain validation). The report
    adds the chosen recipe's row. ``on_score(what, done, total)`` follows
    that scoring (``done=0`` as each kind of score starts).

    ``runtime`` runs every ``cnn:`` method that names none (default: the extractor's, ``auto``).
    """
    from cnnfeat.engines.parallel import map_in_order

    store = RecordStore(out)
    store.folder.mkdir(parents=True, exist_ok=True)
    bank = FeatureBank(
        runs,
        data_root=data_root,
        cache=cache if cache is not None else default_cache(),
        strict=strict,
        engine=engine,
        loaded=loaded,
        runtime=runtime,
    )
    found_versions, machine = versions(), machine_description()
    records: list[Record] = []
    if choose_recipe:
        from cnnfeat.selection import DEFAULT_SELECTOR

        selector, dg_validation = selector or DEFAULT_SELECTOR, dg_validation or "training-domain"
    if not choose_recipe:
        selector = dg_validation = None
    todo: list[tuple[RunSpec, Record]] = []
    for run in runs:
        earlier = store.get(run.key()) if skip_existing else None
        if earlier is not None and earlier.ok and (earlier.recipe_search or not choose_recipe):
            if choose_recipe and (earlier.selector, earlier.dg_validation) != (selector, dg_validation):
                # the search now chooses by another rule: this command is the one that makes its table
                earlier = dataclasses.replace(earlier, selector=selector, dg_validation=dg_validation, command=command)
                store.write(earlier)
            records.append(earlier)
            if on_run:
                on_run(run, earlier)
            continue
        record = Record(
            key=run.key(), method=run.method, probe=run.probe, dataset=run.dataset, protocol=run.protocol, seed=run.seed,
            normalize=run.normalize, adapt=run.adapt, data_digest=run.data_digest, solver=run.solver, row=run.row,
            column=run.column, command=command, recipe_search=choose_recipe, versions=found_versions, machine=machine,
            selector=selector, dg_validation=dg_validation,
        )  # fmt: skip
        todo.append((run, record))

    def job(run: RunSpec) -> ProbeJob | Failure:
        try:
            return bank.job(run)
        except Exception as exc:  # one run's failure must not stop the suite
            return Failure.of(run, exc)

    # features are extracted as the probes are handed out, so extraction overlaps with fitting
    jobs_of_runs: Iterator[ProbeJob | Failure] = (job(run) for run, _ in todo)
    for (run, record), fields in zip(todo, map_in_order(probe_fields, jobs_of_runs, engine=engine, jobs=jobs)):
        record = dataclasses.replace(record, **fields)
        store.write(record)
        records.append(record)
        if on_run:
            on_run(run, record)
    if choose_recipe:
        records = _score_candidates(records, {run.key(): run for run in runs}, job, store, engine, jobs, on_score)
    try:
        write_layer_maps(bank, records, out)
    except Exception as exc:  # a figure's data: the runs stand without it
        logger.warning("the t-SNE maps could not be made: %s", exc)
    return records


def _score_candidates(
    records: list[Record],
    specs: dict[str, RunSpec],
    job: Callable[[RunSpec], ProbeJob | Failure],
    store: RecordStore,
    engine: ExtractionEngine | None,
    jobs: int | None,
    on_score: Callable[[str, int, int], None] | None,
) -> list[Record]:
    """A recipe search's scores (:mod:`cnnfeat.recipes`): cross-validation, then every selector's on a shift."""
    from cnnfeat.engines.parallel import map_in_order
    from cnnfeat.recipes import needing_cross_validation, needing_selection

    for what, needing, score in (
        ("cross-validation of the candidates", needing_cross_validation, cross_validation_fields),
        ("scoring the adaptations without target labels", needing_selection, selection_fields),
    ):
        wanted = needing(records)
        if on_score and wanted:
            on_score(what, 0, len(wanted))
        items = ((job(specs[r.key]), r.C, r.k, r.cross_validated) for r in wanted)
        scored: dict[str, Record] = {}
        for r, fields in zip(wanted, map_in_order(score, items, engine=engine, jobs=jobs)):
            scored[r.key] = dataclasses.replace(r, **fields)
            store.write(scored[r.key])
            if on_score:
                on_score(what, len(scored), len(wanted))
        records = [scored.get(r.key, r) for r in records]
    return records
