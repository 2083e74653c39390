"""CNN features as a scikit-learn transformer, cached in a FeatureStore.

Examples
--------
>>> from sklearn.pipeline import make_pipeline
>>> from sklearn.linear_model import LogisticRegression
>>> from cnnfeat import CNNFeatures
>>> clf = make_pipeline(CNNFeatures(cache="features/"), LogisticRegression(max_iter=1000))
>>> clf.fit(train_paths, train_labels).score(test_paths, test_labels)  # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.utils import Tags
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from cnnfeat.backbones import BuiltBackbone, build_backbone, compute_device, get_backbone, keras_backend_name, weights_identity
from cnnfeat.backbones.build import POOLINGS
from cnnfeat.exceptions import ConfigError
from cnnfeat.extractors._base import COMMON_CONSTRAINTS, CachedImageFeatures
from cnnfeat.extractors.local import ExtractionEngine, ExtractionReport
from cnnfeat.hints import ArrayLike, ImageInput, JSONObject, SourceData
from cnnfeat.images import DEFAULT_MAX_PIXELS, INTERPOLATIONS, RESIZE_MODES, VIEWS, ImageTransform
from cnnfeat.runtimes import PRECISIONS, RUNTIMES, require
from cnnfeat.store import FEATURE_CODE_VERSION

__all__ = ["CNNFeatures", "extract_features"]

logger = logging.getLogger(__name__)


def _as_layers(layers: str | Sequence[str]) -> tuple[str, ...]:
    if isinstance(layers, str):
        layers = [part.strip() for part in layers.split(",")]
    result = tuple(dict.fromkeys(str(x) for x in layers if str(x)))
    if not result:
        raise ConfigError("layers must name at least one tap, e.g. 'pool'")
    return result


class CNNFeatures(CachedImageFeatures):
    """Features of a pretrained CNN for image files or arrays; needs no ``fit``.

    Parameters
    ----------
    backbone : str
        A registered backbone (:func:`cnnfeat.list_backbones`).
    weights : {"imagenet", None} or path
        See :func:`cnnfeat.build_backbone`.
    layers : str or sequence of str
        Taps to extract, all in one forward pass: ``"pool"``, ``"pool_max"`` or
        layer names (:func:`cnnfeat.list_layers`). ``transform`` concatenates them.
    pooling : {"avg", "max", "flatten"}
        How a named layer's spatial map becomes a vector.
    views : {"center", "center+flip", "10crop"}
        Test-time views, averaged.
    resize : {"crop", "warp"}
        Keep the aspect and centre-crop, or stretch to a square (DeCAF).
    crop_pct, interpolation : optional
        Override the backbone's own values.
    precision : {"float32", "mixed", "bf16", "int8"}
        ``"mixed"`` runs the network in float16 in Keras (for GPUs); ``"bf16"`` in OpenVINO's
        bf16 mode (CPUs with AVX512_BF16 or AMX); ``"int8"`` a statically quantised graph in ONNX
        Runtime, calibrated on ``calibration``. Each changes the features (and the fingerprint).
    runtime : {"auto", "keras", "onnxruntime", "openvino"}
        What runs the network. ``"auto"`` (the default): the fastest installed runtime whose features
        match Keras', measured once on this machine (see :mod:`cnnfeat.runtimes.auto`); a store that
        Keras or another exact runtime already filled is extended by that runtime. ``"keras"``: Keras
        itself, the reference. ``"onnxruntime"``, ``"openvino"``: the ONNX graph exported from the
        Keras model (made once and cached), whose float32 features match Keras' within
        :data:`~cnnfeat.runtimes.EXACT_TOLERANCE` of their largest value. The resolved runtime is
        part of the fingerprint.
    calibration : path or None
        For ``precision="int8"``: a folder, CSV or list of images like yours, from which 64 are
        drawn (seed 0) to calibrate the quantisation; their digest is part of the fingerprint.
    batch_size : int
        Images per forward pass.
    dtype : {"float32", "float16"}
        Storage type in the cache.
    cache : path or None
        A ``.h5`` file, or a folder where a file per configuration is kept.
        ``None`` caches only for the duration of one call.
    on_error : {"fail", "skip"}
        ``"skip"`` warns and returns a row of NaN for an unreadable image.
    heal : bool
        When cached rows fail their checksum, drop them from the store and recompute them
        from the images (with a warning); ``False`` raises
        :class:`~cnnfeat.exceptions.StoreCorruptError` instead.
    max_pixels : int or None
        Refuse images that declare more pixels (decompression bombs).
    n_jobs : int or None
        Decode threads; default one per core.
    seed : int
        Seed of the random weights when ``weights=None``.

    Attributes
    ----------
    feature_dims_ : dict of str to int
        Width of each tap (set by ``fit``).
    n_features_out_ : int
        Columns of ``transform``'s output.
    last_report_ : ExtractionReport
        What the last ``transform`` did.
    """

    _parameter_constraints: dict[str, list[object]] = {  # noqa: RUF012 (scikit-learn's own convention)
        **COMMON_CONSTRAINTS,
        "backbone": [str],
        "weights": [str, os.PathLike, None],
        "layers": [str, list, tuple],
        "pooling": [StrOptions(set(POOLINGS))],
        "views": [StrOptions(set(VIEWS))],
        "resize": [StrOptions(set(RESIZE_MODES))],
        "crop_pct": [Interval(Real, 0, 1, closed="right"), None],
        "interpolation": [StrOptions(set(INTERPOLATIONS)), None],
        "precision": [StrOptions(set(PRECISIONS))],
        "runtime": [StrOptions(set(RUNTIMES))],
        "calibration": [str, os.PathLike, None],
        "seed": [Integral],
    }

    def __init__(
        self,
        *,
        backbone: str = "efficientnet_lite0",
        weights: str | os.PathLike[str] | None = "imagenet",
        layers: str | Sequence[str] = ("pool",),
        pooling: str = "avg",
        views: str = "center",
        resize: str = "crop",
        crop_pct: float | None = None,
        interpolation: str | None = None,
        precision: str = "float32",
        runtime: str = "auto",
        calibration: str | os.PathLike[str] | None = None,
        batch_size: int = 32,
        dtype: str = "float32",
        cache: str | os.PathLike[str] | None = None,
        on_error: str = "fail",
        heal: bool = True,
        max_pixels: int | None = DEFAULT_MAX_PIXELS,
        n_jobs: int | None = None,
        seed: int = 0,
    ) -> None:
        self.backbone = backbone
        self.weights = weights
        self.layers = layers
        self.pooling = pooling
        self.views = views
        self.resize = resize
        self.crop_pct = crop_pct
        self.interpolation = interpolation
        self.precision = precision
        self.runtime = runtime
        self.calibration = calibration
        self.batch_size = batch_size
        self.dtype = dtype
        self.cache = cache
        self.on_error = on_error
        self.heal = heal
        self.max_pixels = max_pixels
        self.n_jobs = n_jobs
        self.seed = seed

    # ------------------------------------------------------------------ configuration

    def image_transform(self) -> ImageTransform:
        """The resize/crop/views rule these parameters resolve to."""
        spec = get_backbone(self.backbone)
        return ImageTransform(
            size=spec.input_size,
            crop_pct=self.crop_pct if self.crop_pct is not None else spec.crop_pct,
            interpolation=self.interpolation or spec.interpolation,
            resize=self.resize,
            views=self.views,
            max_pixels=self.max_pixels,
        )

    def extractor_config(self) -> JSONObject:
        """Everything that determines the feature values; its hash names the cache file."""
        return self._config_computed_by(self.resolved_runtime()[0])

    def _config_computed_by(self, runtime: str) -> JSONObject:
        spec = get_backbone(self.backbone)
        config: JSONObject = {
            "extractor": "cnn",
            "backbone": spec.data_config(),
            "weights": weights_identity(spec, self.weights, self.seed),
            "taps": list(_as_layers(self.layers)),
            "pooling": self.pooling,
            "image": self.image_transform().fingerprint_config(),
            "precision": self.precision,
            "dtype": self.dtype,
            "feature_code_version": FEATURE_CODE_VERSION,
        }
        if self.weights is None:  # seeded random weights: record which backend drew them
            config["keras_backend"] = keras_backend_name()
        if runtime != "keras":  # absent means Keras, so stores made before runtimes keep their fingerprint
            config["runtime"] = runtime
        if self.precision == "int8":
            config["calibration"] = self._calibration()[1]
        return config

    def _runtime_of_existing_store(self) -> tuple[str, str] | None:
        """For ``auto`` in float32: the exact runtime whose store these parameters would extend, if one exists.

        ``auto``'s measurement can name another runtime tomorrow (a new CPU model, a new
        ONNX Runtime, a cleared cache); a rerun into the same output must reuse the store's,
        whose features every exact runtime reproduces, rather than refuse it or start anew.
        """
        if self.cache is None or self.precision != "float32":
            return None
        from cnnfeat.runtimes import installed
        from cnnfeat.store import fingerprint_of, read_fingerprint

        taps = list(self.feature_taps())
        for runtime in ("keras", *(r for r in ("onnxruntime", "openvino") if installed(r))):
            config = {**self._config_computed_by(runtime), "taps": taps}
            path = self.store_path(config)
            if path is not None and path.is_file() and read_fingerprint(path) == fingerprint_of(config):
                return runtime, f"the runtime of the existing store {path.name}"
        return None

    def _calibration(self) -> tuple[list[str], str]:
        """The int8 calibration sample and its digest (drawn once per ``calibration``)."""
        from cnnfeat.runtimes.quantize import calibration_sample

        if self.calibration is None:
            raise ConfigError(
                "precision='int8' needs calibration=<a folder, CSV or list of images like yours>; 64 of them "
                "calibrate the quantisation (the CLI uses its input unless --calibration names others)"
            )
        cached = self.__dict__.get("_calibration_sample")
        if cached is None or cached[0] != str(self.calibration):
            self.__dict__["_calibration_sample"] = cached = (str(self.calibration), calibration_sample(self.calibration))
        return cached[1]

    def _model_config(self) -> JSONObject:
        """What the network (and so its exported graph) depends on."""
        spec = get_backbone(self.backbone)
        config = {"backbone": spec.data_config(), "weights": weights_identity(spec, self.weights, self.seed)}
        config |= {"taps": list(_as_layers(self.layers)), "pooling": self.pooling}
        if self.weights is None:
            config["keras_backend"] = keras_backend_name()
        return config

    def resolved_runtime(self) -> tuple[str, str]:
        """The runtime that computes (``auto`` resolved) and why; measured once per machine for ``auto``."""
        wanted = json_key(self.get_params())  # cheap on every batch; any parameter change resolves again
        cached = self.__dict__.get("_resolved_runtime")
        if cached is not None and cached[0] == wanted:
            return cached[1]
        require(self.runtime)
        if self.runtime == "auto":
            from cnnfeat.runtimes.auto import choose_runtime
            from cnnfeat.runtimes.graphs import load_or_export

            model = self._model_config()
            resolved = self._runtime_of_existing_store() or choose_runtime(
                model, self.precision, self.network, lambda: load_or_export(model, self.network)
            )
        else:
            resolved = (self.runtime, "asked for")
        runtime = resolved[0]
        if self.precision == "bf16" and runtime != "openvino":
            raise ConfigError(f"precision 'bf16' runs in OpenVINO; use runtime='openvino' or 'auto' (not {runtime!r})")
        if self.precision == "int8" and runtime != "onnxruntime":
            raise ConfigError(f"precision 'int8' runs in ONNX Runtime; use runtime='onnxruntime' or 'auto' (not {runtime!r})")
        if self.precision == "mixed" and runtime != "keras":
            raise ConfigError(f"precision 'mixed' runs in Keras; use runtime='keras' or 'auto' (not {runtime!r})")
        self.__dict__["_resolved_runtime"] = (wanted, resolved)
        return resolved

    def session(self) -> Any:
        """The exported graph's session of the resolved runtime (built once, not pickled)."""
        from cnnfeat.runtimes.auto import open_session
        from cnnfeat.runtimes.graphs import load_or_export

        runtime = self.resolved_runtime()[0]
        wanted = json_key(self.get_params())
        cached = self.__dict__.get("_runtime_session")
        if cached is None or cached[0] != wanted:
            graph = load_or_export(self._model_config(), self.network)
            if self.precision == "int8":
                from cnnfeat.runtimes.quantize import quantized_graph

                transform = self.image_transform()
                sample, digest = self._calibration()
                graph = quantized_graph(graph, sample, digest, lambda path: transform.load(Path(path).read_bytes(), path)[0])
            self.__dict__["_runtime_session"] = cached = (wanted, (graph, open_session(runtime, graph, self.precision)))
        return cached[1]

    def network(self) -> BuiltBackbone:
        """The Keras model of these parameters (the reference for every runtime), built once and not pickled."""
        precision = "mixed" if self.precision == "mixed" else "float32"  # bf16 is applied by OpenVINO, not Keras
        wanted = (self.backbone, str(self.weights), _as_layers(self.layers), self.pooling, precision, self.seed)
        cached = self.__dict__.get("_built_backbone")
        if cached is None or cached[0] != wanted:
            if self.precision == "mixed" and compute_device().startswith("cpu"):
                logger.warning("precision='mixed' on a CPU is slower than float32 and changes the features")
            built = build_backbone(
                self.backbone,
                weights=self.weights,
                taps=_as_layers(self.layers),
                pooling=self.pooling,
                precision=precision,
                seed=self.seed,
            )
            self.__dict__["_built_backbone"] = cached = (wanted, built)
        return cached[1]

    def __getstate__(self) -> dict[str, object]:
        state = self.__dict__.copy()
        for name in ("_built_backbone", "_runtime_session", "_resolved_runtime", "_calibration_sample"):
            state.pop(name, None)  # the model and sessions are rebuilt lazily, not pickled
        return state

    def __sklearn_tags__(self) -> Tags:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = self.weights is not None and self.weights != "imagenet"
        return tags

    # ------------------------------------------------------------------ estimator API

    def fit(self, X: ImageInput | None = None, y: ArrayLike | None = None) -> CNNFeatures:
        """Validate the parameters and build the network; learns nothing from ``X``."""
        self.store_config()
        built = self.network()
        self.feature_dims_ = built.feature_dims()
        self.n_features_out_ = int(sum(self.feature_dims_.values()))
        return self

    def get_feature_names_out(self, input_features: ArrayLike | None = None) -> np.ndarray:
        """``<backbone>_<tap>_<i>`` for every output column (after ``fit``, as for every transformer)."""
        check_is_fitted(self, "feature_dims_")
        return np.asarray([f"{self.backbone}_{tap}_{i}" for tap, d in self.feature_dims_.items() for i in range(d)], dtype=object)

    # ------------------------------------------------------------------ extraction

    # ------------------------------------------------------------------ hooks of CachedImageFeatures

    def _cache_prefix(self) -> str:
        return self.backbone

    def feature_taps(self) -> tuple[str, ...]:
        return _as_layers(self.layers)

    def feature_dims(self) -> dict[str, int]:
        if self.resolved_runtime()[0] != "keras":
            return dict(self.session()[0].dims)  # a cached graph knows them: no TensorFlow
        return self.network().feature_dims()

    def image_loader(self) -> Callable[[SourceData, str], np.ndarray]:
        return self.image_transform().apply

    def compute_batch(self, items: list[np.ndarray]) -> dict[str, np.ndarray]:
        n_views = self.image_transform().n_views
        if self.resolved_runtime()[0] != "keras":
            graph, session = self.session()
            outputs = session.run(np.concatenate(items, axis=0))
            return _average_views(graph.taps, outputs, len(items), n_views)
        return _forward(self.network(), items, self.batch_size, n_views)

    def device_name(self) -> str:
        runtime, reason = self.resolved_runtime()
        if runtime == "keras" and self.runtime == "keras":
            return compute_device()
        if runtime == "keras":
            where = compute_device()
        elif "CUDAExecutionProvider" in getattr(self.session()[1], "providers", []):
            where = "gpu (onnxruntime CUDA provider)"
        else:
            where = "cpu"
        return f"{where} ({os.cpu_count()} cores, {runtime} {self.precision}; {self.runtime}: {reason})"


def _forward(built: BuiltBackbone, items: list[np.ndarray], batch_size: int, n_views: int) -> dict[str, np.ndarray]:
    """One forward pass over a batch of images; views averaged.

    The batch is padded to a fixed shape so that compiled graphs (tf.function,
    XLA, JAX jit) are not retraced for the last, smaller batch.
    """
    x = np.concatenate(items, axis=0)  # (n * views, s, s, 3) uint8
    rows = x.shape[0]
    full = batch_size * n_views
    if rows < full:
        x = np.concatenate([x, np.zeros((full - rows, *x.shape[1:]), x.dtype)])
    outputs = built.model.predict_on_batch(x)
    if not isinstance(outputs, list | tuple):
        outputs = [outputs]
    return _average_views(built.taps, [o[:rows] for o in outputs], len(items), n_views)


def _average_views(taps: Sequence[str], outputs: Sequence[np.ndarray], n_images: int, n_views: int) -> dict[str, np.ndarray]:
    """``{tap: (n_images, d) float32}`` from outputs of ``n_images * n_views`` rows (each image's views averaged)."""
    return {tap: np.asarray(out, dtype=np.float32).reshape(n_images, n_views, -1).mean(axis=1) for tap, out in zip(taps, outputs)}


def json_key(value: object) -> str:
    """A hashable, canonical text of a JSON-able value."""
    import json

    return json.dumps(value, sort_keys=True, default=str)


def extract_features(
    X: ImageInput,
    *,
    progress: Callable[[int], None] | None = None,
    return_features: bool = True,
    engine: ExtractionEngine | None = None,
    **params: Any,
) -> tuple[dict[str, np.ndarray] | None, ExtractionReport]:
    """Extract CNN features of image paths or arrays; the functional face of :class:`CNNFeatures`.

    Parameters
    ----------
    X : sequence of paths, or image array(s)
    progress : callable, optional
        Called with the number of images handled since the last call.
    return_features : bool
        ``False`` only fills the cache (``cache=`` must be given to keep it).
    engine : optional
        Where the batches run (:class:`cnnfeat.RayEngine`); by default, this process.
    **params
        Any :class:`CNNFeatures` parameter (``backbone``, ``layers``, ``cache``, ...).

    Returns
    -------
    features : dict of str to ndarray, or None
        ``{tap: (n, d) float32}`` in input order; NaN rows for skipped images.
    report : ExtractionReport
        Counts, cache hits, skipped files and timing.

    Examples
    --------
    >>> feats, report = extract_features(["a.jpg", "b.jpg"], layers="pool", cache="w.h5")  # doctest: +SKIP
    >>> feats["pool"].shape  # doctest: +SKIP
    (2, 1280)
    """
    return CNNFeatures(**params).extract(X, return_features=return_features, progress=progress, engine=engine)
