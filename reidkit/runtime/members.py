"""Running a bundle's members on resized batches and fusing their outputs.

The one copy of run -> fuse, below both the embedder and the engine chooser (which times
candidate engines on the bundle's own members), so neither needs the other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping, Sequence

import numpy as np
from PIL import Image

from reidkit.imaging import ResizePolicy, resize_to
from reidkit.runtime.backends.registry import Backend
from reidkit.vectors import l2_normalise

if TYPE_CHECKING:
    from reidkit.runtime.bundle import Bundle

SizeKey = tuple[int, int, ResizePolicy]


def fuse(parts: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Weighted concatenation of unit-norm member embeddings, then L2 normalisation."""
    x = np.concatenate([p.astype(np.float32) * np.float32(w) for p, w in zip(parts, weights)], axis=1)
    return l2_normalise(x)


def run_members(bundle: Bundle, backends: Sequence[Backend], stacks: Mapping[SizeKey, np.ndarray]) -> np.ndarray:
    """Resized uint8 batches (one per distinct member input) -> fused embeddings.

    An engine that can launch asynchronously (``submit``, the GPU engines) gets every member
    launched before any result is awaited, so the GPU never waits for the host between members.
    """
    pending = [be.submit(stacks[m.size_key]) if hasattr(be, "submit") else None for m, be in zip(bundle.members, backends)]
    parts = [wait() if wait is not None else be.run(stacks[m.size_key]) for m, be, wait in zip(bundle.members, backends, pending)]
    return fuse(parts, [m.weight for m in bundle.members])


def input_sizes(bundle: Bundle) -> list[SizeKey]:
    """The distinct host resizes a bundle needs: each image is resized once per entry."""
    return sorted({m.size_key for m in bundle.members}, key=repr)


def resize_stacks(sizes: Sequence[SizeKey], images: Sequence[Image.Image]) -> dict[SizeKey, np.ndarray]:
    """Decoded RGB images -> one resized uint8 stack per member input size."""
    return {s: np.stack([resize_to(im, s[0], s[1], s[2]) for im in images]) for s in sizes}
