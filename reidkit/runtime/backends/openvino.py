"""OpenVINO CPU backend: the bundle's ONNX files compiled by OpenVINO's CPU plugin.

Why a second CPU engine: on a CPU an fp32 re-ID network is compute-bound, and OpenVINO's
oneDNN kernels run the same graphs faster than onnxruntime's (measured on 2 AMD EPYC AVX2
cores: fp32 1.09x, INT8 QDQ 1.17x, same outputs to 1e-6; on Intel CPUs with VNNI/AMX the
gap is larger). It reads the bundle's ONNX directly (fp32, fp16 or the INT8 QDQ twin), so
the bundle format and its sha256 checks are unchanged and no export step is added.

Inference precision is pinned to f32 unless bf16 is asked for: on CPUs with bf16 units
OpenVINO would otherwise silently run fp32 graphs in bf16 and change the rankings. bf16 is
``--precision bf16``, a choice the user makes and the backend table refuses on CPUs without
bf16 arithmetic. CPU pinning is off because the decode threads share these cores.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from reidkit.cpus import usable_cpus
from reidkit.errors import MissingDependencyError, ReidkitError


def _ov():
    try:
        import openvino as ov
    except ImportError:
        raise MissingDependencyError("--backend openvino needs OpenVINO; pip install 'reidkit[openvino]'") from None
    return ov


class OpenVinoBackend:
    name = "openvino"

    def __init__(self, onnx_path: str | Path, threads: int | None = None, inference_precision: str = "f32") -> None:
        ov = _ov()
        config = {
            "PERFORMANCE_HINT": "LATENCY",
            "INFERENCE_NUM_THREADS": int(threads or usable_cpus()),
            "INFERENCE_PRECISION_HINT": inference_precision,
            "ENABLE_CPU_PINNING": False,
        }
        compiled = ov.Core().compile_model(str(onnx_path), "CPU", config)
        got = compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()
        if inference_precision == "bf16" and got != "bf16":  # never a silent fp32 run under a bf16 label
            raise ReidkitError(f"OpenVINO compiled {Path(onnx_path).name} at {got}, not {inference_precision}, on this CPU; "
                               "use --precision fp32")
        self._output = compiled.output("embedding")
        self._request = compiled.create_infer_request()

    def run(self, batch: np.ndarray) -> np.ndarray:
        result = self._request.infer({"images": np.ascontiguousarray(batch)})
        return np.array(result[self._output], dtype=np.float32, copy=True)  # the request reuses its buffer
