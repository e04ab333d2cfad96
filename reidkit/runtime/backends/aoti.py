"""PyTorch's ahead-of-time compiled members (AOTInductor packages) as an engine.

The one GPU engine that needs nothing beyond torch: ``reid-export --aoti`` compiles each
member's whole graph (preprocessing, flip, network, L2) into machine code for the GPU (or CPU)
it runs on, and this engine loads the package with no Python graph and no compilation at run
time. torch is imported when this module is, and this module only when the engine is chosen
(the backend table loads it lazily), so ``import reidkit`` and the other engines stay torch-free.

A package has one batch size: a short batch is padded up to it (the rows past the batch are
whatever the buffer held and are discarded), a longer one is run in slices. On a GPU the batch
is staged in a pinned host buffer, copied to a device buffer that is reused, and the members of
an ensemble are all launched before any result is read back (:meth:`AotiBackend.submit`), so the
host prepares the next member while the GPU computes the previous one.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import numpy as np

from reidkit.errors import MissingDependencyError

if TYPE_CHECKING:
    from reidkit.runtime.bundle import Bundle
    from reidkit.runtime.bundle_format import CompiledRecord

REBUILD = "re-export with `reid-export ... --aoti` on this machine"


def torch_version() -> str | None:
    """The installed torch's version, read without importing it."""
    try:
        return importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return None


def target_here(device: str) -> str | None:
    """What a package for ``device`` must have been compiled for to run here (None: no such device)."""
    if device == "cuda":
        from reidkit.runtime.gpu import detect_gpus

        gpus = detect_gpus()
        return gpus[0].name if gpus else None
    from reidkit.cpus import cpu_model

    return cpu_model()


def compiled_here(bundle: "Bundle", device: str, precision: str) -> "dict[str, CompiledRecord] | str":
    """The bundle's package per member that runs on this machine at ``precision``, or why there is none."""
    records = bundle.manifest.compiled
    if not records:
        return f"{bundle.root} has no compiled members; {REBUILD}"
    target, version = target_here(device), torch_version()
    if target is None:
        return "no NVIDIA GPU (the CUDA driver reports none)"
    if version is None:
        return "torch is not installed (pip install 'reidkit[train]')"
    found = {c.member: c for c in records
             if c.device == device and c.precision == precision and c.target == target and c.torch_version == version}
    missing = [m.name for m in bundle.members if m.name not in found]
    if missing:
        have = sorted({f"{c.precision} for {c.target} with torch {c.torch_version}" for c in records})
        return (f"{bundle.root} has no {precision} package compiled for {target} with torch {version} for {', '.join(missing)} "
                f"(it has: {'; '.join(have)}); {REBUILD}")
    return found


def _ieee_fp32(torch) -> None:  # type: ignore[no-untyped-def]
    """fp32 convolutions in fp32: cuDNN's default TF32 moves fp32 embeddings beyond the fp32
    tolerance (as onnxruntime's did, ``ort.CUDA_OPTIONS``); the compiled code calls cuDNN, which
    reads this process-wide setting at run time. The legacy switch, which every torch honours
    (mixing it with the newer per-operator setting makes torch refuse to read either)."""
    torch.backends.cudnn.allow_tf32 = False


class AotiBackend:
    def __init__(self, package: str | Path, *, device: str = "cuda", batch: int = 32, threads: int | None = None) -> None:
        try:
            import torch
            import torch._inductor
        except ImportError:
            raise MissingDependencyError("--backend aoti needs torch (pip install 'reidkit[train]')") from None
        if device == "cuda" and not torch.cuda.is_available():
            raise MissingDependencyError("--backend aoti-cuda: torch sees no CUDA GPU (a CPU-only torch build, or no driver); "
                                         "use a CPU engine")
        if device == "cpu" and threads:
            torch.set_num_threads(threads)
        if device == "cuda":
            _ieee_fp32(torch)
        self.name = f"aoti-{device}"
        self.device = device
        self.batch = batch
        self._torch = torch
        self._runner = torch._inductor.aoti_load_package(str(package))
        self._host: torch.Tensor | None = None  # pinned staging buffer [batch, H, W, 3], made at the first batch
        self._dev: torch.Tensor | None = None
        self._uploaded: torch.cuda.Event | None = None  # the last copy out of the staging buffer

    def _slice(self, x: np.ndarray) -> Callable[[], np.ndarray]:
        torch, n = self._torch, len(x)
        if self.device == "cpu":
            if n < self.batch:
                x = np.concatenate([x, np.zeros((self.batch - n, *x.shape[1:]), x.dtype)])
            out = self._runner(torch.from_numpy(np.ascontiguousarray(x)))
            return lambda: out[:n].numpy()
        if self._host is None or self._host.shape[1:] != x.shape[1:]:
            self._host = torch.zeros((self.batch, *x.shape[1:]), dtype=torch.uint8).pin_memory()
            self._dev = torch.empty(self._host.shape, dtype=torch.uint8, device="cuda")
        if self._uploaded is not None:
            self._uploaded.synchronize()  # the previous slice's upload has left the staging buffer
        self._host.numpy()[:n] = x
        assert self._dev is not None
        self._dev.copy_(self._host, non_blocking=True)
        self._uploaded = torch.cuda.Event()
        self._uploaded.record()
        out = self._runner(self._dev)
        return lambda: out[:n].float().cpu().numpy()

    def submit(self, batch: np.ndarray) -> Callable[[], np.ndarray]:
        """Launch the batch and return a function that waits for its embeddings."""
        parts = [self._slice(batch[i:i + self.batch]) for i in range(0, len(batch), self.batch)]
        return lambda: np.concatenate([p() for p in parts]) if len(parts) != 1 else parts[0]()

    def run(self, batch: np.ndarray) -> np.ndarray:
        return self.submit(batch)()
