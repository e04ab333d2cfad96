"""Choosing and loading the engine that runs a bundle, from the backend table.

``auto``: on a GPU the fastest of the GPU engines the bundle feeds (TensorRT engines and
AOTInductor packages built for this GPU, onnxruntime CUDA); on a CPU the fastest engine the
bundle and the installed packages allow. Which is fastest depends on the network, the device
and the instruction set (docs/results.md), so when several are possible ``auto`` times them
on the bundle once per machine: each candidate runs the bundle's own members
on a small batch, interleaved (A B A B ...) so that machine noise hits all of them, and the
fastest wins. The result is remembered per bundle, precision, CPU model, core count, thread
setting and engine versions in ``<cache dir>/auto-backend.json`` (``$REIDKIT_CACHE_DIR``, else
``$XDG_CACHE_HOME/reidkit``, else ``~/.cache/reidkit``), so later runs start at once;
``REIDKIT_AUTO_MEASURE=0`` skips timing and uses the table's order. The winner's loaded engines
are kept, so measuring costs no second load. onnxruntime CPU is the fallback when nothing
faster is installed. Only engines whose probe passes are loaded, so nothing prints provider errors.

This module sits below the bundle and the embedder: it imports neither (the bundle is a type here).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

import numpy as np

from reidkit.cpus import cpu_model, usable_cpus

from reidkit.errors import MissingDependencyError, ReidkitError
from reidkit.runtime.backends.registry import AUTO, BACKENDS, Backend, BackendSpec, get_backend
from reidkit.runtime.backends.aoti import compiled_here
from reidkit.runtime.backends.trt import engines_for_this_gpu
from reidkit.runtime.bundle_format import DEFAULT_INT8_SCHEME, PRECISIONS, artefact_for, verify_file
from reidkit.runtime.members import run_members

if TYPE_CHECKING:
    from reidkit.runtime.bundle import Bundle

log = logging.getLogger("reidkit")

__all__ = ["Backend", "Selection", "make_backends", "resolve_precision", "select_backends", "bundle_lacks", "fastest", "cache_dir"]


@dataclass
class Selection:
    name: str
    precision: str
    reason: str  # why this engine: printed in the run summary
    backends: list[Backend] = field(default_factory=list)


def resolve_precision(backend: str, requested: str | None) -> str:
    """The precision a backend runs: its first listed one unless asked, and never one it lacks."""
    spec = get_backend(backend)
    if requested is None:
        return spec.precisions[0]
    if requested not in PRECISIONS:
        raise ReidkitError(f"--precision {requested!r}: choose one of {', '.join(PRECISIONS)}")
    if requested not in spec.precisions:
        others = [b.name for b in BACKENDS.values() if requested in b.precisions]
        raise ReidkitError(f"--precision {requested}: {backend} runs {', '.join(spec.precisions)} only; "
                           f"use --precision {spec.precisions[0]}, or --backend {' / '.join(others)} for {requested}")
    return requested


def bundle_lacks(bundle: Bundle, spec: BackendSpec, precision: str) -> str | None:
    """Why this bundle cannot feed ``spec`` at ``precision`` (None: it can)."""
    if spec.fmt == "trt":
        found = engines_for_this_gpu(bundle)
        return found if isinstance(found, str) else None
    if spec.fmt == "aoti":
        compiled = compiled_here(bundle, spec.device, precision)
        return compiled if isinstance(compiled, str) else None
    art = artefact_for(spec.fmt, precision)
    missing = [m.name for m in bundle.members if art.kind not in m.files]
    if missing:
        return f"{bundle.root} has no {art.label} for {', '.join(missing)}; re-export with `reid-export ... {art.export_flag}`"
    scheme = bundle.manifest.int8_scheme if precision == "int8" and spec.device == "cpu" else None
    if scheme is not None and scheme.needs_vnni:
        from reidkit.cpus import int8_saturates

        why = int8_saturates()
        if why:
            return (f"{bundle.root}'s INT8 graphs use 8-bit weights (--int8-scheme {scheme.name}) and {why}, which would corrupt "
                    f"the embeddings; use --precision fp32 here, or re-export with --int8-scheme {DEFAULT_INT8_SCHEME}")
    return None


def make_backends(bundle: Bundle, name: str, threads: int | None = None, precision: str | None = None) -> list[Backend]:
    """One engine per member, after checking every artefact it will load."""
    spec = get_backend(name)
    precision = resolve_precision(name, precision)
    why = spec.why_unavailable()
    if why:
        raise MissingDependencyError(f"--backend {name}: {why}")
    why = spec.why_not_at(precision)
    if why:
        raise ReidkitError(f"--precision {precision}: {why}; use --precision fp32 here")
    lacks = bundle_lacks(bundle, spec, precision)
    if lacks:
        others = " / ".join(b.name for b in BACKENDS.values() if b.fmt == "onnx" and b.device == spec.device and b is not spec)
        raise ReidkitError(f"--backend {name}: {lacks}" + (f", or use --backend {others}" if others else ""))
    cls = spec.load_class()
    if spec.fmt == "trt":
        engines = engines_for_this_gpu(bundle)
        assert not isinstance(engines, str)
        out: list[Backend] = []
        for m in bundle.members:
            rec = engines[m.name]
            plan, side = bundle.root / rec.file, bundle.root / rec.sidecar
            verify_file(plan, rec.sha256, f"member {m.name!r} TensorRT engine")
            verify_file(side, rec.sidecar_sha256, f"member {m.name!r} TensorRT engine sidecar")
            out.append(cls(plan, threads=threads, **spec.options))
        return out
    if spec.fmt == "aoti":
        compiled = compiled_here(bundle, spec.device, precision)
        assert not isinstance(compiled, str)
        loaded: list[Backend] = []
        for m in bundle.members:
            pkg = compiled[m.name]
            verify_file(bundle.root / pkg.file, pkg.sha256, f"member {m.name!r} compiled {pkg.precision} package")
            loaded.append(cls(bundle.root / pkg.file, threads=threads, batch=pkg.batch, **spec.options))
        return loaded
    art = artefact_for(spec.fmt, precision)
    files = [m.artefact(art.kind) for m in bundle.members]
    for m, (path, sha) in zip(bundle.members, files):
        if art.kind != "fp32":  # the fp32 graphs were verified when the bundle loaded
            verify_file(path, sha, f"member {m.name!r} {art.label}")
    return [cls(path, threads=threads, **spec.options_for(precision)) for path, _ in files]


def _usable(bundle: Bundle, spec: BackendSpec, precision: str) -> str | None:
    if precision not in spec.precisions:
        return f"runs {', '.join(spec.precisions)} only"
    return spec.why_unavailable() or spec.why_not_at(precision) or bundle_lacks(bundle, spec, precision)


def select_backends(bundle: Bundle, requested: str = AUTO, precision: str | None = None, threads: int | None = None) -> Selection:
    """Resolve ``requested`` (a table name or ``auto``) to loaded engines and the reason."""
    if requested != AUTO:
        prec = resolve_precision(requested, precision)
        return Selection(requested, prec, "--backend " + requested, make_backends(bundle, requested, threads, prec))
    rows = sorted(BACKENDS.values(), key=lambda b: b.auto_rank)
    why_not: dict[str, str] = {}
    gpu: dict[str, list[BackendSpec]] = {}  # precision -> the GPU engines usable at it
    for spec in (b for b in rows if b.device == "cuda"):
        prec = precision or spec.precisions[0]
        why = _usable(bundle, spec, prec)
        if why is None:
            gpu.setdefault(prec, []).append(spec)
        else:
            why_not[spec.name] = why
    if gpu:  # the precision most engines share (all run their first listed one unless asked), then the table's order
        prec, specs = max(gpu.items(), key=lambda kv: len(kv[1]))
        if len(specs) > 1:
            return fastest(bundle, specs, prec, threads)
        spec = specs[0]
        what = {"trt": "a TensorRT engine built for this GPU", "aoti": "packages compiled for this GPU"}.get(spec.fmt, "an NVIDIA GPU")
        return Selection(spec.name, prec, f"auto: {spec.name}, {what}", make_backends(bundle, spec.name, threads, prec))
    prec = precision or "fp32"
    cpu = [b for b in rows if b.device == "cpu"]
    fast = []
    for spec in cpu:
        why = _usable(bundle, spec, prec)
        if why is None and not spec.fallback:
            fast.append(spec)
        elif why is not None:
            why_not[spec.name] = why
    if len(fast) > 1:
        return fastest(bundle, fast, prec, threads)
    if len(fast) == 1:
        spec = fast[0]
        skipped = "; ".join(f"{k}: {v}" for k, v in why_not.items()  # compiled packages are opt-in: not news when absent
                            if BACKENDS[k].device == "cpu" and not (BACKENDS[k].fmt == "aoti" and "no compiled members" in v))
        return Selection(spec.name, prec, f"auto: {spec.name}, the fastest CPU engine usable here" + (f" ({skipped})" if skipped else ""),
                         make_backends(bundle, spec.name, threads, prec))
    for spec in (b for b in cpu if b.fallback and b.name not in why_not):
        faster = ", ".join(f"'reidkit[{b.extra}]'" for b in cpu if not b.fallback and b.fmt != "aoti")  # aoti needs an export, not a package
        return Selection(spec.name, prec, f"auto: {spec.name}, no faster CPU engine is usable here (pip install {faster})",
                         make_backends(bundle, spec.name, threads, prec))
    raise MissingDependencyError(f"no engine can run {bundle.root} at {prec} here: "
                                 + "; ".join(f"{k}: {v}" for k, v in why_not.items()))


# --- auto on a CPU with several fast engines: time them on this bundle, once ---------------
_DISTS = {"mnn": "MNN", "openvino": "openvino", "ort-cpu": "onnxruntime", "ort-cuda": "onnxruntime-gpu", "aoti-cuda": "torch",
          "aoti-cpu": "torch", "trt": "tensorrt"}
BATCH, ROUNDS = 8, 3
SLOWER_DROPPED = 4.0  # an engine this many times slower than the quickest after one round is not timed again
GPU_BATCH = 64  # a GPU is timed at the batch it runs, not a CPU's


def cache_dir() -> Path:
    if os.environ.get("REIDKIT_CACHE_DIR"):
        return Path(os.environ["REIDKIT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reidkit"


def _version(spec: BackendSpec) -> str:
    try:
        return importlib.metadata.version(_DISTS.get(spec.name, spec.module))
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _record_key(bundle: Bundle, specs: Sequence[BackendSpec], precision: str, threads: int | None) -> str:
    from reidkit.runtime.gpu import detect_gpus

    gpus = [g.name for g in detect_gpus()] if any(s.device == "cuda" for s in specs) else []
    desc = [[bundle.key(precision, s.name) for s in specs], [(s.name, _version(s)) for s in specs], cpu_model(),
            usable_cpus(), threads] + ([gpus] if gpus else [])
    return hashlib.sha256(json.dumps(desc).encode()).hexdigest()


def _load_records(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_record(path: Path, key: str, record: dict) -> None:
    from reidkit.atomic import atomic_write

    try:
        records = _load_records(path)
        records[key] = record
        with atomic_write(path, "w", encoding="utf-8") as fh:
            json.dump(records, fh, indent=1)
    except OSError as exc:  # a read-only home only costs a re-measure next time
        log.debug("could not remember the auto backend choice in %s: %s", path, exc)


def _time(bundle: Bundle, loaded: dict[str, list], precision: str, size: int = BATCH) -> dict[str, float]:
    rng = np.random.default_rng(0)
    batch = {m.size_key: rng.integers(0, 256, (size, m.height, m.width, 3), dtype=np.uint8) for m in bundle.members}
    best = {name: float("inf") for name in loaded}
    for name, bes in loaded.items():  # warm-up: first runs allocate and pick kernels
        run_members(bundle, bes, batch)
    contenders = list(loaded)
    for _ in range(ROUNDS):
        for name in contenders:
            t = time.perf_counter()
            run_members(bundle, loaded[name], batch)
            best[name] = min(best[name], time.perf_counter() - t)
        # an engine many times slower than the quickest after one round (a compiled package padding each
        # batch up to its own size, say) keeps that figure: more rounds of it could cost a minute
        contenders = [name for name in contenders if best[name] <= SLOWER_DROPPED * min(best.values())]
    return {name: size / s for name, s in best.items()}


def fastest(bundle: Bundle, specs: Sequence[BackendSpec], precision: str, threads: int | None) -> Selection:
    path = cache_dir() / "auto-backend.json"
    key = _record_key(bundle, specs, precision, threads)
    names = [s.name for s in specs]
    if os.environ.get("REIDKIT_AUTO_MEASURE", "1") == "0":
        name = names[0]
        return Selection(name, precision, f"auto: {name}, first of {', '.join(names)} in the table's order (REIDKIT_AUTO_MEASURE=0)",
                         make_backends(bundle, name, threads, precision))
    rec = _load_records(path).get(key)
    if isinstance(rec, dict) and rec.get("choice") in names:
        name = rec["choice"]
        return Selection(name, precision, f"auto: {name}, fastest here when timed on {rec.get('measured_at', '?')} ({_rates(rec)})",
                         make_backends(bundle, name, threads, precision))
    log.info("auto: timing %s on this bundle once (remembered in %s)", ", ".join(names), path)
    loaded = {s.name: make_backends(bundle, s.name, threads, precision) for s in specs}
    on_gpu = all(s.device == "cuda" for s in specs)
    rates = _time(bundle, loaded, precision, GPU_BATCH if on_gpu else BATCH)
    name = max(rates, key=lambda n: rates[n])
    rec = {"choice": name, "images_per_s": {n: round(r, 1) for n, r in rates.items()}, "precision": precision,
           "cpu": cpu_model(), "cores": usable_cpus(), "bundle": str(bundle.root),
           "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    _save_record(path, key, rec)
    return Selection(name, precision, f"auto: {name}, fastest of those timed now on this bundle ({_rates(rec)})", loaded[name])


def _rates(rec: dict) -> str:
    rates = rec.get("images_per_s") or {}
    return ", ".join(f"{n} {r:g} images/s" for n, r in sorted(rates.items(), key=lambda kv: -kv[1]))
