"""Content hashes for artefacts (sha256, as the manifest records) and images (the cache key)."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def content_key(data: bytes) -> str:
    """Key for one image's bytes: blake2b is several times faster than sha256 on big JPEGs."""
    return hashlib.blake2b(data, digest_size=20).hexdigest()
