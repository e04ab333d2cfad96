"""Resolving paths that come from CSV files: they must stay inside their data root.

A metadata or scenarios file is data, and data can be hostile or simply wrong; an absolute
path or a ``..`` in it must not make reidkit read (or list in its outputs) files outside
the folder the user pointed at.
"""

from __future__ import annotations

import os
from pathlib import Path, PurePosixPath, PureWindowsPath

from reidkit.errors import ReidkitError


def safe_join(root: Path, rel: str, *, source: str = "") -> Path:
    """Join a CSV-supplied relative path onto ``root``, refusing anything that escapes it."""
    where = f" (in {source})" if source else ""
    if not rel or not rel.strip():
        raise ReidkitError(f"empty path{where}")
    if "\x00" in rel:
        raise ReidkitError(f"path {rel!r} contains a NUL byte{where}")
    if PurePosixPath(rel).is_absolute() or PureWindowsPath(rel).is_absolute() or PureWindowsPath(rel).drive:
        raise ReidkitError(f"absolute path {rel!r} is not allowed{where}; paths must be relative to {root}")
    parts = PurePosixPath(rel.replace("\\", "/")).parts
    if ".." in parts:
        raise ReidkitError(f"path {rel!r} escapes the data folder {root} with '..'{where}")
    root_resolved = os.path.realpath(root)
    full = Path(os.path.realpath(os.path.join(root_resolved, *parts)))
    if not full.is_relative_to(root_resolved):
        raise ReidkitError(f"path {rel!r} resolves outside the data folder {root}{where} (symbolic link?)")
    return full
