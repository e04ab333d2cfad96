"""Thumbnails for the review page: each source image decoded and resized once.

A 2,000-query page with top-5 shows 12,000 pictures; originals (a 344x1805 lateral whale
view, a 12 MP camera frame) would make it crawl. Each distinct image becomes one small
JPEG, with EXIF orientation applied by :func:`reidkit.imaging.load_rgb`, the decoder the
model itself sees: a photo with a box (:class:`~reidkit.imaging.ImageRef`) shows the subject
the model ranked, not the whole frame, and a large JPEG is decoded at a DCT reduction that
still covers the thumbnail. Names derive from the file's path, size and mtime and the box, so
rebuilding the page over the same folder reuses finished thumbnails and remakes changed ones.
"""

from __future__ import annotations

import hashlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from PIL import Image

from reidkit.atomic import atomic_path
from reidkit.cpus import usable_cpus
from reidkit.imaging import ImageDecodeError, ImageRef, load_rgb
from reidkit.progress import progress_bar

#: Thumbnails fit in (ASPECT * height) x height: wide lateral views stay readable, tall top
#: views stay narrow.
ASPECT = 2.5
QUALITY = 80


@dataclass(frozen=True)
class Thumb:
    name: str | None  # file name under the thumbnail folder; None when the source is unusable
    width: int = 0
    height: int = 0
    error: str = ""


Source = Path | ImageRef  # a whole photo, or the subject in a box on it


def _name(src: Source, height: int) -> str:
    path, box = (src.path, src.bbox) if isinstance(src, ImageRef) else (Path(src), None)
    st = path.stat()
    key = f"{path.resolve()}|{st.st_size}|{st.st_mtime_ns}|{height}|{QUALITY}" + (f"|{box}" if box is not None else "")
    return hashlib.sha1(key.encode("utf-8", "surrogateescape")).hexdigest()[:20] + ".jpg"


def _make(src: Source, folder: Path, height: int) -> Thumb:
    try:
        name = _name(src, height)
    except OSError as exc:
        return Thumb(None, error=f"cannot read file ({exc.strerror or exc})")
    dst = folder / name
    if dst.exists():
        try:
            with Image.open(dst) as im:
                return Thumb(name, *im.size)
        except OSError:
            pass  # a damaged earlier thumbnail: make it again
    try:
        img = load_rgb(src, min_hw=(height, height))
    except ImageDecodeError as exc:
        return Thumb(None, error=exc.reason)
    img.thumbnail((max(1, round(ASPECT * height)), height), Image.Resampling.LANCZOS)
    with atomic_path(dst) as tmp:
        img.save(tmp, "JPEG", quality=QUALITY, optimize=True)
    return Thumb(name, *img.size)


def make_thumbnails(sources: Iterable[Source], folder: Path, height: int = 160, workers: int | None = None,
                    progress: bool = True, prune: bool = True) -> dict[Source, Thumb]:
    """One thumbnail per distinct source (keyed by the path or box as given). Unreadable images get a
    ``Thumb`` with the reason instead of failing the page; with ``prune``, thumbnails in
    ``folder`` that no source uses any more are removed."""
    unique = list(dict.fromkeys(sources))
    folder.mkdir(parents=True, exist_ok=True)
    workers = workers or min(8, usable_cpus())
    with ThreadPoolExecutor(workers) as pool:  # PIL decodes and resizes without the GIL
        thumbs = list(progress_bar(pool.map(lambda p: _make(p, folder, height), unique), enabled=progress,
                                   total=len(unique), desc="thumbnails", unit="img"))
    out = dict(zip(unique, thumbs))
    if prune:
        used = {t.name for t in thumbs if t.name}
        for f in folder.glob("*.jpg"):
            if f.name not in used:
                f.unlink(missing_ok=True)
    return out
