"""INT8 ONNX for CPUs: onnxruntime static quantisation of the convolutions and matmuls.

On a CPU an fp32 re-ID CNN is compute-bound (the seed-style baseline already runs near the
FLOP ceiling), so lower precision is the remaining lever. onnxruntime's quantiser is the
tool made for this; written by hand it would be a worse copy. Choices, and why:

- QDQ format with per-channel int8 weights: the format onnxruntime's CPU kernels fuse best.
- ``reduce_range`` (7-bit weights) unless the export asks for ``--int8-scheme w8a8``: CPUs
  without VNNI multiply u8 x s8 pairs into int16 with saturation; 7-bit weights cannot
  saturate. Measured on AVX2 it costs no speed and keeps the minimum cosine near 0.998 where
  8-bit gave 0.985 (see ``bundle_format.Int8Scheme``).
- Only Conv/MatMul/Gemm are quantised: the in-graph preprocessing, the GeM power, the
  flip fusion and the L2 norms stay fp32, so the contract (uint8 in, unit-norm fp32 out)
  is unchanged.
- The first convolution (it sees raw pixels, whose range calibration on a few images
  covers worst) and the last matmul (the neck, whose error lands directly in the
  embedding) stay fp32; both are a sliver of the FLOPs. On photos unlike the calibration
  set this lifted the minimum cosine from 0.972 to 0.994-0.998 and ran 5-10% faster.
- The depthwise convolutions stay fp32 too unless ``--int8-keep-fp32 none``: quantised after
  training, their per-channel ranges are where an EfficientNet-class member's rankings move,
  and OpenVINO runs the graph faster without them in INT8 (benchmarks/results/int8-ranking-gate.md).
- Calibration runs through the training resize on ~128 images (the parity set plus more
  synthetic whales and ORL faces, see ``parity.calibration_images``): with only the 24
  parity images, rare inputs beyond the calibrated ranges lost up to 0.07 cosine. Give
  real photos with ``--parity-images`` for a calibration (and a gate) that matches your data.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import numpy as np

from reidkit.errors import MissingDependencyError, ReidkitError
from reidkit.runtime.bundle_format import DEFAULT_INT8_SCHEME, INT8_SCHEMES

QUANTISED_OPS = ["Conv", "MatMul", "Gemm"]


def kept_fp32(model_path: str | Path, depthwise: bool = False) -> list[str]:
    """Names of the first and the last quantisable nodes (ONNX lists nodes in topological order),
    and with ``depthwise`` every grouped convolution's."""
    import onnx

    nodes = [n for n in onnx.load(str(model_path)).graph.node if n.op_type in QUANTISED_OPS]
    if not nodes:
        return []
    kept = {nodes[0].name, nodes[-1].name}
    if depthwise:
        kept |= {n.name for n in nodes if n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)}
    return sorted(kept)


def quantize_int8(src: str | Path, dst: str | Path, calibration: np.ndarray, batch: int = 8,
                  scheme: str = DEFAULT_INT8_SCHEME, keep_depthwise: bool = True) -> None:
    """Write the INT8 twin of ``src`` to ``dst``, calibrated on uint8 [N,H,W,3] images."""
    try:
        from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quant_pre_process, quantize_static
    except ImportError:
        raise MissingDependencyError("--int8 needs onnxruntime's quantisation tools; pip install 'reidkit[cpu]'") from None
    if len(calibration) == 0:
        raise ReidkitError("--int8: no calibration images (give --parity-images DIR)")

    class Reader(CalibrationDataReader):
        def __init__(self) -> None:
            self._it = iter([{"images": calibration[i:i + batch]} for i in range(0, len(calibration), batch)])

        def get_next(self) -> dict[str, np.ndarray] | None:
            return next(self._it, None)

    quiet = logging.getLogger().level
    logging.getLogger().setLevel(max(quiet, logging.ERROR))  # the quantiser logs advice meant for its own developers
    try:
        with tempfile.TemporaryDirectory(prefix="reidkit-int8-") as tmp:
            pre = Path(tmp) / "pre.onnx"
            quant_pre_process(str(src), str(pre), skip_symbolic_shape=True)
            quantize_static(str(pre), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                            reduce_range=INT8_SCHEMES[scheme].weight_levels < 127,
                            op_types_to_quantize=QUANTISED_OPS, nodes_to_exclude=kept_fp32(pre, keep_depthwise),
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8)
    finally:
        logging.getLogger().setLevel(quiet)
