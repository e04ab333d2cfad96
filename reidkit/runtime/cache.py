"""The embedding cache: SQLite, keyed by (bundle key, backend, image content hash).

SQLite because it is in the standard library, survives SIGKILL (each committed batch is
durable, WAL journal) and needs no server. A rerun embeds nothing already embedded; a run
killed midway resumes where it stopped, losing at most the batch in flight.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Iterable

import numpy as np

from reidkit.errors import ReidkitError


class EmbeddingCache:
    def __init__(self, path: str | Path, namespace: str, dim: int) -> None:
        self.path, self.ns, self.dim = Path(path), namespace, dim
        try:
            self.db = sqlite3.connect(str(self.path))
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("CREATE TABLE IF NOT EXISTS emb (ns TEXT, key TEXT, vec BLOB, PRIMARY KEY (ns, key))")
            self.db.commit()
        except sqlite3.DatabaseError as exc:
            raise ReidkitError(f"--cache {self.path} is not a reidkit cache ({exc}); delete it or choose another file") from None

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
        with self.db:
            self.db.executemany("INSERT OR REPLACE INTO emb VALUES (?, ?, ?)",
                                [(self.ns, k, np.ascontiguousarray(v, np.float32).tobytes()) for k, v in items.items()])

    def close(self) -> None:
        self.db.close()
