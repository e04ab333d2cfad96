"""How many CPUs this process may run on: the default thread count of every engine and pool.

``os.cpu_count()`` counts the machine's cores. A job confined to some of them (``taskset``, a
Slurm or container cpuset, a test worker pinned to one core) that starts one thread per machine
core puts several threads on each of its cores, and they wait on each other. The affinity mask is
what the scheduler will actually give us; a CPU quota without a cpuset is not visible here.
"""

from __future__ import annotations

import os


def usable_cpus() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # macOS and Windows have no affinity mask
        return os.cpu_count() or 1
