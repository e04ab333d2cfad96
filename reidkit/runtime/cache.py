"""The embedding cache: SQLite, keyed by (bundle key, backend, image content hash).

SQLite because it is in the standard library, survives SIGKILL (each committed batch is
durable, WAL journal) and needs no server. A rerun embeds nothing already embedded; a run
killed midway resumes where it stopped, losing at most the batch in flight.

Several processes may share one cache file: WAL lets readers run beside the writer, writes
take the lock up front (``BEGIN IMMEDIATE``) and wait for it (busy timeout) instead of
failing, and a row is only ever an embedding of its content key, so whichever process
writes it first, every process reads the same vector.

A file that is not a reidkit cache of this format, or is damaged, is refused with the fix,
never used: the format is stamped in ``PRAGMA application_id`` / ``user_version``, and
``PRAGMA quick_check`` (cheap: no index cross-checks) runs on open.
"""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Iterable

import numpy as np

from reidkit.errors import ReidkitError

APPLICATION_ID = 0x52454944  # "REID"
CACHE_FORMAT = 3  # user_version; 1 was the unstamped table of reidkit 0.1.0, 2 keyed images by blake2b
BUSY_TIMEOUT_S = 60.0


class EmbeddingCache:
    def __init__(self, path: str | Path, namespace: str, dim: int) -> None:
        self.path, self.ns, self.dim = Path(path), namespace, dim
        fix = f"delete {self.path} (it is only a cache) or point --cache at another file"
        try:
            self.db = sqlite3.connect(str(self.path), timeout=BUSY_TIMEOUT_S, isolation_level=None)
            app, version = self._stamp()
            tables = self._tables()
            if (app, version) == (0, 0) and not tables:
                self._create()
            elif app == 0 and tables == ["emb", "sqlite_autoindex_emb_1"]:
                raise ReidkitError(f"--cache {self.path} is an unversioned cache of an older reidkit (format 1), "
                                   f"this reidkit writes format {CACHE_FORMAT}; {fix}")
            elif app != APPLICATION_ID:
                raise ReidkitError(f"--cache {self.path} is not a reidkit embedding cache; {fix}")
            elif version != CACHE_FORMAT:
                raise ReidkitError(f"--cache {self.path} has cache format {version}, this reidkit writes format {CACHE_FORMAT}; {fix}")
            check = self.db.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise ReidkitError(f"--cache {self.path} is damaged ({check}); {fix}")
            self.db.execute("PRAGMA synchronous=NORMAL")
        except sqlite3.DatabaseError as exc:
            raise ReidkitError(f"--cache {self.path} is not a readable reidkit cache ({exc}); {fix}") from None

    def _stamp(self) -> tuple[int, int]:
        return (self.db.execute("PRAGMA application_id").fetchone()[0], self.db.execute("PRAGMA user_version").fetchone()[0])

    def _tables(self) -> list[str]:
        return [n for (n,) in self.db.execute("SELECT name FROM sqlite_master")]

    def _create(self) -> None:
        """Create and stamp a new cache; a second process racing to do the same waits, then finds it done."""
        self.db.execute("PRAGMA journal_mode=WAL")
        self._write(lambda: (self.db.execute("CREATE TABLE IF NOT EXISTS emb (ns TEXT, key TEXT, vec BLOB, PRIMARY KEY (ns, key))"),
                             self.db.execute(f"PRAGMA application_id={APPLICATION_ID}"),
                             self.db.execute(f"PRAGMA user_version={CACHE_FORMAT}")))

    def _write(self, work) -> None:  # type: ignore[no-untyped-def]
        """One write transaction, taking the write lock first (no deadlock on upgrade), retried while locked."""
        deadline = time.monotonic() + BUSY_TIMEOUT_S
        while True:
            try:
                self.db.execute("BEGIN IMMEDIATE")
                break
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc) or time.monotonic() > deadline:
                    raise ReidkitError(f"--cache {self.path}: could not take the write lock ({exc}); another process holds it") from None
                time.sleep(0.05)
        try:
            work()
            self.db.execute("COMMIT")
        except BaseException:
            self.db.execute("ROLLBACK")
            raise

    def keys(self) -> set[str]:
        return {k for (k,) in self.db.execute("SELECT key FROM emb WHERE ns = ?", (self.ns,))}

    def get(self, keys: Iterable[str]) -> dict[str, np.ndarray]:
        out = {}
        keys = list(keys)
        for i in range(0, len(keys), 500):
            part = keys[i:i + 500]
            q = f"SELECT key, vec FROM emb WHERE ns = ? AND key IN ({','.join('?' * len(part))})"
            for k, blob in self.db.execute(q, (self.ns, *part)):
                v = np.frombuffer(blob, dtype=np.float32)
                if v.shape == (self.dim,):
                    out[k] = v
        return out

    def put(self, items: dict[str, np.ndarray]) -> None:
        rows = [(self.ns, k, np.ascontiguousarray(v, np.float32).tobytes()) for k, v in items.items()]
        self._write(lambda: self.db.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?, ?)", rows))

    def close(self) -> None:
        self.db.close()
