"""int8 by static quantisation (ONNX Runtime's QDQ format), calibrated on a sample of the user's images.

The calibration sample is documented and reproducible: :func:`calibration_sample`
draws ``CALIBRATION_IMAGES`` images (seed 0) from a folder, CSV or list of images,
and its digest (the sha256 of the sampled files' bytes, in order) is part of the
feature fingerprint, so features calibrated on other images never share a store.
Weights are quantised per channel to int8, activations to uint8, with min-max
calibration over the sample. The quantised graph is cached beside the float32
one, keyed by that graph, the calibration digest and ONNX Runtime's version.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Callable, Sequence

import numpy as np

from cnnfeat.exceptions import ConfigError
from cnnfeat.files import atomic_write, sha256_file
from cnnfeat.images import read_image_file
from cnnfeat.runtimes.graphs import ExportedGraph, cached_graph

__all__ = ["CALIBRATION_IMAGES", "calibration_sample", "quantized_graph"]

logger = logging.getLogger(__name__)

#: images drawn (seed 0) from the calibration source
CALIBRATION_IMAGES = 64


def calibration_sample(source: str | os.PathLike[str]) -> tuple[list[str], str]:
    """``(paths, digest)`` of the calibration images drawn from ``source`` (a folder, CSV or list)."""
    from cnnfeat.inputs import load_inputs

    paths = load_inputs(source).paths
    if not paths:
        raise ConfigError(f"{source}: no calibration images")
    chosen = sorted(np.random.default_rng(0).permutation(len(paths))[:CALIBRATION_IMAGES].tolist())
    sample = [paths[i] for i in chosen]
    digest = hashlib.sha256()
    for path in sample:
        digest.update(read_image_file(path)[1].encode())  # bounded, regular files only
    return sample, digest.hexdigest()


def quantized_graph(
    graph: ExportedGraph, sample: Sequence[str], digest: str, load: Callable[[str], np.ndarray], batch_size: int = 16
) -> ExportedGraph:
    """The int8 graph of ``graph``, calibrated on ``sample`` (``load(path)`` gives the network's uint8 input)."""
    import onnxruntime
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quant_pre_process, quantize_static

    key = hashlib.sha256(json.dumps([graph.meta["sha256"], digest, onnxruntime.__version__, "qdq-u8s8-perchannel"]).encode())
    path = graph.path.with_name(f"{graph.path.stem}-int8-{key.hexdigest()[:24]}.onnx")
    meta_path = path.with_suffix(".json")
    cached = cached_graph(path, meta_path, "quantising again")
    if cached is not None:
        return cached
    batches = [np.stack([load(p) for p in sample[i : i + batch_size]]) for i in range(0, len(sample), batch_size)]
    name = graph.meta.get("input_name", "rgb")

    class Reader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no types
        def __init__(self) -> None:
            self._batches = iter(batches)

        def get_next(self) -> dict[str, np.ndarray] | None:
            batch = next(self._batches, None)
            return None if batch is None else {name: batch.astype(np.float32)}

    tmp_pre = path.with_name(f".{path.name}.{os.getpid()}.pre.tmp")
    try:
        quant_pre_process(str(graph.path), str(tmp_pre), skip_symbolic_shape=True)
        atomic_write(path, lambda tmp: quantize_static(
            str(tmp_pre), str(tmp), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
        ))  # fmt: skip
    finally:
        tmp_pre.unlink(missing_ok=True)
    meta = {**graph.meta, "sha256": sha256_file(path), "calibration": digest}
    atomic_write(meta_path, lambda tmp: tmp.write_text(json.dumps(meta, indent=1, sort_keys=True, default=str)))
    logger.info("quantised %s to int8 on %d calibration images: %s", graph.path.name, len(sample), path)
    return ExportedGraph(path, meta)
