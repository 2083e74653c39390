"""Running an exported graph: ONNX Runtime and OpenVINO sessions that map uint8 RGB batches to tap outputs."""

from __future__ import annotations

import numpy as np

from cnnfeat.config import cpu_threads
from cnnfeat.exceptions import ConfigError
from cnnfeat.runtimes.graphs import ExportedGraph

__all__ = ["OnnxRuntimeSession", "OpenVinoSession", "cpu_has_bf16"]


class OnnxRuntimeSession:
    """ONNX Runtime on the CPU provider (or CUDA's, where ``onnxruntime-gpu`` offers it), float32 or int8."""

    name = "onnxruntime"

    def __init__(
        self, graph: ExportedGraph, precision: str = "float32", *, threads: int | None = None, gpu: bool = False
    ) -> None:
        import onnxruntime as ort

        if precision not in ("float32", "int8"):  # int8: ``graph`` is the quantised one
            raise ConfigError(
                f"onnxruntime runs float32 or int8 features here; precision {precision!r} needs --runtime openvino "
                "(bf16) or keras on a GPU (mixed)"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or cpu_threads()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        providers = ["CPUExecutionProvider"]
        if gpu and "CUDAExecutionProvider" in ort.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        self._session = ort.InferenceSession(str(graph.path), options, providers=providers)
        self._input = self._session.get_inputs()[0].name
        self.providers = self._session.get_providers()

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        return list(self._session.run(None, {self._input: np.asarray(x, dtype=np.float32)}))


def cpu_has_bf16() -> bool:
    """Whether OpenVINO can compute in bf16 on this CPU (AVX512_BF16 or AMX)."""
    import openvino as ov

    return "BF16" in ov.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES")


class OpenVinoSession:
    """OpenVINO on the CPU: float32, or bf16 where the CPU has the instructions (the inference precision hint)."""

    name = "openvino"

    def __init__(
        self, graph: ExportedGraph, precision: str = "float32", *, threads: int | None = None, gpu: bool = False
    ) -> None:
        import openvino as ov

        hints = {"float32": "f32", "bf16": "bf16"}
        if precision not in hints:
            raise ConfigError(f"openvino computes float32 or bf16 here; got precision {precision!r}")
        core = ov.Core()
        if precision == "bf16" and "BF16" not in core.get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
            raise ConfigError("this CPU has no bf16 instructions (AVX512_BF16 or AMX), so OpenVINO cannot compute in bf16 here")
        config: dict[str, object] = {"INFERENCE_PRECISION_HINT": hints[precision], "PERFORMANCE_HINT": "LATENCY"}
        config["INFERENCE_NUM_THREADS"] = threads or cpu_threads()
        self._compiled = core.compile_model(core.read_model(str(graph.path)), "CPU", config)
        self._outputs = list(self._compiled.outputs)

    def run(self, x: np.ndarray) -> list[np.ndarray]:
        result = self._compiled({0: np.asarray(x, dtype=np.float32)})
        return [np.asarray(result[o]) for o in self._outputs]
