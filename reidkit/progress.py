"""Progress bars for long work, one policy for every command."""

from __future__ import annotations

from typing import Any


def progress_bar(iterable: Any = None, *, enabled: bool = True, **kw: Any) -> Any:
    """A tqdm bar on a terminal; none when stderr is a log file (its carriage returns would
    flood it) or when the caller turned progress off (``--quiet``)."""
    from tqdm import tqdm

    return tqdm(iterable, disable=None if enabled else True, **kw)
