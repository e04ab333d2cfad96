"""A corpus of awkward and broken image files, made by the tests themselves."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

# name -> expected outcome: "ok" (embeds) or a substring of the skip reason
EXPECTED = {
    "zero.jpg": "empty file",
    "truncated.jpg": "",
    "truncated.png": "",
    "text.jpg": "not a recognised image",
    "cmyk.jpg": "ok",
    "sixteen.png": "ok",
    "palette.png": "ok",
    "palette_alpha.png": "ok",
    "rgba.png": "ok",
    "grey.pgm": "ok",
    "la.png": "ok",
    "exif_rotated.jpg": "ok",
    "tiny_1x1.png": "ok",
    "elongated.png": "ok",
    "bomb.png": "decompression bomb",
    "webp.webp": "ok",
    "bmp.bmp": "ok",
}


def _png_header_only(w: int, h: int) -> bytes:
    """A tiny PNG that claims w x h pixels (a decompression bomb's header)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
    ihdr = struct.pack(">IIBBBBB", w, h, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\x00" * 64)) + chunk(b"IEND", b"")


def make_corpus(d: Path) -> Path:
    d.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    rgb = Image.fromarray(rng.integers(0, 255, (60, 40, 3), dtype=np.uint8))
    (d / "zero.jpg").write_bytes(b"")
    buf = io.BytesIO(); rgb.save(buf, "JPEG"); (d / "truncated.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 3])
    buf = io.BytesIO(); rgb.save(buf, "PNG"); (d / "truncated.png").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (d / "text.jpg").write_text("this is not an image\n")
    rgb.convert("CMYK").save(d / "cmyk.jpg")
    Image.fromarray((rng.integers(0, 65535, (30, 20))).astype(np.uint16)).save(d / "sixteen.png")
    rgb.convert("P").save(d / "palette.png")
    pal = rgb.convert("P"); pal.info["transparency"] = 0; pal.save(d / "palette_alpha.png", transparency=0)
    rgb.convert("RGBA").save(d / "rgba.png")
    rgb.convert("L").save(d / "grey.pgm")
    rgb.convert("LA").save(d / "la.png")
    exif = Image.Exif(); exif[0x0112] = 6  # rotate 90 on display
    rgb.save(d / "exif_rotated.jpg", exif=exif)
    Image.new("RGB", (1, 1), (200, 10, 10)).save(d / "tiny_1x1.png")
    Image.new("RGB", (4000, 3), (10, 200, 10)).save(d / "elongated.png")
    (d / "bomb.png").write_bytes(_png_header_only(200_000, 200_000))
    rgb.save(d / "webp.webp")
    rgb.save(d / "bmp.bmp")
    return d
