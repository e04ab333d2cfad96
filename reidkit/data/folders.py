"""Folder-per-identity trees: ``root/<identity>/<any depth>/<image>``."""

from __future__ import annotations

import logging
from pathlib import Path

from reidkit.data.samples import Sample
from reidkit.errors import ReidkitError
from reidkit.imaging import is_image_path

log = logging.getLogger("reidkit")


def list_images(root: Path) -> tuple[list[Path], list[Path]]:
    """All image files under ``root`` (sorted) and the non-image files that were skipped."""
    root = Path(root)
    if not root.exists():
        raise ReidkitError(f"{root} does not exist; pass a folder of images")
    if not root.is_dir():
        raise ReidkitError(f"{root} is not a folder; pass a folder of images")
    images: list[Path] = []
    skipped: list[Path] = []
    for p in sorted(root.rglob("*")):
        if p.is_dir() or any(part.startswith(".") for part in p.relative_to(root).parts):
            continue
        (images if is_image_path(p) else skipped).append(p)
    return images, skipped


def warn_skipped(skipped: list[Path], why: str) -> None:
    """One warning that lists every skipped file, not one line per file."""
    if skipped:
        shown = ", ".join(str(p) for p in skipped[:20])
        more = f" and {len(skipped) - 20} more" if len(skipped) > 20 else ""
        log.warning("skipped %d %s: %s%s", len(skipped), why, shown, more)


def read_identity_folders(root: str | Path) -> list[Sample]:
    """Samples from ``root/<identity>/...``; identity is the first folder below root."""
    root = Path(root)
    images, skipped = list_images(root)
    samples: list[Sample] = []
    loose: list[Path] = []
    for p in images:
        rel = p.relative_to(root)
        if len(rel.parts) < 2:
            loose.append(p)
            continue
        samples.append(Sample(path=p, identity=rel.parts[0], image_id=rel.as_posix()))
    warn_skipped(skipped, "non-image files")
    warn_skipped(loose, "images directly in the root (no identity folder)")
    if not samples:
        raise ReidkitError(f"no images found in identity folders under {root}; expected {root}/<identity>/<image>.jpg")
    return samples
