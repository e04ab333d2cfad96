"""Image decoding and the host-side resize: the one copy of preprocessing on the host.

Training, the export parity gate and the runtime all call :func:`load_rgb` (or
:func:`decode_rgb`), which crops to the subject's bounding box when the data has one, and
:func:`resize_to`. A different interpolation between training and inference is the first
cause of "accuracy dropped after export" in every peer project, so the resize policy is
stored in each checkpoint and manifest and applied only here. Everything after the resize
(cast, /255, mean/std, layout, flip) lives inside the model graph.

PIL and numpy only: this module is imported by the lean runtime.
"""

from __future__ import annotations

import io
import math
import os
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image, ImageFile, ImageOps

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".pgm", ".ppm", ".pnm", ".pbm", ".tif", ".tiff"})

#: Refuse images above this many pixels (decompression bombs). 100 MP covers any camera.
DEFAULT_MAX_PIXELS = 100_000_000

_INTERPOLATION = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
}


#: A JPEG is decoded at the largest DCT reduction that still leaves the crop this many times the
#: member's input: at 1x the resize from a barely-large-enough crop moved mAP@20 by 0.02 on camera
#: frames, at 2x by under 0.01 (benchmarks/results/camera-photos.md). Each member's
#: :class:`ResizePolicy` carries its own, so training, the export gate and the runtime agree.
DECODE_HEADROOM = 2

#: ``[x, y, w, h]`` in pixels of the image as displayed (EXIF orientation applied), floats allowed.
Box = tuple[float, float, float, float]

#: EXIF orientations that swap width and height when applied.
_TRANSPOSING = frozenset({5, 6, 7, 8})


@dataclass(frozen=True)
class ImageRef:
    """A photo file, or the subject inside ``bbox`` on it: what a data item hands to the
    decoder, so a field photo is embedded as its subject rather than as the whole frame."""

    path: Path
    bbox: Box | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "path", Path(self.path))
        if self.bbox is not None:
            object.__setattr__(self, "bbox", tuple(float(v) for v in self.bbox))

    def __str__(self) -> str:
        return str(self.path) if self.bbox is None else f"{self.path} bbox {format_box(self.bbox)}"


def format_box(box: Box) -> str:
    return "[" + ", ".join(f"{v:g}" for v in box) + "]"


class ImageDecodeError(Exception):
    """A file that cannot be used as an image; carries the path and a human reason."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


@dataclass(frozen=True)
class ResizePolicy:
    """How a decoded image becomes the member's HxW input.

    ``stretch`` ignores the aspect ratio (what the Where's Whale-do winners did with their
    tall top views); ``letterbox`` keeps it and pads with ``pad_value``. ``decode_headroom``
    is how large a JPEG's crop is decoded before the resize (see :data:`DECODE_HEADROOM`;
    0 decodes at full resolution).
    """

    method: str = "stretch"
    interpolation: str = "bilinear"
    pad_value: int = 0
    decode_headroom: int = DECODE_HEADROOM

    def __post_init__(self) -> None:
        if self.method not in ("stretch", "letterbox"):
            raise ValueError(f"unknown resize method {self.method!r}; use 'stretch' or 'letterbox'")
        if self.interpolation not in _INTERPOLATION:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; use one of {sorted(_INTERPOLATION)}")
        if not isinstance(self.decode_headroom, int) or isinstance(self.decode_headroom, bool) or self.decode_headroom < 0:
            raise ValueError(f"decode headroom {self.decode_headroom!r}: a whole number >= 0 (0 decodes at full resolution)")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ResizePolicy":
        return cls(**{k: d[k] for k in ("method", "interpolation", "pad_value", "decode_headroom") if k in d})

    def decode_floor(self, height: int, width: int) -> tuple[int, int] | None:
        """The smallest (height, width) a JPEG crop may be decoded at for this input; None: full size."""
        if self.decode_headroom == 0:
            return None
        return self.decode_headroom * height, self.decode_headroom * width


def decode_floor(inputs: "Iterable[tuple[int, int, ResizePolicy]]") -> tuple[int, int] | None:
    """The smallest decode that serves every member, since a file is decoded once for all of
    them: the largest of their floors (None, full resolution, when any member asks for it)."""
    floors = [policy.decode_floor(h, w) for h, w, policy in inputs]
    if not floors or any(f is None for f in floors):
        return None
    return max(f[0] for f in floors), max(f[1] for f in floors)  # type: ignore[index]


def is_image_path(path: str | Path) -> bool:
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode to 8-bit RGB, scaling high-bit-depth images instead of clipping them."""
    if img.mode == "RGB":
        return img
    if img.mode in ("I;16", "I;16B", "I;16L", "I;16N", "I", "F"):
        arr = np.asarray(img, dtype=np.float64)
        hi = 65535.0 if img.mode.startswith("I;16") or arr.max(initial=0) > 255 else 255.0
        arr8 = np.clip(np.round(arr * (255.0 / hi)), 0, 255).astype(np.uint8)
        return Image.fromarray(arr8, mode="L").convert("RGB")
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        img = img.convert("RGBA")
        background = Image.new("RGBA", img.size, (0, 0, 0, 255))
        return Image.alpha_composite(background, img).convert("RGB")
    return img.convert("RGB")


def decode_rgb(data: bytes, name: str | Path = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS, *, box: Box | None = None,
               min_hw: tuple[int, int] | None = None) -> Image.Image:
    """Decode encoded image bytes to an RGB PIL image with EXIF orientation applied.

    With ``box``, the result is the part inside it (clipped to the image; the box is in pixels
    of the image as displayed, so after the orientation is applied). With ``min_hw``, a JPEG
    is decoded at the largest DCT reduction (1/2, 1/4, 1/8) that still leaves the result at
    least that (height, width): a 12 MP frame resized to a 112x96 input does not need its
    full-resolution IDCT, which is most of its decode time. With both, the decoder also stops
    at the last row the box needs (the same pixels; see :func:`_stop_below`).

    Raises :class:`ImageDecodeError` with a readable reason for empty, truncated, non-image
    and oversized files and for boxes outside the image; never any other exception for bad data.
    """
    got = decode_crops(data, name, [box], max_pixels, min_hw=min_hw)[0]
    if isinstance(got, ImageDecodeError):
        raise got
    return got


def decode_crops(data: bytes, name: str | Path, boxes: Sequence[Box | None], max_pixels: int = DEFAULT_MAX_PIXELS, *,
                 min_hw: tuple[int, int] | None = None) -> list[Image.Image | ImageDecodeError]:
    """:func:`decode_rgb` for several boxes on one photo (a herd in a camera-trap frame), with
    one decode per DCT reduction the boxes need instead of one per box.

    Each result is the pixels :func:`decode_rgb` gives that box alone: the boxes that share a
    reduction share a decode that stops below the lowest of them, which changes no decoded row,
    and a shared decode that fails is retried box by box, so a box above a truncation still
    decodes as it would alone. A file that cannot be used gives every box its error."""
    if not data:
        return [ImageDecodeError(name, "empty file (0 bytes)")] * len(boxes)
    out: list[Image.Image | ImageDecodeError | None] = [None] * len(boxes)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise ImageDecodeError(name, f"{w}x{h} pixels exceeds the limit of {max_pixels} (possible decompression bomb)")
            if w < 1 or h < 1:
                raise ImageDecodeError(name, f"invalid size {w}x{h}")
            orientation = img.getexif().get(0x0112, 1)
            shown = (h, w) if orientation in _TRANSPOSING else (w, h)
            plans: dict[int, tuple[Image.Image, list[tuple[int, tuple[float, float, float, float], float]]]] = {}
            spare: Image.Image | None = img  # the opened file, not yet drafted: the first box's decoder
            for i, box in enumerate(boxes):
                region = clip_box(box, shown) if box is not None else (0, 0, shown[0], shown[1])
                if region is None:
                    out[i] = ImageDecodeError(name, f"box {format_box(box)} lies outside the {shown[0]}x{shown[1]} image")  # type: ignore[arg-type]
                    continue
                bottom = _stored_bottom(orientation, h, region) if box is not None else math.inf
                probe, spare = spare or Image.open(io.BytesIO(data)), None
                scale = _draft(probe, region, min_hw) if min_hw is not None else 1
                plans.setdefault(scale, (probe, []))[1].append((i, region, bottom))
            for scale, (im, group) in plans.items():
                try:
                    rgb = _decode_at(im, data, scale, max(b for _, _, b in group))
                except Exception as exc:
                    if len(group) == 1:
                        out[group[0][0]] = _decode_error(name, exc)
                        continue
                    for i, region, bottom in group:  # each box alone, so each gets its own outcome
                        one = Image.open(io.BytesIO(data))
                        if min_hw is not None:
                            _draft(one, region, min_hw)
                        try:
                            out[i] = _crop(_decode_at(one, data, scale, bottom), region, scale, boxes[i] is None)
                        except Exception as exc_i:
                            out[i] = _decode_error(name, exc_i)
                    continue
                for i, region, _ in group:
                    out[i] = _crop(rgb, region, scale, boxes[i] is None)
    except Exception as exc:  # the file itself: every box not yet refused gets its reason
        err = _decode_error(name, exc)
        return [err if got is None else got for got in out]
    return out  # type: ignore[return-value]  # every box has its outcome


def _decode_at(img: Image.Image, data: bytes, scale: int, bottom: float) -> Image.Image:
    """Load a (drafted) image as RGB with its orientation applied, stopping below ``bottom``."""
    rows = _stop_below(img, bottom, scale) if math.isfinite(bottom) else None
    _load(img, data, rows)
    # In place: without an Orientation tag exif_transpose would otherwise return a copy,
    # which measured 30% of the decode time of a 470x155 JPEG.
    ImageOps.exif_transpose(img, in_place=True)
    return to_rgb(img)


def _crop(rgb: Image.Image, region: tuple[float, float, float, float], scale: int, whole: bool) -> Image.Image:
    if whole:
        return rgb
    x0, y0, x1, y1 = region
    return rgb.crop((math.floor(x0 / scale), math.floor(y0 / scale),
                     min(rgb.width, math.ceil(x1 / scale)), min(rgb.height, math.ceil(y1 / scale))))


def _decode_error(name: str | Path, exc: BaseException) -> ImageDecodeError:
    """A decoder's exception as the readable reason a batch run reports; anything else is a bug."""
    if isinstance(exc, ImageDecodeError):
        return exc
    if isinstance(exc, Image.UnidentifiedImageError):
        return ImageDecodeError(name, "not a recognised image format")
    if isinstance(exc, (Image.DecompressionBombError, Image.DecompressionBombWarning)):
        return ImageDecodeError(name, f"refused as a decompression bomb ({exc})")
    if isinstance(exc, (OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError, KeyError, ZeroDivisionError)):
        msg = str(exc) or type(exc).__name__
        if "truncated" in msg.lower() or "broken data stream" in msg.lower():
            msg = f"truncated or corrupt image data ({msg})"
        return ImageDecodeError(name, msg)
    raise exc


def clip_box(box: Box, size: tuple[int, int]) -> tuple[float, float, float, float] | None:
    """``[x, y, w, h]`` clipped to a (width, height) image as (x0, y0, x1, y1), or None when
    nothing of it is left (a box wholly outside, or of zero area)."""
    x, y, bw, bh = box
    x0, y0 = max(0.0, x), max(0.0, y)
    x1, y1 = min(float(size[0]), x + bw), min(float(size[1]), y + bh)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    return x0, y0, x1, y1


def _draft(img: Image.Image, region: tuple[float, float, float, float], min_hw: tuple[int, int]) -> int:
    """Ask the JPEG decoder for the largest reduction that leaves ``region`` (displayed pixels
    of the full image) at least ``min_hw``; returns the reduction (1, 2, 4 or 8).

    The reduction is the same along both axes, so it holds for the stored and the displayed
    orientation alike and the region scales by it exactly."""
    if img.format != "JPEG":
        return 1
    rw, rh = region[2] - region[0], region[3] - region[1]
    s = max(min_hw[1] / rw, min_hw[0] / rh)  # the smallest scale the region may be decoded at
    if s > 0.5:
        return 1
    w, h = img.size
    got = img.draft(img.mode, (max(1, math.ceil(w * s)), max(1, math.ceil(h * s))))
    if got is None:
        return 1
    return max(1, round(w / got[1][2]))


#: Filled into the pixel memory before a decode that stops below the box, so a decode that
#: failed before its first row is told apart from one that stopped where it was asked to.
_UNDECODED = {"RGB": (255, 0, 254), "L": 253}


def _stored_bottom(orientation: int, height: int, region: tuple[float, float, float, float]) -> float:
    """The last row of the file (stored orientation, full resolution, ``height`` rows) that
    ``region`` (displayed pixels) needs."""
    x0, y0, x1, y1 = region
    if orientation in (3, 4):  # upside down: the displayed top is the stored bottom
        return height - y0
    if orientation in (5, 8):  # transposed / rotated 90: displayed columns are stored rows
        return x1
    if orientation in (6, 7):
        return height - x0
    return y1


def _stop_below(img: Image.Image, bottom: float, scale: int) -> int | None:
    """Make the JPEG decoder stop after the rows the crop needs.

    A baseline JPEG is entropy-coded top to bottom without an index, so the rows above a box
    must be decoded, but those below it never have to be: at 1/8 scale the entropy decoding is
    nearly all of a 12 MP frame's decode time, and it scales with the rows read (see
    benchmarks/results/camera-photos.md). Pillow decodes the tile's extents only; the pixels of
    the rows it does decode are the same as a whole-file decode's."""
    if (img.format != "JPEG" or img.mode not in _UNDECODED or not isinstance(img, ImageFile.ImageFile)
            or len(img.tile) != 1):
        return None
    tile = img.tile[0]
    w, h = img.size
    rows = min(h, math.ceil(bottom / scale) + 1)
    if tile.codec_name != "jpeg" or tile.extents is None or tuple(tile.extents) != (0, 0, w, h) or rows >= h - 8:
        return None
    img.tile = [tile._replace(extents=(0, 0, w, rows))]
    img.im = Image.core.fill(img.mode, img.size, _UNDECODED[img.mode])
    return rows


def _load(img: Image.Image, data: bytes, rows: int | None) -> None:
    """``img.load()``, accepting the decoder's complaint when it was told to stop early.

    libjpeg reports a decode that ends before the last row as an error after the rows are
    written; an error before the first row (a broken header) leaves the last wanted row as
    filled, and then the whole file is decoded again so the real reason is raised."""
    if rows is None:
        img.load()
        return
    try:
        img.load()
        return
    except OSError:
        pass
    last = np.asarray(img.crop((0, rows - 1, img.width, rows)))
    if not np.all(last == np.asarray(_UNDECODED[img.mode], dtype=np.uint8)):
        return
    fresh = Image.open(io.BytesIO(data))
    fresh.draft(img.mode, img.size)
    fresh.load()  # raises the file's own error; a file that decodes was only unlucky in colour
    img.im = fresh.im


def from_array(arr: Any, name: str = "<array>") -> Image.Image:
    """A uint8 HxW, HxWx1, HxWx3 (RGB) or HxWx4 (RGBA) array as an RGB image, or a readable refusal."""
    a = np.asarray(arr)
    if a.dtype != np.uint8:
        raise ImageDecodeError(name, f"array dtype {a.dtype} is not uint8; pass uint8 RGB pixels (HxWx3)")
    if a.ndim == 3 and a.shape[2] == 1:
        a = a[:, :, 0]
    if not (a.ndim == 2 or (a.ndim == 3 and a.shape[2] in (3, 4))) or min(a.shape[:2], default=0) < 1:
        raise ImageDecodeError(name, f"array shape {a.shape} is not an image; pass HxW, HxWx3 or HxWx4")
    return to_rgb(Image.fromarray(np.ascontiguousarray(a)))


def load_rgb(path: str | os.PathLike[str] | ImageRef, max_pixels: int = DEFAULT_MAX_PIXELS, *,
             min_hw: tuple[int, int] | None = None) -> Image.Image:
    """Read and decode one file, cropped to an :class:`ImageRef`'s box; see :func:`decode_rgb`."""
    ref = path if isinstance(path, ImageRef) else ImageRef(Path(path))
    try:
        data = ref.path.read_bytes()
    except OSError as exc:
        raise ImageDecodeError(ref.path, f"cannot read file ({exc.strerror or exc})") from None
    return decode_rgb(data, str(ref), max_pixels, box=ref.bbox, min_hw=min_hw)


def load_crops(refs: "Sequence[ImageRef]", min_hw: tuple[int, int] | None = None,
               max_pixels: int = DEFAULT_MAX_PIXELS) -> list[Image.Image | ImageDecodeError]:
    """:func:`load_rgb` for many items, each with its outcome; the consecutive boxes of one photo
    are read and decoded together (:func:`decode_crops`)."""
    out: list[Image.Image | ImageDecodeError] = []
    i = 0
    while i < len(refs):
        j = i + 1
        while j < len(refs) and refs[j].path == refs[i].path:
            j += 1
        span = refs[i:j]
        try:
            data = span[0].path.read_bytes()
        except OSError as exc:
            out += [ImageDecodeError(r.path, f"cannot read file ({exc.strerror or exc})") for r in span]
        else:
            got = decode_crops(data, str(span[0].path), [r.bbox for r in span], max_pixels, min_hw=min_hw)
            out += [ImageDecodeError(str(r), g.reason) if isinstance(g, ImageDecodeError) else g for r, g in zip(span, got)]
        i = j
    return out


def resize_to(img: Image.Image, height: int, width: int, policy: ResizePolicy) -> np.ndarray:
    """Resize an RGB image to a uint8 HxWx3 array with the member's policy."""
    resample = _INTERPOLATION[policy.interpolation]
    if policy.method == "stretch":
        out = img.resize((width, height), resample=resample)
    else:
        scale = min(width / img.width, height / img.height)
        nw = max(1, min(width, round(img.width * scale)))
        nh = max(1, min(height, round(img.height * scale)))
        resized = img.resize((nw, nh), resample=resample)
        out = Image.new("RGB", (width, height), (policy.pad_value,) * 3)
        out.paste(resized, ((width - nw) // 2, (height - nh) // 2))
    arr = np.asarray(out, dtype=np.uint8)
    if arr.shape != (height, width, 3):  # pragma: no cover - PIL contract
        raise AssertionError(f"resize produced {arr.shape}, expected {(height, width, 3)}")
    return arr


def load_readable(paths: "Sequence[Path | ImageRef]", limit: int | None = None,
                  min_hw: tuple[int, int] | None = None) -> list[Image.Image]:
    """Decode up to ``limit`` of ``paths``, passing over files that are not usable images
    (for sample sets such as parity and benchmark images, where a bad file is no error)."""
    out: list[Image.Image] = []
    for p in paths:
        if limit is not None and len(out) >= limit:
            break
        try:
            out.append(load_rgb(p, min_hw=min_hw))
        except ImageDecodeError:
            continue
    return out
