"""Where's Whale-do metadata and scenario files (formats in DESIGN.md)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from reidkit.data.csvio import read_rows
from reidkit.data.samples import Sample
from reidkit.errors import ReidkitError
from reidkit.paths import safe_join
from reidkit.data import schemas


@dataclass(frozen=True)
class Metadata:
    """``metadata.csv``: image ids in file order, their absolute paths and optional labels."""

    path: Path
    image_ids: list[str]
    paths: dict[str, Path]
    whale_id: dict[str, str] = field(default_factory=dict)
    viewpoint: dict[str, str] = field(default_factory=dict)
    bbox: dict[str, tuple[float, float, float, float]] = field(default_factory=dict)  # the subject's box, where a row has one
    bad_boxes: dict[str, tuple[str, str]] = field(default_factory=dict)  # image id -> (file and line, reason): never embedded

    def samples(self) -> list[Sample]:
        if not self.whale_id:
            raise ReidkitError(f"{self.path} has no whale_id column; training and evaluation need identities")
        return [Sample(self.paths[i], self.whale_id[i], self.viewpoint.get(i), i) for i in self.image_ids]


@dataclass(frozen=True)
class Scenario:
    scenario_id: str
    queries: list[tuple[str, str]]  # (query_id, query_image_id)
    database: list[str]


def read_metadata(path: str | Path) -> Metadata:
    path = Path(path)
    rows = read_rows(path, schemas.METADATA)
    if not rows:
        raise ReidkitError(f"{path} has a header but no rows; it lists no images")
    from reidkit.data.items import parse_bbox

    root = path.parent
    ids: list[str] = []
    paths: dict[str, Path] = {}
    whale: dict[str, str] = {}
    view: dict[str, str] = {}
    boxes: dict[str, tuple[float, float, float, float]] = {}
    bad: dict[str, tuple[str, str]] = {}
    ident_col = next((c for c in schemas.METADATA_IDENTITY if c in rows[0]), "whale_id")
    for n, r in enumerate(rows, start=2):
        iid = r["image_id"]
        if not iid:
            raise ReidkitError(f"{path}, line {n}: empty image_id")
        if iid in paths:
            raise ReidkitError(f"{path}, line {n}: duplicate image_id {iid!r}")
        paths[iid] = safe_join(root, r["path"], source=f"{path}, line {n}")
        ids.append(iid)
        if r.get(ident_col):
            whale[iid] = r[ident_col]
        try:
            box = parse_bbox(r.get(schemas.BBOX, ""))
        except ValueError as exc:
            bad[iid] = (f"{path}, line {n}", str(exc))
        else:
            if box is not None:
                boxes[iid] = box
        if r.get("viewpoint"):
            view[iid] = r["viewpoint"]
    if whale and len(whale) != len(ids):
        missing = next(i for i in ids if i not in whale)
        raise ReidkitError(f"{path}: image {missing!r} has no whale_id while others do; fill it in or drop the column")
    return Metadata(path=path, image_ids=ids, paths=paths, whale_id=whale, viewpoint=view, bbox=boxes, bad_boxes=bad)


def read_scenarios(path: str | Path, known_images: set[str] | None = None) -> list[Scenario]:
    """Scenarios with their query and database lists; ids are checked against metadata."""
    path = Path(path)
    rows = read_rows(path, schemas.SCENARIOS)
    if not rows:
        raise ReidkitError(f"{path} has a header but no scenarios")
    root = path.parent
    out: list[Scenario] = []
    seen_q: dict[str, str] = {}
    for n, r in enumerate(rows, start=2):
        src = f"{path}, line {n}"
        qfile = safe_join(root, r["queries_path"], source=src)
        dfile = safe_join(root, r["database_path"], source=src)
        queries = [(q["query_id"], q["query_image_id"]) for q in read_rows(qfile, schemas.SCENARIO_QUERIES)]
        database = [d["database_image_id"] for d in read_rows(dfile, schemas.SCENARIO_DATABASE)]
        for qid, _ in queries:
            if qid in seen_q:
                raise ReidkitError(f"{qfile}: query_id {qid!r} also appears in scenario {seen_q[qid]!r}; query ids must be unique")
            seen_q[qid] = r["scenario_id"]
        if known_images is not None:
            for qid, img in queries:
                if img not in known_images:
                    raise ReidkitError(f"{qfile}: query {qid!r} names image {img!r}, which metadata.csv does not list")
            for img in database:
                if img not in known_images:
                    raise ReidkitError(f"{dfile}: database image {img!r} is not in metadata.csv")
        out.append(Scenario(r["scenario_id"], queries, database))
    return out
