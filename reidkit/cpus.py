"""What the CPU offers: how many cores this process may use, and whether INT8 products saturate.

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


@lru_cache(maxsize=1)
def cpu_flags() -> frozenset[str]:
    """The CPU's feature flags as Linux lists them (empty where /proc/cpuinfo does not exist)."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return frozenset()
    line = next((l for l in text.splitlines() if l.startswith(("flags", "Features"))), "")
    return frozenset(line.split(":", 1)[-1].split())


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
