"""``reid-bench``: how fast and how faithful each backend is, as a table a person can read.

Rows are backend x precision x batch; columns are status, model size, images/s, p50/p95
latency per batch, peak memory, parity against the PyTorch fp32 reference (min and mean
cosine, top-20 overlap) and, on labelled data, mAP@20 and its change. Host-side decode and
resize are done once up front and excluded, so the rows compare the backends alone.
Backends that cannot run here are listed with the reason.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from reidkit.atomic import atomic_write
from reidkit.bench.agreement import embedding_overlap
from reidkit.errors import ReidkitError
from reidkit.imaging import load_readable
from reidkit.metrics import leave_one_out_whaledo_map
from reidkit.runtime.backends.registry import BACKENDS
from reidkit.runtime.backends.select import make_backends
from reidkit.runtime.bundle import Bundle, load_bundle
from reidkit.runtime.bundle_format import TOLERANCES, artefact_for
from reidkit.runtime.embedder import SizeKey, fuse, input_sizes, resize_stacks, run_members

Runner = Callable[[dict[SizeKey, np.ndarray]], np.ndarray]


@dataclass
class Row:
    backend: str
    precision: str
    batch: int
    status: str
    reason: str = ""
    model_mb: float = float("nan")
    images_per_s: float = float("nan")
    p50_ms: float = float("nan")
    p95_ms: float = float("nan")
    spread_pct: float = float("nan")
    peak_rss_mb: float = float("nan")
    min_cos: float = float("nan")
    mean_cos: float = float("nan")
    top20_overlap: float = float("nan")
    map20: float = float("nan")
    map20_delta: float = float("nan")


def _images(src: Path, limit: int) -> tuple[list[Path], list[str] | None]:
    if src.is_file() and src.suffix == ".csv":
        from reidkit.data.whaledo import read_metadata

        meta = read_metadata(src)
        ids = meta.image_ids[:limit]
        return [meta.paths[i] for i in ids], ([meta.whale_id[i] for i in ids] if meta.whale_id else None)
    from reidkit.data.folders import list_images

    paths, _ = list_images(src)
    paths = paths[:limit]
    labels = [p.relative_to(src).parts[0] for p in paths] if all(len(p.relative_to(src).parts) > 1 for p in paths) else None
    return paths, labels


def _torch_runner(bundle: Bundle, checkpoints: Sequence[Path]) -> tuple[Runner, float]:
    import torch

    from reidkit.export.graph import ExportGraph
    from reidkit.train.checkpoint import load_member

    flip = bundle.manifest.fusion["flip"]
    graphs = [ExportGraph(load_member(c)[0], flip).eval() for c in checkpoints]
    size = sum(c.stat().st_size for c in checkpoints) / 1e6

    def run(batch: dict[SizeKey, np.ndarray]) -> np.ndarray:
        with torch.no_grad():
            parts = [g(torch.from_numpy(batch[m.size_key])).numpy() for g, m in zip(graphs, bundle.members)]
        return fuse(parts, [m.weight for m in bundle.members])
    return run, size


def _backend_runner(bundle: Bundle, name: str, precision: str) -> tuple[Runner, float]:
    bes = make_backends(bundle, name, precision=precision)
    spec = BACKENDS[name]
    if spec.fmt == "trt":
        size = sum((bundle.root / e.file).stat().st_size for e in bundle.engines) / 1e6
    elif spec.fmt == "aoti":  # the packages the engine loaded: compiled for this machine at this precision
        from reidkit.runtime.backends.aoti import compiled_here

        found = compiled_here(bundle, spec.device, precision)
        size = sum((bundle.root / c.file).stat().st_size for c in found.values()) / 1e6 if isinstance(found, dict) else float("nan")
    else:
        kind = artefact_for(spec.fmt, precision).kind
        size = sum(m.artefact(kind)[0].stat().st_size for m in bundle.members) / 1e6

    def run(batch: dict[SizeKey, np.ndarray]) -> np.ndarray:
        return run_members(bundle, bes, batch)
    return run, size


def _measure(run: Runner, arrays: dict[SizeKey, np.ndarray], n: int, bs: int, repeats: int) -> tuple[np.ndarray, list[float], list[float]]:
    def one_pass(lat: list[float]) -> np.ndarray:
        out = []
        for s in range(0, n, bs):
            t = time.perf_counter()
            out.append(run({k: v[s:s + bs] for k, v in arrays.items()}))
            lat.append(time.perf_counter() - t)
        return np.concatenate(out)
    one_pass([])  # warm-up, excluded
    totals: list[float] = []
    lat: list[float] = []
    emb = None
    for _ in range(repeats):
        t = time.perf_counter()
        emb = one_pass(lat)
        totals.append(time.perf_counter() - t)
    assert emb is not None
    return emb, totals, lat


def environment() -> dict[str, Any]:
    from reidkit import __version__
    from reidkit.cpus import cpu_model
    from reidkit.runtime.gpu import detect_gpus

    env: dict[str, Any] = {"python": platform.python_version(), "reidkit": __version__, "cores": os.cpu_count(), "platform": platform.platform()}
    env["cpu"] = cpu_model()
    env["gpus"] = [f"{g.name} (sm {g.compute_capability[0]}.{g.compute_capability[1]})" for g in detect_gpus()] or ["none"]
    for mod in ("numpy", "onnxruntime", "openvino", "MNN", "faiss", "torch", "timm", "tensorrt"):
        if mod == "MNN":  # importing MNN prints a banner
            from reidkit.export.mnn_convert import mnn_version

            env[mod] = mnn_version() or "not installed"
            continue
        try:
            m = __import__(mod)
        except ImportError:
            env[mod] = "not installed"
            continue
        # tensorrt-stubs (installed for mypy) provide a `tensorrt` module with no runtime in it
        env[mod] = "not installed (type stubs only)" if mod == "tensorrt" and not hasattr(m, "Runtime") else getattr(m, "__version__", "?")
    return env


def engine_sweep(model: Path, images: Path, checkpoints: Sequence[Path], backends: str, batch_sizes: str, max_images: int,
              repeats: int, out: Path) -> dict[str, Any]:
    bundle = load_bundle(model)
    paths, labels = _images(Path(images), max_images)
    decoded = load_readable(paths)
    if len(decoded) < 2:
        raise ReidkitError(f"--images {images}: fewer than 2 readable images")
    arrays = resize_stacks(input_sizes(bundle), decoded)
    n = len(decoded)
    bs_list = [int(b) for b in batch_sizes.split(",") if b.strip()]
    ckpts = list(checkpoints) or _find_checkpoints(bundle)
    rows: list[Row] = []
    ref = None
    ref_map = float("nan")
    plan: list[tuple[str, str]] = []
    for b in [x.strip() for x in backends.split(",") if x.strip()]:
        plan += [(b, p) for p in (BACKENDS[b].precisions if b in BACKENDS else ("fp32",))]
    plan.sort(key=lambda x: x[0] != "torch")  # the reference first
    for name, prec in plan:
        try:
            if name == "torch":
                if not ckpts:
                    raise ReidkitError("member checkpoints not found beside the bundle; pass --checkpoints")
                run, size = _torch_runner(bundle, ckpts)
            elif name in BACKENDS:
                run, size = _backend_runner(bundle, name, prec)
            else:
                raise ReidkitError(f"unknown backend {name!r}; choose from torch, {', '.join(BACKENDS)}")
        except Exception as exc:  # report every reason a backend can't run here, never drop it
            rows.append(Row(name, prec, 0, "failed", f"{type(exc).__name__}: {exc}"))
            continue
        for bs in bs_list:
            print(f"measuring {name} {prec} batch {bs} ({repeats} x {n} images)", file=sys.stderr, flush=True)
            try:
                emb, totals, lat = _measure(run, arrays, n, bs, repeats)
            except Exception as exc:  # noqa: BLE001 - a backend failing mid-run is a result
                rows.append(Row(name, prec, bs, "failed", f"{type(exc).__name__}: {exc}"))
                continue
            med = float(np.median(totals))
            row = Row(name, prec, bs, "works", model_mb=size, images_per_s=n / med, p50_ms=1e3 * float(np.percentile(lat, 50)),
                      p95_ms=1e3 * float(np.percentile(lat, 95)), spread_pct=100 * (max(totals) - min(totals)) / med,
                      peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
            if name == "torch" and ref is None:
                ref = emb
                if labels:
                    ref_map = leave_one_out_whaledo_map(emb, labels)
            if ref is not None:
                cos = np.sum(ref * emb, axis=1)
                row.min_cos, row.mean_cos, row.top20_overlap = float(cos.min()), float(cos.mean()), embedding_overlap(ref, emb)
                tol = TOLERANCES[prec].min_cosine
                if row.min_cos < tol:
                    row.status, row.reason = "works, parity failed", f"min cosine {row.min_cos:.6f} < {tol}"
            if labels:
                row.map20 = leave_one_out_whaledo_map(emb, labels)
                row.map20_delta = row.map20 - ref_map
            rows.append(row)
    report = {"created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "bundle": str(model),
              "images": n, "labelled": bool(labels), "repeats": repeats, "environment": environment(),
              "reference": "torch fp32" if ref is not None else "none (torch unavailable)", "rows": [asdict(r) for r in rows]}
    out.mkdir(parents=True, exist_ok=True)
    with atomic_write(out / "report.json", "w", encoding="utf-8") as fh:
        json.dump(_json_safe(report), fh, indent=2, allow_nan=False)
    md = to_markdown(report)
    with atomic_write(out / "report.md", "w", encoding="utf-8") as fh:
        fh.write(md)
    _plots(rows, out)
    print(md)
    return report


def _find_checkpoints(bundle: Bundle) -> list[Path]:
    found = []
    for m in bundle.manifest.members:
        name = (m.checkpoint or {}).get("file")
        cands = [bundle.root.parent / name, bundle.root.parent / "models" / name, Path.cwd() / name] if name else []
        hit = next((c for c in cands if c.is_file()), None)
        if hit is None:
            return []
        found.append(hit)
    return found


def _json_safe(x: Any) -> Any:
    """NaN (a figure a backend that could not run does not have) as null: strict JSON readers reject NaN."""
    if isinstance(x, float) and x != x:
        return None
    if isinstance(x, dict):
        return {k: _json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_json_safe(v) for v in x]
    return x


def to_markdown(report: dict[str, Any]) -> str:
    env = report["environment"]
    f = lambda v, p=1: "-" if v != v else f"{v:.{p}f}"  # noqa: E731 - NaN prints as '-'
    lines = [f"# reid-bench ({report['created_at']})", "",
             f"{report['images']} images, {report['repeats']} timed repetitions after a warm-up; parity against {report['reference']}.",
             f"Environment: CPU {env['cpu']} ({env['cores']} cores); GPU {', '.join(env['gpus'])}; "
             + ", ".join(f"{k} {env.get(k, '?')}" for k in ("onnxruntime", "openvino", "MNN", "faiss", "torch", "timm", "tensorrt", "numpy")), "",
             "| backend | precision | batch | status | size MB | images/s | p50 ms | p95 ms | spread % | peak RSS MB | min cos | mean cos | top-20 overlap | mAP@20 | change |",
             "|---|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in report["rows"]:
        status = r["status"] + (f" ({r['reason']})" if r["reason"] else "")
        lines.append(f"| {r['backend']} | {r['precision']} | {r['batch'] or '-'} | {status} | {f(r['model_mb'])} | {f(r['images_per_s'])} | "
                     f"{f(r['p50_ms'], 2)} | {f(r['p95_ms'], 2)} | {f(r['spread_pct'])} | {f(r['peak_rss_mb'], 0)} | {f(r['min_cos'], 6)} | "
                     f"{f(r['mean_cos'], 6)} | {f(r['top20_overlap'], 4)} | {f(r['map20'], 4)} | {f(r['map20_delta'], 4)} |")
    return "\n".join(lines) + "\n"


def _plots(rows: list[Row], out: Path) -> None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    ok = [r for r in rows if r.status.startswith("works")]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for key in sorted({(r.backend, r.precision) for r in ok}):
        rs = sorted((r for r in ok if (r.backend, r.precision) == key), key=lambda r: r.batch)
        ax[0].plot([r.batch for r in rs], [r.images_per_s for r in rs], marker="o", label=f"{key[0]} {key[1]}")
    ax[0].set(xlabel="batch size", ylabel="images/s", title="throughput", xscale="log")
    ax[0].legend()
    labels = [f"{r.backend}\n{r.precision} b{r.batch}" for r in ok]
    x = np.arange(len(ok))
    ax[1].bar(x - 0.2, [r.p50_ms for r in ok], 0.4, label="p50")
    ax[1].bar(x + 0.2, [r.p95_ms for r in ok], 0.4, label="p95")
    ax[1].set_xticks(x, labels, fontsize=6)
    ax[1].set(ylabel="ms per batch", title="latency")
    ax[1].legend()
    fig.tight_layout()
    with atomic_write(out / "plots.png", "wb") as fh:
        fig.savefig(fh, format="png", dpi=110)
    plt.close(fig)
