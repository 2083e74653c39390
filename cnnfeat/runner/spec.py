"""One run of a benchmark: :class:`RunSpec`, its record's key, and the table cell it fills."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from cnnfeat.catalog import Dataset
from cnnfeat.protocols import Protocol, Split

__all__ = ["FINETUNE", "RECORD_VERSION", "RunSpec"]

#: the probe field of a ``finetune:`` run, which trains its own classifier
FINETUNE = "finetune"
#: part of every record's key: a new version re-runs what the old one recorded
RECORD_VERSION = 1
#: the solver of every run recorded before ``solver`` was a field (scikit-learn's L-BFGS at tol 1e-4)
LEGACY_SOLVER = "lbfgs"


@dataclass(frozen=True)
class RunSpec:
    """One run: features, normalisation, probe and adaptation, on one split of one dataset.

    ``seed`` is the seed of a random split, and for ``kfold`` the fold, for ``official`` the
    official split's number: the name stays, as it is part of every record's key.
    """

    method: str
    probe: str
    dataset: str
    protocol: str
    seed: int
    normalize: str = "none"
    adapt: str = "none"
    data_digest: str = ""  # the content digest of a user's dataset (catalog datasets are named by their name)
    solver: str = "path"  # logistic regression's (SweptLinearClassifier's ``solver``)

    def key(self) -> str:
        """A stable name for the run's record (sha256 of the spec)."""
        # records made before the path solver hold neither field: their keys stay as they were
        fields = {k: v for k, v in asdict(self).items() if (k != "data_digest" or v) and (k != "solver" or v != LEGACY_SOLVER)}
        text = json.dumps({**fields, "record_version": RECORD_VERSION}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    @property
    def parsed_protocol(self) -> Protocol:
        return Protocol.parse(self.protocol)

    @property
    def column(self) -> str:
        """The table column: the dataset and what its protocol varies (shots, shift, S or ST)."""
        return self.parsed_protocol.column(self.dataset)

    @property
    def row(self) -> str:
        """The table row: features, normalisation, probe and adaptation (a ``finetune:`` method alone)."""
        if self.probe == FINETUNE:
            return self.method
        parts = [self.method] + ([self.normalize] if self.normalize != "none" else []) + [self.probe]
        return " + ".join(parts + ([self.adapt] if self.adapt != "none" else []))

    def split(self, dataset: Dataset) -> Split:
        """The train/test (and unlabelled target) rows of this run."""
        return self.parsed_protocol.split(dataset, self.seed)
