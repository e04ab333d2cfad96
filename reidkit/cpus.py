"""What the CPU offers: how many cores this process may use, its model and flags, its fp32 peak,
and whether INT8 products saturate. The one place that reads ``/proc/cpuinfo``.

How many: the default thread count of every engine and pool.

``os.cpu_count()`` counts the machine's cores. A job confined to some of them (``taskset``, a
Slurm or container cpuset, a test worker pinned to one core) that starts one thread per machine
core puts several threads on each of its cores, and they wait on each other. The affinity mask is
what the scheduler will actually give us; a CPU quota without a cpuset is not visible here.
"""

from __future__ import annotations

import os
import platform
from functools import lru_cache
from pathlib import Path


def usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no affinity mask
        return os.cpu_count() or 1


# instructions that multiply uint8 x int8 straight into int32 (no int16 intermediate)
INT8_DOT_FLAGS = ("avx512_vnni", "avx_vnni", "amx_int8")
# instructions that compute in bfloat16 (dot products into fp32); without them bf16 is emulated
BF16_FLAGS = ("avx512_bf16", "amx_bf16")


@lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, ...]:
    try:
        return tuple(Path("/proc/cpuinfo").read_text().splitlines())
    except OSError:
        return ()


def _field(*names: str) -> str | None:
    line = next((l for l in _cpuinfo() if l.startswith(names)), None)
    return line.split(":", 1)[1].strip() if line is not None else None


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty where /proc/cpuinfo does not exist)."""
    return frozenset((_field("flags", "Features") or "").split())


def cpu_model() -> str:
    """The CPU's marketing name, for reports and for remembering which engine was fastest here."""
    return _field("model name") or platform.processor() or platform.machine()


def fp32_peak() -> dict[str, object]:
    """The fp32 arithmetic ceiling of the cores this process may use: what a benchmark's GEMM floor
    is measured against. FLOPs per cycle per core: 2 FMA units x (16 lanes AVX-512 | 8 AVX2) x 2."""
    flags = cpu_flags()
    mhz = [float(l.split(":")[1]) for l in _cpuinfo() if l.startswith("cpu MHz")]
    ghz = max(mhz) / 1000 if mhz else 2.0
    per_cycle = 64 if "avx512f" in flags else 32 if "fma" in flags else 8
    isa = "avx512" if per_cycle == 64 else "avx2+fma" if per_cycle == 32 else "sse"
    vnni = [f for f in INT8_DOT_FLAGS if f in flags]
    bf16 = [f for f in BF16_FLAGS if f in flags]
    return {"model": cpu_model(), "cores": usable_cpus(), "machine": platform.machine(), "ghz": ghz,
            "fp32_flops_per_cycle": per_cycle, "isa": isa + ("+" + "+".join(vnni + bf16) if vnni or bf16 else "") +
            ("" if vnni else ", no VNNI"), "peak_gflops": usable_cpus() * ghz * per_cycle}


def int8_saturates() -> str | None:
    """Why 8-bit INT8 weights would overflow on this CPU, or None when they are safe.

    On x86 without VNNI, engines multiply u8 x s8 pairs into a saturating int16 (see
    ``bundle_format.Int8Scheme``). ARM's dot-product instructions and GPUs accumulate in int32.
    Where the flags cannot be read on x86, the answer is the cautious one.
    """
    if platform.machine().lower() not in ("x86_64", "amd64", "i386", "i686", "x86"):
        return None
    flags = cpu_flags()
    if not flags:
        return "this x86 CPU's features could not be read, so VNNI cannot be confirmed"
    if flags.isdisjoint(INT8_DOT_FLAGS):
        return "this x86 CPU has no VNNI (AVX-512 VNNI, AVX-VNNI or AMX), so its INT8 products saturate at int16"
    return None


def bf16_missing() -> str | None:
    """Why this CPU cannot run bf16 inference natively, or None when it can.

    bf16 pays only with the instructions that compute in it; elsewhere an engine would convert
    back and forth or quietly compute in fp32, and the user would get neither the speed they
    asked for nor the embeddings they think they measured. Support is read from x86's flags
    only, so other architectures are refused rather than guessed at.
    """
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return f"bf16 inference needs an x86-64 CPU with AVX512-BF16 or AMX, and this is {platform.machine()}"
    flags = cpu_flags()
    if not flags:
        return "this CPU's features could not be read, so its bf16 support (AVX512-BF16 or AMX) cannot be confirmed"
    if flags.isdisjoint(BF16_FLAGS):
        return f"this CPU ({cpu_model()}) has no bf16 arithmetic (AVX512-BF16 or AMX)"
    return None
