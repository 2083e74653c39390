"""``runtime="auto"``: the fastest installed runtime whose features match Keras, measured once per machine and graph.

On a CPU, each installed runtime runs the exported graph on a seeded batch; one
whose float32 outputs differ from Keras' by more than ``EXACT_TOLERANCE × max|f|``
is not eligible, and the fastest of the rest (Keras included) is chosen. The
measurement is kept in ``<cnnfeat cache>/runtimes/`` under the graph's key and the
CPU's model, so later runs choose the same without measuring (or importing TensorFlow).
On a GPU, Keras is chosen (ONNX Runtime where its CUDA provider is installed).
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from cnnfeat.config import cache_dir, cpu_name
from cnnfeat.exceptions import ConfigError
from cnnfeat.files import checksum_matches, write_checksummed
from cnnfeat.hints import JSONObject, KerasModel
from cnnfeat.runtimes import EXACT_TOLERANCE, has_gpu, installed
from cnnfeat.runtimes.graphs import ExportedGraph, exporter_versions, graph_key

__all__ = ["choose_runtime", "cpu_model", "measurement_path", "open_session"]

logger = logging.getLogger(__name__)


def cpu_model() -> str:
    """The CPU's model name, and its core count."""
    return f"{cpu_name()}, {os.cpu_count()} cores"


def open_session(runtime: str, graph: ExportedGraph, precision: str) -> Any:
    """A session of ``runtime`` on ``graph`` (ONNX Runtime or OpenVINO)."""
    if runtime == "onnxruntime":
        from cnnfeat.runtimes.sessions import OnnxRuntimeSession

        return OnnxRuntimeSession(graph, precision, gpu=has_gpu())
    if runtime == "openvino":
        from cnnfeat.runtimes.sessions import OpenVinoSession

        return OpenVinoSession(graph, precision)
    raise ConfigError(f"runtime {runtime!r} runs no exported graph")


def choose_runtime(
    model_config: JSONObject,
    precision: str,
    build: Callable[[], KerasModel],
    graph: Callable[[], ExportedGraph],
    *,
    folder: str | os.PathLike[str] | None = None,
) -> tuple[str, str]:
    """``(runtime, reason)`` for ``runtime="auto"``; ``build()`` gives the Keras model, ``graph()`` its export."""
    if precision == "mixed":
        return "keras", "mixed precision computes in Keras"
    if precision == "int8":
        if installed("onnxruntime"):
            return "onnxruntime", "int8: ONNX Runtime's static quantisation"
        raise ConfigError("precision 'int8' needs ONNX Runtime (pip install onnxruntime tf2onnx onnx)")
    if precision == "bf16":
        from cnnfeat.runtimes.sessions import cpu_has_bf16

        if installed("openvino") and cpu_has_bf16():
            return "openvino", "bf16: OpenVINO's bf16 hint on this CPU"
        raise ConfigError("precision 'bf16' needs OpenVINO (pip install \"cnnfeat[openvino]\") and a CPU with AVX512_BF16 or AMX")
    if has_gpu():
        if installed("onnxruntime"):
            import onnxruntime as ort

            if "CUDAExecutionProvider" in ort.get_available_providers():
                return "onnxruntime", "GPU: ONNX Runtime's CUDA provider is installed"
        return "keras", "GPU: the Keras path"
    candidates = [r for r in ("onnxruntime", "openvino") if installed(r)]
    if not candidates:
        return "keras", "no other runtime is installed (pip install onnxruntime tf2onnx onnx)"
    versions = {r: _version(r) for r in candidates}
    record_path = measurement_path(model_config, folder=folder)
    if record_path.is_file() and not checksum_matches(record_path):
        logger.warning("%s: the runtime measurement does not match its recorded sha256; measuring again", record_path)
    elif record_path.is_file():
        try:
            record = json.loads(record_path.read_text())
            return record["choice"], record["reason"]
        except (OSError, ValueError, KeyError, TypeError):
            pass
    record = _measure(model_config, build, graph, candidates)
    record |= {"cpu": cpu_model(), "versions": versions, "exporter": exporter_versions()}
    record_path.parent.mkdir(parents=True, exist_ok=True)
    write_checksummed(record_path, lambda tmp: tmp.write_text(json.dumps(record, indent=1, sort_keys=True)))
    logger.info("runtime auto -> %s: %s", record["choice"], record["reason"])
    return record["choice"], record["reason"]


def measurement_path(model_config: JSONObject, *, folder: str | os.PathLike[str] | None = None) -> Path:
    """Where ``auto``'s measurement for this graph, CPU and installed runtimes is kept."""
    versions = {r: _version(r) for r in ("onnxruntime", "openvino") if installed(r)}
    key = hashlib.sha256(json.dumps([graph_key(model_config), cpu_model(), versions], sort_keys=True).encode()).hexdigest()
    return (Path(folder) if folder is not None else cache_dir() / "runtimes") / f"auto-{key[:32]}.json"


def _version(runtime: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(runtime)


def _best_seconds(run: Callable[[], object], repeats: int = 3) -> float:
    run()  # warm up: graph compilation, allocations
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        run()
        times.append(time.perf_counter() - started)
    return min(times)


def _measure(
    model_config: JSONObject, build: Callable[[], KerasModel], graph: Callable[[], ExportedGraph], candidates: list[str]
) -> JSONObject:
    built = build()
    size = int(built.model.inputs[0].shape[1])
    batch = np.random.default_rng(0).integers(0, 256, (16, size, size, 3), dtype=np.uint8)
    reference = built.model.predict_on_batch(batch)
    reference = [np.asarray(r) for r in (reference if isinstance(reference, list | tuple) else [reference])]
    speed = {"keras": len(batch) / _best_seconds(lambda: built.model.predict_on_batch(batch))}
    differences: dict[str, float] = {}
    exported = graph()
    for runtime in candidates:
        try:
            session = open_session(runtime, exported, "float32")
            outputs = session.run(batch)
        except Exception as exc:  # a runtime that cannot run this graph is simply not chosen
            logger.info("runtime %s cannot run %s: %s", runtime, exported.path, exc)
            continue
        differences[runtime] = max(
            float(np.abs(o - r).max() / max(float(np.abs(r).max()), 1e-30)) for o, r in zip(outputs, reference)
        )
        if differences[runtime] <= EXACT_TOLERANCE:
            speed[runtime] = len(batch) / _best_seconds(functools.partial(session.run, batch))
    choice = max(speed, key=speed.get)  # type: ignore[arg-type]
    others = ", ".join(f"{r} {v:.0f}" for r, v in sorted(speed.items(), key=lambda kv: -kv[1]) if r != choice)
    reason = f"fastest exact runtime measured here: {choice} {speed[choice]:.0f} img/s ({others})"
    rejected = [f"{r} (differs by {d:.1e})" for r, d in differences.items() if d > EXACT_TOLERANCE]
    if rejected:
        reason += "; not exact: " + ", ".join(rejected)
    return {"choice": choice, "reason": reason, "images_per_second": speed, "max_relative_difference": differences}
