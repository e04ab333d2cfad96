"""AOTInductor packages: each member compiled ahead of time for the machine that exports it.

``reid-export --aoti`` traces the same graph the ONNX holds (uint8 NHWC in, the flip and the L2
inside) with ``torch.export`` at one fixed batch size, compiles it with PyTorch's AOTInductor
for the GPU (or CPU) it runs on, and gates the package like every other artefact: the runtime
engine runs it on the parity images and it must stay within its precision's tolerance of
PyTorch fp32. The fp16 package keeps the preprocessing, the pooling, the neck and the L2 norms
in fp32 and runs the backbone in fp16, the split the FP16 ONNX makes (``graph.FP32_SCOPES``).
"""

from __future__ import annotations

import copy
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from reidkit.errors import MissingDependencyError, ReidkitError
from reidkit.export.graph import ExportGraph
from reidkit.hashing import sha256_file
from reidkit.runtime.backends.aoti import AotiBackend, target_here, torch_version
from reidkit.runtime.bundle_format import CompiledRecord, Tolerance

log = logging.getLogger("reidkit")

COMPILED_DIR = "compiled"


def aoti_precisions(device: str, fp16: bool) -> list[str]:
    """fp32 always; fp16 on a GPU when the export asks for FP16 (a CPU gains nothing from fp16)."""
    return ["fp32", "fp16"] if fp16 and device == "cuda" else ["fp32"]


def require_aoti(device: str) -> None:
    """Refuse before any work what could not compile here: AOTInductor builds C++ (and, on a GPU, CUDA) code."""
    if not hasattr(torch, "_inductor") or not hasattr(torch._inductor, "aoti_compile_and_package"):
        raise MissingDependencyError(f"--aoti needs torch>=2.6 with AOTInductor; torch {torch.__version__} is installed")
    if not any(shutil.which(c) for c in ("g++", "c++", "clang++")):
        raise MissingDependencyError("--aoti compiles C++ and finds no C++ compiler (g++, c++ or clang++) on PATH; "
                                     "install one (e.g. apt-get install g++) or export without --aoti")
    if device == "cuda" and not torch.cuda.is_available():
        raise ReidkitError("--aoti --device cuda: torch sees no CUDA GPU here; use --device cpu to compile for this CPU")


def package_name(member: str, target: str, precision: str) -> str:
    slug = "".join(c if c.isalnum() else "-" for c in target.lower()).strip("-") or "machine"
    return f"{COMPILED_DIR}/{member}.{slug}.{precision}.pt2"


def _fp16_backbone(graph: ExportGraph) -> ExportGraph:
    g = copy.deepcopy(graph)
    backbone = g.net.backbone.half()
    backbone.register_forward_pre_hook(lambda _m, args: tuple(a.half() for a in args))
    backbone.register_forward_hook(lambda _m, _args, out: [o.float() for o in out])
    return g


def compile_member(graph: ExportGraph, path: Path, *, precision: str, device: str, batch: int) -> None:
    """One member's package at ``path``: traced for ``batch`` images, compiled for ``device``."""
    h, w = graph.net.cfg.input_size
    g = (_fp16_backbone(graph) if precision == "fp16" else copy.deepcopy(graph)).to(device).eval()
    example = torch.zeros((batch, h, w, 3), dtype=torch.uint8, device=device)
    path.parent.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    with torch.no_grad():
        program = torch.export.export(g, (example,))
        torch._inductor.aoti_compile_and_package(program, package_path=str(path))
    log.info("compiled %s (%s, %s, batch %d) in %.0f s", path.name, precision, device, batch, time.perf_counter() - t)


def build_compiled(root: Path, member: str, graph: ExportGraph, parity_batch: np.ndarray, reference: np.ndarray, *,
                   device: str, precisions: Sequence[str], batch: int, tolerances: dict[str, Tolerance]) -> tuple[list[CompiledRecord], list[Any]]:
    """Compile and gate one member's packages; the records and each package's parity result."""
    from reidkit.export.parity import compare

    target, version = target_here(device), torch_version()
    if target is None or version is None:
        raise ReidkitError(f"--aoti: cannot tell what this machine is (device {device}, torch {version})")
    records, results = [], []
    for precision in precisions:
        rel = package_name(member, target, precision)
        compile_member(graph, root / rel, precision=precision, device=device, batch=batch)
        engine = AotiBackend(root / rel, device=device, batch=batch)
        results.append(compare(member, f"aoti-{device}-{precision}", reference, engine.run(parity_batch), tolerances[precision]))
        records.append(CompiledRecord(member, rel, sha256_file(root / rel), precision, device, target, version, batch))
    return records, results
