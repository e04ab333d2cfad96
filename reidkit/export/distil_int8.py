"""INT8 by quantisation-aware distillation: the member's INT8 twin learns to reproduce it.

Why it exists: post-training quantisation (onnxruntime static QDQ, NNCF, with bias
correction or with the sensitive layers kept fp32) does not reach the INT8 gate on
fine-tuned EfficientNet-Lite members (``research/int8-lite0/``): the identity
signal is a small part of the backbone's features, and uniform INT8 noise is as large.
Here a fake-quantised copy of the member is fine-tuned for a few hundred steps so that its
embedding matches the fp32 member's (cosine), on unlabelled images. The fp32 member is not
changed, no labels are needed, and the result is judged by the same parity gate.

Written on torch's own fake-quant ops (``torch.fake_quantize_per_*_affine``: straight-through
gradients, and the exporter writes them as ONNX QuantizeLinear/DequantizeLinear, the QDQ
form onnxruntime and OpenVINO run in INT8). NNCF's PyTorch QAT was tried first: its
symmetric quantiser's backward returned NaN on these members, and a step took 2.4x longer.

Choices, each measured on a fine-tuned Lite0 member (``research/int8-lite0/``):
- BatchNorm is folded into the convolutions before quantising (torch's
  ``fuse_conv_bn_weights``), so the INT8 weights are the ones the engine runs. Unfolded,
  OpenVINO folds BN into the weights after their dequantisation and the cosine fell to 0.17.
- Weights per output channel, symmetric, in an int8 container with the levels of the
  export's ``--int8-scheme`` (``bundle_format.INT8_SCHEMES``): 7-bit (+-63) by default, as CPUs
  without VNNI multiply u8 x s8 pairs into saturating int16. With 8-bit levels PyTorch's
  simulation kept 0.90 but onnxruntime on AVX2 gave 0.76; with 7 the engines match it.
  On a CPU with VNNI (or a GPU) 8-bit levels (w8a8) run as simulated and start closer.
- Activations per tensor, uint8, at every backbone convolution's input; ranges are the
  min/max over the images, then fixed.
- Only the backbone's convolutions: GeM, the neck, the flip fusion and the L2 norms stay
  fp32, as in ``quantize.py``; so does BatchNorm's running statistics (the student runs in
  eval mode and only weights and biases move).
"""

from __future__ import annotations

import copy
import logging
import math
from typing import Any, cast

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from reidkit.errors import ReidkitError
from reidkit.export.graph import ExportGraph
from reidkit.progress import progress_bar
from reidkit.runtime.bundle_format import DEFAULT_INT8_SCHEME, INT8_SCHEMES

from reidkit.export.options import DISTIL_BATCH as DEFAULT_BATCH
from reidkit.export.options import DISTIL_LR as DEFAULT_LR
from reidkit.export.options import DISTIL_STEPS as DEFAULT_STEPS

log = logging.getLogger("reidkit")


def fold_batchnorm(root: nn.Module) -> int:
    """Fold every BatchNorm2d that directly follows a Conv2d (same parent, registration order)
    into that convolution; the BN's activation (timm's BatchNormAct2d) is kept. Returns how many.

    The caller checks the folded network against the original, so a model whose registration
    order is not its execution order is caught rather than silently mis-folded.
    """
    from torch.nn.utils.fusion import fuse_conv_bn_weights

    n = 0
    for parent in list(root.modules()):
        kids = list(parent.named_children())
        for (_, conv), (bn_name, bn) in zip(kids, kids[1:]):
            if isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.running_mean is not None:
                assert bn.running_var is not None
                w, b = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps, bn.weight, bn.bias)
                conv.weight, conv.bias = w, b
                tail = [m for m in (getattr(bn, "drop", None), getattr(bn, "act", None)) if isinstance(m, nn.Module)]
                setattr(parent, bn_name, nn.Sequential(*tail))
                n += 1
    return n


class WeightFakeQuant(nn.Module):
    """Parametrisation of a conv weight: per-output-channel symmetric INT8 (``levels``: 63 or 127).

    The scale follows the weights while they train; ``freeze`` fixes it, so the exported
    graph holds constant scales (QuantizeLinear on a constant weight) that engines fold.
    """

    scale: torch.Tensor
    zero_point: torch.Tensor

    def __init__(self, levels: int) -> None:
        super().__init__()
        self.frozen = False
        self.levels = levels

    def _scale(self, w: torch.Tensor) -> torch.Tensor:
        return w.detach().abs().amax(dim=tuple(range(1, w.dim()))).clamp(min=1e-12) / self.levels

    def freeze(self, w: torch.Tensor) -> None:
        s = self._scale(w)
        self.register_buffer("scale", s)
        self.register_buffer("zero_point", torch.zeros_like(s, dtype=torch.int32))
        self.frozen = True

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        if self.frozen:
            s, zp = self.scale, self.zero_point
        else:
            s = self._scale(w)
            zp = torch.zeros_like(s, dtype=torch.int32)
        return torch.fake_quantize_per_channel_affine(w, s, zp, 0, -128, 127)


class ActivationFakeQuant(nn.Module):
    """Per-tensor uint8 fake quantisation of a convolution's input.

    Observes min/max until ``fix``; then, if ``learn``, the scale is trained with the weights
    (LSQ: Esser et al. 2020, torch's own learnable fake-quant op), so ranges set by rare
    outliers can tighten where that helps the embedding.
    """

    scale: torch.Tensor
    zero_point: torch.Tensor

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("zero_point", torch.tensor(0, dtype=torch.int32))
        self.scale = nn.Parameter(torch.ones(1), requires_grad=False)  # 1-d: the learnable op's shape
        self.lo = 0.0  # the range always holds 0, so zero is exact (padding, ReLU)
        self.hi = 0.0
        self.fixed = False
        self.learn = False

    def fix(self, learn: bool = False) -> None:
        s = max(self.hi - self.lo, 1e-8) / 255.0
        with torch.no_grad():
            self.scale.fill_(s)
        self.zero_point.fill_(int(round(-self.lo / s)))
        self.scale.requires_grad_(learn)
        self.fixed, self.learn = True, learn

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.fixed:
            self.lo = min(self.lo, float(x.min()))
            self.hi = max(self.hi, float(x.max()))
            return x
        if self.learn and torch.is_grad_enabled():
            grad_factor = 1.0 / math.sqrt(x[0].numel() * 255)
            return torch._fake_quantize_learnable_per_tensor_affine(x, self.scale, self.zero_point.float().reshape(1), 0, 255,
                                                                  grad_factor)
        scale = self.scale.detach() if self.scale.dim() == 0 else self.scale.detach().reshape(())
        return torch.fake_quantize_per_tensor_affine(x, scale, self.zero_point, 0, 255)

    def freeze(self) -> None:
        """The trained scale becomes a constant, as the exported graph needs it."""
        scale = self.scale.detach().clamp(min=1e-8).reshape(()).clone()
        del self.scale
        self.register_buffer("scale", scale)
        self.learn = False


def _quantise_input(conv: nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    return (cast(ActivationFakeQuant, conv.act_quant)(args[0]), *args[1:])


def is_depthwise(conv: nn.Conv2d) -> bool:
    return conv.groups > 1 and conv.groups == conv.in_channels


def fake_quantised(graph: ExportGraph, *, fp32_depthwise: bool = False,
                   weight_levels: int = INT8_SCHEMES[DEFAULT_INT8_SCHEME].weight_levels) -> tuple[ExportGraph, list[ActivationFakeQuant]]:
    """A copy of ``graph`` with BN folded and fake quantisers on every backbone convolution
    (but the depthwise ones, with ``fp32_depthwise``)."""
    student = copy.deepcopy(graph).eval()
    fold_batchnorm(student.net.backbone)
    acts: list[ActivationFakeQuant] = []
    for conv in student.net.backbone.modules():
        if isinstance(conv, nn.Conv2d) and not (fp32_depthwise and is_depthwise(conv)):
            parametrize.register_parametrization(conv, "weight", WeightFakeQuant(weight_levels))
            conv.act_quant = ActivationFakeQuant()
            conv.register_forward_pre_hook(_quantise_input)
            acts.append(conv.act_quant)
    if not acts:
        raise ReidkitError(f"{graph.net.cfg.backbone}: no convolutions to quantise")
    if fp32_depthwise and not any(isinstance(m, nn.Conv2d) and is_depthwise(m) for m in student.net.backbone.modules()):
        log.warning("%s has no depthwise convolution; keeping them fp32 changes nothing", graph.net.cfg.backbone)
    return student, acts


def _cosines(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a * b).sum(dim=1)  # both are L2-normalised by the graph


def distil_int8(graph: ExportGraph, images: np.ndarray, *, steps: int = DEFAULT_STEPS, lr: float = DEFAULT_LR,
                batch: int = DEFAULT_BATCH, device: str = "cpu", seed: int = 0, learn_ranges: bool = True,
                fp32_depthwise: bool = False, scheme: str = DEFAULT_INT8_SCHEME, progress: bool = True) -> ExportGraph:
    """The fake-quantised twin of ``graph`` trained to match its embeddings on ``images``
    (uint8 [N,H,W,3] at the member's input size); returned on the CPU, scales frozen."""
    if len(images) < 2:
        raise ReidkitError("INT8 distillation needs at least 2 images")
    teacher = graph.eval()
    folded = copy.deepcopy(graph).eval()
    fold_batchnorm(folded.net.backbone)
    probe = torch.from_numpy(images[: min(8, len(images))])
    with torch.no_grad():
        drift = float((1 - _cosines(folded(probe), teacher(probe))).max())
    if drift > 1e-4:
        raise ReidkitError(f"{graph.net.cfg.backbone}: folding BatchNorm changed the embedding (cosine off by {drift:.2g}); "
                           "this backbone's layers are not registered in execution order, so INT8 distillation cannot use it")
    if scheme not in INT8_SCHEMES:
        raise ReidkitError(f"unknown INT8 scheme {scheme!r}; use one of {', '.join(INT8_SCHEMES)}")
    student, acts = fake_quantised(graph, fp32_depthwise=fp32_depthwise, weight_levels=INT8_SCHEMES[scheme].weight_levels)
    student = student.to(device).eval()  # eval: BatchNorm statistics stay the member's
    with torch.no_grad():
        for i in range(0, len(images), batch):
            student(torch.from_numpy(images[i:i + batch]).to(device))
    for a in acts:
        a.fix(learn_ranges)
    targets = torch.empty(0)
    if steps > 0:  # the targets, once: a step then runs only the student
        teacher = copy.deepcopy(graph).to(device).eval()
        with torch.no_grad():
            targets = torch.cat([teacher(torch.from_numpy(images[i:i + batch]).to(device)) for i in range(0, len(images), batch)])
        del teacher
    params = [p for n, p in student.named_parameters() if p.requires_grad and not n.endswith(".p")]  # GeM's exponent stays
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(steps, 1))
    rng = np.random.default_rng(seed)
    n = min(batch, len(images))
    bar = progress_bar(range(steps), enabled=progress, desc=f"INT8 distillation ({graph.net.cfg.backbone})", unit="step")
    for _ in bar:
        pick = rng.choice(len(images), n, replace=False)
        x, target = torch.from_numpy(images[pick]).to(device), targets[torch.from_numpy(pick).to(device)]
        with torch.enable_grad():  # callers may hold no_grad; training needs the graph
            gap = 1 - _cosines(student(x), target)
            # the mean moves the bulk; the worst image is what the gate judges
            loss = gap.mean() + gap.max()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        bar.set_postfix(worst_cos=f"{1 - float(gap.max().detach()):.4f}")
    student = student.cpu().eval()
    for a in acts:
        a.freeze()
    for conv in student.net.backbone.modules():
        if isinstance(conv, nn.Conv2d) and parametrize.is_parametrized(conv, "weight"):
            weight = cast(Any, conv).parametrizations["weight"]  # torch's ParametrizationList
            weight[0].freeze(weight.original)
    return student
