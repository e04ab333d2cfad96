"""``make bench``: the headline comparison, reid infer against the seed-style baseline, end to end, interleaved.

Same checkpoints (the bundle is exported from them), same reid-synth Whale-do data, same
machine; the two run alternately so that machine noise hits both. Writes the headline
report to benchmarks/results/ (markdown + JSON) with stage timings, the ratio, the
agreement of the two submissions, and the fastest a GEMM-based fp32 run could be on this CPU
(measured SGEMM FLOP/s plus the decode and resize that the pixels require).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

from reidkit.bench.agreement import agreement  # noqa: E402
from reidkit.bench.reports import write_report  # noqa: E402
BIN = Path(sys.executable).parent


def sh(*args: str | Path, timeout: float | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True, timeout=timeout)


def timed(*args: str | Path) -> tuple[float, str]:
    t = time.perf_counter()
    res = sh(*args)
    return time.perf_counter() - t, res.stdout


def cpu_info() -> dict[str, object]:
    from reidkit.cpus import fp32_peak

    return fp32_peak()


def gpu_info() -> dict[str, str]:
    """The GPU as its driver names it (nvidia-smi), for the report's device line."""
    q = sh("nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader").stdout.splitlines()[0]
    name, driver, mem = (x.strip() for x in q.split(","))
    return {"name": name, "driver": driver, "memory": mem}


def measured_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """fp32 FLOP/s this machine really delivers: the best of a few SGEMMs on all cores.

    The nominal figure (cores x base clock x FMA width) undercounts boost clocks, so a
    network could appear to beat it; a large matrix product is the practical ceiling.
    """
    import numpy as np

    rng = np.random.default_rng(0)
    a, b = rng.random((size, size), dtype=np.float32), rng.random((size, size), dtype=np.float32)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best / 1e9


def decode_seconds_per_image(bundle: Path, images: list[Path]) -> float:
    """CPU seconds to read, decode and resize one image for every member input size (one thread)."""
    from reidkit.imaging import decode_rgb, resize_to
    from reidkit.runtime.bundle import load_bundle

    sizes = {(m.height, m.width, m.resize) for m in load_bundle(bundle).members}
    t = time.process_time()
    for p in images:
        img = decode_rgb(p.read_bytes(), p)
        for s in sizes:
            resize_to(img, *s)
    return (time.process_time() - t) / max(1, len(images))


def ensemble_gflops(checkpoints: list[Path]) -> float:
    """FLOPs per image of the whole ensemble, flip included (2 passes per member)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from reidkit.train.checkpoint import load_member

    total = 0.0
    for c in checkpoints:
        model, _ = load_member(c)
        h, w = model.net.cfg.input_size
        with FlopCounterMode(display=False) as fc, torch.no_grad():
            model(torch.zeros(1, h, w, 3, dtype=torch.uint8))
        total += 2 * fc.get_total_flops()
    return total / 1e9


def last_line(text: str | None) -> str:
    lines = [l.strip() for l in (text or "").splitlines() if l.strip()]
    return lines[-1] if lines else "no message"


def export_bundle(ensemble: Path, bundle: Path, optional: list[str], int8_timeout: float | None = None,
                  int8_args: list[str] | None = None) -> dict[str, str]:
    """Export fp32 plus the ``optional`` artefacts (--int8, --mnn); returns {flag: why it failed}.

    One export with everything is the common case. When it fails (a parity gate refuses an
    artefact, or a converter breaks), each optional flag is tried on its own, so a failing
    variant costs only its own columns; the fp32 bundle itself must export. An export with
    --int8 (an accuracy-aware search) may be given ``int8_timeout`` seconds; past it, INT8 is
    reported as failed and not tried again. ``int8_args`` (e.g. the distillation recipe) go with
    every export that asks for --int8.
    """
    timed_out = f"timed out after {int8_timeout} s (--int8-timeout)"

    log_path = bundle.parent / f"{bundle.name}.export.log"  # `tail -f` it: a distillation runs for long
    int8_args = list(int8_args or [])
    if distils(int8_args) and not any(a.split("=")[0] == "--int8-cache" for a in int8_args):
        int8_args += ["--int8-cache", str(bundle.parent / "int8-twins")]  # a re-run reuses the twins already trained

    def attempt(flags: list[str]) -> str | None:
        extra = int8_args if "--int8" in flags else []
        cmd = [str(a) for a in (BIN / "reid-export", ensemble, "-o", bundle, *flags, *extra, "--overwrite")]
        with open(log_path, "a") as log:
            log.write(f"$ {shlex.join(cmd)}\n")
            log.flush()
            start = log.tell()
            try:
                res = subprocess.run(cmd, stdout=log, stderr=log, timeout=int8_timeout if "--int8" in flags else None,
                                     env={**os.environ, "PYTHONUNBUFFERED": "1"})  # the error stays the log's last line
            except subprocess.TimeoutExpired:
                return timed_out
        if res.returncode == 0:
            return None
        with open(log_path) as log:
            log.seek(start)
            return last_line(log.read())

    first = attempt(optional)
    if first is None:
        return {}
    if not optional:
        raise SystemExit(f"reid-export of the fp32 bundle failed: {first}")
    # a gate refusal is deterministic and names its variants: those flags are not tried again (an INT8
    # distillation costs an hour on 2 cores)
    known = {flag: first for flag in blamed_flags(first) if flag in optional}
    if first == timed_out and "--int8" in optional:
        known["--int8"] = timed_out
    failed: dict[str, str] = {}
    kept: list[str] = []
    for flag in optional:
        reason = known[flag] if flag in known else attempt([*kept, flag])
        if reason is None:
            kept.append(flag)
        else:
            failed[flag] = reason
            print(f"reid-export {flag} failed: {reason}; its columns are reported as failed", flush=True)
    if optional[-1] in failed:  # the bundle on disk must be the last export that passed
        reason = attempt(kept)
        if reason is not None:
            raise SystemExit(f"reid-export of the fp32 bundle failed: {reason}")
    return failed


def distils(int8_args: list[str]) -> bool:
    """Whether these reid-export options ask for a distillation (``--int8-method distil`` or ``=distil``)."""
    pairs = zip(int8_args, int8_args[1:] + [""])
    return any(a == "--int8-method=distil" or (a == "--int8-method" and b == "distil") for a, b in pairs)


def blamed_flags(reason: str) -> set[str]:
    """The export flags whose artefacts a "parity gate failed for m (fmt-precision), ..." message names."""
    from reidkit.runtime.bundle_format import ARTEFACTS

    if "parity gate failed for" not in reason:
        return set()
    by_variant = {f"{a.fmt}-{a.precision}": a.export_flag for a in ARTEFACTS.values() if a.export_flag}
    named = re.findall(r"\(([a-z0-9-]+)\)", reason)
    return {by_variant[v] for v in named if v in by_variant} | {"--aoti" for v in named if v.startswith("aoti-")}


def export_flag(backend: str, precision: str) -> str | None:
    """The reid-export flag that writes what ``backend`` runs at ``precision`` (None: the fp32 ONNX, always written)."""
    from reidkit.runtime.backends.registry import BACKENDS
    from reidkit.runtime.bundle_format import artefact_for

    fmt = BACKENDS[backend].fmt
    if fmt in ("trt", "aoti"):  # per-machine builds; fp16 packages come with --fp16 as well
        return f"--{fmt}"
    return artefact_for(fmt, precision).export_flag


def int8_parity(bundle: Path) -> dict[str, float]:
    """Each member's INT8 min cosine on the parity images, as the export's gate measured it."""
    doc = json.loads((bundle / "manifest.json").read_text())
    return {m["name"]: r["min_cosine"] for m in doc["members"] for r in m.get("parity", []) if r["variant"].endswith("int8")}


def map20(sub: Path, labels: Path) -> float:
    from reidkit.evaluate import evaluate_submission

    return float(evaluate_submission(sub, labels)["mAP@20"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--work", type=Path, default=ROOT / "bench_out")
    ap.add_argument("--images", type=int, default=2000)
    ap.add_argument("--scenarios", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--ensemble", type=Path, default=ROOT / "demo_out" / "ensemble.toml")
    ap.add_argument("--tag", default="", help="Suffix for the report's file names, e.g. the ensemble's name.")
    ap.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                    help="cuda: the baseline on the GPU and every reid-infer engine that runs on one (reports headline-gpu-*)")
    ap.add_argument("--bundle", type=Path, help="A bundle already exported from --ensemble with every artefact the variants need "
                    "(e.g. by benchmarks/gpu/check.sh); default: export one into --work")
    ap.add_argument("--batch-size", type=int, default=None, help="reid-infer's --batch-size (default: its own)")
    ap.add_argument("--int8-timeout", type=float, default=None,
                    help="Seconds the INT8 export may take; past it the INT8 columns are reported as failed.")
    ap.add_argument("--int8-args", default="",
                    help="reid-export options for the INT8 export, e.g. \"--int8-method distil --int8-images DIR --int8-keep-fp32 depthwise\" (a distillation keeps its twins in WORK/int8-twins unless --int8-cache says otherwise).")
    args = ap.parse_args()
    work = args.work
    work.mkdir(parents=True, exist_ok=True)
    if not args.ensemble.exists():
        print(f"no ensemble at {args.ensemble}; running the demo to train one", flush=True)
        subprocess.run([sys.executable, "-m", "reidkit.demo", str(args.ensemble.parent)], check=True)
    from reidkit.ensemble import read_ensemble

    ckpts = [e.checkpoint for e in read_ensemble(args.ensemble)]
    data = work / f"synth{args.images}"
    if not (data / "metadata.csv").exists():
        sh(BIN / "reid-synth", data, "--images", str(args.images), "--identities", str(max(2, args.images // 10)),
           "--scenarios", str(args.scenarios), "--seed", "7", "--overwrite")
    # reid-infer runs, name -> (backend, precision), from the backend table: every engine for this device installed here, plus
    # what --backend auto picks. On a CPU fp32 and int8 (FP16 brings no gain on these CPUs); on a GPU fp32 and fp16 (its
    # tensor cores; an int8 QDQ graph is no faster on onnxruntime CUDA, and TensorRT engines are fp16).
    from reidkit.runtime.backends.registry import BACKENDS
    from reidkit.runtime.bundle_format import artefact_for

    variants: dict[str, tuple[str, str]] = {}
    for spec in BACKENDS.values():
        why = spec.why_unavailable()
        if spec.device != args.device or why:
            print(f"{spec.name}: {why or f'not a {args.device} engine'}; its columns are left out", flush=True)
            continue
        skip = "fp16" if args.device == "cpu" else "int8"
        variants.update({f"reidkit_{spec.name}_{p}": (spec.name, p) for p in spec.precisions if p != skip})
    variants["reidkit_auto_fp32"] = ("auto", "fp32")
    # each optional artefact is gated on its own: one that fails is reported, the others are kept
    optional: dict[str, list[str]] = {}
    for name, (b, p) in variants.items():
        flag = export_flag(b, p) if b != "auto" else None
        if flag:
            optional.setdefault(flag, []).append(name)
        if p == "fp16" and b != "auto":
            optional.setdefault("--fp16", []).append(name)
    if args.bundle:
        bundle, export_failed = args.bundle, {}
    else:
        bundle = work / "bundle"
        export_failed = export_bundle(args.ensemble, bundle, sorted(optional), args.int8_timeout, shlex.split(args.int8_args))
    failed = {name: reason for flag, reason in export_failed.items() for name in optional[flag]}
    scen, meta = data / "query_scenarios.csv", data / "metadata.csv"
    # the seed-style baseline as the seeds ran it: fp32, and on a GPU also fp16 autocast (the 2nd place's inference)
    seeds = {"seed": []} if args.device == "cpu" else {"seed": [], "seed_fp16": []}
    runs: dict[str, list[dict]] = {**seeds, **{k: [] for k in variants}}
    batch = ["--batch-size", str(args.batch_size)] if args.batch_size else []
    chosen: dict[str, str] = {}  # what --backend auto ran, and why
    for r in range(args.repeats):
        for seed in seeds:
            print(f"round {r + 1}/{args.repeats}: seed-style baseline{' (fp16 autocast)' if seed == 'seed_fp16' else ''}", flush=True)
            wall, out = timed(sys.executable, ROOT / "benchmarks" / "seed_baseline.py", *ckpts, "--scenarios", scen, "--metadata", meta,
                              "--out", work / f"{seed}_sub.csv", "--device", args.device, *(["--autocast"] if seed == "seed_fp16" else []))
            runs[seed].append({"wall": wall, **json.loads(out.strip().splitlines()[-1])})
        for name, (backend, precision) in variants.items():
            if name in failed:
                continue
            print(f"round {r + 1}/{args.repeats}: reid-infer --backend {backend} --precision {precision}", flush=True)
            try:
                wall, _ = timed(BIN / "reid-infer", "--model", bundle, "--scenarios", scen, "--metadata", meta, "-o", work / f"{name}_sub.csv",
                                "--backend", backend, "--precision", precision, "--quiet", "--report-json", work / f"{name}_run.json", *batch)
            except subprocess.CalledProcessError as exc:
                failed[name] = f"reid-infer exited {exc.returncode}: {last_line(exc.stderr)}"
                print(f"  failed: {failed[name]}", flush=True)
                continue
            rep = json.loads((work / f"{name}_run.json").read_text())
            if backend == "auto":
                chosen[name] = rep["backend_reason"]
            runs[name].append({"wall": wall, "images": rep["images"], "embed": rep["embed_seconds"], "infer": rep["infer_seconds"], "rank": rep["rank_seconds"],
                               "total": rep["seconds"], "startup": rep.get("startup_seconds", float("nan")),
                               "steady": rep.get("steady_images_per_s", float("nan"))})
    runs = {k: v for k, v in runs.items() if k not in failed}
    ok = [k for k in variants if k not in failed]
    med = {k: {f: statistics.median(x[f] for x in v) for f in v[0]} for k, v in runs.items()}
    agree = {k: agreement(work / "seed_sub.csv", work / f"{k}_sub.csv", data / "labels.csv") for k in ok}
    maps = {k: map20(work / f"{k}_sub.csv", data / "labels.csv") for k in runs}
    cpu = cpu_info()
    cpu["measured_peak_gflops"] = measured_peak_gflops()
    gpu = gpu_info() if args.device == "cuda" else None
    gflops = ensemble_gflops(ckpts)
    n = int(runs[ok[0]][0]["images"])  # the same images every round (a median of an even count would print 2000.0)
    cores = cpu.get("cores") or 1
    ceiling = cpu["measured_peak_gflops"] / gflops if gflops else float("nan")
    # The fastest any fp32 pipeline could finish on these cores: every FLOP at SGEMM speed and
    # the decode + resize that training's pixels require, perfectly overlapped.
    from reidkit.data.whaledo import read_metadata

    sample = list(read_metadata(meta).paths.values())[:300]
    dec = decode_seconds_per_image(bundle, sample)
    floor = n * gflops / cpu["measured_peak_gflops"] + n * dec / cores  # type: ignore[operator]
    speedup = {k: med["seed"]["wall"] / med[k]["wall"] for k in ok}
    speedup_fp16 = {k: med["seed_fp16"]["wall"] / med[k]["wall"] for k in ok} if "seed_fp16" in med else {}
    # each fp16 variant against the same engine's fp32 (FP16 must rank as fp32 does to be worth its speed)
    vs_fp32 = {k: agreement(work / f"reidkit_{variants[k][0]}_fp32_sub.csv", work / f"{k}_sub.csv", data / "labels.csv")
               for k in ok if variants[k][1] == "fp16" and f"reidkit_{variants[k][0]}_fp32" in ok}
    report = {
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "device": "GPU" if gpu else "CPU", "gpu": gpu, "cpu": cpu,
        "data": {"images": n, "scenarios": args.scenarios, "source": f"reid-synth --images {args.images} --seed 7"},
        "ensemble": [str(c.name) for c in ckpts], "ensemble_gflops_per_image_with_flip": gflops,
        "runs": runs, "median": med, "speedup_wall": speedup, "speedup_wall_vs_fp16_baseline": speedup_fp16,
        "fp16_vs_fp32": vs_fp32, "agreement": agree, "map20": maps,
        "ceiling_images_per_s_fp32": ceiling, "decode_resize_cpu_s_per_image": dec, "fp32_floor_wall_s": floor,
        "fp32_best_possible_speedup": med["seed"]["wall"] / floor,
        "variants": {c: {"backend": b, "precision": p} for c, (b, p) in variants.items()}, "auto_chose": chosen, "images_per_s": {k: n / med[k]["wall"] for k in runs},
        "failed": failed, "int8_export_args": args.int8_args, "int8_parity": int8_parity(bundle) if "--int8" not in export_failed else {},
    }
    s = med["seed"]
    best = min((c for c in ok if variants[c][1] == "fp32"), key=lambda c: med[c]["wall"])
    ips = report["images_per_s"]
    cols = list(variants)

    def row(label: str, first: str, cell, why: bool = False) -> str:
        def fail(c: str) -> str:
            return "failed: " + failed[c].replace("|", "/") if why else "failed"
        return f"| {label} | {first} | " + " | ".join(fail(c) if c in failed else cell(c) for c in cols) + " |"

    md = [
        f"# reid-infer vs the seed-style baseline ({report['created_at']})", "",
        (f"Device: GPU, {gpu['name']} ({gpu['memory']}, driver {gpu['driver']}); host CPU {cpu.get('model', '?')}, {cpu.get('cores')} cores. "
         if gpu else f"Device: CPU, {cpu.get('model', '?')}, {cpu.get('cores')} cores ({cpu.get('isa', '?')}). ") +
        f"Data: {n} reid-synth Whale-do images, {args.scenarios} scenarios. Ensemble: {', '.join(report['ensemble'])} "
        f"({gflops:.2f} GFLOP per image with the flip). Median of {args.repeats} interleaved rounds; processes timed from launch.", "",
        "| stage | seed-style baseline (s) | " + " | ".join(f"reid-infer {variants[c][0]} {variants[c][1]} (s)" for c in cols) + " |",
        "|---|---:|" + "---:|" * len(cols),
        row("start-up and imports", f"{s['import']:.2f}", lambda c: "(in total)"),
        row("decode + resize", f"{s['decode']:.2f}", lambda c: "overlapped"),
        row("embed", f"{s['embed']:.2f}", lambda c: f"{med[c]['embed']:.2f}"),
        row("of which in the engines", "-", lambda c: f"{med[c]['infer']:.2f}"),
        row("rank", f"{s['rank']:.2f}", lambda c: f"{med[c]['rank']:.2f}"),
        row("**total, wall**", f"**{s['wall']:.2f}**", lambda c: f"**{med[c]['wall']:.2f}**", why=True),
        row("images/s", f"{ips['seed']:.1f}", lambda c: f"{ips[c]:.1f}"),
        row("GFLOP per image (with the flip)", f"{gflops:.2f}", lambda c: f"{gflops:.2f}" + (" (as int8)" if variants[c][1] == "int8" else "")),
        row("of which start-up (launch to the first batch embedded)", "-", lambda c: f"{med[c]['startup']:.2f}"),
        row("steady embedding rate after start-up (images/s)", "-", lambda c: f"{med[c]['steady']:.0f}"),
        row("**speed-up vs baseline**", "1.00x", lambda c: f"**{speedup[c]:.2f}x**"),
        *([row("speed-up vs baseline in fp16 autocast", f"{med['seed']['wall'] / med['seed_fp16']['wall']:.2f}x",
               lambda c: f"{speedup_fp16[c]:.2f}x")] if speedup_fp16 else []),
        *([row("fp16: top-20 overlap with the same engine's fp32", "-",
               lambda c: f"{vs_fp32[c]['top20_overlap']:.4f}" if c in vs_fp32 else "-")] if vs_fp32 else []),
        row("top-20 overlap with baseline", "-", lambda c: f"{agree[c]['top20_overlap']:.4f}"),
        row("true matches of the baseline's lists kept", "-", lambda c: f"{agree[c]['true_matches_kept']:.4f}"),
        row("max score difference", "-", lambda c: f"{agree[c]['max_score_diff']:.2e}"),
        row("mAP@20", f"{maps['seed']:.4f}", lambda c: f"{maps[c]:.4f}"), "",
        *[f"`--backend auto` chose: {why}." for why in sorted(set(chosen.values()))], "",
        *([f"Baseline in fp16 autocast (as the 2nd place ran on its GPU): {med['seed_fp16']['wall']:.2f} s wall, "
           f"{ips['seed_fp16']:.1f} images/s, mAP@20 {maps['seed_fp16']:.4f}; its top-20 overlap with the fp32 baseline "
           f"{agreement(work / 'seed_sub.csv', work / 'seed_fp16_sub.csv', data / 'labels.csv')['top20_overlap']:.4f}.", ""]
          if "seed_fp16" in med else []),
    ]
    if report["int8_parity"]:
        int8_cmd = " ".join(["reid-export --int8", args.int8_args]).strip()
        md += [f"INT8 export: `{int8_cmd}`; the gate's min cosine per member: "
               + ", ".join(f"{k} {v:.4f}" for k, v in report["int8_parity"].items()) + ".", ""]
    if not gpu:  # the SGEMM floor below describes CPU engines only
        md.append(
        f"Ceiling: a {cores}-core SGEMM here runs at {cpu['measured_peak_gflops']:.0f} GFLOP/s fp32 (nominal "
        f"{cpu.get('peak_gflops', float('nan')):.0f}: {cores} cores x {cpu.get('ghz', 0):.2f} GHz base x {cpu.get('fp32_flops_per_cycle')} FLOP/cycle), "
        f"so the networks alone could run at most ~{ceiling:.0f} images/s in fp32. Decoding and resizing, which must give training's "
        f"pixels, cost {dec * 1e3:.2f} CPU-ms per image on top. Together they put a floor of {floor:.2f} s under any fp32 run of "
        f"these {n} images on {cores} cores that computes every convolution as a matrix product (onnxruntime, OpenVINO), i.e. at best "
        f"**{med['seed']['wall'] / floor:.2f}x** the baseline. MNN computes 3x3 convolutions with Winograd transforms, fewer "
        f"multiplications for the same result, so that floor does not bind it. The fastest reid-infer fp32 run ({variants[best][0]}, "
        f"{med[best]['wall']:.2f} s) takes {med[best]['wall'] / floor:.2f}x the floor. Below fp32 the lever is fewer bits (INT8), at the agreement shown.")
    # one current report per configuration: the name says what ran, the heading says when
    stamp = ("gpu" if gpu else "cpu") + (f"-{args.tag}" if args.tag else "")
    write_report(args.out, f"headline-{stamp}", report, md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
