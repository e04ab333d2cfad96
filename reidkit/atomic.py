"""Atomic file and directory writes.

Field runs last hours; a crash or Ctrl-C must never leave a half-written CSV, bundle or
checkpoint that a later step mistakes for a complete one. Everything reidkit writes goes
to a temporary sibling first and is renamed into place (``os.replace`` is atomic on POSIX
within one filesystem).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import IO, Iterator

# mkstemp/mkdtemp create private (0600/0700) files; outputs get the usual umask-based mode
_UMASK = os.umask(0)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temp path beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp" + path.suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, _FILE_MODE)
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
            from reidkit.errors import ReidkitError

            raise ReidkitError(f"cannot write {path}: {os.strerror(exc.errno).lower()} on {path.parent} "
                               f"(nothing was left behind); free some space or write the output elsewhere") from None
        raise


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], mode: str = "w", **kwargs: object) -> Iterator[IO]:
    """Open a temp file beside ``path`` (flushed to disk before the rename, so a crash right
    after leaves either the old file or the complete new one)."""
    with atomic_path(path) as tmp:
        with open(tmp, mode, **kwargs) as fh:  # type: ignore[call-overload]
            yield fh
            fh.flush()
            os.fsync(fh.fileno())


@contextlib.contextmanager
def atomic_dir(path: str | os.PathLike[str], overwrite: bool = False) -> Iterator[Path]:
    """Build a directory in a temp sibling and move it into place on success.

    With ``overwrite`` an existing directory is replaced only after the new one is complete.
    """
    path = Path(path)
    if path.exists() and not overwrite:
        from reidkit.errors import ReidkitError

        raise ReidkitError(f"{path} already exists; choose another output directory or pass --overwrite")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~_UMASK)
        if path.exists():
            old = path.with_name(f".{path.name}.old")
            if old.exists():
                shutil.rmtree(old)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
