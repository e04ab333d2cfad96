"""Finished INT8 twins kept between exports (``reid-export --int8-cache DIR``).

A distilled twin costs minutes per member on a GPU and up to an hour on a 2-core CPU, and the
gate refuses the whole bundle when one member fails; without a cache, the next attempt (more
steps for that member, or an export interrupted halfway) would train every member again. A twin
is reused only when everything that shapes it is the same: the member's checkpoint, the graph
options, the recipe, the training images (their pixels at the member's input size), the device
and the library versions. A reused twin still faces the gate.
"""

from __future__ import annotations

import hashlib
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import numpy as np

from reidkit.atomic import atomic_path

log = logging.getLogger("reidkit")


def twin_key(images: np.ndarray, **parts: Any) -> str:
    h = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode())
    h.update(repr((images.shape, str(images.dtype))).encode())
    h.update(np.ascontiguousarray(images).data)
    return h.hexdigest()[:24]


def _path(cache_dir: Path, member: str, key: str) -> Path:
    return Path(cache_dir) / f"{member}.{key}.int8.onnx"


def fetch_twin(cache_dir: Path, member: str, key: str, dst: Path) -> bool:
    """Copy the cached twin to ``dst``; False when there is none."""
    src = _path(cache_dir, member, key)
    if not src.is_file():
        return False
    shutil.copyfile(src, dst)
    log.info("%s: INT8 twin reused from %s (same member, recipe and images)", member, src)
    return True


def store_twin(cache_dir: Path, member: str, key: str, src: Path) -> None:
    dst = _path(cache_dir, member, key)
    with atomic_path(dst) as tmp:  # a twin half-copied by a crash is never mistaken for a whole one
        shutil.copyfile(src, tmp)
    log.info("%s: INT8 twin kept in %s", member, dst)
