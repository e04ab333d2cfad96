"""Training dataset: decode once, augment in PIL, then the shared host resize.

Augmentations suit re-ID photos: a random resized crop within limits, colour jitter and
small rotations. Horizontal flip only when asked: the runtime fuses each image with its
mirror, and a model trained flip-invariant can't use chirality (left vs right flank).
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from typing import Sequence

import torch
from PIL import Image, ImageEnhance

from reidkit.data.samples import Sample
from reidkit.data.folders import warn_skipped
from reidkit.errors import ReidkitError
from reidkit.imaging import ImageDecodeError, ResizePolicy, load_crops, resize_to

log = logging.getLogger("reidkit")


@dataclass
class AugmentConfig:
    crop_scale: tuple[float, float] = (0.75, 1.0)
    crop_ratio: tuple[float, float] = (0.85, 1.15)  # relative to the image's own aspect
    rotation: float = 10.0
    brightness: float = 0.3
    contrast: float = 0.3
    saturation: float = 0.2
    hflip: bool = False


def decode_all(samples: Sequence[Sample], min_hw: tuple[int, int] | None = None) -> tuple[list[Sample], list[Image.Image]]:
    """Decode every sample once, as the runtime will (``min_hw``: the member's
    ``ResizePolicy.decode_floor``); unreadable files are skipped with one warning listing them.
    Held in memory for all epochs, a camera frame's crop costs kilobytes at the reduced scale
    rather than the megabytes of its full-resolution pixels."""
    kept, images, bad = [], [], []
    # cropped to the subject when the data has a box; a photo's boxes decoded together
    for s, img in zip(samples, load_crops([s.ref for s in samples], min_hw)):
        if isinstance(img, ImageDecodeError):
            bad.append(f"{img.path} ({img.reason})")
            continue
        kept.append(s)
        images.append(img)
    warn_skipped(bad, "unreadable images")  # type: ignore[arg-type]
    if not kept:
        raise ReidkitError("the data set is empty: no readable images")
    return kept, images


class ReidDataset(torch.utils.data.Dataset):
    def __init__(self, images: Sequence[Image.Image], labels: Sequence[int], size: tuple[int, int], policy: ResizePolicy,
                 augment: AugmentConfig | None) -> None:
        self.images, self.labels, self.size, self.policy, self.aug = images, list(labels), size, policy, augment

    def __len__(self) -> int:
        return len(self.images)

    def _augment(self, img: Image.Image, rng: random.Random) -> Image.Image:
        a = self.aug
        assert a is not None
        w, h = img.size
        for _ in range(10):
            area = w * h * rng.uniform(*a.crop_scale)
            ratio = (w / h) * rng.uniform(*a.crop_ratio)
            cw, ch = int(round((area * ratio) ** 0.5)), int(round((area / ratio) ** 0.5))
            if 0 < cw <= w and 0 < ch <= h:
                x, y = rng.randint(0, w - cw), rng.randint(0, h - ch)
                img = img.crop((x, y, x + cw, y + ch))
                break
        if a.rotation:
            img = img.rotate(rng.uniform(-a.rotation, a.rotation), resample=Image.Resampling.BILINEAR)
        for enh, amount in ((ImageEnhance.Brightness, a.brightness), (ImageEnhance.Contrast, a.contrast), (ImageEnhance.Color, a.saturation)):
            if amount:
                img = enh(img).enhance(rng.uniform(1 - amount, 1 + amount))
        if a.hflip and rng.random() < 0.5:
            img = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        return img

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        img = self.images[i]
        if self.aug is not None:
            img = self._augment(img, random.Random(torch.randint(0, 2**31, ()).item()))
        arr = resize_to(img, self.size[0], self.size[1], self.policy)
        return torch.from_numpy(arr.copy()), self.labels[i]
