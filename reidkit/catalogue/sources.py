"""What ``reid catalogue`` reads, through the one reader of every input layout
(:func:`reidkit.data.items.read_items`): a gallery needs each item's individual; queries
keep their ``encounter_id`` (a metadata column) for grouping."""

from __future__ import annotations

from pathlib import Path

from reidkit.data import schemas
from reidkit.data.items import Item, read_items, report_problems
from reidkit.errors import ReidkitError
from reidkit.imaging import format_box

ENCOUNTER = schemas.ENCOUNTER


def read_gallery(source: Path) -> list[Item]:
    found = read_items(source)
    report_problems(found.problems)
    if found.layout == "folders":
        loose = [it.id for it in found.items if it.identity is None]
        if loose:
            raise ReidkitError(f"{source}: {loose[0]!r} lies directly in the gallery folder; a gallery is one folder per identity "
                               "(<identity>/<image>), or a metadata CSV with whale_id or identity")
    kept = found.identified()
    if not kept:
        raise ReidkitError(f"{source} names no individuals; a gallery needs each image's identity "
                           "(one folder per identity, or a whale_id or identity column)")
    return kept


def read_queries(source: Path) -> list[Item]:
    found = read_items(source)
    report_problems(found.problems)
    if not found.items:
        raise ReidkitError(f"{source}: no images found")
    return found.items


def box_text(item: Item) -> str:
    """The box as stored ('' for the whole photo): with the file's sha256 it names one subject."""
    return format_box(item.bbox) if item.bbox is not None else ""


def encounter_of(item: Item) -> str | None:
    return item.extra.get(ENCOUNTER) or None
