"""The photo-ID loop: enrol a gallery, match new photos, apply reviewed decisions, undo.

Every operation is one SQLite transaction (see :mod:`reidkit.catalogue.store`), so an
interrupted command leaves the catalogue as it was. ``apply`` takes a review page's
decisions file whole: it is checked in full before anything is written, and any conflict
refuses the file with one line per conflict. A file already applied (same sha256) is
recognised and changes nothing; rows that restate what the catalogue already holds are
no-ops, so a replay is always safe. No torch: this runs on the lean runtime.
"""

from __future__ import annotations

import json
import logging
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from reidkit.catalogue.sources import box_text, encounter_of, read_gallery, read_queries
from reidkit.catalogue.store import DB_NAME, INDEX_META, INDEX_NAME, Query, Store, now, sha256_of, subject
from reidkit.data import schemas
from reidkit.data.csvio import read_rows, write_rows
from reidkit.errors import ReidkitError
from reidkit.runtime.encounters import GROUPINGS, rank_encounters

log = logging.getLogger("reidkit")

CONFIRM, REJECT, NEW = schemas.DECISION_KINDS


class ConflictError(ReidkitError):
    """A decisions file the catalogue cannot take as a whole: the first line says so, then one line per conflict."""


# -- the bundle the catalogue is tied to ------------------------------------------------------


def _embedder(store: Store | None, model: Path | None, backend: str | None, precision: str | None) -> Any:
    """An embedder on the catalogue's bundle (or ``model``), with the backend and precision the
    catalogue was built with unless others are named; refused when its key is not the catalogue's."""
    from reidkit.runtime.bundle import load_bundle

    root = model or (Path(store.meta("bundle_path") or "") if store else None)
    if root is None:
        raise ReidkitError("--model BUNDLE is needed")
    if store is not None and not Path(root).is_dir():
        raise ReidkitError(f"the catalogue's bundle {root} is gone; pass --model with the bundle it was built with")
    bundle = load_bundle(root)
    emb = bundle.embedder(backend or (store.meta("backend") if store else None) or "auto",
                          precision or (store.meta("precision") if store else None))
    key = bundle.key(emb.precision, emb.backend_name)
    if store is not None and key != store.meta("bundle_key"):
        emb.close()
        raise ReidkitError(f"{root} ({emb.backend_name} {emb.precision}) is not the bundle this catalogue was built with "
                           f"({store.meta('bundle_path')}, {store.meta('backend')} {store.meta('precision')}); pass that one with "
                           f"--model/--backend/--precision, or enrol again into a new catalogue with `reid catalogue init`")
    return bundle, emb, key


def _embed(emb: Any, items: Sequence[Any], progress: bool) -> tuple[list[int], np.ndarray, list[tuple[str, str]]]:
    """(positions of the items that embedded, their vectors, (id, reason) of the skipped ones)."""
    out = emb.embed([it.ref for it in items], progress=progress)
    rows = out.rows_of(range(len(items)))
    ok = [i for i, r in enumerate(rows.tolist()) if r >= 0]
    reasons = {str(k): v for k, v in out.skipped}
    skipped = [(items[i].id, reasons.get(str(items[i].ref), "could not be used")) for i, r in enumerate(rows.tolist()) if r < 0]
    return ok, out.vectors[rows[ok]] if ok else np.zeros((0, 0), np.float32), skipped


# -- init -------------------------------------------------------------------------------------


@dataclass
class InitSummary:
    identities: int
    images: int
    skipped: list[tuple[str, str]]


def init_catalogue(root: Path, model: Path, gallery: Path, backend: str = "auto", precision: str | None = None,
                   progress: bool = True) -> InitSummary:
    items = read_gallery(gallery)
    names = sorted({it.identity for it in items if it.identity})
    if schemas.NEW_INDIVIDUAL in names:
        raise ReidkitError(f"{gallery}: {schemas.NEW_INDIVIDUAL!r} is reserved for the open-set row; rename that identity")
    _, emb, key = _embedder(None, model, backend, precision)
    with emb:
        ok, vecs, skipped = _embed(emb, items, progress)
        backend_name, prec = emb.backend_name, emb.precision
    if not ok:
        raise ReidkitError(f"{gallery}: no image could be embedded (first: {skipped[0][0]}: {skipped[0][1]})")
    seen: dict[str, str] = {}
    for i in ok:
        it = items[i]
        subj = subject(sha256_of(it.path), box_text(it))
        if subj in seen and seen[subj] != it.identity:
            raise ReidkitError(f"{gallery}: {it.id!r} is the same image as one of identity {seen[subj]!r} but is filed under "
                               f"{it.identity!r}; keep it under one identity")
        seen[subj] = str(it.identity)
    store = Store(root, create=True)
    try:
        with store.transaction():
            for k, v in {"bundle_path": str(Path(model).resolve()), "bundle_key": key, "backend": backend_name, "precision": prec,
                         "dim": str(vecs.shape[1]), "created_at": now(), "gallery": str(Path(gallery).resolve())}.items():
                store.set_meta(k, v)
            ident = {n: store.add_identity(n, None) for n in names}
            added: set[str] = set()
            for row, i in enumerate(ok):
                it = items[i]
                sha, box = sha256_of(it.path), box_text(it)
                if subject(sha, box) in added:
                    continue  # the same photo twice under one identity: enrolled once
                added.add(subject(sha, box))
                store.add_image(it.id, str(it.path), box, sha, ident[str(it.identity)], vecs[row].astype(np.float32).tobytes(), None,
                                encounter_of(it))
            store.touch_images()
        store.write_index()
        return InitSummary(len(names), len(added), skipped)
    except BaseException:
        store.close()
        for name in (DB_NAME, f"{DB_NAME}-wal", f"{DB_NAME}-shm", INDEX_NAME, INDEX_META):  # no half-made catalogue is left
            (Path(root) / name).unlink(missing_ok=True)
        raise
    finally:
        store.close()


# -- match ------------------------------------------------------------------------------------


@dataclass
class MatchSummary:
    queries: int
    rows: int
    skipped: list[tuple[str, str]]
    groups: int = 0


def match(root: Path, query: Path, out: Path, *, model: Path | None = None, backend: str | None = None,
          precision: str | None = None, top_k: int = 20, aggregate: str = "max", new_individual: float | None = None,
          calibration: Path | None = None, group_by: str = "image", fusion: str = "max", progress: bool = True) -> MatchSummary:
    """Rank the catalogue's individuals for each query and remember the queries for ``apply``."""
    from reidkit.runtime.identity import HEADER, identity_rows, rank_identities
    from reidkit.runtime.open_set import insert_new_individual, with_p_same

    if group_by not in GROUPINGS:
        raise ReidkitError(f"--group-by {group_by!r}: choose one of {', '.join(GROUPINGS)}")
    curve = None
    if calibration is not None:
        from reidkit.calibration import load_calibration

        curve = load_calibration(calibration).curve("identity")
    if new_individual is not None and curve is None and not 0.0 <= new_individual <= 1.0:
        raise ReidkitError(f"--new-individual {new_individual}: a score threshold lies in [0, 1]")
    items = read_queries(query)
    with Store(root) as store:
        _, emb, _ = _embedder(store, model, backend, precision)
        with emb:
            ok, Q, skipped = _embed(emb, items, progress)
        queries = [Query(items[i].id, str(items[i].path), box_text(items[i]), sha256_of(items[i].path), encounter_of(items[i]),
                         Q[n].astype(np.float32).tobytes()) for n, i in enumerate(ok)]
        gal = store.index_vectors()
        own_of = {s: j for j, s in enumerate(gal.subjects)}
        if group_by == "encounter":
            qids, results = rank_encounters(gal.vectors, Q, gal.identities, [own_of.get(q.subject, -1) for q in queries],
                                            [q.encounter or q.id for q in queries], top_k, fusion, gal.encounters)
        else:
            own = np.array([own_of.get(q.subject, -1) for q in queries], np.int64)
            qids = [q.id for q in queries]
            results = rank_identities(gal.vectors, Q, gal.identities, top_k, own, aggregate) if len(Q) else []
        rows: Any = identity_rows(results, qids, gal.image_ids)
        header = list(HEADER)
        if curve is not None:
            rows, header = with_p_same(rows, curve), header + [schemas.P_SAME]
        if new_individual is not None:
            rows = list(insert_new_individual(rows, new_individual, curve))
        n = write_rows(out, header, rows)
        with store.transaction():
            store.replace_queries(queries)
            store.set_meta("last_match", json.dumps({"time": now(), "query": str(query), "queries": len(queries), "out": str(out),
                                                     "group_by": group_by}))
    return MatchSummary(len(queries), n, skipped, len(qids))


# -- apply ------------------------------------------------------------------------------------


@dataclass
class Plan:
    new_identities: dict[str, int] = field(default_factory=dict)  # name -> decisions-file line that created it
    enrol: dict[str, tuple[Query, str]] = field(default_factory=dict)  # subject -> (query, identity name)
    records: list[tuple[int, str, str, str, str]] = field(default_factory=list)  # (line, query, decision, target, outcome)
    conflicts: list[str] = field(default_factory=list)


@dataclass
class ApplySummary:
    apply_id: int | None  # None when the file was already applied
    identities_added: list[str]
    images_added: int
    rejected: int
    unchanged: int
    previous: dict[str, Any] | None = None  # the earlier apply of the same file


def _generated_name(taken: set[str]) -> str:
    """A random id for an unnamed newcomer: 122 random bits, and checked against the catalogue."""
    while True:
        name = f"ind-{uuid.uuid4().hex}"
        if name not in taken:
            return name


def _plan(store: Store, rows: list[dict[str, str]], where: str) -> Plan:
    plan = Plan()
    queries = store.queries()
    identities = set(store.identity_ids())
    enrolled = store.image_by_subject()  # subject -> (image id, identity)
    image_identity = {img: name for img, name in enrolled.values()}
    created_by_file = {r["identity_or_image"] for r in rows if r["decision"] == NEW and r["identity_or_image"]}
    generated: set[str] = set()
    for n, r in enumerate(rows, start=2):
        line = f"{where}, line {n}"
        qid, kind, target = r["query_id"], r["decision"], r["identity_or_image"]
        if kind not in schemas.DECISION_KINDS:
            plan.conflicts.append(f"{line}: decision {kind!r} is not one of {', '.join(schemas.DECISION_KINDS)}")
            continue
        q = queries.get(qid)
        if q is None:
            plan.conflicts.append(f"{line}: query {qid!r} is not in the catalogue's last match; run `reid catalogue match` on it first")
            continue
        if kind == REJECT:
            plan.records.append((n, qid, kind, target, "recorded"))
            continue
        if kind == NEW:
            if target == schemas.NEW_INDIVIDUAL:
                plan.conflicts.append(f"{line}: {schemas.NEW_INDIVIDUAL!r} is reserved; name the newcomer, or leave the name empty")
                continue
            if target in identities and enrolled.get(q.subject, ("", ""))[1] != target:
                plan.conflicts.append(f"{line}: new individual {target!r} already exists in the catalogue; confirm to it, or choose another name")
                continue
            if not target:
                target = _generated_name(identities | created_by_file | generated)
                generated.add(target)
            if target not in identities:
                plan.new_identities.setdefault(target, n)
        else:
            if target in image_identity and target not in identities and target not in created_by_file:
                target = image_identity[target]  # confirmed by a candidate image: the identity it shows
            if target not in identities and target not in created_by_file:
                plan.conflicts.append(f"{line}: confirm names {target!r}, which is neither an identity of the catalogue nor "
                                      "a new individual of this file")
                continue
        held = enrolled.get(q.subject)
        if held is not None and held[1] != target:
            plan.conflicts.append(f"{line}: query {qid!r} is already enrolled as image {held[0]!r} of identity {held[1]!r}, "
                                  f"not {target!r}")
            continue
        earlier = plan.enrol.get(q.subject)
        if earlier is not None and earlier[1] != target:
            plan.conflicts.append(f"{line}: query {qid!r} goes to {target!r} here but to {earlier[1]!r} on an earlier line "
                                  "(the same image cannot be two individuals)")
            continue
        if held is not None or earlier is not None:
            plan.records.append((n, qid, kind, target, "unchanged"))
            continue
        plan.enrol[q.subject] = (q, target)
        plan.records.append((n, qid, kind, target, "enrolled"))
    return plan


def apply_decisions(root: Path, decisions: Path, reviewer: str | None = None) -> ApplySummary:
    """Apply a decisions file whole; ``reviewer`` defaults to the names in its optional reviewer column."""
    rows = read_rows(decisions, schemas.DECISIONS)
    if not (reviewer or "").strip():
        reviewer = ", ".join(sorted({r.get(schemas.DECISIONS_OPTIONAL[0], "") for r in rows} - {""}))
    if not reviewer:
        raise ReidkitError(f"{decisions} names no reviewer; pass --reviewer NAME (every apply is logged with who decided)")
    digest = sha256_of(Path(decisions))
    with Store(root) as store:
        with store.transaction():  # the replay check inside it: two concurrent applies of one file make one apply
            done = next((a for a in store.applies() if a["sha256"] == digest), None)
            if done is not None:
                return ApplySummary(None, [], 0, 0, len(rows), done)
            plan = _plan(store, rows, str(decisions))
            if plan.conflicts:
                raise ConflictError(f"{decisions}: {len(plan.conflicts)} conflict(s); nothing was changed\n" + "\n".join(plan.conflicts))
            dim = store.dim
            for q, _ in plan.enrol.values():
                if len(q.embedding) != 4 * dim:  # the stored queries came from this catalogue's bundle; guard a corrupted row
                    raise ReidkitError(f"query {q.id!r}: its stored embedding does not fit this catalogue; run `reid catalogue match` again")
            added, rejected = sorted(plan.new_identities), sum(r[4] == "recorded" for r in plan.records)
            unchanged = sum(r[4] == "unchanged" for r in plan.records)
            changes = {"identities_added": added, "images_added": len(plan.enrol), "rejected": rejected, "unchanged": unchanged}
            cur = store.db.execute("INSERT INTO applies(time, reviewer, file, sha256, changes) VALUES(?, ?, ?, ?, ?)",
                                   (now(), reviewer, str(decisions), digest, json.dumps(changes, sort_keys=True)))
            apply_id = int(cur.lastrowid or 0)
            ident = store.identity_ids()
            for name in sorted(plan.new_identities, key=plan.new_identities.__getitem__):
                ident[name] = store.add_identity(name, apply_id)
            for q, name in plan.enrol.values():
                store.add_image(q.id, q.path, q.box, q.sha256, ident[name], q.embedding, apply_id, q.encounter)
            store.db.executemany("INSERT INTO decisions(apply_id, line, query_id, decision, target, outcome) VALUES(?, ?, ?, ?, ?, ?)",
                                 [(apply_id, *r) for r in plan.records])
            if plan.enrol:
                store.touch_images()
        if plan.enrol:
            store.write_index()
        return ApplySummary(apply_id, added, len(plan.enrol), rejected, unchanged)


# -- undo and info ----------------------------------------------------------------------------


def undo(root: Path) -> dict[str, Any]:
    """Revert the last apply exactly: its images, its new identities and its decisions go; the log keeps it as undone."""
    with Store(root) as store:
        with store.transaction():
            applies = store.applies()
            if not applies:
                raise ReidkitError(f"{root}: no apply to undo")
            last = applies[-1]
            aid = last["apply"]
            store.db.execute("DELETE FROM images WHERE apply_id=?", (aid,))
            store.db.execute("DELETE FROM identities WHERE apply_id=?", (aid,))
            store.db.execute("DELETE FROM decisions WHERE apply_id=?", (aid,))
            store.db.execute("DELETE FROM applies WHERE id=?", (aid,))
            store.db.execute("INSERT INTO undone(apply_id, time, reviewer, file, sha256, changes, undone_at) VALUES(?, ?, ?, ?, ?, ?, ?)",
                             (aid, last["time"], last["reviewer"], last["file"], last["sha256"], json.dumps(last["changes"], sort_keys=True), now()))
            store.touch_images()
        store.write_index()
        return last


def info(root: Path, history: bool = False) -> dict[str, Any]:
    """The catalogue as a document: what is in it (``state_sha256`` covers every identity, image and
    embedding), its bundle and the applies in force; so an undo gives back exactly the document
    before the apply it reverts. ``history`` adds the undone applies, which the log keeps."""
    with Store(root) as store:
        counts = dict(store.db.execute("SELECT identities.name, COUNT(images.id) FROM identities LEFT JOIN images "
                                       "ON images.identity = identities.id GROUP BY identities.id ORDER BY identities.name").fetchall())
        return {
            "catalogue": str(Path(root).resolve()),
            "bundle": {"path": store.meta("bundle_path"), "key": store.meta("bundle_key"), "backend": store.meta("backend"),
                       "precision": store.meta("precision"), "dim": store.dim},
            "identities": counts,
            "images": sum(counts.values()),
            "state_sha256": store.state_digest(),
            "applies": store.applies(),
            **({"undone": store.undone()} if history else {}),
        }

