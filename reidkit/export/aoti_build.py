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
from dataclasses import dataclass
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


@dataclass(frozen=True)
class CompileJob:
    """One package to build: what a worker process needs to rebuild the member and compile it."""

    member: str
    checkpoint: Path
    flip: str
    precision: str
    device: str
    batch: int
    path: Path


def _run_job(job: CompileJob) -> float:
    from reidkit.train.checkpoint import load_member

    t = time.perf_counter()
    model, _ = load_member(job.checkpoint)
    compile_member(ExportGraph(model, job.flip).eval(), job.path, precision=job.precision, device=job.device, batch=job.batch)
    return time.perf_counter() - t


def compile_all(jobs: Sequence[CompileJob]) -> None:
    """Every package, several at once on a GPU host.

    Most of a GPU compile is single-threaded (tracing, then the C++ wrapper's build), so
    compiling the members side by side, each in its own process, cuts the export's wall time
    several-fold on a many-core host. On a CPU target the kernels' own C++ build already takes
    every core, so packages are compiled one after another, in this process.
    """
    from reidkit.cpus import usable_cpus

    workers = min(len(jobs), max(1, usable_cpus() // 4)) if all(j.device == "cuda" for j in jobs) else 1
    if workers <= 1:
        for job in jobs:
            _run_job(job)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor

    log.info("compiling %d packages, %d at a time", len(jobs), workers)
    with ProcessPoolExecutor(workers, mp_context=mp.get_context("spawn")) as pool:
        for job, seconds in zip(jobs, pool.map(_run_job, jobs)):
            log.info("compiled %s in %.0f s", job.path.name, seconds)


def compile_jobs(root: Path, member: str, checkpoint: Path, flip: str, *, device: str, precisions: Sequence[str], batch: int) -> list[CompileJob]:
    target = target_here(device)
    if target is None:
        raise ReidkitError(f"--aoti: no {device} device here to compile for")
    return [CompileJob(member, checkpoint, flip, p, device, batch, root / package_name(member, target, p)) for p in precisions]


def gate_compiled(root: Path, jobs: Sequence[CompileJob], parity: dict[str, tuple[np.ndarray, np.ndarray]],
                  tolerances: dict[str, Tolerance]) -> tuple[list[CompiledRecord], list[Any]]:
    """Each compiled package run by the engine that will run it, on its member's parity images
    (``parity``: member -> (uint8 batch, PyTorch fp32 reference)); the records and results."""
    from reidkit.export.parity import compare

    version = torch_version()
    target = {d: target_here(d) for d in {j.device for j in jobs}}
    records, results = [], []
    for job in jobs:
        images, reference = parity[job.member]
        engine = AotiBackend(job.path, device=job.device, batch=job.batch)
        results.append(compare(job.member, f"aoti-{job.device}-{job.precision}", reference, engine.run(images), tolerances[job.precision]))
        records.append(CompiledRecord(job.member, job.path.relative_to(root).as_posix(), sha256_file(job.path), job.precision, job.device,
                                      str(target[job.device]), str(version), job.batch))
    return records, results
