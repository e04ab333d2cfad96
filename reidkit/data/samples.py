"""The record every reader yields."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from reidkit.imaging import ImageRef


@dataclass(frozen=True)
class Sample:
    """One image with its identity (a string, whatever the source used) and viewpoint."""

    path: Path
    identity: str
    viewpoint: str | None = None
    image_id: str | None = None
    bbox: tuple[float, float, float, float] | None = None  # [x, y, w, h] of the subject on a field photo

    @property
    def ref(self) -> "ImageRef":
        """What the decoder takes: the file, cropped to the box when there is one."""
        from reidkit.imaging import ImageRef

        return ImageRef(self.path, self.bbox)
