"""Every input layout as one list of items: the one reader behind ``--query``, ``--gallery`` and ``--data``.

Teams keep their photos in whatever their tools write: a folder per identity, the Whale-do
``metadata.csv``, a wildlife-datasets CSV, or a COCO JSON from an annotation tool such as
Wildbook. Each becomes a list of :class:`Item` (one per subject: several boxes on one photo
are several items), so the commands never care which layout a user has. The layout is told
from the path (a folder, ``.csv`` or ``.json``) and a CSV's header; column names come from
:mod:`reidkit.data.schemas`.

Bad rows (an unusable box, a path that escapes the data folder, a repeated id) are
returned as problems naming the file and the row or annotation, and left out; a whole
run never stops for one row. Boxes are checked for form here and clipped to the image
when it is decoded (:func:`reidkit.imaging.decode_rgb`), where its displayed size is known.

No torch: the lean runtime imports it.
"""

from __future__ import annotations

import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from reidkit.data import schemas
from reidkit.data.csvio import read_rows
from reidkit.errors import ReidkitError
from reidkit.imaging import Box, ImageRef
from reidkit.paths import safe_join

log = logging.getLogger("reidkit")

LAYOUTS = ("folders", "metadata", "wildlife", "coco")


@dataclass(frozen=True)
class Item:
    """One subject to embed: a photo, or a box on it, with its individual when the data names one."""

    id: str  # unique within its source: a folder's relative path, a CSV's image_id, a COCO annotation id
    path: Path
    bbox: Box | None = None
    identity: str | None = None  # None: not identified (no label, or the wildlife-datasets "unknown")
    extra: Mapping[str, str] = field(default_factory=dict, hash=False, compare=False)

    @property
    def ref(self) -> ImageRef:
        """What the decoder and the embedder take."""
        return ImageRef(self.path, self.bbox)


@dataclass
class ItemSet:
    source: Path
    layout: str  # one of LAYOUTS
    items: list[Item]
    problems: list[tuple[str, str]] = field(default_factory=list)  # (file and row, reason) per row left out

    def encounter_of(self, item: Item) -> str | None:
        """The sighting a photo belongs to: the ``encounter_id`` of a metadata row, or in a folder of
        query photos the first sub-folder (one folder per encounter); None when it stands alone."""
        if self.layout == "folders":
            parts = Path(item.id).parts
            return parts[0] if len(parts) > 1 else None
        return item.extra.get(schemas.ENCOUNTER) or None

    def identified(self) -> list[Item]:
        return [it for it in self.items if it.identity is not None]

    def require_identified(self, purpose: str) -> list[Item]:
        """The items that name an individual, for ``purpose`` (training, ``--by identity``): a source
        that names none is refused; images that name none (no label, or ``unknown``) are left out, said once."""
        kept = self.identified()
        if not kept:
            raise ReidkitError(f"{purpose} needs the individual of each image, and {self.source} names none "
                               f"(a {' or '.join(schemas.METADATA_IDENTITY)} column, or the annotations' individual)")
        if len(kept) < len(self.items):
            log.info("%s: %d of %d images of %s name no individual (no label, or %r) and are left out", purpose,
                     len(self.items) - len(kept), len(self.items), self.source, schemas.UNKNOWN_IDENTITY)
        return kept


def parse_bbox(value: Any) -> Box | None:
    """A ``bbox`` cell or JSON value as ``(x, y, w, h)``; None for an empty cell (the whole photo).

    Accepts ``[x, y, w, h]`` (JSON or Python list text, as pandas writes a list column),
    ``x,y,w,h`` or ``x y w h``. Raises ValueError with the reason for anything else, and for
    an empty box (width or height not above zero).
    """
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if isinstance(value, str):
        text = value.strip()
        inner = text[1:-1] if text[:1] + text[-1:] in ("[]", "()") else text
        parts = [p for p in re.split(r"[,\s]+", inner.strip()) if p]
        try:
            nums = [float(p) for p in parts]
        except ValueError:
            raise ValueError(f"bbox {value!r} has a non-numeric value; write [x, y, w, h] in pixels") from None
    elif isinstance(value, (list, tuple)):
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
            raise ValueError(f"bbox {value!r} has a non-numeric value; write [x, y, w, h] in pixels")
        nums = [float(v) for v in value]
    else:
        raise ValueError(f"bbox {value!r} is not a list [x, y, w, h]")
    if len(nums) != 4:
        raise ValueError(f"bbox {value!r} has {len(nums)} numbers; write [x, y, w, h] in pixels")
    if not all(math.isfinite(v) for v in nums):
        raise ValueError(f"bbox {value!r} has a value that is not a finite number")
    if nums[2] <= 0 or nums[3] <= 0:
        raise ValueError(f"bbox {value!r} is empty (width and height must be above zero)")
    return nums[0], nums[1], nums[2], nums[3]


def _identity(value: Any) -> str | None:
    if value is None:
        return None
    s = str(value).strip()
    return None if not s or s == schemas.UNKNOWN_IDENTITY else s


def read_items(source: str | Path, coco_identity: str | None = None) -> ItemSet:
    """The items of a folder (per identity, or flat), a metadata or wildlife-datasets CSV, or a
    COCO JSON. ``coco_identity`` names the annotation key that holds the individual in a COCO
    file, where neither ``identity`` nor ``name`` does."""
    src = Path(source)
    if src.is_dir():
        return _read_folder(src)
    if not src.exists():
        raise ReidkitError(f"{src} does not exist; pass a folder of images, a metadata CSV (.csv) or a COCO JSON (.json)")
    suffix = src.suffix.lower()
    if suffix == ".csv":
        return _read_csv(src)
    if suffix == ".json":
        return _read_coco(src, coco_identity)
    raise ReidkitError(f"{src} is neither a folder, a .csv nor a .json; pass a folder of images, a metadata CSV or a COCO JSON")


def report_problems(problems: Sequence[tuple[str, str]]) -> None:
    """One warning per row left out, at most 20, then how many more."""
    for where, why in problems[:20]:
        log.warning("skipped %s: %s", where, why)
    if len(problems) > 20:
        log.warning("skipped %d more rows with problems like these", len(problems) - 20)


def _read_folder(root: Path) -> ItemSet:
    from reidkit.data.folders import list_images, warn_skipped

    images, skipped = list_images(root)
    warn_skipped(skipped, "non-image files")
    items = []
    for p in images:
        rel = p.relative_to(root)
        items.append(Item(rel.as_posix(), p, None, rel.parts[0] if len(rel.parts) > 1 else None))
    return ItemSet(root, "folders", items)


def _read_csv(path: Path) -> ItemSet:
    rows = read_rows(path, ())
    if not rows:
        raise ReidkitError(f"{path} has no rows; it lists no images")
    header = set(rows[0])
    if all(c in header for c in schemas.METADATA):
        layout = "metadata"
        id_col: str | None = schemas.METADATA[0]
        ident_col = next((c for c in schemas.METADATA_IDENTITY if c in header), None)
    elif all(c in header for c in schemas.WILDLIFE):
        layout, id_col, ident_col = "wildlife", None, schemas.WILDLIFE[0]
    else:
        raise ReidkitError(f"{path}: found columns {', '.join(sorted(header))}; a metadata CSV needs {','.join(schemas.METADATA)} "
                           f"(optional {' or '.join(schemas.METADATA_IDENTITY)}, {', '.join(schemas.METADATA_OPTIONAL)}), "
                           f"a wildlife-datasets CSV needs {','.join(schemas.WILDLIFE)} (optional {', '.join(schemas.WILDLIFE_OPTIONAL)})")
    path_col = "path"
    core = {c for c in (id_col, ident_col, path_col, schemas.BBOX) if c}
    root = path.parent
    items: list[Item] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    boxes_on: dict[str, int] = {}
    for n, r in enumerate(rows, start=2):
        where = f"{path}, line {n}"
        k = boxes_on[r[path_col]] = boxes_on.get(r[path_col], 0) + 1  # counted over every row, so ids never shift
        try:
            box = parse_bbox(r.get(schemas.BBOX, ""))
            file = safe_join(root, r[path_col], source=where)
        except (ValueError, ReidkitError) as exc:
            problems.append((where, str(exc)))
            continue
        if id_col is not None:
            iid = r[id_col]
            if not iid:
                problems.append((where, f"empty {id_col}"))
                continue
        else:  # wildlife-datasets rows are named by their file, and by their place among its rows where it has several
            iid = r[path_col] if k == 1 else f"{r[path_col]}#{k}"
        if iid in seen:
            problems.append((where, f"duplicate {id_col or 'path'} {iid!r}"))
            continue
        seen.add(iid)
        extra = {k: v for k, v in r.items() if k not in core and v}
        items.append(Item(iid, file, box, _identity(r.get(ident_col, "")) if ident_col else None, extra))
    if not items:
        raise ReidkitError(f"{path}: no usable rows; the first problem: {problems[0][0]}: {problems[0][1]}")
    return ItemSet(path, layout, items, problems)


def _read_coco(path: Path, coco_identity: str | None) -> ItemSet:
    try:
        data = json.loads(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise ReidkitError(f"{path}: not a UTF-8 JSON file ({exc.reason})") from None
    except json.JSONDecodeError as exc:
        raise ReidkitError(f"{path}: malformed JSON ({exc})") from None
    except OSError as exc:
        raise ReidkitError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list) or not isinstance(data.get("annotations"), list):
        raise ReidkitError(f"{path}: not a COCO file; expected an object with 'images' and 'annotations' lists")
    keys = (coco_identity,) if coco_identity else schemas.COCO_IDENTITY
    images = {img.get("id"): img for img in data["images"] if isinstance(img, dict)}
    root = path.parent
    items: list[Item] = []
    problems: list[tuple[str, str]] = []
    seen: set[str] = set()
    for k, ann in enumerate(data["annotations"]):
        if not isinstance(ann, dict) or ann.get(schemas.BBOX) is None:
            continue  # an annotation without a box (a segmentation-only or image-level one) is no subject
        aid = ann.get("id")
        where = f"{path}, annotation {aid if aid is not None else f'#{k}'}"
        img = images.get(ann.get("image_id"))
        if img is None:
            problems.append((where, f"image_id {ann.get('image_id')!r} is not among the file's images"))
            continue
        try:
            box = parse_bbox(ann[schemas.BBOX])
            file = safe_join(root, str(img.get("file_name") or ""), source=where)
        except (ValueError, ReidkitError) as exc:
            problems.append((where, str(exc)))
            continue
        iid = str(aid) if aid is not None else f"{img.get('file_name')}#{k}"
        if iid in seen:
            problems.append((where, f"duplicate annotation id {iid!r}"))
            continue
        seen.add(iid)
        ident = next((_identity(ann[key]) for key in keys if ann.get(key) not in (None, "")), None)
        extra = {key: str(ann[key]) for key in ("viewpoint", "category_id") if key in ann}
        items.append(Item(iid, file, box, ident, extra))
    if not items:
        first = f"; the first problem: {problems[0][0]}: {problems[0][1]}" if problems else ""
        raise ReidkitError(f"{path}: no annotation with a usable bbox{first}")
    if coco_identity and not any(it.identity for it in items):
        raise ReidkitError(f"{path}: no annotation has the key {coco_identity!r} that names the individual")
    return ItemSet(path, "coco", items, problems)
