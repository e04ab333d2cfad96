"""TensorRT engine backend: TensorRT 10+ named-tensor API, cuda-python memory and stream.

Pinned host buffers, one stream, async copies, batches split at the profile's max batch.

UNVERIFIED ON HARDWARE: TensorRT cannot be installed on the development machines; the
sidecar checks and batching logic are unit-tested against a fake (see the README).
"""

from __future__ import annotations

import ctypes
import json
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

import numpy as np

from reidkit.errors import MissingDependencyError, ReidkitError
from reidkit.runtime.bundle_format import EngineRecord, EngineSidecar

if TYPE_CHECKING:
    import tensorrt as trt_types

    from reidkit.runtime.bundle import Bundle

REBUILD = "rebuild it on this machine with `reid-export --trt`"
NO_TRT = "pip install 'reidkit[gpu]' on a machine with an NVIDIA GPU, or use --backend ort-cpu"


def load_tensorrt(hint: str = NO_TRT) -> ModuleType:
    """The real TensorRT module, or an error: tensorrt-stubs alone installs an empty namespace."""
    try:
        import tensorrt as trt
    except ImportError:
        raise MissingDependencyError(f"TensorRT is not installed ({hint})") from None
    if not hasattr(trt, "Builder") or not hasattr(trt, "Runtime"):
        raise MissingDependencyError(f"only TensorRT's type stubs are installed here, not TensorRT ({hint})")
    return trt


def engines_for_this_gpu(bundle: "Bundle") -> dict[str, EngineRecord] | str:
    """The bundle's engine per member built for this GPU and TensorRT version, or why there is none."""
    from reidkit.runtime.gpu import detect_gpus

    if not bundle.engines:
        return f"{bundle.root} has no TensorRT engines; {REBUILD}"
    gpus = detect_gpus()
    if not gpus:
        return "no NVIDIA GPU (the CUDA driver reports none)"
    try:
        version = str(load_tensorrt().__version__)
    except MissingDependencyError as exc:
        return str(exc)
    found = {e.member: e for e in bundle.engines if e.tensorrt_version == version and e.gpu_name == gpus[0].name}
    missing = [m.name for m in bundle.members if m.name not in found]
    if missing:
        return f"{bundle.root} has no TensorRT {version} engine for {gpus[0].name} for {', '.join(missing)}; {REBUILD}"
    return found


def _cudart() -> Any:
    try:
        from cuda.bindings import runtime as cudart  # cuda-python >= 12.6
    except ImportError:
        try:
            from cuda import cudart  # older cuda-python
        except ImportError:
            raise MissingDependencyError("the TensorRT backend needs cuda-python (pip install 'reidkit[gpu]')") from None
    return cudart


def _check(result: Any) -> Any:
    err, *rest = result if isinstance(result, tuple) else (result,)
    if int(err) != 0:
        raise ReidkitError(f"CUDA error {err}")
    return rest[0] if len(rest) == 1 else rest


def check_sidecar(sidecar: EngineSidecar, plan: Path, trt_version: str, gpu_name: str, cc: tuple[int, int]) -> None:
    """Refuse an engine built for another GPU or TensorRT version, naming the fix."""
    if sidecar.tensorrt_version != trt_version:
        raise ReidkitError(f"engine {plan.name} was built with TensorRT {sidecar.tensorrt_version}, this machine has {trt_version}; {REBUILD}")
    if sidecar.gpu_name != gpu_name or tuple(sidecar.compute_capability) != tuple(cc):
        raise ReidkitError(f"engine {plan.name} was built for {sidecar.gpu_name} (sm {list(sidecar.compute_capability)}), "
                           f"this GPU is {gpu_name} (sm {list(cc)}); {REBUILD}")


def read_sidecar(plan: Path) -> EngineSidecar:
    side = plan.with_suffix(".json")
    if not side.is_file():
        raise ReidkitError(f"engine {plan} has no sidecar {side.name}; {REBUILD}")
    try:
        return EngineSidecar.from_dict(json.loads(side.read_text(encoding="utf-8")))
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ReidkitError(f"engine sidecar {side} is malformed ({exc}); {REBUILD}") from None


class TensorRTBackend:
    name = "trt"

    def __init__(self, plan: str | Path, sidecar: EngineSidecar | None = None, *, trt: Any = None, cudart: Any = None,
                 gpu: Any = None, threads: int | None = None) -> None:
        from reidkit.runtime.gpu import detect_gpus

        plan = Path(plan)
        if trt is None:
            trt = load_tensorrt()
        self.trt = trt
        self.cudart = cudart or _cudart()
        if gpu is None:
            gpus = detect_gpus()
            if not gpus:
                raise MissingDependencyError("the TensorRT backend needs an NVIDIA GPU; none was found (use --backend ort-cpu)")
            gpu = gpus[0]
        sidecar = sidecar or read_sidecar(plan)
        check_sidecar(sidecar, plan, str(trt.__version__), gpu.name, gpu.compute_capability)
        self.max_batch = sidecar.max_batch
        self.input_shape = tuple(int(x) for x in sidecar.profile["max"][1:])
        logger: trt_types.ILogger = trt.Logger(trt.Logger.WARNING)
        self.runtime: trt_types.Runtime = trt.Runtime(logger)
        engine: trt_types.ICudaEngine | None = self.runtime.deserialize_cuda_engine(plan.read_bytes())
        if engine is None:
            raise ReidkitError(f"TensorRT could not load {plan}; {REBUILD}")
        self.engine = engine
        self.context: trt_types.IExecutionContext = engine.create_execution_context()
        self.out_dim = int(self.engine.get_tensor_shape("embedding")[1])
        cu = self.cudart
        self.stream = _check(cu.cudaStreamCreate())
        in_bytes = self.max_batch * int(np.prod(self.input_shape))
        out_bytes = self.max_batch * self.out_dim * 4
        self.d_in, self.d_out = _check(cu.cudaMalloc(in_bytes)), _check(cu.cudaMalloc(out_bytes))
        self.h_in_ptr, self.h_out_ptr = _check(cu.cudaMallocHost(in_bytes)), _check(cu.cudaMallocHost(out_bytes))
        self.h_in = np.ctypeslib.as_array(ctypes.cast(int(self.h_in_ptr), ctypes.POINTER(ctypes.c_uint8)), shape=(self.max_batch, *self.input_shape))
        self.h_out = np.ctypeslib.as_array(ctypes.cast(int(self.h_out_ptr), ctypes.POINTER(ctypes.c_float)), shape=(self.max_batch, self.out_dim))

    def run(self, batch: np.ndarray) -> np.ndarray:
        if tuple(batch.shape[1:]) != self.input_shape:
            raise ReidkitError(f"engine expects [N,{','.join(map(str, self.input_shape))}] input, got {list(batch.shape)}")
        out = np.empty((len(batch), self.out_dim), np.float32)
        for s in range(0, len(batch), self.max_batch):
            out[s:s + self.max_batch] = self._run_chunk(batch[s:s + self.max_batch])
        return out

    def _run_chunk(self, chunk: np.ndarray) -> np.ndarray:
        cu, n = self.cudart, len(chunk)
        self.h_in[:n] = chunk
        kind = cu.cudaMemcpyKind
        _check(cu.cudaMemcpyAsync(self.d_in, self.h_in_ptr, chunk.nbytes, kind.cudaMemcpyHostToDevice, self.stream))
        if not self.context.set_input_shape("images", (n, *self.input_shape)):
            raise ReidkitError(f"engine rejected batch shape {(n, *self.input_shape)}")
        self.context.set_tensor_address("images", int(self.d_in))
        self.context.set_tensor_address("embedding", int(self.d_out))
        if not self.context.execute_async_v3(int(self.stream)):
            raise ReidkitError("TensorRT execution failed")
        _check(cu.cudaMemcpyAsync(self.h_out_ptr, self.d_out, n * self.out_dim * 4, kind.cudaMemcpyDeviceToHost, self.stream))
        _check(cu.cudaStreamSynchronize(self.stream))
        return self.h_out[:n].copy()

    def close(self) -> None:
        """Free the device and pinned buffers and destroy the stream (once; safe to repeat)."""
        cu = getattr(self, "cudart", None)
        if cu is None:
            return
        if hasattr(self, "stream"):
            cu.cudaStreamSynchronize(self.stream)  # nothing may still be copying into the buffers freed below
        for name, free in (("d_in", "cudaFree"), ("d_out", "cudaFree"), ("h_in_ptr", "cudaFreeHost"), ("h_out_ptr", "cudaFreeHost"),
                           ("stream", "cudaStreamDestroy")):
            if hasattr(self, name):
                getattr(cu, free)(getattr(self, name))
                delattr(self, name)

    def __del__(self) -> None:
        self.close()
