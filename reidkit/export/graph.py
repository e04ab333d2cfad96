"""The exported graph: uint8 NHWC images in, fused L2-normalised embedding out.

The flipped copy is stacked into the same batch as the original, so flip-augmentation
costs no second pass, and the member's own L2 normalisation is in the graph, so the host
never does float work.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from reidkit.train.model import EmbeddingModel

FLIP_MODES = ("mean", "concat", "none")


class ExportGraph(nn.Module):
    def __init__(self, model: EmbeddingModel, flip: str = "mean") -> None:
        super().__init__()
        if flip not in FLIP_MODES:
            raise ValueError(f"unknown flip fusion {flip!r}; use one of {FLIP_MODES}")
        self.preprocess = model.preprocess
        self.net = model.net
        self.flip = flip

    @property
    def output_dim(self) -> int:
        d = self.net.cfg.embedding_dim
        return 2 * d if self.flip == "concat" else d

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images)
        if self.flip == "none":
            return F.normalize(self.net(x), dim=1)
        e = F.normalize(self.net(torch.cat([x, x.flip(3)], dim=0)), dim=1)
        pair = e.reshape(2, -1, self.net.cfg.embedding_dim)
        if self.flip == "mean":
            fused = pair[0] + pair[1]
        else:
            fused = torch.cat([pair[0], pair[1]], dim=1)
        return F.normalize(fused, dim=1)
