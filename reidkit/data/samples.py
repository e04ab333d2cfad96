"""The record every reader yields."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Sample:
    """One image with its identity (a string, whatever the source used) and viewpoint."""

    path: Path
    identity: str
    viewpoint: str | None = None
    image_id: str | None = None
