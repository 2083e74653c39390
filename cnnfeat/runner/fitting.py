"""Fitting and scoring a run's probe: the record's metrics, and a recipe search's training-side scores.

Each function takes a :class:`~cnnfeat.runner.features.ProbeJob` (or the :class:`Failure` that
stood in for it) and returns the :class:`~cnnfeat.runner.records.Record` fields it found, so
it runs the same in this process, in a worker process, or as a Ray task.
"""

from __future__ import annotations

import logging
import time
import traceback
from dataclasses import dataclass

import numpy as np

from cnnfeat.adaptation import make_adaptation
from cnnfeat.hints import Classifier, JSONObject
from cnnfeat.methods import Method
from cnnfeat.probes import PROBES, innermost
from cnnfeat.runner.features import ProbeJob
from cnnfeat.runner.records import Training
from cnnfeat.runner.spec import FINETUNE, RunSpec

__all__ = ["Failure", "build_classifier", "cross_validation_fields", "fit_rows", "probe_fields", "selection_fields"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Failure:
    """What stands in for a run's job when its split or features failed: the error, recorded for the run."""

    error: str
    traceback: str

    @classmethod
    def of(cls, run: RunSpec, exc: Exception) -> Failure:
        logger.warning("run %s failed: %s", run, exc)
        return cls(f"{type(exc).__name__}: {exc}", traceback.format_exc(limit=5))

    def fields(self) -> JSONObject:
        return {"status": "failed", "error": self.error, "traceback": self.traceback}


def build_classifier(run: RunSpec) -> Classifier:
    """The run's unfitted classifier: normalisation, then the probe wrapped in its adaptation."""
    from sklearn.pipeline import make_pipeline

    from cnnfeat.normalize import make_normalizer

    probe = make_adaptation(run.adapt, PROBES.get(run.probe)(run.solver))
    return make_pipeline(make_normalizer(run.normalize), probe) if run.normalize != "none" else probe


def is_source(run: RunSpec, domains: np.ndarray) -> np.ndarray:
    """Which rows are the source domain of a domain-shift run (every row otherwise)."""
    protocol = run.parsed_protocol
    return domains == protocol.source if protocol.is_domain_shift else np.ones(len(domains), bool)


def fit_rows(
    run: RunSpec, X: np.ndarray, rows: np.ndarray, y: np.ndarray, unlabelled: np.ndarray, source: np.ndarray
) -> Classifier:
    """The run's probe fitted on ``X[rows]`` labelled ``y``; an adaptation also sees ``X[unlabelled]`` and the domains."""
    model = build_classifier(run)
    if run.adapt == "none":
        return model.fit(X[rows], y)
    both = np.r_[rows, unlabelled]
    labels = np.r_[np.asarray(y, dtype=object), np.full(len(unlabelled), -1, dtype=object)]
    domain = np.where(source[both], "source", "target")
    key = f"{model.steps[-1][0]}__domain" if hasattr(model, "steps") else "domain"
    return model.fit(X[both], labels, **{key: list(domain)})


def _fit_predict(job: ProbeJob) -> tuple[Classifier, np.ndarray]:
    run, X, split = job.run, job.X, job.split
    if run.probe == FINETUNE:  # X holds the images' paths
        model = Method.parse(run.method).make_classifier(job.cache, random_state=run.seed)
        model.fit(list(X[split.train]), job.labels[split.train])
        return model, model.predict(list(X[split.test]))
    model = fit_rows(run, X, split.train, job.labels[split.train], split.unlabelled, is_source(run, job.domains))
    return model, model.predict(X[split.test])


def probe_fields(job: ProbeJob | Failure) -> JSONObject:
    """Fit one run's probe and score it: the record's outcome, metrics and provenance (a failure's error)."""
    from cnnfeat.probes import mean_per_class_accuracy
    from cnnfeat.recipes import validation_score

    if isinstance(job, Failure):
        return job.fields()
    try:
        started = time.perf_counter()
        model, predicted = _fit_predict(job)
        truth = job.labels[job.split.test]
        swept, knn = innermost(model, "C_"), innermost(model, "k_")
        found: JSONObject = {
            "status": "ok",
            **job.sizes,
            "accuracy": float(np.mean(predicted == truth)),
            "mean_per_class_accuracy": mean_per_class_accuracy(truth.astype(str), predicted.astype(str)),
            "C": None if swept is None else float(swept.C_),
            "solver": None if swept is None else "liblinear" if swept.kind == "svm" else str(swept.solver),
            "val_accuracy_by_C": None if swept is None else {repr(C): s for C, s in sorted(swept.val_scores_.items())},
        }
        if knn is not None:
            found |= {"k": int(knn.k_), "val_accuracy_by_k": {str(k): s for k, s in sorted(knn.val_scores_.items())}}
        if hasattr(model, "history_"):
            found["training"] = Training(
                model.fit_seconds_, model.training_path_, model.epochs_run_, model.learning_rates_, model.history_
            )
        found |= {
            "probe_seconds": time.perf_counter() - started,
            "validation_score": None if job.run.probe == FINETUNE else validation_score(model),
            "features": job.features,
            "data": job.data,
        }
        return found | ({"dataset_problems": job.dataset_problems} if job.dataset_problems else {})
    except Exception as exc:  # recorded, as every run's failure is
        return Failure.of(job.run, exc).fields()


#: a run's job, its chosen C and k, and whether its k-fold score is in its record already
ScoreItem = tuple[ProbeJob | Failure, float | None, int | None, bool]


def cross_validation_fields(item: ScoreItem) -> JSONObject:
    """A recipe search's first score of a run: k-fold accuracy on its training rows at its chosen C or k (and, under
    leave-one-domain-out, the accuracy on each training domain of the probe fitted on the others). A run already
    cross-validated gets only what it lacks, so that its recorded score stays as it was made."""
    from cnnfeat.recipes import cross_validation

    job, C, k, scored = item
    if isinstance(job, Failure):  # its features failed: nothing to score
        return {"cross_validation": None, "cross_validation_error": job.error}
    started = time.perf_counter()
    train = job.split.train
    X, labels, choice = job.X[train], job.labels[train], {"C": C, "k": k}
    found: JSONObject = {}
    try:
        if not scored:
            found["cross_validation"] = cross_validation(build_classifier(job.run), choice, X, labels)
        if job.run.parsed_protocol.name == "lodo":  # each training domain scored by the probe fitted on the others
            found["domain_validation"] = cross_validation(build_classifier(job.run), choice, X, labels, groups=job.domains[train])
    except Exception as exc:  # the run itself stands; the choice falls back to the validation scores
        logger.warning("cross-validation of %s failed: %s", job.run, exc)
        error = {"cross_validation_error": f"{type(exc).__name__}: {exc}"}
        return error if scored else error | {"cross_validation": None}
    return found if scored else found | {"cross_validation_seconds": time.perf_counter() - started}


def selection_fields(item: ScoreItem) -> JSONObject:
    """A recipe search's second score of a domain-shift run: every selector's (:func:`cnnfeat.selection.selection_scores`)."""
    from cnnfeat.selection import selection_scores

    job = item[0]
    if isinstance(job, Failure):  # its features failed: nothing to score
        return {"selection_error": job.error}
    started = time.perf_counter()
    run = job.run
    try:
        scores = selection_scores(
            lambda rows, y, unlabelled, source: fit_rows(run, job.X, rows, y, unlabelled, source),
            job.X, job.labels, job.split.train, job.split.unlabelled, is_source(run, job.domains),
        )  # fmt: skip
    except Exception as exc:  # the run itself stands; it is only not a candidate for the adaptation
        logger.warning("scoring %s for the choice of adaptation failed: %s", run, exc)
        return {"selection_error": f"{type(exc).__name__}: {exc}"}
    return {"selection": scores, "selection_seconds": time.perf_counter() - started}
