"""Issue 16, second session: 10^6 x 256 clustered vectors, quiet machine: exact vs HNSW flat vs HNSW-SQ8 + exact refine,
batched (1000 queries per call) and one query per call (the interactive case).

    python benchmarks/knn_1e6.py 1000000   # ~20 min on 2 cores (two HNSW builds)
"""
import json, sys, time, resource
from pathlib import Path
import numpy as np, faiss
sys.path.insert(0, str(Path(__file__).parent))
OUT = Path(__file__).parent / "results" / "scaling" / "knn_1e6_quiet.json"
from scaling import clustered, recall_at
def cpu():
    r = resource.getrusage(resource.RUSAGE_SELF); return r.ru_utime + r.ru_stime
n, d, nq, n1 = int(sys.argv[1]), 256, 1000, 200
g = clustered(n, d, seed=1); q = clustered(nq, d, seed=2, ids=max(1, n // 5))
rows = []
def timeit(index):
    index.search(q[:10], 21)
    t, c = time.perf_counter(), cpu()
    _, I = index.search(q, 20)
    return I, time.perf_counter() - t, cpu() - c
def single(index):
    index.search(q[:1], 20)
    t, c = time.perf_counter(), cpu()
    for i in range(n1):
        index.search(q[i:i + 1], 20)
    return 1000 * (time.perf_counter() - t) / n1, 1000 * (cpu() - c) / n1
exact = faiss.IndexFlatIP(d); exact.add(g)
I0, w0, c0 = timeit(exact)
s0 = single(exact)
row = {"kind": "exact", "ms_q": 1000*w0/nq, "cpu_ms_q": 1000*c0/nq, "single_ms": s0[0], "single_cpu_ms": s0[1]}
print(json.dumps(row), flush=True); rows.append(row)
def bench(kind, index, set_ef, efs, build_w, build_c):
    for ef in efs:
        set_ef(ef)
        I, w, c = timeit(index)
        s = single(index)
        row = {"kind": kind, "ef": ef, "ms_q": 1000*w/nq, "cpu_ms_q": 1000*c/nq, "recall": recall_at(I, I0),
               "speedup_wall": w0 / w, "speedup_cpu": c0 / c, "single_ms": s[0], "single_cpu_ms": s[1],
               "single_speedup": s0[0] / s[0], "build_s": build_w, "build_cpu_s": build_c}
        print(json.dumps(row), flush=True); rows.append(row)
        json.dump(rows, open(OUT, "w"), indent=1)
t, c = time.perf_counter(), cpu()
h = faiss.IndexHNSWFlat(d, 32, faiss.METRIC_INNER_PRODUCT); h.hnsw.efConstruction = 40; h.add(g)
bw, bc = time.perf_counter() - t, cpu() - c
def se(ef): h.hnsw.efSearch = ef
bench("hnsw32-flat", h, se, [128, 160, 192, 256], bw, bc)
del h
t, c = time.perf_counter(), cpu()
hs = faiss.IndexHNSWSQ(d, faiss.ScalarQuantizer.QT_8bit, 32, faiss.METRIC_INNER_PRODUCT); hs.hnsw.efConstruction = 40
hs.train(g[:100000])
r = faiss.IndexRefineFlat(hs); r.k_factor = 2.0
r.add(g)
bw, bc = time.perf_counter() - t, cpu() - c
def se2(ef): hs.hnsw.efSearch = ef
bench("hnsw32-sq8+refine2", r, se2, [96, 128, 160, 192, 256], bw, bc)
