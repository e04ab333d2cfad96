"""A member's timm backbone, built for the member's input size, and the sizes it cannot take.

Backbones with position embeddings or attention windows (ViT, Swin, MaxViT, CoAtNet, ...) are
built for one input size. Fed another, a ViT resamples its position embedding on every
forward (an operator ONNX cannot export) and a windowed model fails on a window that does
not divide its feature map. So the backbone is built with ``img_size=(H, W)`` whenever its
timm class takes that argument, and whether a size works is judged by the model itself: a
dry forward of one zero image on the ``meta`` device (shapes only, no weights, no arithmetic),
never by a table of model names.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import torch
from torch import nn

from reidkit.errors import ReidkitError

Size = tuple[int, int]


def create_backbone(name: str, size: Sequence[int], out_indices: tuple[int, ...], *, pretrained: bool = False,
                    sized: bool = True) -> tuple[nn.Module, dict[str, Any]]:
    """The ``features_only`` backbone and the size arguments it was built with (``{}`` when its
    class takes none: convolutional networks, which run at any size as built)."""
    import timm

    kw: dict[str, Any] = {"features_only": True, "out_indices": out_indices, "pretrained": pretrained}
    try:
        if sized:
            size_kw: dict[str, Any] = {"img_size": (int(size[0]), int(size[1]))}
            try:
                return timm.create_model(name, **kw, **size_kw), size_kw
            except TypeError as exc:  # the model's class has no img_size argument
                if "img_size" not in str(exc):
                    raise
        return timm.create_model(name, **kw), {}
    except RuntimeError as exc:
        if "Unknown model" in str(exc):
            raise ReidkitError(f"unknown timm backbone {name!r}; list them with "
                               "`python -c 'import timm; print(timm.list_models())'`") from None
        raise


def channels_last(backbone: nn.Module) -> bool:
    """Whether the backbone's feature maps are NHWC (Swin, MambaOut, ...), by timm's own account of them."""
    from timm.layers import Format

    fmt = Format(getattr(backbone, "output_fmt", Format.NCHW))
    if fmt not in (Format.NCHW, Format.NHWC):
        raise ReidkitError(f"the backbone's features are {fmt.value} token sequences, not feature maps; pick another --backbone")
    return fmt is Format.NHWC


def _why_not(name: str, size: Size, out_indices: tuple[int, ...], device: str) -> str | None:
    """None when the backbone built at ``size`` turns one zero image into non-empty feature maps;
    else the reason, as the model's own error states it (first line)."""
    try:
        with torch.device(device):
            net, _ = create_backbone(name, size, out_indices)
            net.eval()
            with torch.no_grad():
                feats = net(torch.zeros(1, 3, *size))
    except ReidkitError:
        raise
    except Exception as exc:  # timm models refuse a size with AssertionError, RuntimeError, ValueError, ...
        lines = str(exc).strip().splitlines()
        return lines[0][:200].rstrip(".") if lines else type(exc).__name__
    if any(min(f.shape) == 0 for f in feats):
        return "its feature maps come out empty; the image is too small"
    return None


def _stride(name: str, out_indices: tuple[int, ...]) -> int:
    """The backbone's total reduction (timm's feature_info): valid sizes cluster on its multiples."""
    try:
        with torch.device("meta"):
            net, _ = create_backbone(name, (224, 224), out_indices, sized=False)
        return max(int(r) for r in net.feature_info.reduction())  # type: ignore[union-attr, operator]
    except ReidkitError:
        raise
    except Exception:  # a model that cannot even be built at its default size: search on a plain grid
        return 32


def nearest_sizes(name: str, size: Size, out_indices: tuple[int, ...], want: int = 3, budget: int = 40) -> list[Size]:
    """Up to ``want`` sizes the backbone takes, nearest to ``size`` first, among multiples of its stride."""
    step = _stride(name, out_indices)
    h, w = size

    def around(x: int) -> list[int]:
        k = max(1, x // step)
        return [m * step for m in range(max(1, k - 3), k + 5)]

    cands = sorted(((a, b) for a in around(h) for b in around(w) if (a, b) != (h, w)),
                   key=lambda s: (math.hypot(s[0] - h, s[1] - w), s))
    found: list[Size] = []
    for cand in cands[:budget]:
        if _why_not(name, cand, out_indices, "meta") is None:
            found.append(cand)
            if len(found) == want:
                break
    return found


def check_input_size(name: str, size: Sequence[int], out_indices: tuple[int, ...]) -> None:
    """Raise ReidkitError, naming the nearest sizes that work, when ``name`` cannot take ``size``.

    The meta-device forward costs well under a second even for a Swin; a size it refuses is
    confirmed by a real forward on the CPU (whose message is also the clearer one), so an
    operator the meta device lacks can never refuse a good size.
    """
    hw: Size = (int(size[0]), int(size[1]))
    if min(hw) < 1:
        raise ReidkitError(f"--image-size {hw[0]}x{hw[1]}: height and width must be positive")
    if _why_not(name, hw, out_indices, "meta") is None:
        return
    why = _why_not(name, hw, out_indices, "cpu")
    if why is None:
        return
    near = nearest_sizes(name, hw, out_indices)
    hint = (f"nearest sizes it takes: {', '.join(f'{a}x{b}' for a, b in near)}" if near
            else "no size near it works either; pick another --backbone")
    raise ReidkitError(f"--backbone {name} cannot take --image-size {hw[0]}x{hw[1]} ({why}); {hint}")
