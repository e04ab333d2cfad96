"""Scaling report: reid-infer at 10^3..10^5 images, kNN indexes at 10^4..10^6
vectors, shortlist re-ranking against the dense reference. Writes JSON parts and the
report (scaling.md + scaling.png) under benchmarks/results/scaling/.

    python benchmarks/scaling.py infer  --bundle B --pool DIR... --sizes 1000,10000,100000
    python benchmarks/scaling.py knn    --dim 256 --sizes 10000,100000,1000000
    python benchmarks/scaling.py rerank --dim 256
    python benchmarks/scaling.py report

Every timing is reported with CPU seconds beside wall seconds: the machine is shared, so
wall time is noisy, CPU time much less so.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "results" / "scaling"
BIN = Path(sys.executable).parent


def _save(name: str, data: object) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / f"{name}.json").write_text(json.dumps(data, indent=2))


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# ----------------------------------------------------------------------------- reid-infer
def prepare(pool: list[Path], n: int, root: Path) -> Path:
    """A Whale-do layout of n images: hard links to the pool's reid-synth JPEGs; past the pool's
    size, copies with a trailing comment byte after the JPEG's end (decoded identically, but a
    different content hash, so nothing is deduplicated: every image costs a full decode and
    inference). One scenario: n/100 queries (at least 100) against all n images."""
    d = root / f"n{n}"
    if (d / "query_scenarios.csv").is_file():
        return d
    (d / "images").mkdir(parents=True, exist_ok=True)  # a preparation cut short resumes
    src = [p for r in pool for p in sorted((r / "images").glob("*.jpg"))]
    rows = []
    for i in range(n):
        s = src[i % len(src)]
        dst = d / "images" / f"{i:07d}.jpg"
        if dst.exists():
            pass
        elif i < len(src):
            os.link(s, dst)
        else:
            dst.write_bytes(s.read_bytes() + bytes([i // len(src) % 256]))
        rows.append(f"{i:07d},images/{i:07d}.jpg")
    (d / "metadata.csv").write_text("image_id,path\n" + "\n".join(rows) + "\n")
    rng = np.random.default_rng(0)
    q = rng.choice(n, size=max(100, n // 100), replace=False)
    (d / "q.csv").write_text("query_id,query_image_id\n" + "".join(f"q{i},{i:07d}\n" for i in q))
    (d / "db.csv").write_text("database_image_id\n" + "".join(f"{i:07d}\n" for i in range(n)))
    (d / "query_scenarios.csv").write_text("scenario_id,queries_path,database_path\ns0,q.csv,db.csv\n")
    return d


def bench_infer(bundle: Path, pool: list[Path], sizes: list[int], work: Path, backend: str) -> None:
    rows = json.loads((OUT / "infer.json").read_text()) if (OUT / "infer.json").is_file() else []
    for n in sizes:
        d = prepare(pool, n, work)
        cmd = ["/usr/bin/time", "-v", str(BIN / "reid-infer"), "--model", str(bundle), "--scenarios", str(d / "query_scenarios.csv"),
               "--metadata", str(d / "metadata.csv"), "-o", str(work / f"sub{n}.csv"), "--backend", backend, "--quiet",
               "--report-json", str(work / f"run{n}.json")]
        t = time.perf_counter()
        with open(work / f"run{n}.stderr", "w+") as err:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err, text=True)
            samples = []
            while proc.poll() is None:  # progress samples, so a run cut short still says something
                time.sleep(10)
                samples.append(_sample(proc.pid, time.perf_counter() - t, d))
                _save(f"infer_samples_{n}", samples)
            err.seek(0)
            stderr = err.read()
        wall = time.perf_counter() - t
        if proc.returncode:
            raise SystemExit(stderr[-3000:])
        res = subprocess.CompletedProcess(cmd, 0, "", stderr)
        tv = {k.strip(): v.strip() for k, _, v in (ln.partition(": ") for ln in res.stderr.splitlines()) if v}
        cpu = float(tv["User time (seconds)"]) + float(tv["System time (seconds)"])
        run = json.loads((work / f"run{n}.json").read_text())
        rows.append({"images": n, "wall_s": wall, "cpu_s": cpu, "images_per_s": n / run["seconds"],
                     "embed_images_per_s": n / run["embed_seconds"], "cpu_s_per_image": cpu / n,
                     "peak_rss_mb": int(tv["Maximum resident set size (kbytes)"]) / 1024, "rank_s": run["rank_seconds"],
                     "backend": run["backend"]})
        rows = [r for r in rows if r["images"] != n] + [rows[-1]]
        print(rows[-1], flush=True)
        _save("infer", rows)


def _sample(time_pid: int, elapsed: float, data: Path) -> dict[str, float]:
    """The reid-infer child of /usr/bin/time: bytes read (-> images read so far), CPU, RSS high-water."""
    try:
        child = int(Path(f"/proc/{time_pid}/task/{time_pid}/children").read_text().split()[0])
        io = dict(ln.split(": ") for ln in Path(f"/proc/{child}/io").read_text().splitlines())
        st = {k: v for k, _, v in (ln.partition(":\t") for ln in Path(f"/proc/{child}/status").read_text().splitlines())}
        stat = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        tick = os.sysconf("SC_CLK_TCK")
        mean_bytes = np.mean([p.stat().st_size for p in sorted((data / "images").iterdir())[:200]])
        return {"elapsed_s": elapsed, "images_read_est": int(io["rchar"]) / mean_bytes, "cpu_s": (int(stat[11]) + int(stat[12])) / tick,
                "vm_hwm_mb": int(st["VmHWM"].split()[0]) / 1024}
    except (OSError, IndexError, KeyError, ValueError):
        return {"elapsed_s": elapsed}


# ----------------------------------------------------------------------------- kNN
def clustered(n: int, dim: int, seed: int, ids: int | None = None, latent: int = 24, sighting_noise: float = 0.5,
              noise: float = 0.05) -> np.ndarray:
    """Catalogue-like unit vectors: identities (about 5 sightings each) in a `latent`-dimensional
    space, mapped into `dim` dimensions by a fixed random rotation, plus small isotropic noise.
    Learned embeddings have a low intrinsic dimension; isotropic 256-d noise would not, and no
    index (nor a real gallery) looks like it. The projection is shared by every call (seed 0),
    so queries and gallery live in the same space."""
    proj = np.linalg.qr(np.random.default_rng(0).standard_normal((dim, latent)))[0].T.astype(np.float32)  # [latent, dim]
    rng = np.random.default_rng(seed)
    ids = ids or max(1, n // 5)
    centres = np.random.default_rng(1000 + ids).standard_normal((ids, latent)).astype(np.float32)
    out = np.empty((n, dim), np.float32)
    for s in range(0, n, 100_000):
        m = min(100_000, n - s)
        z = centres[rng.integers(0, ids, m)] + sighting_noise * rng.standard_normal((m, latent)).astype(np.float32)
        x = z @ proj + noise * rng.standard_normal((m, dim)).astype(np.float32)
        out[s:s + m] = x / np.linalg.norm(x, axis=1, keepdims=True)
    return out


def recall_at(approx: np.ndarray, exact: np.ndarray, k: int = 20) -> float:
    return float(np.mean([len(set(a[:k]) & set(e[:k])) / k for a, e in zip(approx, exact)]))


SWEEP = {"exact": [None], "ivf": [16, 64, 128, 256], "hnsw": [64, 128, 256, 512]}  # nprobe / efSearch


def bench_knn(dim: int, sizes: list[int], n_queries: int, kinds: list[str]) -> None:
    """Each index is built once, then searched at each search parameter of SWEEP."""
    from reidkit.runtime.index import GalleryIndex, IndexParams

    rows = []
    prev = OUT / "knn.json"
    if prev.is_file():
        rows = json.loads(prev.read_text())
    for n in sizes:
        g = clustered(n, dim, seed=1)
        q = clustered(n_queries, dim, seed=2, ids=max(1, n // 5))  # queries are sightings of catalogue identities
        truth = None
        for kind in ["exact"] + [k for k in kinds if k != "exact"]:
            t, c = time.perf_counter(), _cpu()
            idx = GalleryIndex.build(g, kind, IndexParams())
            build_s, build_cpu = time.perf_counter() - t, _cpu() - c
            for p in SWEEP[kind]:
                if kind == "ivf":
                    idx.index.nprobe = min(p, idx.index.nlist)
                elif kind == "hnsw":
                    idx.index.hnsw.efSearch = p
                idx.search(q[:10], 21)  # warm-up
                t, c = time.perf_counter(), _cpu()
                _, found = idx.search(q, 20)
                search_s, search_cpu = time.perf_counter() - t, _cpu() - c
                if kind == "exact":
                    truth = found
                row = {"vectors": n, "dim": dim, "kind": kind, "search_param": p, "queries": n_queries, "build_s": build_s,
                       "build_cpu_s": build_cpu, "ms_per_query": 1000 * search_s / n_queries,
                       "cpu_ms_per_query": 1000 * search_cpu / n_queries, "recall_at_20": recall_at(found, truth),
                       "params": idx.meta()["params"], "threads": _threads()}
                rows = [r for r in rows if not (r["vectors"] == n and r["kind"] == kind and r.get("search_param") == p)] + [row]
                print({k: v for k, v in row.items() if k != "params"}, flush=True)
                _save("knn", rows)
            del idx


def _threads() -> int:
    import faiss

    return int(faiss.omp_get_max_threads())


# ----------------------------------------------------------------------------- re-ranking
def bench_rerank(dim: int) -> None:
    """Dense reference vs shortlist at small sizes (agreement, time, memory), then the
    shortlist alone at 10^5 gallery images, each in a fresh process so peak RSS is its own."""
    rows = []
    for g_n, q_n, mode in [(1000, 20, "dense"), (1000, 20, "shortlist"), (3000, 20, "dense"), (3000, 20, "shortlist"),
                           (100_000, 1000, "shortlist")]:
        res = subprocess.run([sys.executable, __file__, "_rerank_one", str(g_n), str(q_n), mode, str(dim)],
                             capture_output=True, text=True, env={**os.environ})
        if res.returncode:
            raise SystemExit(res.stderr[-3000:])
        rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
        print(rows[-1], flush=True)
        _save("rerank", rows)


def _rerank_one(g_n: int, q_n: int, mode: str, dim: int) -> None:
    from reidkit.runtime.index import GalleryIndex
    from reidkit.runtime.rerank import RerankParams, dense_rerank_reference, rerank_shortlist

    g = clustered(g_n, dim, seed=3)
    q = clustered(q_n, dim, seed=4, ids=max(1, g_n // 5))
    base_rss = _peak_rss_mb()
    t, c = time.perf_counter(), _cpu()
    if mode == "dense":
        d = dense_rerank_reference(q, g, per_query=False)
        top = np.argsort(d, axis=1)[:, :20]
    else:
        p = RerankParams()
        _, sl = GalleryIndex.build(g, "exact").search(q, p.shortlist)
        _, top = rerank_shortlist(q, g, sl, p)
        top = top[:, :20]
    wall, cpu = time.perf_counter() - t, _cpu() - c
    out = {"gallery": g_n, "queries": q_n, "mode": mode, "wall_s": wall, "cpu_s": cpu, "peak_rss_mb": _peak_rss_mb(),
           "rss_before_mb": base_rss}
    if g_n <= 3000 and mode == "shortlist":  # agreement of the shortlist's top 20 with the dense per-query reference (5 queries)
        ref = dense_rerank_reference(q[:5], g, per_query=True)
        out["top20_overlap_vs_dense_per_query"] = recall_at(top[:5], np.argsort(ref, axis=1)[:, :20])
    print(json.dumps(out))


# ----------------------------------------------------------------------------- report
def report() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    infer = json.loads((OUT / "infer.json").read_text()) if (OUT / "infer.json").is_file() else []
    knn = json.loads((OUT / "knn.json").read_text()) if (OUT / "knn.json").is_file() else []
    rr = json.loads((OUT / "rerank.json").read_text()) if (OUT / "rerank.json").is_file() else []
    fig, ax = plt.subplots(1, 3, figsize=(15, 4.2))
    if infer:
        n = [r["images"] for r in infer]
        ax[0].plot(n, [r["embed_images_per_s"] for r in infer], "o-", label="images/s (embed stage, wall)")
        ax[0].plot(n, [1 / r["cpu_s_per_image"] for r in infer], "s--", label="images per CPU-second (whole run)")
        a2 = ax[0].twinx()
        a2.plot(n, [r["peak_rss_mb"] for r in infer], "r^:", label="peak RSS (MB)")
        a2.set_ylabel("peak RSS (MB)")
        part = OUT / "infer_samples_100000.json"
        if part.is_file() and not any(r["images"] == 100_000 for r in infer):
            sm = [r for r in json.loads(part.read_text()) if "cpu_s" in r]
            n_done = sm[-1]["images_read_est"] - sm[0]["images_read_est"]
            ax[0].plot([100_000], [n_done / (sm[-1]["cpu_s"] - sm[0]["cpu_s"])], "s", mfc="none", color="C1",
                       label=f"10^5 run, first {n_done:,.0f} images (stopped)")
            a2.plot([100_000], [max(r["vm_hwm_mb"] for r in sm)], "^", mfc="none", color="r")
        ax[0].set_xscale("log")
        ax[0].set_xlabel("images")
        ax[0].legend(loc="lower left", fontsize=8)
        ax[0].set_title("reid-infer throughput and memory")
    for kind, m in (("exact", "o-"), ("ivf", "s-"), ("hnsw", "^-")):
        best: dict[int, float] = {}  # per size: the cheapest setting that reaches recall@20 >= 0.99
        for r in knn:
            if r["kind"] == kind and r["recall_at_20"] >= 0.99:
                best[r["vectors"]] = min(best.get(r["vectors"], np.inf), r["cpu_ms_per_query"])
        if best:
            ax[1].plot(*zip(*sorted(best.items())), m, label=kind)
    ax[1].set_xscale("log")
    ax[1].set_yscale("log")
    ax[1].set_xlabel("gallery vectors")
    ax[1].set_ylabel("CPU ms per query")
    ax[1].legend()
    ax[1].set_title("kNN: cheapest setting with recall@20 >= 0.99")
    for mode, m in (("dense", "o-"), ("shortlist", "s-")):
        pts = sorted((r["gallery"], r["peak_rss_mb"]) for r in rr if r["mode"] == mode)
        if pts:
            ax[2].plot(*zip(*pts), m, label=f"{mode}: peak RSS (MB)")
    ax[2].set_xscale("log")
    ax[2].set_yscale("log")
    ax[2].set_xlabel("gallery images")
    ax[2].legend()
    ax[2].set_title("re-ranking memory")
    fig.tight_layout()
    fig.savefig(OUT / "scaling.png", dpi=110)
    print("wrote", OUT / "scaling.png")
    _tables(infer, knn, rr)


def _tables(infer: list[dict], knn: list[dict], rr: list[dict]) -> None:
    """Measured tables, appended to the hand-written verdict in scaling.md (between markers)."""
    lines = ["<!-- tables: generated by benchmarks/scaling.py report -->", "", "### reid-infer (scenario mode, ort-cpu fp32)", "",
             "| images | images/s (wall, whole run) | images/s (wall, embed stage) | CPU s / image | peak RSS (MB) | wall s |",
             "|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['images']:,} | {r['images_per_s']:.1f} | {r['embed_images_per_s']:.1f} | {r['cpu_s_per_image'] * 1000:.1f} ms | {r['peak_rss_mb']:.0f} | "
              f"{r['wall_s']:.0f} |" for r in infer]
    lines += ["", "### kNN, 1,000 queries, top-20, 256-d clustered unit vectors, 2 threads", "",
              "| vectors | index | nprobe / efSearch | ms / query (wall) | CPU ms / query | recall@20 vs exact | build s (wall) |",
              "|---:|---|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['vectors']:,} | {r['kind']} | {r.get('search_param') or '-'} | {r['ms_per_query']:.3f} | {r['cpu_ms_per_query']:.3f} | "
              f"{r['recall_at_20']:.4f} | {r['build_s']:.1f} |" for r in sorted(knn, key=lambda r: (r['vectors'], r['kind'], r.get('search_param') or 0))]
    lines += ["", "### k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3), each run in a fresh process", "",
              "| gallery | queries | method | wall s | CPU s | peak RSS (MB) | top-20 overlap with dense per-query |", "|---:|---:|---|---:|---:|---:|---:|"]
    lines += [f"| {r['gallery']:,} | {r['queries']} | {r['mode']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['peak_rss_mb']:.0f} | "
              f"{r['top20_overlap_vs_dense_per_query']:.2f} |" if 'top20_overlap_vs_dense_per_query' in r else
              f"| {r['gallery']:,} | {r['queries']} | {r['mode']} | {r['wall_s']:.2f} | {r['cpu_s']:.2f} | {r['peak_rss_mb']:.0f} | - |" for r in rr]
    md = OUT / "scaling.md"
    head = md.read_text().split("<!-- tables:")[0] if md.is_file() else "# Scaling report\n\n"
    md.write_text(head + "\n".join(lines) + "\n")
    print("wrote", md)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_rerank_one":
        _rerank_one(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("part", choices=["infer", "knn", "rerank", "report"])
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--pool", type=Path, nargs="*", default=[])
    ap.add_argument("--work", type=Path, default=Path("scaling_work"))
    ap.add_argument("--sizes", default="")
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--queries", type=int, default=1000)
    ap.add_argument("--kinds", default="exact,ivf,hnsw")
    ap.add_argument("--backend", default="ort-cpu")
    a = ap.parse_args()
    sizes = [int(s) for s in a.sizes.split(",") if s]
    if a.part == "infer":
        bench_infer(a.bundle, a.pool, sizes, a.work, a.backend)
    elif a.part == "knn":
        bench_knn(a.dim, sizes, a.queries, a.kinds.split(","))
    elif a.part == "rerank":
        bench_rerank(a.dim)
    else:
        report()


if __name__ == "__main__":
    main()
