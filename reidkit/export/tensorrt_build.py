"""FP16 TensorRT engines from the bundle's ONNX, with the TensorRT 10+ API only.

Precision strategy: TensorRT 10 builds the fp32 ONNX with ``BuilderFlag.FP16``; TensorRT
11 removed that flag, so it builds the FP16 ONNX in a strongly typed network. Each
engine gets a JSON sidecar (TensorRT version, GPU, compute capability, precision, profile,
ONNX sha256) that the runtime checks before it trusts the plan.

UNVERIFIED ON HARDWARE: TensorRT cannot be installed on the development machines. This
module is type-checked against ``tensorrt-stubs`` and its logic is unit-tested against a
fake that mirrors the API (tests/fake_tensorrt.py); see the README.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, Sequence

from reidkit.atomic import atomic_write
from reidkit.errors import MissingDependencyError, ReidkitError
from reidkit.hashing import sha256_file
from reidkit.runtime.backends import trt as trt_runtime
from reidkit.runtime.bundle_format import ARTEFACTS, EngineRecord, EngineSidecar, FileRef, Manifest
from reidkit.runtime.gpu import GpuInfo, detect_gpus

if TYPE_CHECKING:
    import tensorrt as trt_types

log = logging.getLogger("reidkit")

NO_TRT_HINT = "The ONNX bundle works without it: re-run reid-export without --trt and use reid-infer --backend ort-cpu/ort-cuda."


def load_tensorrt() -> ModuleType:
    """The runtime's loader (one check for the stubs-only case), with the export's advice."""
    try:
        return trt_runtime.load_tensorrt(NO_TRT_HINT)
    except MissingDependencyError as exc:
        raise MissingDependencyError(f"--trt needs TensorRT: {exc}") from None


def require_tensorrt() -> tuple[ModuleType, GpuInfo]:
    trt = load_tensorrt()
    gpus = detect_gpus()
    if not gpus:
        raise MissingDependencyError(f"--trt needs an NVIDIA GPU and the CUDA driver; none was found. {NO_TRT_HINT}")
    return trt, gpus[0]


def trt_major(trt: ModuleType) -> int:
    return int(str(trt.__version__).split(".")[0])


def strongly_typed(trt: ModuleType) -> bool:
    """TensorRT 11 has no BuilderFlag.FP16: precision must come from the ONNX types."""
    return trt_major(trt) >= 11 or not hasattr(trt.BuilderFlag, "FP16")


@dataclass(frozen=True)
class Profile:
    min_batch: int
    opt_batch: int
    max_batch: int

    def __post_init__(self) -> None:
        if not 1 <= self.min_batch <= self.opt_batch <= self.max_batch:
            raise ReidkitError(f"batch profile must satisfy 1 <= min <= opt <= max, got {self.min_batch}/{self.opt_batch}/{self.max_batch}")

    def shapes(self, h: int, w: int) -> tuple[tuple[int, ...], tuple[int, ...], tuple[int, ...]]:
        return ((self.min_batch, h, w, 3), (self.opt_batch, h, w, 3), (self.max_batch, h, w, 3))


def engine_filename(member: str, gpu: GpuInfo, trt_version: str, precision: str = "fp16") -> str:
    return f"{member}.{gpu.slug}.{trt_version}.{precision}.plan"


def build_engine(trt: ModuleType, onnx_path: Path, plan_path: Path, *, input_hw: tuple[int, int], profile: Profile,
                 workspace_gb: float, timing_cache: Path | None, gpu: GpuInfo, onnx_sha256: str) -> EngineSidecar:
    """Build one engine; write the plan and its sidecar atomically; return the sidecar."""
    logger: trt_types.ILogger = trt.Logger(trt.Logger.WARNING)
    builder: trt_types.Builder = trt.Builder(logger)
    typed = strongly_typed(trt)
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED) if typed else 0
    network: trt_types.INetworkDefinition = builder.create_network(flags)
    parser: trt_types.OnnxParser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes(), str(onnx_path)):
        errors = [str(parser.get_error(i)) for i in range(parser.num_errors)]
        raise ReidkitError(f"TensorRT could not parse {onnx_path.name}:\n  " + "\n  ".join(errors or ["(no parser message)"]))
    config: trt_types.IBuilderConfig = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * (1 << 30)))
    if not typed:
        config.set_flag(trt.BuilderFlag.FP16)
    opt_profile: trt_types.IOptimizationProfile = builder.create_optimization_profile()
    mn, op, mx = profile.shapes(*input_hw)
    opt_profile.set_shape("images", trt.Dims(mn), trt.Dims(op), trt.Dims(mx))
    config.add_optimization_profile(opt_profile)
    cache_bytes = timing_cache.read_bytes() if timing_cache is not None and timing_cache.exists() else b""
    cache: trt_types.ITimingCache = config.create_timing_cache(cache_bytes)
    config.set_timing_cache(cache, ignore_mismatch=False)
    log.info("building TensorRT %s engine for %s (%s, batch %d/%d/%d)", trt.__version__, onnx_path.name,
             "strongly typed fp16 ONNX" if typed else "BuilderFlag.FP16", profile.min_batch, profile.opt_batch, profile.max_batch)
    plan: trt_types.IHostMemory | None = builder.build_serialized_network(network, config)
    if plan is None:
        raise ReidkitError(f"TensorRT failed to build an engine from {onnx_path.name}; see the TensorRT messages above")
    plan_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(plan_path, "wb") as fh:
        fh.write(bytes(memoryview(plan)))
    if timing_cache is not None:
        with atomic_write(timing_cache, "wb") as fh:
            fh.write(bytes(memoryview(config.get_timing_cache().serialize())))
    sidecar = EngineSidecar(str(trt.__version__), gpu.name, gpu.compute_capability, "fp16", typed,
                            {"min": list(mn), "opt": list(op), "max": list(mx)}, onnx_path.name, onnx_sha256, sha256_file(plan_path))
    with atomic_write(plan_path.with_suffix(".json"), "w", encoding="utf-8") as fh:
        json.dump(sidecar.to_dict(), fh, indent=2)
    return sidecar


def build_bundle_engines(bundle: Path, manifest: Manifest, opts: Any, images: Sequence[Any]) -> list[EngineRecord]:
    """Engines for every member of a bundle being built, each checked against onnxruntime."""
    from reidkit.export.onnx_export import convert_fp16
    from reidkit.export.parity import FP16, batch_for, compare, format_table
    from reidkit.runtime.backends.ort import OrtBackend

    trt, gpu = require_tensorrt()
    typed = strongly_typed(trt)
    profile = Profile(opts.min_batch, opts.opt_batch, opts.max_batch)
    records, results = [], []
    fp16 = ARTEFACTS["fp16"]
    for m in manifest.members:
        src = bundle / m.files["fp32"].file
        if typed:
            if "fp16" not in m.files:
                dst = bundle / fp16.filename(m.name)
                convert_fp16(src, dst)
                m.files["fp16"] = FileRef(dst.name, sha256_file(dst))
            src = bundle / m.files["fp16"].file
        plan = bundle / "engines" / engine_filename(m.name, gpu, str(trt.__version__))
        side = build_engine(trt, src, plan, input_hw=(m.input_height, m.input_width), profile=profile,
                            workspace_gb=opts.workspace_gb, timing_cache=opts.timing_cache, gpu=gpu, onnx_sha256=sha256_file(src))
        batch = batch_for(images, m.input_height, m.input_width, m.resize)
        ref = OrtBackend(bundle / m.files["fp32"].file, device="cpu").run(batch)
        engine = trt_runtime.TensorRTBackend(plan, side, trt=trt, gpu=gpu)
        got = engine.run(batch)
        engine.close()
        results.append(compare(m.name, "trt-fp16", ref, got, FP16))
        sidecar = plan.with_suffix(".json")
        records.append(EngineRecord(m.name, f"engines/{plan.name}", side.plan_sha256, f"engines/{sidecar.name}", sha256_file(sidecar),
                                    side.tensorrt_version, side.gpu_name, side.compute_capability, side.precision))
        m.parity.append(results[-1].to_dict())
    print(format_table(results))
    if not all(r.passed for r in results):
        from reidkit.errors import ParityError

        raise ParityError("TensorRT engine parity failed against onnxruntime; no bundle was written")
    return records
