"""Margin heads: sub-center ArcFace with per-class dynamic margins, ArcFace and CosFace.

Written here rather than taken from pytorch-metric-learning: PML's SubCenterArcFaceLoss
has one fixed margin for all classes and fuses head and loss, while the 2nd-place
Where's Whale-do recipe needs per-class margins m_j = a * n_j^lambda + b and a focal loss
on the margin logits. The head only produces logits; the loss is chosen separately.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Sequence

import torch
import torch.nn.functional as F
from torch import nn


@dataclass
class HeadConfig:
    kind: str = "subcenter_arcface"  # subcenter_arcface | arcface | cosface
    s: float = 21.0
    k: int = 2  # sub-centres per class (subcenter_arcface only)
    margin: float = 0.3  # fixed margin for arcface/cosface
    dynamic_a: float = 0.5
    dynamic_lambda: float = -0.125
    dynamic_b: float = 0.05

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def dynamic_margins(class_counts: Sequence[int], a: float, lam: float, b: float) -> torch.Tensor:
    """m_j = a * n_j^lambda + b: rare identities get larger margins."""
    n = torch.tensor(class_counts, dtype=torch.float32).clamp(min=1)
    return a * n.pow(lam) + b


class MarginHead(nn.Module):
    def __init__(self, cfg: HeadConfig, embedding_dim: int, class_counts: Sequence[int]) -> None:
        super().__init__()
        if cfg.kind not in ("subcenter_arcface", "arcface", "cosface"):
            raise ValueError(f"unknown head {cfg.kind!r}; use subcenter_arcface, arcface or cosface")
        self.cfg = cfg
        self.n_classes = len(class_counts)
        self.k = cfg.k if cfg.kind == "subcenter_arcface" else 1
        self.weight = nn.Parameter(torch.empty(self.n_classes * self.k, embedding_dim))
        nn.init.xavier_uniform_(self.weight)
        if cfg.kind == "subcenter_arcface":
            m = dynamic_margins(class_counts, cfg.dynamic_a, cfg.dynamic_lambda, cfg.dynamic_b)
        else:
            m = torch.full((self.n_classes,), cfg.margin)
        self.register_buffer("margins", m)

    def cosine(self, emb: torch.Tensor) -> torch.Tensor:
        cos = F.linear(F.normalize(emb, dim=1), F.normalize(self.weight, dim=1))
        if self.k > 1:
            cos = cos.view(-1, self.n_classes, self.k).amax(dim=2)
        return cos

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Scaled logits with the target class's margin applied.

        Always float32, autocast or not: a margin of a few hundredths on cosines near 1 is lost
        in fp16, and under CUDA autocast the linear layer would hand back fp16 cosines that the
        float32 margins cannot be scattered into (found on an H100, 2026-11-23)."""
        with torch.autocast(emb.device.type, enabled=False):
            return self._logits(emb.float(), labels)

    def _logits(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        cos = self.cosine(emb).clamp(-1 + 1e-7, 1 - 1e-7)
        m = self.margins[labels]  # type: ignore[index]  # a registered buffer (Tensor), typed by nn.Module as Tensor | Module
        target = cos.gather(1, labels[:, None]).squeeze(1)
        if self.cfg.kind == "cosface":
            adjusted = target - m
        else:
            sin = torch.sqrt(1.0 - target * target)
            phi = target * torch.cos(m) - sin * torch.sin(m)
            # keep the logit monotonic in theta past pi - m (the usual ArcFace fallback)
            th, mm = torch.cos(math.pi - m), torch.sin(math.pi - m) * m
            adjusted = torch.where(target > th, phi, target - mm)
        logits = cos.scatter(1, labels[:, None], adjusted[:, None])
        return logits * self.cfg.s
