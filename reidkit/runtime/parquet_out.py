"""Embeddings as Parquet (``id``, ``embedding`` fixed-size float32 list, ``content_hash``):
the format the Ray path writes and ``--embeddings-out X.parquet`` writes, readable by pyarrow,
pandas, polars, DuckDB and Spark without reidkit.

Rows go out in row groups as they are converted, through a temporary file renamed into
place, so a large catalogue never needs a second full copy in memory and a failed write
leaves nothing behind.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np

from reidkit.atomic import atomic_path
from reidkit.errors import MissingDependencyError

ROW_GROUP = 65_536


def _pa():  # type: ignore[no-untyped-def]
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise MissingDependencyError("writing Parquet needs pyarrow; pip install 'reidkit[ray]' (or pyarrow)") from None
    return pa, pq


def schema(dim: int):  # type: ignore[no-untyped-def]
    pa, _ = _pa()
    return pa.schema([("id", pa.string()), ("embedding", pa.list_(pa.float32(), dim)), ("content_hash", pa.string())])


def write_embeddings_parquet(path: str | Path, ids: Sequence[str], vectors: np.ndarray, hashes: Sequence[str]) -> None:
    pa, pq = _pa()
    dim = int(vectors.shape[1])
    with atomic_path(path) as tmp:
        with pq.ParquetWriter(str(tmp), schema(dim)) as w:
            for s in range(0, len(ids), ROW_GROUP):
                v = np.ascontiguousarray(vectors[s:s + ROW_GROUP], np.float32)
                w.write_table(pa.table({"id": pa.array([str(i) for i in ids[s:s + ROW_GROUP]], pa.string()),
                                        "embedding": pa.FixedSizeListArray.from_arrays(pa.array(v.reshape(-1)), dim),
                                        "content_hash": pa.array(list(hashes[s:s + ROW_GROUP]), pa.string())}, schema=schema(dim)))


def read_embeddings_parquet(path: str | Path) -> tuple[list[str], np.ndarray, list[str]]:
    """A file or a directory of Parquet files (local or a cloud URI) -> ids, float32 [n, D], hashes."""
    _pa()
    import pyarrow.dataset as pads

    table = pads.dataset(str(path), format="parquet").to_table()
    emb = table.column("embedding").combine_chunks()
    dim = emb.type.list_size
    return (table.column("id").to_pylist(), emb.flatten().to_numpy().reshape(len(table), dim).astype(np.float32),
            table.column("content_hash").to_pylist())
