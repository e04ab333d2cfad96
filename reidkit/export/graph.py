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
# Where the exported graph must compute in fp32, by the ONNX node names that the module tree
# gives at export (``/<attribute>/...``): the uint8 cast and mean/std (cheap, and exact in
# fp32), GeM pooling (x^p overflows fp16's 65504) and the L2 normalisations with the flip
# fusion between them (fp16 would lose the norm's last digits). The FP16 conversion keeps
# these and nothing else in fp32, so the backbone (ReLU6 clips included) runs in fp16 with
# a cast only where the two meet.
FP32_SCOPES = ("/preprocess/", "/net/pools.", "/fuse/")


class ExportGraph(nn.Module):
    def __init__(self, model: EmbeddingModel, flip: str = "mean") -> None:
        super().__init__()
        if flip not in FLIP_MODES:
            raise ValueError(f"unknown flip fusion {flip!r}; use one of {FLIP_MODES}")
        self.preprocess = model.preprocess
        self.net = model.net
        self.flip = flip
        self.fuse = FlipFusion(flip, model.net.cfg.embedding_dim)

    @property
    def output_dim(self) -> int:
        d = self.net.cfg.embedding_dim
        return 2 * d if self.flip == "concat" else d

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.preprocess(images)
        if self.flip != "none":
            x = torch.cat([x, x.flip(3)], dim=0)
        return self.fuse(self.net(x))


class FlipFusion(nn.Module):
    """Per-image L2 normalisation, then the flipped pair fused and normalised again.

    A module of its own so that its exported nodes are named ``/fuse/...`` (see FP32_SCOPES).
    """

    def __init__(self, flip: str, dim: int) -> None:
        super().__init__()
        self.flip = flip
        self.dim = dim

    def forward(self, e: torch.Tensor) -> torch.Tensor:
        e = F.normalize(e, dim=1)
        if self.flip == "none":
            return e
        pair = e.reshape(2, -1, self.dim)
        if self.flip == "mean":
            fused = pair[0] + pair[1]
        else:
            fused = torch.cat([pair[0], pair[1]], dim=1)
        return F.normalize(fused, dim=1)
