"""onnxruntime backends (CPU, and CUDA when a real GPU is present)."""

from __future__ import annotations

import functools
import logging
from pathlib import Path

import numpy as np

from reidkit.cpus import usable_cpus
from reidkit.errors import MissingDependencyError

log = logging.getLogger("reidkit")


def _ort():
    try:
        import onnxruntime as ort
    except ImportError:
        raise MissingDependencyError("onnxruntime is not installed; pip install 'reidkit[cpu]' (or [gpu])") from None
    return ort


def cuda_provider_usable() -> bool:
    """The CUDA provider is listed by onnxruntime-gpu even without a GPU: ask the driver too."""
    from reidkit.runtime.gpu import detect_gpus

    return "CUDAExecutionProvider" in _ort().get_available_providers() and bool(detect_gpus())


@functools.cache
def _preload_cuda_libraries() -> None:
    """CUDA and cuDNN installed as pip packages (nvidia-*-cu13) are not on the loader's path;
    without this the CUDA provider fails to load. Once per process, not once per member."""
    ort = _ort()
    if hasattr(ort, "preload_dlls"):
        ort.preload_dlls(directory="")


# Measured on an H100 (research/ort-cuda-options/): the provider's default
# EXHAUSTIVE search cost 1-5 s per member per new batch shape, most of a reid-infer run, for the
# same steady speed as HEURISTIC; TF32 moves fp32 embeddings by ~4e-4 (beyond the fp32
# tolerance) for ~16%; NHWC ran 3x slower on these depthwise networks.
CUDA_OPTIONS = {"cudnn_conv_algo_search": "HEURISTIC", "use_tf32": "0", "prefer_nhwc": "0"}


class OrtBackend:
    def __init__(self, onnx_path: str | Path, device: str = "cpu", threads: int | None = None, pad_batches: bool | None = None) -> None:
        """``pad_batches`` (default: on CUDA) runs a short final batch padded to the largest
        batch seen, so the GPU never meets a new shape (each costs a cuDNN algorithm choice)."""
        ort = _ort()
        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        so.intra_op_num_threads = threads or usable_cpus()
        so.inter_op_num_threads = 1
        so.log_severity_level = 3
        # Idle intra-op threads would spin between batches and starve the decode threads that
        # run beside them; measured on 2 cores this alone made reid-infer 19-30% faster.
        so.add_session_config_entry("session.intra_op.allow_spinning", "0")
        if device == "cuda":
            if not cuda_provider_usable():
                raise MissingDependencyError("--backend ort-cuda needs onnxruntime-gpu and an NVIDIA GPU; use --backend ort-cpu")
            _preload_cuda_libraries()
            providers = [("CUDAExecutionProvider", CUDA_OPTIONS), "CPUExecutionProvider"]
        else:
            providers = ["CPUExecutionProvider"]
        self.name = f"ort-{device}"
        self.pad_batches = device == "cuda" if pad_batches is None else pad_batches
        self._pad_to = 0
        self._ort = ort
        self._bound: tuple | None = None  # (input OrtValue, output OrtValue, IOBinding) on the GPU, for one shape
        self._bind = device == "cuda"
        self._bind_device = device
        if device == "cuda":
            # each session computes on its own CUDA stream: members launched from their own threads overlap
            # on the GPU (run_members launches every engine that has ``submit`` before awaiting any)
            from concurrent.futures import ThreadPoolExecutor

            self._launcher = ThreadPoolExecutor(1, thread_name_prefix="ort-cuda")
            self.submit = lambda batch: self._launcher.submit(self.run, batch).result
        self.session = ort.InferenceSession(str(onnx_path), sess_options=so, providers=providers)
        if device == "cuda" and self.session.get_providers()[0] != "CUDAExecutionProvider":
            # onnxruntime falls back to the CPU with only a log line; a run the user asked to put on the GPU must not.
            raise MissingDependencyError(f"{onnx_path}: onnxruntime could not start its CUDA provider (CUDA or cuDNN libraries "
                                         f"missing or of another version; pip install 'onnxruntime-gpu[cuda,cudnn]'); "
                                         f"use --backend ort-cpu")

    def run(self, batch: np.ndarray) -> np.ndarray:
        n = len(batch)
        if self.pad_batches:
            self._pad_to = max(self._pad_to, n)
            if n < self._pad_to:
                batch = np.concatenate([batch, np.repeat(batch[-1:], self._pad_to - n, axis=0)])
        batch = np.ascontiguousarray(batch)
        if self._bind:
            try:
                return self._run_bound(batch)[:n]
            except Exception as exc:  # an onnxruntime build without I/O binding on this device: plain runs still work
                log.info("onnxruntime I/O binding unavailable (%s); running without it", exc)
                self._bind, self._bound = False, None
        return self.session.run(["embedding"], {"images": batch})[0][:n]

    def _run_bound(self, batch: np.ndarray) -> np.ndarray:
        """The batch into a device buffer kept from the last batch of this shape, the embeddings into
        another: no device allocation per batch, and (padded batches) one shape for the whole run."""
        ort = self._ort
        if self._bound is None or self._bound[0].shape() != list(batch.shape):
            dim = self.session.get_outputs()[0].shape[1]
            images = ort.OrtValue.ortvalue_from_numpy(batch, self._bind_device, 0)
            out = ort.OrtValue.ortvalue_from_shape_and_type([len(batch), dim], np.float32, self._bind_device, 0)
            binding = self.session.io_binding()
            binding.bind_ortvalue_input("images", images)
            binding.bind_ortvalue_output("embedding", out)
            self._bound = (images, out, binding)
        else:
            self._bound[0].update_inplace(batch)
        images, out, binding = self._bound
        self.session.run_with_iobinding(binding)
        return out.numpy()
