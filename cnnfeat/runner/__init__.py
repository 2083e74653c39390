"""The benchmark runner: methods x probes x datasets x protocols x seeds, one typed record per run.

A run is a :class:`RunSpec`. :func:`expand` turns lists of each into the runs a suite needs
(:mod:`cnnfeat.protocols` resolves each protocol per dataset: a domain-shift protocol becomes one
run per shift, few-shot one per shot count). :func:`run_all` extracts each (method, dataset)
feature matrix once, through the feature cache, never inside a split loop
(:class:`~cnnfeat.runner.features.FeatureBank`), then fits one probe per run
(:mod:`cnnfeat.runner.fitting`) and writes ``records/<key>.json``
(:class:`~cnnfeat.runner.records.RecordStore`). A run that fails is recorded with its error and
the others go on; with ``skip_existing`` a run whose record is already there (same spec, same
key) is not run again, which is how an interrupted suite resumes.

Methods
-------
``cnn:<backbone>/<tap>[@<views>][?<param>=<value>&...]``
    :class:`~cnnfeat.CNNFeatures`, e.g. ``cnn:efficientnet_lite0/pool``, ``cnn:vgg16/fc1@10crop``,
    ``cnn:resnet50/pool?weights=none`` (any CNNFeatures parameter; ``none`` means None).
``hog``, ``sift_bovw``, ``color_hist``
    The hand-crafted baselines (the SIFT codebook is learned on each split's training images).

Probes, adaptations, normalisations and protocols are the names in their registries:
:data:`cnnfeat.probes.PROBES`, :data:`cnnfeat.adaptation.ADAPTATIONS`,
:data:`cnnfeat.normalize.NORMALIZER_STEPS`, :data:`cnnfeat.protocols.PROTOCOLS`.
"""

from cnnfeat.runner.grid import expand
from cnnfeat.runner.provenance import machine_description
from cnnfeat.runner.records import DataProvenance, FeatureProvenance, Record, RecordStore, Training, load_records, sort_records
from cnnfeat.runner.run import default_cache, run_all
from cnnfeat.runner.spec import FINETUNE, RunSpec

__all__ = [
    "FINETUNE",
    "DataProvenance",
    "FeatureProvenance",
    "Record",
    "RecordStore",
    "RunSpec",
    "Training",
    "default_cache",
    "expand",
    "load_records",
    "machine_description",
    "run_all",
    "sort_records",
]
