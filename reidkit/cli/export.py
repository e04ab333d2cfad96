"""``reid export``: checkpoints -> a bundle that passed the parity gate."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from reidkit.cli.common import CONTEXT, friendly
from reidkit.export.options import DISTIL_BATCH, DISTIL_LR, DISTIL_STEPS, INT8_KEEP_FP32, INT8_METHODS, ExportOptions
from reidkit.runtime.bundle_format import INT8_SCHEMES

D = ExportOptions()


@click.command("export", context_settings=CONTEXT)
@click.argument("members", nargs=-1, required=True)
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Bundle directory to create.")
@click.option("--flip", default=D.flip, type=click.Choice(["mean", "concat", "none"]),
              help="In-graph flip fusion: the mirrored image rides in the same batch, no second pass.")
@click.option("--opset", default=D.opset, type=int, help="ONNX opset.")
@click.option("--min-batch", default=D.min_batch, type=int, help="TensorRT profile: smallest batch.")
@click.option("--opt-batch", default=D.opt_batch, type=int, help="TensorRT profile: the batch it is tuned for.")
@click.option("--max-batch", default=D.max_batch, type=int, help="TensorRT profile: largest batch.")
@click.option("--fp16", is_flag=True, help="Also write an FP16 ONNX per member (checked by the parity gate).")
@click.option("--int8", is_flag=True, help="Also write an INT8 ONNX per member for CPUs (checked by the parity gate; see --int8-method).")
@click.option("--int8-method", default=D.int8_method, type=click.Choice(INT8_METHODS),
              help="ptq: onnxruntime static quantisation, seconds, fine for plain CNNs; distil: an INT8 twin trained to "
                   "reproduce the member (quantisation-aware distillation), minutes on a GPU, what fine-tuned "
                   "EfficientNet-class members need to pass the gate.")
@click.option("--int8-images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="--int8-method distil: unlabelled photos like yours to learn from (e.g. your training images; "
                   "default: the calibration set).")
@click.option("--int8-steps", type=click.IntRange(0), help=f"--int8-method distil: training steps per member (default {DISTIL_STEPS}).")
@click.option("--int8-lr", type=click.FloatRange(0, min_open=True), help=f"--int8-method distil: learning rate (default {DISTIL_LR:g}).")
@click.option("--int8-batch", type=click.IntRange(2), help=f"--int8-method distil: images per step (default {DISTIL_BATCH}).")
@click.option("--int8-keep-fp32", type=click.Choice(INT8_KEEP_FP32),
              help="What the INT8 graph leaves in fp32 besides its first convolution and the neck. depthwise (the default "
                   "for ptq): the depthwise convolutions, whose post-training INT8 moves an EfficientNet-class member's "
                   "rankings most; OpenVINO runs that graph faster than the all-INT8 one, onnxruntime about as fast as "
                   "fp32. none (the default for distil): everything INT8; distillation learns around it, and depthwise "
                   "there means far fewer steps (a CPU can do it) at some of INT8's speed.")
@click.option("--int8-cache", type=click.Path(file_okay=False, path_type=Path),
              help="--int8-method distil: keep each finished INT8 twin here and reuse it when the member, recipe and images "
                   "are unchanged, so a re-run after a gate failure or an interruption trains only what is missing.")
@click.option("--int8-scheme", default=D.int8_scheme, type=click.Choice(list(INT8_SCHEMES)),
              help="INT8 weight levels. w7a8 (7-bit weights) runs on any CPU. w8a8 (8-bit weights) is more faithful but "
                   "needs a CPU with VNNI (AVX-512 VNNI, AVX-VNNI, AMX) to export and to run: without it INT8 products "
                   "saturate, so reid export refuses it there and reid infer refuses to run it there.")
@click.option("--int8-min-cosine", type=click.FloatRange(0, 1, min_open=True),
              help="The INT8 gate's threshold: the worst parity image's cosine to PyTorch fp32 (default: the stated tolerance). "
                   "Lower it only after checking the INT8 rankings against fp32 on your own photos (or let --int8-labels judge "
                   "them); the manifest records it.")
@click.option("--int8-labels", metavar="DATA",
              help="Labelled photos (a folder per individual, a metadata CSV or COCO JSON naming individuals, or orl:FIRST-LAST) "
                   "on which the INT8 gate judges rankings instead of cosine: each photo queries all the others, once with "
                   "fp32 and once with INT8, and INT8 must keep the true matches in fp32's top-20 lists and its mAP@20 "
                   "(thresholds in the manifest). Near-tied neighbours may swap freely: that costs a reviewer nothing. "
                   "Use photos like yours that no model trained on; a failure exits 1 and writes no bundle.")
@click.option("--device", default=D.device, help="Where INT8 distillation trains and what --aoti compiles for: auto (the GPU if "
                                                   "torch sees one), cpu, cuda.")
@click.option("--trt", is_flag=True, help="Build FP16 TensorRT engines (needs TensorRT and an NVIDIA GPU).")
@click.option("--mnn", is_flag=True, help="Also convert each member to MNN, a fast fp32 CPU engine "
                                         "(reid infer --backend mnn; checked by the parity gate; pip install 'reidkit[mnn]').")
@click.option("--aoti", is_flag=True,
              help="Also compile each member ahead of time with PyTorch's AOTInductor for this machine's GPU (or its CPU with "
                   "--device cpu), fp16 too with --fp16 on a GPU: the GPU engine that needs only torch (reid infer --backend "
                   "aoti-cuda). A package runs only on the GPU model (or CPU) and torch version it was compiled for; checked by "
                   "the parity gate. Minutes per member; needs a C++ compiler.")
@click.option("--aoti-batch", default=D.aoti_batch, type=click.IntRange(1),
              help="The compiled packages' one batch size: reid infer pads a short batch up to it and slices a longer one, so "
                   "the GPU sees one shape. Match reid infer's --batch-size.")
@click.option("--workspace-gb", default=D.workspace_gb, type=float, help="TensorRT builder workspace.")
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path), help="TensorRT timing cache to read and update.")
@click.option("--parity-images", type=click.Path(exists=True, path_type=Path),
              help="Your photos for the parity gate (up to 32) and the INT8 calibration (up to 128): a folder, or a metadata "
                   "CSV or COCO JSON whose boxes are cropped as in training; default: ORL faces + synthetic whales.")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle (only once the new one passed).")
@friendly()
def export_cmd(members: tuple[str, ...], out: Path, **kw: Any) -> None:
    """Export checkpoints (CKPT... or ENSEMBLE.toml) to a bundle that passed the parity gate.

    Each member's graph takes uint8 [N,H,W,3] RGB and returns an L2-normalised float32
    embedding, with /255, mean/std, layout, the flip and the L2 norm inside. A member that
    drifts from PyTorch beyond the tolerances fails the export (exit 1) and no bundle is left.

    \b
    Example:
      reid export models/ensemble.toml -o bundle/ --fp16 --mnn
    """
    from reidkit.ensemble import resolve_members
    from reidkit.errors import ParityError
    from reidkit.export.bundle import export_bundle

    opts = ExportOptions(**kw)
    try:
        manifest = export_bundle(resolve_members(members), out, opts)
    except ParityError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"bundle written to {out} ({len(manifest['members'])} members, flip={opts.flip})")
