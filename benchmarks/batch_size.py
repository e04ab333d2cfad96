"""reid-infer's --batch-size on a CPU: end to end, interleaved, the way a user runs it.

Why: the auto-backend probe timed the Lite0 ensemble faster per image at batch 8 than at 32
(both MNN and OpenVINO), while reid-infer batches 32 images by default. This measures whether
that holds for whole runs (decode threads competing for the same cores included).

    python benchmarks/batch_size.py --bundle bench_lite0/bundle --images bench_lite0/synth1000/images \
        --n 300 --configs openvino:fp32 openvino:int8 mnn:fp32 --batch-sizes 4 8 16 32 --rounds 2

Each round runs every (engine, batch size) once in a rotated order, as separate reid-infer
processes on the same folder (query = gallery = the first N images); the report gives the
median seconds per configuration and each batch size's speed relative to 32 on the same engine.
Writes batch-size-cpu[-<tag>].{md,json} (the current report; the date is inside).
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
from reidkit.bench.reports import write_report  # noqa: E402
from reidkit.cpus import fp32_peak as cpu_info  # noqa: E402


def run(bundle: Path, folder: Path, backend: str, precision: str, batch: int, out: Path) -> float:
    t = time.perf_counter()
    subprocess.run([str(BIN / "reid-infer"), "--model", str(bundle), "--query", str(folder), "--gallery", str(folder),
                    "-o", str(out), "--backend", backend, "--precision", precision, "--batch-size", str(batch), "--quiet"],
                   check=True, capture_output=True, text=True)
    return time.perf_counter() - t


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--images", type=Path, required=True, help="Folder of photos; the first --n (sorted) are used.")
    ap.add_argument("--n", type=int, default=300)
    ap.add_argument("--configs", nargs="+", default=["openvino:fp32", "mnn:fp32"], metavar="BACKEND:PRECISION")
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[4, 8, 16, 32])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--tag", default="", help="Appended to the report's name, e.g. lite0-ensemble.")
    args = ap.parse_args()
    photos = sorted(p for p in args.images.iterdir() if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: args.n]
    if len(photos) < args.n:
        ap.error(f"{args.images} has {len(photos)} photos, fewer than --n {args.n}")
    cases = [(c.split(":")[0], c.split(":")[1], b) for c in args.configs for b in args.batch_sizes]
    times: dict[str, list[float]] = {f"{e}:{p}:{b}": [] for e, p, b in cases}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "photos"
        folder.mkdir()
        for p in photos:
            shutil.copy(p, folder / p.name)
        for c in args.configs:  # warm the file cache and each engine's disk reads (not timed)
            run(args.bundle, folder, *c.split(":"), args.batch_sizes[0], Path(tmp) / "warm.csv")
        for r in range(args.rounds):
            order = cases[r % len(cases):] + cases[: r % len(cases)]
            for e, p, b in order:
                s = run(args.bundle, folder, e, p, b, Path(tmp) / "out.csv")
                times[f"{e}:{p}:{b}"].append(s)
                print(f"round {r + 1}: {e} {p} batch {b}: {s:.1f} s", flush=True)
    med = {k: statistics.median(v) for k, v in times.items()}
    date = dt.date.today().isoformat()
    stem = "batch-size-cpu" + (f"-{args.tag}" if args.tag else "")
    cpu = cpu_info()
    rows = ["| engine | precision | batch | median s | images/s | speed vs batch 32 |", "|---|---|---:|---:|---:|---:|"]
    for c in args.configs:
        e, p = c.split(":")
        ref = med.get(f"{e}:{p}:32")
        for b in args.batch_sizes:
            s = med[f"{e}:{p}:{b}"]
            rows.append(f"| {e} | {p} | {b} | {s:.1f} | {args.n / s:.1f} | {ref / s:.2f}x |" if ref else
                        f"| {e} | {p} | {b} | {s:.1f} | {args.n / s:.1f} | - |")
    lines = [f"# reid-infer --batch-size on a CPU ({date})", "",
             f"Bundle `{args.bundle}`; {args.n} photos from `{args.images}` as query and gallery (folder mode), "
             f"{args.rounds} rounds, each (engine, batch) once per round in rotated order; whole reid-infer processes, "
             f"launch to exit. Machine: {cpu}.", "", *rows]
    write_report(args.out, stem, {"bundle": str(args.bundle), "n": args.n, "rounds": args.rounds, "cpu": cpu, "seconds": times,
                                  "median": med}, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
