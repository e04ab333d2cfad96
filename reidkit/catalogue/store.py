"""The catalogue on disk: one SQLite file (WAL) and a faiss index derived from it.

SQLite holds everything that is the catalogue: identities, images (path, sha256, embedding),
the last match's queries, the log of applies and of undone applies. The faiss index
(``index.faiss`` + ``index.json``) is a copy of the image embeddings in search order; it is
stamped with the state it was built from and rebuilt whenever the stamp does not match, so a
crash between the database commit and the index write can never serve a stale index.

Images are never copied: a catalogue names each image by its absolute path and its sha256,
so a moved or edited file is detected, and the catalogue stays small.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from reidkit.atomic import atomic_path, atomic_write
from reidkit.errors import ReidkitError

FORMAT = 1
DB_NAME, INDEX_NAME, INDEX_META = "catalogue.sqlite", "index.faiss", "index.json"

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE identities (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE, apply_id INTEGER);
CREATE TABLE images (id INTEGER PRIMARY KEY, image_id TEXT NOT NULL UNIQUE, path TEXT NOT NULL, box TEXT NOT NULL,
                     sha256 TEXT NOT NULL, identity INTEGER NOT NULL REFERENCES identities(id), encounter TEXT,
                     embedding BLOB NOT NULL, apply_id INTEGER, UNIQUE(sha256, box));
CREATE TABLE queries (query_id TEXT PRIMARY KEY, path TEXT NOT NULL, box TEXT NOT NULL, sha256 TEXT NOT NULL, encounter TEXT,
                      embedding BLOB NOT NULL);
CREATE TABLE applies (id INTEGER PRIMARY KEY AUTOINCREMENT, time TEXT NOT NULL, reviewer TEXT NOT NULL, file TEXT NOT NULL,
                      sha256 TEXT NOT NULL, changes TEXT NOT NULL);
CREATE TABLE decisions (apply_id INTEGER NOT NULL, line INTEGER NOT NULL, query_id TEXT NOT NULL, decision TEXT NOT NULL,
                        target TEXT NOT NULL, outcome TEXT NOT NULL);
CREATE TABLE undone (apply_id INTEGER PRIMARY KEY, time TEXT NOT NULL, reviewer TEXT NOT NULL, file TEXT NOT NULL,
                     sha256 TEXT NOT NULL, changes TEXT NOT NULL, undone_at TEXT NOT NULL);
"""


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sha256_of(path: Path) -> str:
    from reidkit.hashing import sha256_file

    return sha256_file(path)


def subject(sha: str, box: str) -> str:
    """What one enrolled image is: a file's content, or one box on it."""
    return f"{sha}{box}"


@dataclass(frozen=True)
class Query:
    """One image of the last match, kept with its embedding so ``apply`` never re-embeds."""

    id: str
    path: str
    box: str
    sha256: str
    encounter: str | None
    embedding: bytes

    @property
    def subject(self) -> str:
        return subject(self.sha256, self.box)


@dataclass(frozen=True)
class Gallery:
    """The catalogue's images in index order, as the ranking needs them."""

    image_ids: list[str]
    identities: list[str]
    paths: list[Path]
    subjects: list[str]  # sha256 of the file, plus the box when the image is a box on a photo
    encounters: list[str | None]
    vectors: np.ndarray  # float32 [n, D]


class Store:
    """One open catalogue folder. Every change runs inside :meth:`transaction`."""

    def __init__(self, root: Path, create: bool = False) -> None:
        self.root = Path(root)
        db = self.root / DB_NAME
        if create:
            if db.exists():
                raise ReidkitError(f"{self.root} already holds a catalogue; choose a new folder, or use `reid catalogue match/apply` on it")
            self.root.mkdir(parents=True, exist_ok=True)
        elif not db.is_file():
            raise ReidkitError(f"{self.root} is not a catalogue (no {DB_NAME}); create one with `reid catalogue init {self.root} --model BUNDLE --gallery DIR`")
        self.db = sqlite3.connect(db, isolation_level=None)  # explicit BEGIN/COMMIT below
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA foreign_keys=ON")
        self.db.execute("PRAGMA busy_timeout=30000")
        if create:
            with self.transaction():
                for statement in filter(str.strip, SCHEMA.split(";")):
                    self.db.execute(statement)
                self.set_meta("format", str(FORMAT))
        elif self.meta("format") != str(FORMAT):
            raise ReidkitError(f"{self.root}: catalogue format {self.meta('format')!r} is not {FORMAT}; use the reidkit version that made it")

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> "Store":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """All or nothing; IMMEDIATE so that two writers queue instead of failing halfway."""
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield self.db
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    # -- meta ---------------------------------------------------------------------------
    def meta(self, key: str) -> str | None:
        row = self.db.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return None if row is None else str(row[0])

    def set_meta(self, key: str, value: str) -> None:
        self.db.execute("INSERT INTO meta(key, value) VALUES(?, ?) ON CONFLICT(key) DO UPDATE SET value=excluded.value", (key, value))

    @property
    def dim(self) -> int:
        return int(self.meta("dim") or 0)

    def touch_images(self) -> None:
        """A new stamp for the image set: the index on disk no longer matches until rebuilt."""
        self.set_meta("index_stamp", uuid.uuid4().hex)

    # -- reads --------------------------------------------------------------------------
    def identity_ids(self) -> dict[str, int]:
        return {str(n): int(i) for i, n in self.db.execute("SELECT id, name FROM identities")}

    def image_by_subject(self) -> dict[str, tuple[str, str]]:
        """subject (see :func:`subject`) -> (image id, identity name) of every enrolled image."""
        q = ("SELECT images.sha256, images.box, images.image_id, identities.name FROM images "
             "JOIN identities ON images.identity = identities.id")
        return {subject(s, b): (str(i), str(n)) for s, b, i, n in self.db.execute(q)}

    def gallery(self) -> Gallery:
        rows = self.db.execute("SELECT images.image_id, identities.name, images.path, images.sha256, images.box, images.encounter, "
                               "images.embedding FROM images JOIN identities ON images.identity = identities.id ORDER BY images.id").fetchall()
        vecs = np.frombuffer(b"".join(r[6] for r in rows), np.float32).reshape(len(rows), self.dim) if rows else np.zeros((0, self.dim), np.float32)
        return Gallery([r[0] for r in rows], [r[1] for r in rows], [Path(r[2]) for r in rows], [subject(r[3], r[4]) for r in rows],
                       [r[5] for r in rows], vecs)

    def queries(self) -> dict[str, Query]:
        """The last match's queries by id."""
        return {str(r[0]): Query(str(r[0]), str(r[1]), str(r[2]), str(r[3]), r[4], bytes(r[5]))
                for r in self.db.execute("SELECT query_id, path, box, sha256, encounter, embedding FROM queries")}

    # -- the index ----------------------------------------------------------------------
    def index_vectors(self) -> Gallery:
        """The gallery with its vectors read from the persisted faiss index (rebuilt when stale)."""
        from reidkit.runtime.knn import _faiss

        faiss = _faiss()
        gal = self.gallery()
        stamp, path, meta_path = self.meta("index_stamp"), self.root / INDEX_NAME, self.root / INDEX_META
        try:
            meta = json.loads(meta_path.read_text())
            fresh = meta.get("stamp") == stamp and meta.get("vectors") == len(gal.image_ids) and path.is_file()
        except (OSError, ValueError):
            fresh = False
        if not fresh:
            self.write_index(gal)
        index = faiss.read_index(str(path))
        vecs = index.reconstruct_n(0, index.ntotal) if index.ntotal else np.zeros((0, self.dim), np.float32)
        return Gallery(gal.image_ids, gal.identities, gal.paths, gal.subjects, gal.encounters, np.ascontiguousarray(vecs, np.float32))

    def write_index(self, gal: Gallery | None = None) -> None:
        """Exact inner-product index (identity ranking aggregates over the exact search)."""
        from reidkit.runtime.knn import _faiss

        faiss = _faiss()
        gal = gal or self.gallery()
        index = faiss.IndexFlatIP(self.dim)
        if len(gal.vectors):
            index.add(np.ascontiguousarray(gal.vectors, np.float32))
        with atomic_path(self.root / INDEX_NAME) as tmp:
            faiss.write_index(index, str(tmp))
        with atomic_write(self.root / INDEX_META, "w", encoding="utf-8") as fh:
            json.dump({"stamp": self.meta("index_stamp"), "vectors": len(gal.vectors), "bundle_key": self.meta("bundle_key"),
                       "kind": "IndexFlatIP"}, fh, indent=2)

    # -- writes -------------------------------------------------------------------------
    def add_identity(self, name: str, apply_id: int | None) -> int:
        cur = self.db.execute("INSERT INTO identities(name, apply_id) VALUES(?, ?)", (name, apply_id))
        assert cur.lastrowid is not None
        return int(cur.lastrowid)

    def add_image(self, image_id: str, path: str, box: str, sha: str, identity: int, embedding: bytes, apply_id: int | None,
                  encounter: str | None = None) -> str:
        """Enrol one image; returns its id (the given one, made unique with the sha256 when two sources reuse a name)."""
        if self.db.execute("SELECT 1 FROM images WHERE image_id=?", (image_id,)).fetchone():
            image_id = f"{image_id}@{hashlib.sha256(subject(sha, box).encode()).hexdigest()[:12]}"
        self.db.execute("INSERT INTO images(image_id, path, box, sha256, identity, encounter, embedding, apply_id) "
                        "VALUES(?, ?, ?, ?, ?, ?, ?, ?)", (image_id, path, box, sha, identity, encounter, embedding, apply_id))
        return image_id

    def replace_queries(self, rows: Sequence[Query]) -> None:
        self.db.execute("DELETE FROM queries")
        self.db.executemany("INSERT INTO queries(query_id, path, box, sha256, encounter, embedding) VALUES(?, ?, ?, ?, ?, ?)",
                            [(q.id, q.path, q.box, q.sha256, q.encounter, q.embedding) for q in rows])

    # -- the log ------------------------------------------------------------------------
    def applies(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT id, time, reviewer, file, sha256, changes FROM applies ORDER BY id").fetchall()
        return [{"apply": r[0], "time": r[1], "reviewer": r[2], "file": r[3], "sha256": r[4], "changes": json.loads(r[5])} for r in rows]

    def undone(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT apply_id, time, reviewer, file, sha256, changes, undone_at FROM undone ORDER BY apply_id").fetchall()
        return [{"apply": r[0], "time": r[1], "reviewer": r[2], "file": r[3], "sha256": r[4], "changes": json.loads(r[5]),
                 "undone_at": r[6]} for r in rows]

    def state_digest(self) -> str:
        """sha256 over every identity and image (embedding bytes included): equal digests, equal catalogues."""
        h = hashlib.sha256()
        for name, in self.db.execute("SELECT name FROM identities ORDER BY name"):
            h.update(f"identity\0{name}\0".encode())
        q = ("SELECT images.image_id, images.path, images.box, images.sha256, identities.name, images.embedding FROM images "
             "JOIN identities ON images.identity = identities.id ORDER BY images.id")
        for image_id, path, box, sha, name, emb in self.db.execute(q):
            h.update(f"image\0{image_id}\0{path}\0{box}\0{sha}\0{name}\0".encode())
            h.update(emb)
        return h.hexdigest()
