"""Backend selection: ``auto`` = a TensorRT engine matching this GPU, else onnxruntime CUDA,
else onnxruntime CPU. Only backends that can really load are tried, so nothing prints
provider errors. ``openvino`` and ``mnn`` (faster CPU engines, optional extras; ``mnn`` needs
a bundle exported with ``--mnn``) are chosen explicitly."""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np

from reidkit.errors import ReidkitError
from reidkit.runtime.bundle import PRECISIONS, Bundle, verify_file

BACKENDS = ("auto", "trt", "ort-cuda", "ort-cpu", "openvino", "mnn")


class Backend(Protocol):
    name: str

    def run(self, batch: np.ndarray) -> np.ndarray: ...


def _matching_engines(bundle: Bundle) -> dict[str, dict[str, Any]] | None:
    """The bundle's engines for this GPU and TensorRT, one per member, or None."""
    from reidkit.runtime.gpu import detect_gpus

    gpus = detect_gpus()
    if not gpus or not bundle.engines():
        return None
    try:
        import tensorrt as trt
    except ImportError:
        return None
    if not hasattr(trt, "Runtime"):
        return None
    found = {e["member"]: e for e in bundle.engines()
             if e.get("tensorrt_version") == trt.__version__ and e.get("gpu_name") == gpus[0].name}
    return found if all(m.name in found for m in bundle.members) else None


def resolve_backend(bundle: Bundle, requested: str) -> str:
    from reidkit.runtime.backends.ort import cuda_provider_usable

    if requested not in BACKENDS:
        raise ReidkitError(f"--backend {requested!r}: choose one of {', '.join(BACKENDS)}")
    if requested != "auto":
        return requested
    if _matching_engines(bundle):
        return "trt"
    try:
        if cuda_provider_usable():
            return "ort-cuda"
    except Exception:
        pass
    return "ort-cpu"


def resolve_precision(backend: str, requested: str | None) -> str:
    """TensorRT engines are FP16 by construction; onnxruntime runs the fp32 graph unless asked."""
    if backend == "trt":
        if requested not in (None, "fp16"):
            raise ReidkitError(f"--precision {requested}: TensorRT engines are FP16; use --precision fp16 or --backend ort-cpu / ort-cuda")
        return "fp16"
    if backend == "mnn":
        if requested not in (None, "fp32"):
            raise ReidkitError(f"--precision {requested}: MNN models are fp32 (converted from the fp32 ONNX); "
                               "use --precision fp32, or --backend openvino / ort-cpu for fp16 and int8")
        return "fp32"
    if requested is not None and requested not in PRECISIONS:
        raise ReidkitError(f"--precision {requested!r}: choose one of {', '.join(PRECISIONS)}")
    return requested or "fp32"


def make_backends(bundle: Bundle, name: str, threads: int | None = None, precision: str = "fp32") -> list[Backend]:
    """One backend per member, after checking every artefact it will load."""
    if name == "trt":
        engines = _matching_engines(bundle)
        if engines is None:
            raise ReidkitError(f"{bundle.root} has no TensorRT engine for this GPU and TensorRT version; "
                               "build one with `reid-export --trt`, or use --backend ort-cuda / ort-cpu")
        from reidkit.runtime.backends.trt import TensorRTBackend

        out: list[Backend] = []
        for m in bundle.members:
            e = engines[m.name]
            plan = bundle.root / e["file"]
            verify_file(plan, e["sha256"], f"member {m.name!r} engine")
            out.append(TensorRTBackend(plan))
        return out
    if name == "mnn":
        missing = [m.name for m in bundle.members if m.mnn is None]
        if missing:
            raise ReidkitError(f"{bundle.root} has no MNN model for {', '.join(missing)}; re-export with `reid-export ... --mnn`, "
                               "or use --backend openvino / ort-cpu")
        from reidkit.runtime.backends.mnn import MnnBackend

        models = [m.mnn for m in bundle.members if m.mnn is not None]
        for m, (path, sha) in zip(bundle.members, models):
            verify_file(path, sha, f"member {m.name!r} MNN model")
        return [MnnBackend(path, threads=threads) for path, _ in models]
    files = [m.onnx_for(precision) for m in bundle.members]  # every member has it, before anything loads
    for m, (path, sha) in zip(bundle.members, files):
        if precision != "fp32":  # fp32 was verified when the bundle loaded
            verify_file(path, sha, f"member {m.name!r} {precision} ONNX")
    if name == "openvino":
        from reidkit.runtime.backends.openvino import OpenVinoBackend

        return [OpenVinoBackend(path, threads=threads) for path, _ in files]
    from reidkit.runtime.backends.ort import OrtBackend

    device = "cuda" if name == "ort-cuda" else "cpu"
    return [OrtBackend(path, device=device, threads=threads) for path, _ in files]
