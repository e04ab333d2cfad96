"""kNN at 10^6 gallery vectors in two regimes: 1,000 queries per call (batch throughput, where
exact search is one matrix product at the FLOP ceiling) and one query per call (a user matching
new photos against a catalogue, where exact search scans the whole gallery for each query).
Exact vs HNSW (the index ``reid-infer --index hnsw`` builds) vs HNSW over 8-bit scalar-quantised
vectors with an exact re-rank. Same clustered vectors as ``scaling.py knn``; run it on an idle
machine, the speed-ups are ratios of wall times.

    python benchmarks/knn_1e6.py 1000000   # ~20 min on 2 cores (two HNSW builds)

Writes benchmarks/results/scaling/knn_1e6_quiet.json.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

import faiss
import numpy as np

from scaling import _cpu, clustered, recall_at  # the sibling tool (python puts a script's own folder on the path)

OUT = Path(__file__).parent / "results" / "scaling" / "knn_1e6_quiet.json"
DIM, QUERIES, SINGLE = 256, 1000, 200  # SINGLE: queries timed one per call


def batched(index: Any, q: np.ndarray) -> tuple[np.ndarray, float, float]:
    """Neighbour ids, wall s and CPU s for all queries in one call."""
    index.search(q[:10], 21)  # warm-up
    t, c = time.perf_counter(), _cpu()
    _, found = index.search(q, 20)
    return found, time.perf_counter() - t, _cpu() - c


def one_by_one(index: Any, q: np.ndarray) -> tuple[float, float]:
    """Wall ms and CPU ms per query, one query per call."""
    index.search(q[:1], 20)
    t, c = time.perf_counter(), _cpu()
    for i in range(SINGLE):
        index.search(q[i:i + 1], 20)
    return 1000 * (time.perf_counter() - t) / SINGLE, 1000 * (_cpu() - c) / SINGLE


def main(n: int) -> None:
    g = clustered(n, DIM, seed=1)
    q = clustered(QUERIES, DIM, seed=2, ids=max(1, n // 5))
    exact = faiss.IndexFlatIP(DIM)
    exact.add(g)
    truth, w0, c0 = batched(exact, q)
    s0 = one_by_one(exact, q)
    rows: list[dict[str, Any]] = [{"kind": "exact", "ms_q": 1000 * w0 / QUERIES, "cpu_ms_q": 1000 * c0 / QUERIES,
                                   "single_ms": s0[0], "single_cpu_ms": s0[1]}]
    print(json.dumps(rows[-1]), flush=True)

    def sweep(kind: str, build: Callable[[], tuple[Any, Any]], efs: list[int]) -> None:
        t, c = time.perf_counter(), _cpu()
        index, hnsw = build()
        build_w, build_c = time.perf_counter() - t, _cpu() - c
        for ef in efs:
            hnsw.efSearch = ef
            found, w, cpu = batched(index, q)
            s = one_by_one(index, q)
            rows.append({"kind": kind, "ef": ef, "ms_q": 1000 * w / QUERIES, "cpu_ms_q": 1000 * cpu / QUERIES,
                         "recall": recall_at(found, truth), "speedup_wall": w0 / w, "speedup_cpu": c0 / cpu,
                         "single_ms": s[0], "single_cpu_ms": s[1], "single_speedup": s0[0] / s[0],
                         "build_s": build_w, "build_cpu_s": build_c})
            print(json.dumps(rows[-1]), flush=True)
            OUT.write_text(json.dumps(rows, indent=1))

    def hnsw_flat() -> tuple[Any, Any]:
        h = faiss.IndexHNSWFlat(DIM, 32, faiss.METRIC_INNER_PRODUCT)
        h.hnsw.efConstruction = 40
        h.add(g)
        return h, h.hnsw

    def hnsw_sq8_refined() -> tuple[Any, Any]:
        h = faiss.IndexHNSWSQ(DIM, faiss.ScalarQuantizer.QT_8bit, 32, faiss.METRIC_INNER_PRODUCT)
        h.hnsw.efConstruction = 40
        h.train(g[:100_000])
        r = faiss.IndexRefineFlat(h)
        r.k_factor = 2.0
        r.add(g)
        return r, h.hnsw

    sweep("hnsw32-flat", hnsw_flat, [128, 160, 192, 256])
    sweep("hnsw32-sq8+refine2", hnsw_sq8_refined, [96, 128, 160, 192, 256])


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000)
