"""OpenVINO CPU backend: the bundle's ONNX files compiled by OpenVINO's CPU plugin.

Why a second CPU engine: on a CPU an fp32 re-ID network is compute-bound, and OpenVINO's
oneDNN kernels run the same graphs faster than onnxruntime's (measured on 2 AMD EPYC AVX2
cores: fp32 1.09x, INT8 QDQ 1.17x, same outputs to 1e-6; on Intel CPUs with VNNI/AMX the
gap is larger). It reads the bundle's ONNX directly (fp32, fp16 or the INT8 QDQ twin), so
the bundle format and its sha256 checks are unchanged and no export step is added.

Inference precision is pinned to f32: on CPUs with bf16 units OpenVINO would otherwise
silently run fp32 graphs in bf16 and change the rankings. CPU pinning is off because the
decode threads share these cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reidkit.cpus import usable_cpus
from reidkit.errors import MissingDependencyError


def _ov():
    try:
        import openvino as ov
    except ImportError:
        raise MissingDependencyError("--backend openvino needs OpenVINO; pip install 'reidkit[openvino]'") from None
    return ov


class OpenVinoBackend:
    name = "openvino"

    def __init__(self, onnx_path: str | Path, threads: int | None = None) -> None:
        ov = _ov()
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": int(threads or usable_cpus()),
            "INFERENCE_PRECISION_HINT": "f32",
            "ENABLE_CPU_PINNING": False,
        }
        compiled = ov.Core().compile_model(str(onnx_path), "CPU", config)
        self._output = compiled.output("embedding")
        self._request = compiled.create_infer_request()

    def run(self, batch: np.ndarray) -> np.ndarray:
        result = self._request.infer({"images": np.ascontiguousarray(batch)})
        return np.array(result[self._output], dtype=np.float32, copy=True)  # the request reuses its buffer
