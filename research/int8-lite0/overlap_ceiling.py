"""How much top-20 overlap any reduced precision can keep on an ensemble, and how INT8's error compares.

Why it exists: issue 14 set INT8 a target of top-20 overlap >= 0.99 with fp32. On whale-like
galleries the 20th and 21st neighbours of a query are near-ties, so any embedding error swaps
some of them. This script measures that ceiling on dev whales (``reid-synth`` seed 5, never the
benchmark's seed 7), for the bundle's members and their fused embedding:

- fp32: the bundle's fp32 ONNX on onnxruntime (the reference);
- INT8: the bundle's INT8 ONNX on onnxruntime (the gate's engine);
- FP16: the member in PyTorch with every weight and every layer input rounded to float16 and
  computed in fp32, which is what a GPU's FP16 engine does (fp16 storage, fp32 accumulation);
- INT8's own error scaled down by a factor: how much smaller it would have to be.

Each image is a query against the other N-1 (top-20 overlap as in ``int8_distil.judge``).
With ``--bench-work`` it also reads a finished ``make bench`` run's submissions and says, per
backend, how many of the baseline's true matches each kept and how close to the cut-off the
neighbours it dropped were.

  python research/int8-lite0/overlap_ceiling.py --bundle bench_lite0/bundle --models bench_lite0/models \
      --bench-work bench_lite0 --tag lite0-ensemble-w8a8
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
from pathlib import Path

import numpy as np

from int8_distil import judge, ort_embed, ort_session
from reidkit.bench.agreement import agreement
from reidkit.bench.agreement import read_submission as read_sub
from reidkit.bench.reports import write_report

SCALES = (1.0, 0.5, 0.3, 0.2, 0.1, 0.05)


def fp16_storage(graph):  # type: ignore[no-untyped-def]
    """Round ``graph``'s weights and every leaf module's floating inputs to float16, in place."""
    import torch

    def rounded(_mod, args):  # type: ignore[no-untyped-def]
        return tuple(a.half().float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)

    for m in graph.modules():
        for name in ("weight", "bias"):
            p = getattr(m, name, None)
            if isinstance(p, torch.Tensor):
                p.data = p.data.half().float()
        if not list(m.children()):
            m.register_forward_pre_hook(rounded)
    return graph


def torch_fp16_embed(checkpoint: Path, x: np.ndarray, batch: int = 50) -> np.ndarray:
    import torch

    from reidkit.export.graph import ExportGraph
    from reidkit.train.checkpoint import load_member

    model, _ = load_member(checkpoint)
    graph = fp16_storage(ExportGraph(model, "mean").eval())
    with torch.no_grad():
        return torch.cat([graph(torch.from_numpy(x[i:i + batch])) for i in range(0, len(x), batch)]).numpy()


def cutoff_gaps(ref: np.ndarray, k: int = 20) -> dict[str, float]:
    """How close the k-th and (k+1)-th neighbours are: the margin a swap needs."""
    s = ref @ ref.T
    np.fill_diagonal(s, -np.inf)
    top = -np.sort(-s, axis=1)[:, : k + 1]
    gap = top[:, k - 1] - top[:, k]
    return {"sim_rank1_mean": float(top[:, 0].mean()), "sim_rank20_mean": float(top[:, k - 1].mean()),
            "gap_20_21_median": float(np.median(gap)), "gap_20_21_p90": float(np.quantile(gap, 0.9))}


def sim_error(ref: np.ndarray, got: np.ndarray) -> float:
    """Median |change| of a pair's similarity."""
    d = got @ got.T - ref @ ref.T
    return float(np.median(np.abs(d[~np.eye(len(d), dtype=bool)])))


def bench_losses(work: Path) -> list[dict[str, object]]:
    """Per backend of a finished make bench: true matches kept, and where the dropped neighbours sat."""
    labels = next(work.glob("synth*/labels.csv"))
    base = read_sub(work / "seed_sub.csv")
    rows = []
    for sub in sorted(work.glob("reidkit_*_sub.csv")):
        got, margins, ranks = read_sub(sub), [], []
        for q, x in base.items():
            y = got.get(q, {})
            order = sorted(x, key=lambda d: -x[d])
            for rank, d in enumerate(order, 1):
                if d not in y:  # dropped: how far above the baseline's last kept score it was
                    margins.append(x[d] - x[order[-1]])
                    ranks.append(rank)
        rows.append({"backend": sub.name.removeprefix("reidkit_").removesuffix("_sub.csv"), "dropped": len(margins),
                     "true_matches_kept": agreement(work / "seed_sub.csv", sub, labels)["true_matches_kept"],
                     "dropped_margin_median": statistics.median(margins) if margins else None,
                     "dropped_margin_p90": float(np.quantile(margins, 0.9)) if margins else None,
                     "dropped_rank_median": statistics.median(ranks) if ranks else None})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True, help="bundle with fp32 and INT8 ONNX")
    ap.add_argument("--models", type=Path, required=True, help="folder with the members' checkpoints (for FP16)")
    ap.add_argument("--whales", type=int, default=500, help="dev whales (reid-synth seed 5)")
    ap.add_argument("--bench-work", type=Path, help="a make bench --work folder to read submissions from")
    ap.add_argument("--tag", default="lite0-ensemble")
    ap.add_argument("--out", type=Path, default=Path("benchmarks/results/int8-distil"))
    args = ap.parse_args()

    from reidkit.data.synth import sample_images
    from reidkit.export.parity import batch_for
    from reidkit.runtime.bundle_format import Manifest
    from reidkit.runtime.embedder import fuse
    from reidkit.vectors import l2_normalise

    manifest = Manifest.read(args.bundle)
    images = sample_images(args.whales, seed=5)
    parts: dict[str, list[np.ndarray]] = {"fp32": [], "int8": [], "fp16": []}
    rows: list[dict[str, object]] = []
    for m in manifest.members:
        if "int8" not in m.files or not m.checkpoint:
            raise SystemExit(f"{args.bundle}: member {m.name} has no INT8 ONNX or names no checkpoint; export it with reid-export --int8")
        x = batch_for(images, m.input_height, m.input_width, m.resize)
        got = {"fp32": ort_embed(ort_session(args.bundle / m.files["fp32"].file), x),
               "int8": ort_embed(ort_session(args.bundle / m.files["int8"].file), x),
               "fp16": torch_fp16_embed(args.models / m.checkpoint["file"], x)}
        for k, v in got.items():
            parts[k].append(v)
        for k in ("int8", "fp16"):
            rows.append({"embedding": m.name, "precision": k, **judge(got["fp32"], got[k]), "sim_error_median": sim_error(got["fp32"], got[k])})
        print(json.dumps(rows[-2:]), flush=True)
    weights = [m.weight for m in manifest.members]
    fused = {k: fuse(v, weights) for k, v in parts.items()}
    ref = fused["fp32"]
    for k in ("int8", "fp16"):
        rows.append({"embedding": "fused", "precision": k, **judge(ref, fused[k]), "sim_error_median": sim_error(ref, fused[k])})
    err = fused["int8"] - ref
    scaled = [{"scale": a, **judge(ref, l2_normalise(ref + a * err))} for a in SCALES]
    doc = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "bundle": str(args.bundle),
           "members": [m.name for m in manifest.members], "int8_scheme": manifest.int8_scheme.name,
           "dev_whales": args.whales, "rows": rows, "cutoff": cutoff_gaps(ref), "int8_error_scaled": scaled,
           "bench": bench_losses(args.bench_work) if args.bench_work else []}

    c = doc["cutoff"]
    md = [f"# How much top-20 overlap reduced precision keeps ({args.tag}, {doc['date']})", "",
          f"Bundle `{args.bundle}` ({', '.join(doc['members'])}; INT8 scheme {doc['int8_scheme']}), on {args.whales} dev whales "
          "(reid-synth seed 5; each image a query against the others). Reference: fp32 ONNX on onnxruntime. "
          "FP16: PyTorch with every weight and layer input rounded to float16, fp32 arithmetic. "
          "Written by `research/int8-lite0/overlap_ceiling.py`.", "",
          "| embedding | precision | min cos | mean cos | top-20 overlap | median pair-similarity change |",
          "|---|---|---:|---:|---:|---:|"]
    md += [f"| {r['embedding']} | {r['precision']} | {r['min_cos']:.4f} | {r['mean_cos']:.6f} | {r['top20_overlap']:.4f} | "
           f"{r['sim_error_median']:.2e} |" for r in rows]
    md += ["", f"The margin a swap needs: the 20th neighbour's similarity is {c['sim_rank20_mean']:.3f} on average; "
           f"it beats the 21st by {c['gap_20_21_median']:.4f} (median; 90th percentile {c['gap_20_21_p90']:.4f}).", "",
           "The fused INT8 error, scaled down (same directions, smaller size):", "",
           "| INT8 error x | min cos | mean cos | top-20 overlap |", "|---:|---:|---:|---:|"]
    md += [f"| {s['scale']} | {s['min_cos']:.5f} | {s['mean_cos']:.6f} | {s['top20_overlap']:.4f} |" for s in scaled]
    if doc["bench"]:
        md += ["", f"From the submissions of the make bench run in `{args.bench_work}` (against the seed-style baseline):", "",
               "| backend | neighbours dropped | true matches kept | dropped: median margin above the cut-off | 90th percentile | median rank |",
               "|---|---:|---:|---:|---:|---:|"]
        for b in doc["bench"]:
            fmt = (lambda v: "-" if v is None else f"{v:.4f}")
            md.append(f"| {b['backend']} | {b['dropped']} | {b['true_matches_kept']:.4f} | "
                      f"{fmt(b['dropped_margin_median'])} | {fmt(b['dropped_margin_p90'])} | {'-' if b['dropped_rank_median'] is None else format(b['dropped_rank_median'], 'g')} |")
    write_report(args.out, f"overlap-ceiling-{args.tag}", doc, md)


if __name__ == "__main__":
    main()
