"""Content hashes for artefacts (sha256, as the manifest and the catalogue record) and images
(the key the embedding cache, the in-run de-duplication and the gallery index use)."""

from __future__ import annotations

import hashlib
from pathlib import Path

import xxhash


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def content_key(data: bytes) -> str:
    """Key for one image's bytes: XXH3-128, which hashes at memory speed. The key tells apart
    files that differ by accident, not files forged to collide: whatever must stand against a
    forger (bundle files, catalogue records) is sha256. What a cryptographic hash of every
    photo would cost on camera frames: benchmarks/results/camera-photos.md."""
    return xxhash.xxh3_128_hexdigest(data)
