"""The ensemble member: a timm backbone, GeM pooling, optional multi-stage concat, a neck.

Built from a plain config dict (the checkpoint's metadata), so a checkpoint fully
describes how to rebuild its network with nothing else installed but timm.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from reidkit.train.backbone import channels_last, create_backbone
from reidkit.train.preprocess import IMAGENET_MEAN, IMAGENET_STD, Preprocess


@dataclass
class MemberConfig:
    backbone: str = "resnet18"
    input_size: tuple[int, int] = (112, 96)  # (H, W)
    embedding_dim: int = 256
    concat_stages: bool = False  # pool the last two stages and concatenate them
    gem_p: float = 3.0
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD
    resize: dict[str, Any] = field(default_factory=lambda: {"method": "stretch", "interpolation": "bilinear", "pad_value": 0})
    # build the backbone for input_size (timm's img_size) when its class takes one; checkpoints that
    # do not record this were built at the backbone's default size and are rebuilt that way
    sized_backbone: bool = True

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["input_size"] = list(self.input_size)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "MemberConfig":
        keys = cls.__dataclass_fields__.keys()
        kw = {k: d[k] for k in keys if k in d}
        for k in ("input_size", "mean", "std"):
            if k in kw:
                kw[k] = tuple(kw[k])
        kw.setdefault("sized_backbone", False)
        return cls(**kw)


class GeM(nn.Module):
    """Generalised-mean pooling with a learnable exponent (p=1 mean, p->inf max)."""

    def __init__(self, p: float = 3.0, eps: float = 1e-6) -> None:
        super().__init__()
        self.p = nn.Parameter(torch.tensor(float(p)))
        self.eps = eps

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.p.clamp(min=1.0)
        return x.clamp(min=self.eps).pow(p).mean(dim=(2, 3)).pow(1.0 / p)


def out_indices(concat_stages: bool) -> tuple[int, ...]:
    """The backbone stages the member pools: the last, or the last two with concat_stages."""
    return tuple(range(-2 if concat_stages else -1, 0))


class ReidNet(nn.Module):
    """Normalised float NCHW -> embedding (not yet L2-normalised)."""

    def __init__(self, cfg: MemberConfig, pretrained: bool = False, weights: str | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.backbone, size_kw = create_backbone(cfg.backbone, cfg.input_size, out_indices(cfg.concat_stages), pretrained=pretrained and not weights,
                                                 sized=cfg.sized_backbone)
        # Swin, MambaOut, ... give NHWC maps; pooling reads NCHW
        self.channels_last = channels_last(self.backbone)
        # what the checkpoint records about the starting weights (file name, sha256), if any
        self.weights_info: dict[str, Any] | None = None
        if weights:
            from reidkit.train.weights import load_backbone_weights

            self.weights_info = load_backbone_weights(self.backbone, cfg.backbone, weights, size_kw)
        chans = self.backbone.feature_info.channels()  # type: ignore[union-attr, operator]  # timm's FeatureListNet
        self.pools = nn.ModuleList([GeM(cfg.gem_p) for _ in chans])
        self.neck = nn.Sequential(nn.Linear(sum(chans), cfg.embedding_dim, bias=False), nn.BatchNorm1d(cfg.embedding_dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.backbone(x)
        if self.channels_last:
            feats = [f.permute(0, 3, 1, 2) for f in feats]
        pooled = torch.cat([pool(f) for pool, f in zip(self.pools, feats)], dim=1)
        return self.neck(pooled)


class EmbeddingModel(nn.Module):
    """uint8 NHWC images -> L2-normalised embeddings: what a member computes end to end."""

    def __init__(self, net: ReidNet) -> None:
        super().__init__()
        self.preprocess = Preprocess(net.cfg.mean, net.cfg.std)
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.net(self.preprocess(images)), dim=1)
