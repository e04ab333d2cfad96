"""What a review page shows: queries, their ranked candidates, and the truth where known.

Built from a matches CSV (``reid-infer`` output, image or identity rows) and a catalogue
that says where each id's image is, whose it is, and which candidates are true. The page
writer only formats this; every judgement (correct, margin, worst first, metrics) is made
here, in Python, where tests can check it.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Mapping

from reidkit.data.csvio import read_rows
from reidkit.errors import ReidkitError
from reidkit.data import schemas
from reidkit.imaging import Box, ImageRef

if TYPE_CHECKING:
    from reidkit.data.items import ItemSet

IMAGE_HEADER, IDENTITY_HEADER = schemas.MATCHES, schemas.IDENTITY_MATCHES
FILTERS = ("viewpoint", "encounter_id", "date")  # metadata a reviewer narrows the page by, when present
MORE_IMAGES = 2  # identity mode: images of a candidate identity shown besides its best one


@dataclass(frozen=True)
class Catalogue:
    """Where images are and whose they are; ``truth`` (query id -> true database image ids)
    only when ground truth is known."""

    query_path: Mapping[str, Path]
    db_path: Mapping[str, Path]
    query_identity: Mapping[str, str] = field(default_factory=dict)
    db_identity: Mapping[str, str] = field(default_factory=dict)
    truth: Mapping[str, set[str]] | None = None
    query_meta: Mapping[str, Mapping[str, str]] = field(default_factory=dict)  # viewpoint, encounter_id, date per query
    query_box: Mapping[str, Box] = field(default_factory=dict)  # id -> the subject's box, for ids that have one
    db_box: Mapping[str, Box] = field(default_factory=dict)

    def query_image(self, qid: str) -> Path | ImageRef:
        """What the page shows for a query: its photo, or the subject in its box."""
        return _shown(self.query_path[qid], self.query_box.get(qid))

    def db_image(self, image_id: str) -> Path | ImageRef:
        return _shown(self.db_path[image_id], self.db_box.get(image_id))


def _shown(path: Path, box: Box | None) -> Path | ImageRef:
    return path if box is None else ImageRef(path, box)


@dataclass(frozen=True)
class Candidate:
    id: str  # database image id, or the identity in identity mode
    rank: int
    score: float
    image: Path | ImageRef  # the image shown (in identity mode the identity's best image), cropped to its box if it has one
    image_id: str
    identity: str | None
    correct: bool | None
    p_same: float | None = None  # P(same individual), when the run was calibrated
    more: tuple[Path | ImageRef, ...] = ()  # identity mode: other images of the identity, shown beside the best


@dataclass(frozen=True)
class QueryItem:
    id: str
    image: Path | ImageRef
    identity: str | None
    candidates: list[Candidate]
    truth: frozenset[str] | None  # true candidate ids (images, or identities); None when unknown
    meta: Mapping[str, str] = field(default_factory=dict)  # what the reviewer can filter by (FILTERS)

    @property
    def n_true(self) -> int | None:
        return None if self.truth is None else len(self.truth)

    @property
    def margin(self) -> float:
        """Score gap between the first and second candidate: small means the model hesitated.
        A lone candidate has nothing to hesitate against (its score is the margin)."""
        c = self.candidates
        return c[0].score - c[1].score if len(c) > 1 else (c[0].score if c else 0.0)

    @property
    def first_correct(self) -> int | None:
        """Rank of the first correct candidate, 0 when none is correct, None when unknown."""
        if self.n_true is None:
            return None
        return next((c.rank for c in self.candidates if c.correct), 0)


@dataclass(frozen=True)
class Review:
    kind: str  # "image" or "identity"
    queries: list[QueryItem]
    source: str  # the matches file, for the page title

    @property
    def labelled(self) -> bool:
        return any(q.n_true is not None for q in self.queries)


def read_matches(path: Path) -> tuple[str, dict[str, list[dict[str, str]]]]:
    """The kind of a matches CSV (from its header) and its rows per query, in file order."""
    if not Path(path).is_file():
        raise ReidkitError(f"--matches {path} does not exist or is not a file")
    with open(path, newline="", encoding="utf-8-sig") as fh:
        header = [h.strip() for h in next(csv.reader(fh), [])]
    kind = "identity" if "identity" in header else "image"
    rows = read_rows(path, IDENTITY_HEADER if kind == "identity" else IMAGE_HEADER)
    per: dict[str, list[dict[str, str]]] = defaultdict(list)
    for n, r in enumerate(rows, start=2):
        try:
            r["_score"] = float(r["score"])  # type: ignore[assignment]
            if r.get(schemas.P_SAME):
                r["_p_same"] = float(r[schemas.P_SAME])  # type: ignore[assignment]
        except ValueError:
            raise ReidkitError(f"{path}, line {n}: score {r['score']!r} or {schemas.P_SAME} is not a number") from None
        per[r["query_id"]].append(r)
    return kind, dict(per)


def build_review(matches: Path, cat: Catalogue, top_k: int | None = None) -> Review:
    """Join a matches CSV with its catalogue; unknown ids are user errors naming the fix."""
    kind, per = read_matches(matches)
    if not per:
        raise ReidkitError(f"{matches} has no rows; nothing to review")
    queries = []
    by_identity: dict[str, list[str]] = defaultdict(list)
    if kind == "identity":
        for image_id, who in cat.db_identity.items():
            by_identity[who].append(image_id)
    for qid, rows in per.items():
        if qid not in cat.query_path:
            raise ReidkitError(f"{matches}: query {qid!r} is not among the query images given; pass the same "
                               "--query (or --metadata/--scenarios) as the run that wrote it")
        rows = [r for r in rows if r.get("identity") != schemas.NEW_INDIVIDUAL]  # the open-set row has no image to show
        rows = sorted(rows, key=lambda r: -r["_score"])[:top_k]  # type: ignore[operator]
        truth = None if cat.truth is None else cat.truth.get(qid, set())
        true_ids = None
        if truth is not None:
            true_ids = frozenset(truth) if kind == "image" else _identities(truth, cat.db_identity)
        cands = []
        for rank, r in enumerate(rows, start=1):
            image_id = r["database_image_id"]
            if image_id not in cat.db_path:
                raise ReidkitError(f"{matches}: database image {image_id!r} (query {qid!r}) is not in the gallery given; "
                                   "pass the same --gallery (or --metadata) as the run that wrote it")
            cid = r["identity"] if kind == "identity" else image_id
            ident = r["identity"] if kind == "identity" else cat.db_identity.get(image_id)
            correct = None if true_ids is None else cid in true_ids
            own = cat.query_image(qid)
            more = tuple(g for d in sorted(by_identity.get(cid, ())) if d != image_id and (g := cat.db_image(d)) != own)[:MORE_IMAGES]
            cands.append(Candidate(cid, rank, r["_score"], cat.db_image(image_id), image_id, ident, correct,  # type: ignore[arg-type]
                                   r.get("_p_same"), more))  # type: ignore[arg-type]
        queries.append(QueryItem(qid, cat.query_image(qid), cat.query_identity.get(qid), cands, true_ids, cat.query_meta.get(qid, {})))
    return Review(kind, queries, str(matches))


def _identities(images: set[str], db_identity: Mapping[str, str]) -> frozenset[str] | None:
    if not all(d in db_identity for d in images):
        return None
    return frozenset(db_identity[d] for d in images)


def summary(review: Review) -> dict[str, float]:
    """mAP@20 (the Where's Whale-do rule, over identities in identity mode) and P@1, over the
    labelled queries that have a true match; empty when nothing is labelled."""
    from reidkit.metrics import PREDICTION_LIMIT, SubmissionRow, whaledo_map

    scored = [q for q in review.queries if q.n_true]
    if not scored:
        return {}
    rows = [SubmissionRow(q.id, c.id, c.score) for q in scored for c in q.candidates[:PREDICTION_LIMIT]]
    res = whaledo_map(rows, {q.id: set(q.truth or ()) for q in scored})
    p1 = sum(bool(q.candidates and q.candidates[0].correct) for q in scored) / len(scored)
    return {"mAP@20": res.map, "P@1": p1, "queries": float(len(scored))}


# ---------------------------------------------------------------------------------------
# catalogues


def folder_catalogue(query: Path, gallery: Path, labels: Path | None = None) -> Catalogue:
    """Folder mode: ids are paths relative to each folder. Identities come from the first
    folder level when the tree is folder-per-identity; the truth from ``labels`` or, when
    both sides have identity folders, from them (a query's own file never counts)."""
    from reidkit.data.items import read_items

    qset, gset = read_items(query), read_items(gallery)
    qp = {it.id: it.path for it in qset.items}
    gp = {it.id: it.path for it in gset.items}
    qi, gi = _item_identities(qset), _item_identities(gset)
    qbox = {it.id: it.bbox for it in qset.items}
    gbox = {it.id: it.bbox for it in gset.items}
    for it in qset.items:  # a ranking per encounter (--group-by encounter) shows its first photo
        enc = qset.encounter_of(it)
        if enc is not None and enc not in qp:
            qp[enc], qbox[enc] = it.path, it.bbox
            if it.id in qi:
                qi[enc] = qi[it.id]
    truth: dict[str, set[str]] | None = None
    if labels is not None:
        truth = labels_csv(labels)
    elif qi and gi:
        by_ident: dict[str, list[str]] = defaultdict(list)
        for g, ident in gi.items():
            by_ident[ident].append(g)
        truth = {}
        for q, ident in qi.items():
            own = (qp[q].resolve(), qbox[q])
            truth[q] = {g for g in by_ident.get(ident, []) if (gp[g].resolve(), gbox[g]) != own}
    meta = {it.id: {k: str(it.extra[k]) for k in FILTERS if it.extra.get(k)} for it in qset.items}
    return Catalogue(qp, gp, qi, gi, truth, {q: m for q, m in meta.items() if m},
                     {q: b for q, b in qbox.items() if b is not None}, {g: b for g, b in gbox.items() if b is not None})


def _item_identities(found: "ItemSet") -> dict[str, str]:
    """id -> identity: a folder tree's identity folders (none when any image lies loose), or the
    individuals a CSV or COCO file names (its unknown ones left out)."""
    if found.layout == "folders":
        return _first_folder({it.id: it.path for it in found.items})
    return {it.id: it.identity for it in found.items if it.identity is not None}


def _first_folder(paths: Mapping[str, Path]) -> dict[str, str]:
    """id -> identity folder, or {} when any image lies loose (not folder-per-identity)."""
    out = {}
    for i in paths:
        parts = PurePosixPath(i).parts
        if len(parts) < 2:
            return {}
        out[i] = parts[0]
    return out


def scenario_catalogue(metadata: Path, scenarios: Path | None, labels: Path | None = None) -> Catalogue:
    """Scenario mode: query ids map to images through the scenarios' query files (or are image
    ids themselves without ``scenarios``); truth from ``labels`` or from metadata whale_id
    (within each scenario's database, or over all images without ``scenarios``)."""
    from reidkit.data.whaledo import read_metadata, read_scenarios

    meta = read_metadata(metadata)
    q_image = {i: i for i in meta.image_ids}
    truth: dict[str, set[str]] | None = None
    if meta.whale_id and scenarios is None and labels is None:  # every image of the same whale, but itself
        by_whale: dict[str, set[str]] = defaultdict(set)
        for i, w in meta.whale_id.items():
            by_whale[w].add(i)
        truth = {i: by_whale[w] - {i} for i, w in meta.whale_id.items()}
    if scenarios is not None:
        scen = read_scenarios(scenarios, set(meta.image_ids))
        q_image = {qid: img for sc in scen for qid, img in sc.queries}
        if meta.whale_id and labels is None:
            from reidkit.evaluate import labels_from_metadata

            truth = labels_from_metadata(metadata, scenarios)[0]
    if labels is not None:
        truth = labels_csv(labels)
    rows = {r["image_id"]: r for r in read_rows(metadata, schemas.METADATA)}
    qmeta = {q: {k: rows[i][k] for k in FILTERS if rows.get(i, {}).get(k)} for q, i in q_image.items()}
    return Catalogue({q: meta.paths[i] for q, i in q_image.items()}, meta.paths,
                     {q: meta.whale_id[i] for q, i in q_image.items() if i in meta.whale_id}, meta.whale_id, truth,
                     {q: m for q, m in qmeta.items() if m}, {q: meta.bbox[i] for q, i in q_image.items() if i in meta.bbox}, meta.bbox)


def labels_csv(path: Path) -> dict[str, set[str]]:
    """``labels.csv`` (query_id,database_image_id): every true pair; queries absent from it
    have no true match."""
    from reidkit.evaluate import labels_from_csv

    return labels_from_csv(path)
