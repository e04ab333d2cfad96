"""Where an INT8 twin's error sits: bypass its activation quantisers in the ONNX and re-judge.

For each convolution whose input comes through a QuantizeLinear/DequantizeLinear pair, the pair
is skipped (the convolution reads the float tensor; its INT8 weights stay), and the twin is judged
against the member's fp32 ONNX with onnxruntime on synthetic dev whales (``reid-synth`` seed 5,
never the benchmark's seed 7). Then: the most helpful bypasses together, all of them, and the
whole twin with onnxruntime's graph optimisation off (Q/DQ run as float ops, not fused kernels).
Rows for ``benchmarks/results/int8-lite0.md`` (sixth section).

  python benchmarks/int8_probe.py --twin bench_lite0/int8-twins/M.KEY.int8.onnx --fp32 bench_lite0/bundle/M.onnx
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def quantised_inputs(model) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """conv node name -> the float tensor in front of its input's Q/DQ pair."""
    prod = {o: n for n in model.graph.node for o in n.output}
    out = {}
    for n in model.graph.node:
        dq = prod.get(n.input[0]) if n.op_type == "Conv" else None
        q = prod.get(dq.input[0]) if dq is not None and dq.op_type == "DequantizeLinear" else None
        if q is not None and q.op_type == "QuantizeLinear":
            out[n.name] = q.input[0]
    return out


def main() -> None:
    import onnx
    import onnxruntime as ort

    from int8_distil import dev_set
    from reidkit.imaging import ResizePolicy

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--twin", type=Path, required=True)
    p.add_argument("--fp32", type=Path, required=True)
    p.add_argument("--whales", type=int, default=64)
    p.add_argument("--together", type=int, default=12, help="how many of the most helpful bypasses to combine")
    a = p.parse_args()
    model = onnx.load(str(a.twin))
    inputs = quantised_inputs(model)
    ref_sess = ort.InferenceSession(str(a.fp32), providers=["CPUExecutionProvider"])
    h, w = ref_sess.get_inputs()[0].shape[1:3]
    x = dev_set(h, w, ResizePolicy(), a.whales)["whales"]
    ref = ref_sess.run(None, {"images": x})[0]

    def judge(m, optimise: bool = True) -> dict[str, float]:  # type: ignore[no-untyped-def]
        so = ort.SessionOptions()
        if not optimise:
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        out = ort.InferenceSession(m.SerializeToString(), so, providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]
        cos = np.sort(np.sum(ref * out, axis=1) / np.linalg.norm(ref, axis=1) / np.linalg.norm(out, axis=1))
        return {"min": round(float(cos[0]), 4), "worst4": round(float(cos[:4].mean()), 4), "mean": round(float(cos.mean()), 4)}

    def bypass(names: set[str]):  # type: ignore[no-untyped-def]
        m = copy.deepcopy(model)
        for n in m.graph.node:
            if n.name in names:
                n.input[0] = inputs[n.name]
        return m

    def emit(row: dict) -> None:
        print(json.dumps({"twin": a.twin.name, **row}), flush=True)

    emit({"bypassed": [], **judge(model)})
    gains = []
    for name in inputs:
        r = judge(bypass({name}))
        gains.append((r["worst4"], name))
        emit({"bypassed": [name], **r})
    best = {name for _, name in sorted(gains, reverse=True)[:a.together]}
    emit({"bypassed": sorted(best), **judge(bypass(best))})
    emit({"bypassed": "all", **judge(bypass(set(inputs)))})
    emit({"bypassed": [], "graph_optimisation": "off", **judge(model, optimise=False)})


if __name__ == "__main__":
    main()
