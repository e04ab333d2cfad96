"""Which post-training INT8 choice keeps a pretrained Lite0 member's true matches?

One member's fp32 ONNX (``--bundle``, its first member) is quantised with onnxruntime's static
QDQ quantiser in several ways: 7- or 8-bit weights, MinMax / Percentile / Entropy calibration,
calibration on the export's default set or on photos like the user's (``--calib-images``), and
with the depthwise convolutions left fp32 or not (the stem and the neck are always fp32, as
``reidkit.export.quantize`` does). Each variant is judged as the ranking gate judges it, on
labelled photos (``--labels``, any form ``reid export --int8-labels`` takes): true matches of
fp32's top-20 kept, mAP@20 beside fp32's, top-20 overlap, min / mean cosine to fp32. Then the
variants' speed on OpenVINO and onnxruntime, interleaved rounds, 64 images in batches of 16.

    python research/int8-lite0/ptq_depthwise.py --bundle B --labels synth_labels/metadata.csv \
        --calib-images other_whales/images --out research/int8-lite0/results/ptq-depthwise.json
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--bundle", type=Path, required=True)
    ap.add_argument("--labels", required=True)
    ap.add_argument("--calib-images", type=Path, required=True, help="unlabelled photos of other individuals")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    import onnx
    import onnxruntime as ort
    from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quant_pre_process,
                                          quantize_static)

    from reidkit.bench.agreement import embedding_overlap, embedding_true_kept
    from reidkit.export.parity import batch_for, calibration_images, labelled_images
    from reidkit.export.quantize import QUANTISED_OPS, kept_fp32
    from reidkit.metrics import leave_one_out_whaledo_map
    from reidkit.runtime.backends.registry import get_backend
    from reidkit.runtime.bundle import load_bundle

    logging.getLogger().setLevel(logging.ERROR)
    m = load_bundle(args.bundle).members[0]
    src = str(m.artefact("fp32")[0])
    lab = labelled_images(args.labels, 2000)
    x = batch_for(lab.images, m.height, m.width, m.resize)

    def embed(path: str) -> np.ndarray:
        s = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        return np.concatenate([s.run(None, {"images": x[i:i + 16]})[0] for i in range(0, len(x), 16)])

    ref = embed(src)
    work = Path(tempfile.mkdtemp(prefix="ptq-depthwise-"))
    pre = str(work / "pre.onnx")
    quant_pre_process(src, pre, skip_symbolic_shape=True)
    n_dw = sum(n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute) for n in onnx.load(pre).graph.node)
    cal = {"default": batch_for(calibration_images(None), m.height, m.width, m.resize),
           "own photos": batch_for(calibration_images(args.calib_images, 128), m.height, m.width, m.resize)}
    variants = [  # (weights, calibration method, calibration set, depthwise fp32)
        ("w7a8", "MinMax", "default", False), ("w8a8", "MinMax", "default", False),
        ("w8a8", "Percentile", "default", False), ("w8a8", "Entropy", "default", False), ("w8a8", "MinMax", "own photos", False),
        ("w7a8", "MinMax", "default", True), ("w8a8", "MinMax", "default", True), ("w8a8", "MinMax", "own photos", True),
    ]
    rows = [{"weights": "fp32", "file": src, "true_kept": 1.0, "map20": leave_one_out_whaledo_map(ref, lab.labels, 20),
             "overlap": 1.0, "min_cos": 1.0, "mean_cos": 1.0}]
    for weights, method, calib, dw in variants:
        images = cal[calib]

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.it = iter([{"images": images[i:i + 8]} for i in range(0, len(images), 8)])

            def get_next(self) -> dict[str, np.ndarray] | None:
                return next(self.it, None)
        dst = str(work / f"{weights}-{method}-{calib.replace(' ', '_')}-{'dw' if dw else 'all'}.onnx")
        quantize_static(pre, dst, Reader(), quant_format=QuantFormat.QDQ, per_channel=True, reduce_range=weights == "w7a8",
                        op_types_to_quantize=QUANTISED_OPS, nodes_to_exclude=kept_fp32(pre, dw),
                        activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                        calibrate_method=getattr(CalibrationMethod, method))
        e = embed(dst)
        cos = np.sum(ref * e, axis=1)
        row = {"weights": weights, "calibration": method, "calibrated_on": calib, "depthwise": "fp32" if dw else "int8", "file": dst,
               "true_kept": embedding_true_kept(ref, e, lab.labels, 20), "map20": leave_one_out_whaledo_map(e, lab.labels, 20),
               "overlap": embedding_overlap(ref, e, 20), "min_cos": float(cos.min()), "mean_cos": float(cos.mean())}
        print(json.dumps({k: v for k, v in row.items() if k != "file"}), flush=True)
        rows.append(row)

    timed = [r for r in rows if r.get("calibration", "MinMax") == "MinMax" and r.get("calibrated_on", "default") == "default"]
    probe = x[:64]
    engines = {}
    for be in ("openvino", "ort-cpu"):
        spec = get_backend(be)
        cls = spec.load_class()
        for i, r in enumerate(timed):
            engines[(be, i)] = cls(r["file"], threads=args.threads, **spec.options_for("fp32" if r["weights"] == "fp32" else "int8"))
            engines[(be, i)].run(probe[:16])
    rates: dict[tuple[str, int], list[float]] = {k: [] for k in engines}
    for _ in range(args.rounds):  # interleaved: every variant once per round
        for k, eng in engines.items():
            t = time.perf_counter()
            for s in range(0, len(probe), 16):
                eng.run(probe[s:s + 16])
            rates[k].append(len(probe) / (time.perf_counter() - t))
    speed = []
    for be in ("openvino", "ort-cpu"):
        base = statistics.median(rates[(be, 0)])
        for i, r in enumerate(timed):
            rs = rates[(be, i)]
            speed.append({"engine": be, "weights": r["weights"], "depthwise": r.get("depthwise", "fp32"),
                          "images_per_s": statistics.median(rs), "vs_fp32": statistics.median(rs) / base,
                          "spread_pct": 100 * (max(rs) - min(rs)) / statistics.median(rs)})
            print(json.dumps(speed[-1]), flush=True)
    doc = {"member": f"{m.name} ({m.height}x{m.width})", "labels": str(args.labels), "labelled_images": len(lab.labels),
           "identities": len(set(lab.labels)), "depthwise_convs": n_dw, "threads": args.threads, "rounds": args.rounds,
           "quality": [{k: v for k, v in r.items() if k != "file"} for r in rows], "speed": speed}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
