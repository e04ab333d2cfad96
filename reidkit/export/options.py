"""The one home of the export defaults: ``reid export``'s options and :func:`export_bundle`
both read them here. Light on purpose (no torch), so ``reid export --help`` is instant.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from reidkit.runtime.bundle_format import DEFAULT_INT8_SCHEME

# quantisation-aware distillation (--int8-method distil): steps, learning rate, images per step,
# chosen on development data (research/int8-lite0/), never on the benchmark's images
DISTIL_STEPS = 1500
DISTIL_LR = 1e-5
DISTIL_BATCH = 16

# --int8-labels: at most this many labelled photos are ranked (whole individuals): leave-one-out
# ranking is quadratic, and each member embeds them twice (fp32 and INT8)
INT8_LABELS_LIMIT = 2000

INT8_METHODS = ("ptq", "distil")
INT8_KEEP_FP32 = ("none", "depthwise")
# --int8-keep-fp32 when not given, by method. Post-training INT8 of the depthwise convolutions is
# what moves an EfficientNet-class member's rankings, and OpenVINO runs the graph faster with them
# left fp32 (benchmarks/results/int8-ranking-gate.md, the seed-like ensemble); distillation learns
# around them, so it quantises everything unless asked.
INT8_KEEP_FP32_DEFAULT = {"ptq": "depthwise", "distil": "none"}


@dataclass
class ExportOptions:
    flip: str = "mean"
    opset: int = 17
    fp16: bool = False
    int8: bool = False
    int8_method: str = "ptq"  # ptq: onnxruntime static quantisation; distil: quantisation-aware distillation
    int8_images: Path | None = None
    int8_steps: int | None = None  # None: DISTIL_STEPS
    int8_lr: float | None = None  # None: DISTIL_LR
    int8_batch: int | None = None  # None: DISTIL_BATCH
    int8_keep_fp32: str | None = None  # "depthwise" leaves the depthwise convolutions fp32; None: INT8_KEEP_FP32_DEFAULT
    int8_cache: Path | None = None  # distil: finished twins kept here and reused (twin_cache)
    int8_min_cosine: float | None = None  # the INT8 gate's threshold, when the user sets their own
    int8_labels: str | None = None  # labelled photos (any read_labelled source): the INT8 gate judges rankings on them
    int8_scheme: str = DEFAULT_INT8_SCHEME  # bundle_format.INT8_SCHEMES: w7a8 runs on any CPU, w8a8 needs VNNI
    device: str = "auto"
    trt: bool = False
    mnn: bool = False
    aoti: bool = False  # AOTInductor packages for this machine's GPU (or CPU with device "cpu")
    aoti_batch: int = 64  # the packages' one batch size; reid infer pads a short batch up to it
    min_batch: int = 1
    opt_batch: int = 32
    max_batch: int = 64
    workspace_gb: float = 4.0
    timing_cache: Path | None = None
    parity_images: Path | None = None
    overwrite: bool = False



def int8_keep_fp32(opts: ExportOptions) -> str:
    """What the INT8 graph leaves in fp32 besides the stem and the neck: the user's choice, else the method's default."""
    return opts.int8_keep_fp32 if opts.int8_keep_fp32 is not None else INT8_KEEP_FP32_DEFAULT.get(opts.int8_method, "none")
