"""The backend table: one row per inference engine; everything else derives from it.

The CLI choices and help, ``--backend auto``, the precision checks, ``reid-bench`` and
``make bench`` read these rows. Adding an engine is one module with a class taking
``(artefact_path, *, threads=None, **options)`` and exposing ``run(uint8 NHWC) -> float32
[N, D]``, plus one row here. Nothing is imported until a row is used: a probe must be
cheap and silent, and say why its engine cannot run here (or return None).
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable, Protocol

import numpy as np

from reidkit.errors import ReidkitError


class Backend(Protocol):
    name: str

    def run(self, batch: np.ndarray) -> np.ndarray: ...


def _module_missing(module: str, extra: str) -> str | None:
    if importlib.util.find_spec(module) is None:
        return f"{module} is not installed (pip install 'reidkit[{extra}]')"
    return None


def _no_gpu() -> str | None:
    from reidkit.runtime.gpu import detect_gpus

    return None if detect_gpus() else "no NVIDIA GPU (the CUDA driver reports none)"


def _probe_ort_cuda() -> str | None:
    # GPU first: onnxruntime-gpu lists the CUDA provider even where no GPU exists, and the
    # driver check does not import onnxruntime on CPU machines.
    why = _no_gpu() or _module_missing("onnxruntime", "gpu")
    if why:
        return why
    import onnxruntime

    return None if "CUDAExecutionProvider" in onnxruntime.get_available_providers() else \
        "onnxruntime has no CUDA provider (pip install 'reidkit[gpu]', which replaces onnxruntime with onnxruntime-gpu)"


def _probe_trt() -> str | None:
    why = _no_gpu() or _module_missing("tensorrt", "gpu") or _module_missing("cuda", "gpu")
    if why:
        return why
    import tensorrt

    return None if hasattr(tensorrt, "Runtime") else "only TensorRT's type stubs are installed (pip install 'reidkit[gpu]')"


def _probe_aoti(device: str) -> Callable[[], str | None]:
    def probe() -> str | None:
        return (_no_gpu() if device == "cuda" else None) or _module_missing("torch", "train")

    return probe


def _cpu_bf16_missing() -> str | None:
    from reidkit.cpus import bf16_missing

    return bf16_missing()


@dataclass(frozen=True)
class BackendSpec:
    name: str
    module: str  # imported only when the engine is used
    cls: str
    fmt: str  # the artefact it runs: onnx | mnn (see bundle_format.ARTEFACTS) | trt | aoti (per-machine records)
    precisions: tuple[str, ...]
    device: str  # cpu | cuda
    auto_rank: int  # place in the auto order (GPU engines first; see select.resolve_backend)
    extra: str  # the pip extra that installs it
    probe: Callable[[], str | None]
    summary: str  # one line for --help
    options: dict[str, Any] = field(default_factory=dict)  # extra constructor arguments
    fallback: bool = False  # the CPU engine auto uses only when no faster one is installed
    # per precision: extra constructor arguments, and a probe of what that precision needs of this machine
    precision_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    precision_probes: dict[str, Callable[[], str | None]] = field(default_factory=dict)

    def why_unavailable(self) -> str | None:
        return self.probe()

    def why_not_at(self, precision: str) -> str | None:
        """Why this machine cannot run this engine at ``precision`` (None: it can)."""
        probe = self.precision_probes.get(precision)
        return probe() if probe else None

    def options_for(self, precision: str) -> dict[str, Any]:
        return {**self.options, **self.precision_options.get(precision, {})}

    def load_class(self) -> Any:
        return getattr(importlib.import_module(self.module), self.cls)


BACKENDS: dict[str, BackendSpec] = {b.name: b for b in (
    BackendSpec("trt", "reidkit.runtime.backends.trt", "TensorRTBackend", "trt", ("fp16",), "cuda", 0, "gpu", _probe_trt,
                "TensorRT FP16 engines built for this GPU by `reid-export --trt`"),
    BackendSpec("ort-cuda", "reidkit.runtime.backends.ort", "OrtBackend", "onnx", ("fp32", "fp16", "int8"), "cuda", 1, "gpu",
                _probe_ort_cuda, "onnxruntime on an NVIDIA GPU", {"device": "cuda"}),
    BackendSpec("aoti-cuda", "reidkit.runtime.backends.aoti", "AotiBackend", "aoti", ("fp32", "fp16"), "cuda", 1, "train",
                _probe_aoti("cuda"), "PyTorch AOTInductor packages compiled for this GPU by `reid-export --aoti` (needs torch)",
                {"device": "cuda"}),
    BackendSpec("mnn", "reidkit.runtime.backends.mnn", "MnnBackend", "mnn", ("fp32",), "cpu", 2, "mnn",
                lambda: _module_missing("MNN", "mnn"), "MNN on the CPU (Winograd convolutions); needs `reid-export --mnn`"),
    BackendSpec("openvino", "reidkit.runtime.backends.openvino", "OpenVinoBackend", "onnx", ("fp32", "fp16", "int8", "bf16"), "cpu", 3,
                "openvino", lambda: _module_missing("openvino", "openvino"),
                "OpenVINO on the CPU, runs the bundle's ONNX (bf16: the fp32 graph in bf16 arithmetic, on CPUs with AVX512-BF16 or AMX)",
                precision_options={"bf16": {"inference_precision": "bf16"}}, precision_probes={"bf16": _cpu_bf16_missing}),
    BackendSpec("ort-cpu", "reidkit.runtime.backends.ort", "OrtBackend", "onnx", ("fp32", "fp16", "int8"), "cpu", 4, "cpu",
                lambda: _module_missing("onnxruntime", "cpu"), "onnxruntime on the CPU", {"device": "cpu"}, fallback=True),
    BackendSpec("aoti-cpu", "reidkit.runtime.backends.aoti", "AotiBackend", "aoti", ("fp32",), "cpu", 5, "train",
                _probe_aoti("cpu"), "PyTorch AOTInductor packages compiled for this CPU by `reid-export --aoti --device cpu` (needs torch)",
                {"device": "cpu"}),
)}
AUTO = "auto"
CHOICES = (AUTO, *BACKENDS)


def get_backend(name: str) -> BackendSpec:
    try:
        return BACKENDS[name]
    except KeyError:
        raise ReidkitError(f"unknown backend {name!r}; choose one of {', '.join(CHOICES)}") from None


def cli_help() -> str:
    order = sorted(BACKENDS.values(), key=lambda b: b.auto_rank)
    return ("auto: the fastest engine this bundle and the installed packages allow here, GPU engines first, timed once per "
            "bundle and machine when several qualify (onnxruntime CPU only when nothing faster is installed). "
            + " ".join(f"{b.name}: {b.summary} (pip install 'reidkit[{b.extra}]')." for b in order))
