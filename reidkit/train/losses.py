"""Classification losses on the margin logits: cross-entropy or focal, with label smoothing."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def margin_loss(logits: torch.Tensor, labels: torch.Tensor, kind: str = "ce", gamma: float = 2.0,
                label_smoothing: float = 0.0) -> torch.Tensor:
    ce = F.cross_entropy(logits, labels, reduction="none", label_smoothing=label_smoothing)
    if kind == "ce":
        return ce.mean()
    if kind == "focal":
        # p_t from the unsmoothed target: focal weight depends on how well the true class is fit
        pt = torch.exp(-F.cross_entropy(logits, labels, reduction="none"))
        return ((1.0 - pt).pow(gamma) * ce).mean()
    raise ValueError(f"unknown loss {kind!r}; use ce or focal")
