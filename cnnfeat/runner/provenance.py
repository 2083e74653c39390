"""What a record says about where it was made: library versions, the machine, the copy of the data."""

from __future__ import annotations

import importlib.metadata
import os
import platform

import numpy as np

from cnnfeat.catalog import Dataset
from cnnfeat.config import cpu_name
from cnnfeat.runner.records import DataProvenance

__all__ = ["data_provenance", "machine_description", "versions"]


def versions() -> dict[str, str]:
    """The versions of the libraries a result depends on."""
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

    # the BLAS of numpy and scipy, which the probes run on (OpenCV brings its own, which they do not use)
    blas = [i for i in threadpool_info() if i.get("architecture") and ("numpy" in i["filepath"] or "scipy" in i["filepath"])]
    kernels = sorted({f"{i['internal_api']} {i['architecture']}" for i in blas})
    return ", ".join([f"{platform.machine()}, {os.cpu_count()} cores", *filter(None, [cpu_name()]), *kernels])


def data_provenance(dataset: Dataset) -> DataProvenance:
    """Which copy of the data a run read: its layout and folder, and for a user's data its size and digest."""
    found = DataProvenance(layout=dataset.layout, root=str(dataset.root))
    if dataset.is_user_data:
        found.images, found.classes, found.digest = len(dataset.manifest), len(dataset.manifest.classes), dataset.digest
    if dataset.skipped:
        found.skipped = [{"path": path, "reason": reason} for path, reason in dataset.skipped]
    return found
