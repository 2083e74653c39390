"""Names for the types that cross cnnfeat's modules, so that an annotation says what a value is.

Keras, h5py and scikit-learn ship no type information, so to the type checker their objects are ``Any``
whatever they are called; the names below still say which object a function takes or returns. ``Any``
itself is left where a value really can be anything: a JSON value, an unpickled object, the keyword
arguments passed through to a constructor. ``checked_rows`` and ``checked_rows_and_labels`` are scikit-learn's
``validate_data`` with its results typed, so that an estimator's ``X: ArrayLike`` becomes an array.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, TypeAlias

import numpy as np
from numpy.typing import ArrayLike
from sklearn.utils.validation import validate_data

if TYPE_CHECKING:
    import h5py
    import keras
    from sklearn.base import BaseEstimator

__all__ = [
    "ArrayLike",
    "Classifier",
    "H5Dataset",
    "H5File",
    "H5Group",
    "ImageInput",
    "ImageSource",
    "JSONObject",
    "KerasModel",
    "KerasOptimizer",
    "KerasTensor",
    "SourceData",
    "checked_rows",
    "checked_rows_and_labels",
]

#: one image as the extractors accept it: a path, or decoded pixels (H, W) or (H, W, 3)
ImageSource: TypeAlias = "str | os.PathLike[str] | np.ndarray"
#: an extractor's input: image sources, or one array of images (N, H, W[, 3])
ImageInput: TypeAlias = "Iterable[ImageSource] | np.ndarray"
#: what is read of a source before decoding: a file's bytes, or the array itself
SourceData: TypeAlias = "bytes | np.ndarray"

#: a JSON object as :func:`json.loads` returns it; its values are any JSON value, read by key
JSONObject: TypeAlias = dict[str, Any]

#: a scikit-learn classifier (``fit``, ``predict``, fitted attributes read by name)
Classifier: TypeAlias = "BaseEstimator"
KerasModel: TypeAlias = "keras.Model"
KerasTensor: TypeAlias = "keras.KerasTensor"
KerasOptimizer: TypeAlias = "keras.optimizers.Optimizer"
H5File: TypeAlias = "h5py.File"
H5Group: TypeAlias = "h5py.Group"
H5Dataset: TypeAlias = "h5py.Dataset"


def checked_rows(estimator: object, X: ArrayLike, **options: Any) -> np.ndarray:
    """scikit-learn's ``validate_data`` on rows alone, its result typed (scikit-learn's is not)."""
    rows: np.ndarray = validate_data(estimator, X, **options)
    return rows


def checked_rows_and_labels(estimator: object, X: ArrayLike, y: ArrayLike, **options: Any) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's ``validate_data`` on rows and labels, its result typed."""
    rows, labels = validate_data(estimator, X, y, **options)
    return rows, labels
