"""Which onnxruntime CUDA provider options reid-infer should use, measured on a bundle member.

The provider's defaults search every cuDNN convolution algorithm for each new input shape
(EXHAUSTIVE), compute fp32 convolutions in TF32, and keep tensors NCHW. Each costs something
on a re-identification run: a search per member per batch shape, fp32 rankings that drift
from the CPU's, and fp16 depthwise convolutions that miss the tensor cores. This sweeps those
options on one member (the bundle's largest) and reports, per setting: session start, the
first batch (search included), a batch of a new shape, steady images/s at batch 32 and 128,
and the largest difference from onnxruntime on the CPU.

Usage (on a GPU): python research/ort-cuda-options/ort_cuda_options.py BUNDLE --out result.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np


def session(path: Path, cuda: dict[str, str] | None):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = os.cpu_count() or 1
    so.log_severity_level = 3
    providers = [("CUDAExecutionProvider", cuda), "CPUExecutionProvider"] if cuda is not None else ["CPUExecutionProvider"]
    s = ort.InferenceSession(str(path), sess_options=so, providers=providers)
    if cuda is not None:
        assert s.get_providers()[0] == "CUDAExecutionProvider", s.get_providers()
    return s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()
    import onnxruntime as ort

    from reidkit.runtime.bundle import load_bundle

    ort.preload_dlls(directory="")
    m = max(load_bundle(args.bundle).members, key=lambda m: m.height * m.width)
    rng = np.random.default_rng(0)
    x128 = rng.integers(0, 256, (128, m.height, m.width, 3), dtype=np.uint8)
    x32, x8 = x128[:32], x128[:8]
    ref = session(m.files["fp32"][0], None).run(["embedding"], {"images": x32})[0]
    rows = []
    for precision in ("fp32", "fp16"):
        for algo in ("EXHAUSTIVE", "HEURISTIC", "DEFAULT"):
            for nhwc in ("0", "1"):
                for tf32 in (("0", "1") if precision == "fp32" else ("1",)):
                    opts = {"cudnn_conv_algo_search": algo, "prefer_nhwc": nhwc, "use_tf32": tf32}
                    t = time.perf_counter()
                    s = session(m.files[precision][0], opts)
                    start = time.perf_counter() - t
                    t = time.perf_counter()
                    y = s.run(["embedding"], {"images": x32})[0]
                    first = time.perf_counter() - t
                    t = time.perf_counter()
                    s.run(["embedding"], {"images": x8})
                    new_shape = time.perf_counter() - t
                    steady = {}
                    for x in (x32, x128):
                        s.run(["embedding"], {"images": x})
                        ts = []
                        for _ in range(10):
                            t = time.perf_counter()
                            s.run(["embedding"], {"images": x})
                            ts.append(time.perf_counter() - t)
                        steady[len(x)] = len(x) / statistics.median(ts)
                    row = {"precision": precision, **opts, "session_s": start, "first_batch_s": first, "new_shape_batch8_s": new_shape,
                           "images_per_s_b32": steady[32], "images_per_s_b128": steady[128],
                           "max_abs_diff_vs_cpu": float(np.abs(y.astype(np.float32) - ref).max())}
                    rows.append(row)
                    print(json.dumps(row), flush=True)
    args.out.write_text(json.dumps({"member": m.name, "input": [m.height, m.width], "device": os.environ.get("GPU_NAME", ""),
                                    "onnxruntime": ort.__version__, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
