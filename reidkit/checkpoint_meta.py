"""Read a member checkpoint's JSON metadata without torch (and without unpickling).

A safetensors file starts with an 8-byte little-endian header length and a JSON header;
its ``__metadata__`` holds our member description under the key ``reidkit``.
"""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

from reidkit.errors import ReidkitError

FORMAT = "reidkit.member"
FORMAT_VERSION = 1
_MAX_HEADER = 100 * 1024 * 1024


def read_member_metadata(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.is_file():
        raise ReidkitError(f"checkpoint {path} does not exist")
    try:
        with open(path, "rb") as fh:
            raw = fh.read(8)
            if len(raw) != 8:
                raise ReidkitError(f"{path} is not a safetensors checkpoint (file too short)")
            (n,) = struct.unpack("<Q", raw)
            if n > _MAX_HEADER:
                raise ReidkitError(f"{path} is not a safetensors checkpoint (header length {n} is implausible)")
            header = json.loads(fh.read(n))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ReidkitError(f"{path} is not a safetensors checkpoint (its header is not JSON)") from None
    meta = (header.get("__metadata__") or {}).get("reidkit")
    if meta is None:
        raise ReidkitError(f"{path} is a safetensors file but not a reidkit member (no 'reidkit' metadata); train it with reid-train")
    doc = json.loads(meta)
    if doc.get("format") != FORMAT or int(doc.get("format_version", -1)) > FORMAT_VERSION:
        raise ReidkitError(f"{path}: unsupported member format {doc.get('format')!r} v{doc.get('format_version')}; upgrade reidkit")
    return doc
