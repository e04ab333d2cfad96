"""The in-graph preprocessing: uint8 NHWC RGB -> normalised float NCHW.

The same module runs in training and inside the exported ONNX graph, so the host never does
float preprocessing and there is no second copy to drift. (The resize, which must happen
on the host, lives in :mod:`reidkit.imaging`.)
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


class Preprocess(nn.Module):
    def __init__(self, mean: Sequence[float] = IMAGENET_MEAN, std: Sequence[float] = IMAGENET_STD) -> None:
        super().__init__()
        # fold /255 into the constants: x*scale + shift == (x/255 - mean)/std
        m = torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1)
        s = torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1)
        self.register_buffer("scale", 1.0 / (255.0 * s), persistent=False)
        self.register_buffer("shift", -m / s, persistent=False)

    scale: torch.Tensor
    shift: torch.Tensor

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.permute(0, 3, 1, 2).to(self.scale.dtype)
        return x * self.scale + self.shift
