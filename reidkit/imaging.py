"""Image decoding and the host-side resize: the one copy of preprocessing on the host.

Training, the export parity gate and the runtime all call :func:`load_rgb` and
:func:`resize_to`. A different interpolation between training and inference is the first
cause of "accuracy dropped after export" in every peer project, so the resize policy is
stored in each checkpoint and manifest and applied only here. Everything after the resize
(cast, /255, mean/std, layout, flip) lives inside the model graph.

PIL and numpy only: this module is imported by the lean runtime.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Mapping

import numpy as np
from PIL import Image, ImageOps

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
    tall top views); ``letterbox`` keeps it and pads with ``pad_value``.
    """

    method: str = "stretch"
    interpolation: str = "bilinear"
    pad_value: int = 0

    def __post_init__(self) -> None:
        if self.method not in ("stretch", "letterbox"):
            raise ValueError(f"unknown resize method {self.method!r}; use 'stretch' or 'letterbox'")
        if self.interpolation not in _INTERPOLATION:
            raise ValueError(f"unknown interpolation {self.interpolation!r}; use one of {sorted(_INTERPOLATION)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ResizePolicy":
        return cls(**{k: d[k] for k in ("method", "interpolation", "pad_value") if k in d})


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


def decode_rgb(data: bytes, name: str | Path = "<bytes>", max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Decode encoded image bytes to an RGB PIL image with EXIF orientation applied.

    Raises :class:`ImageDecodeError` with a readable reason for empty, truncated, non-image
    and oversized files; never any other exception for bad data.
    """
    if not data:
        raise ImageDecodeError(name, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            w, h = img.size
            if w * h > max_pixels:
                raise ImageDecodeError(name, f"{w}x{h} pixels exceeds the limit of {max_pixels} (possible decompression bomb)")
            if w < 1 or h < 1:
                raise ImageDecodeError(name, f"invalid size {w}x{h}")
            img.load()
            # In place: without an Orientation tag exif_transpose would otherwise return a copy,
            # which measured 30% of the decode time of a 470x155 JPEG.
            ImageOps.exif_transpose(img, in_place=True)
            return to_rgb(img)
    except ImageDecodeError:
        raise
    except Image.UnidentifiedImageError:
        raise ImageDecodeError(name, "not a recognised image format") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise ImageDecodeError(name, f"refused as a decompression bomb ({exc})") from None
    except (OSError, ValueError, SyntaxError, EOFError, TypeError, IndexError, KeyError, ZeroDivisionError) as exc:
        msg = str(exc) or type(exc).__name__
        if "truncated" in msg.lower() or "broken data stream" in msg.lower():
            msg = f"truncated or corrupt image data ({msg})"
        raise ImageDecodeError(name, msg) from None


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


def load_rgb(path: str | Path, max_pixels: int = DEFAULT_MAX_PIXELS) -> Image.Image:
    """Read and decode one file; see :func:`decode_rgb`."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageDecodeError(path, f"cannot read file ({exc.strerror or exc})") from None
    return decode_rgb(data, path, max_pixels)


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


def load_readable(paths: "list[Path] | tuple[Path, ...]", limit: int | None = None) -> list[Image.Image]:
    """Decode up to ``limit`` of ``paths``, passing over files that are not usable images
    (for sample sets such as parity and benchmark images, where a bad file is no error)."""
    out: list[Image.Image] = []
    for p in paths:
        if limit is not None and len(out) >= limit:
            break
        try:
            out.append(load_rgb(p))
        except ImageDecodeError:
            continue
    return out
