"""Sweep INT8 distillation settings on one member; judge each on images it never trained on.

For each (steps, lr): ``reidkit.export.distil_int8.distil_int8`` on the given training
images, then the PyTorch simulation is compared with the fp32 member on a dev set (the 24
parity images and N synthetic whales of seed 5: min/mean cosine, top-20 overlap of each
whale's neighbours among the N), and the INT8 ONNX is written for the engines to be judged
on the CPU (``--judge DIR`` re-reads those ONNX files with onnxruntime and OpenVINO).
The benchmark's evaluation whales (benchmarks/headline.py, seed 7) are not used here.

  python research/int8-lite0/int8_distil.py --member M.safetensors --images bench_lite0/train/images \
      --steps 300 1000 --lr 2e-5 1e-4 --device cuda --out int8_sweep
  python research/int8-lite0/int8_distil.py --judge int8_sweep
  python research/int8-lite0/int8_distil.py --judge-twin bundle/m.onnx int8-twins/m.<key>.int8.onnx
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from reidkit.runtime.bundle_format import DEFAULT_INT8_SCHEME, INT8_SCHEMES


def dev_set(h: int, w: int, policy, n: int) -> dict[str, np.ndarray]:  # type: ignore[no-untyped-def]
    from reidkit.data.synth import sample_images
    from reidkit.export.parity import batch_for, parity_images

    return {"parity": batch_for(parity_images(None), h, w, policy), "whales": batch_for(sample_images(n, seed=5), h, w, policy)}


def judge(ref: np.ndarray, cand: np.ndarray) -> dict[str, float]:
    cos = np.sum(ref * cand, axis=1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(cand, axis=1))
    k = min(20, len(ref) - 1)
    a, b = ref @ ref.T, cand @ cand.T
    np.fill_diagonal(a, -np.inf)
    np.fill_diagonal(b, -np.inf)
    ta, tb = np.argsort(-a, axis=1)[:, :k], np.argsort(-b, axis=1)[:, :k]
    overlap = float(np.mean([len(set(x) & set(y)) / k for x, y in zip(ta, tb)]))
    return {"min_cos": float(cos.min()), "mean_cos": float(cos.mean()), "top20_overlap": overlap}


def ort_session(onnx_path: Path):  # type: ignore[no-untyped-def]
    import onnxruntime as ort

    return ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])


def ort_embed(sess, x: np.ndarray, batch: int = 32) -> np.ndarray:  # type: ignore[no-untyped-def]
    """An onnxruntime session's embeddings of ``x``, in batches."""
    return np.concatenate([sess.run(None, {"images": x[i:i + batch]})[0] for i in range(0, len(x), batch)])


def sweep(args: argparse.Namespace) -> None:
    import torch

    from reidkit.data.folders import list_images
    from reidkit.export.distil_int8 import distil_int8
    from reidkit.export.graph import ExportGraph
    from reidkit.export.onnx_export import export_onnx
    from reidkit.export.parity import batch_for, calibration_images, parity_images
    from reidkit.imaging import ResizePolicy, load_readable
    from reidkit.train.checkpoint import load_member

    model, _ = load_member(args.member)
    graph = ExportGraph(model, "mean").eval()
    h, w = model.net.cfg.input_size
    policy = ResizePolicy.from_dict(model.net.cfg.resize)
    paths, _ = list_images(Path(args.images))
    # the gate's parity images are left out of training, so the gate judges unseen images
    extra = calibration_images(None)[len(parity_images(None)):]
    train = batch_for(load_readable(paths) + extra, h, w, policy)
    dev = dev_set(h, w, policy, args.dev_whales)
    with torch.no_grad():
        ref = {k: graph(torch.from_numpy(v)).numpy() for k, v in dev.items()}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    np.savez(out / f"{args.member.stem}.dev_ref.npz", **ref)
    export_onnx(graph, out / f"{args.member.stem}.fp32.onnx")  # the --speed reference
    rows = []
    for steps, lr, learn in [(s, r, bool(g)) for s in args.steps for g in args.learn_ranges for r in args.lr]:
        t = time.perf_counter()
        student = distil_int8(graph, train, steps=steps, lr=lr, batch=args.batch, device=args.device,
                              learn_ranges=learn, fp32_depthwise=args.fp32_depthwise, scheme=args.scheme,
                              progress=False)
        seconds = time.perf_counter() - t
        with torch.no_grad():
            got = {k: student(torch.from_numpy(v)).numpy() for k, v in dev.items()}
        name = f"{args.member.stem}.s{steps}.lr{lr:g}" + (".lsq" if learn else "") + (".dwfp32" if args.fp32_depthwise else "") + f".{args.scheme}"
        export_onnx(student, out / f"{name}.int8.onnx")  # type: ignore[arg-type]
        row = {"member": args.member.name, "steps": steps, "lr": lr, "learn_ranges": learn, "fp32_depthwise": args.fp32_depthwise, "scheme": args.scheme, "batch": args.batch, "train_images": len(train),
               "device": args.device, "seconds": round(seconds, 1),
               **{f"torch_{k}_{m}": round(v, 4) for k in dev for m, v in judge(ref[k], got[k]).items()}}
        rows.append(row)
        print(json.dumps(row), flush=True)
    (out / f"{args.member.stem}.sweep.json").write_text(json.dumps(rows, indent=1))


def judge_dir(folder: Path) -> None:
    """Run every INT8 ONNX in ``folder`` through onnxruntime and OpenVINO on the CPU."""
    import onnxruntime as ort
    import openvino as ov

    from reidkit.imaging import ResizePolicy

    rows = []
    for onnx_path in sorted(folder.glob("*.int8.onnx")):
        stem = onnx_path.name.split(".s")[0]
        ref = dict(np.load(folder / f"{stem}.dev_ref.npz"))
        sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
        h, w = sess.get_inputs()[0].shape[1:3]
        dev = dev_set(h, w, ResizePolicy(), len(ref["whales"]))
        compiled = ov.Core().compile_model(str(onnx_path), "CPU")
        row: dict[str, object] = {"file": onnx_path.name}
        for k, v in dev.items():
            for engine, out in (("ort", sess.run(None, {"images": v})[0]), ("openvino", compiled(v)[0])):
                row.update({f"{engine}_{k}_{m}": round(x, 4) for m, x in judge(ref[k], out).items()})
        rows.append(row)
        print(json.dumps(row), flush=True)
    (folder / "engines.json").write_text(json.dumps(rows, indent=1))


def judge_twin(fp32: Path, twin: Path) -> dict[str, object]:
    """One INT8 graph against its fp32 graph, both on onnxruntime (the gate's engine): the default
    parity set, 32 fresh whales (seed 13: no training, dev or benchmark seed) and 200 dev whales."""
    import onnxruntime as ort

    from reidkit.data.synth import sample_images
    from reidkit.export.parity import batch_for, parity_images
    from reidkit.imaging import ResizePolicy

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    a, b = (ort.InferenceSession(str(f), opts, providers=["CPUExecutionProvider"]) for f in (fp32, twin))
    h, w = a.get_inputs()[0].shape[1:3]
    row: dict[str, object] = {"twin": twin.name}
    for name, imgs in (("parity", parity_images(None)), ("fresh32_seed13", sample_images(32, seed=13)),
                       ("dev200_seed5", sample_images(200, seed=5))):
        x = batch_for(imgs, h, w, ResizePolicy())
        ref, got = ort_embed(a, x), ort_embed(b, x)
        row.update({f"{name}_{k}": round(v, 4) for k, v in judge(ref, got).items()})
    print(json.dumps(row), flush=True)
    return row


def speed_dir(folder: Path, rounds: int = 3, n: int = 64, batch: int = 32) -> None:
    """OpenVINO ms/img of each INT8 ONNX against its member's fp32 ONNX, interleaved rounds, best of each."""
    import openvino as ov

    from reidkit.data.synth import sample_images
    from reidkit.export.parity import batch_for
    from reidkit.imaging import ResizePolicy

    core = ov.Core()
    files = sorted(folder.glob("*.fp32.onnx")) + sorted(folder.glob("*.int8.onnx"))
    compiled, inputs = {}, {}
    for f in files:
        compiled[f.name] = core.compile_model(str(f), "CPU", {"INFERENCE_NUM_THREADS": 0})
        h, w = (int(d.get_length()) for d in compiled[f.name].input(0).get_partial_shape()[1:3])  # batch is dynamic, H and W are not
        inputs[f.name] = batch_for(sample_images(n, seed=9), h, w, ResizePolicy())
    best = {k: float("inf") for k in compiled}
    for _ in range(rounds):
        for k, model in compiled.items():
            x = inputs[k]
            t = time.perf_counter()
            for i in range(0, n, batch):
                model(x[i:i + batch])
            best[k] = min(best[k], (time.perf_counter() - t) * 1000 / n)
    rows = [{"file": k, "openvino_ms_per_img": round(v, 2)} for k, v in best.items()]
    for r in rows:
        print(json.dumps(r), flush=True)
    (folder / "speed.json").write_text(json.dumps(rows, indent=1))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--member", type=Path)
    p.add_argument("--images", type=Path, help="unlabelled training images (a folder)")
    p.add_argument("--steps", type=int, nargs="+", default=[300])
    p.add_argument("--lr", type=float, nargs="+", default=[2e-5])
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--learn-ranges", type=int, nargs="+", default=[0], help="0: min/max ranges fixed; 1: LSQ-trained")
    p.add_argument("--fp32-depthwise", action="store_true", help="keep the depthwise convolutions fp32")
    p.add_argument("--scheme", default=DEFAULT_INT8_SCHEME, choices=list(INT8_SCHEMES),
                   help="INT8 weight levels (w8a8 needs a VNNI CPU to judge)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--dev-whales", type=int, default=200)
    p.add_argument("--out", type=Path, default=Path("int8_sweep"))
    p.add_argument("--judge", type=Path, help="judge the INT8 ONNX files in this folder on the CPU engines, then stop")
    p.add_argument("--speed", type=Path, help="time OpenVINO on the fp32 and INT8 ONNX files in this folder, then stop")
    p.add_argument("--judge-twin", type=Path, nargs=2, metavar=("FP32_ONNX", "INT8_ONNX"),
                   help="judge one INT8 graph (e.g. a twin from reid-export --int8-cache) against its member's fp32 ONNX, then stop")
    a = p.parse_args()
    if a.judge_twin:
        judge_twin(*a.judge_twin)
    elif a.judge:
        judge_dir(a.judge)
    elif a.speed:
        speed_dir(a.speed)
    else:
        sweep(a)


if __name__ == "__main__":
    main()
