"""Ranking through a gallery index: the large-gallery path of ``reid-infer`` (``--index``,
``--index-file``, ``--rerank``).

Same contract as ``knn.rank`` (per query: up to k (gallery row, similarity) pairs, best
first, never the query itself), but the neighbours come from a ``GalleryIndex`` (exact, IVF
or HNSW) and may be re-ranked on each query's shortlist.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from reidkit.errors import ReidkitError
from reidkit.runtime.index import GalleryIndex, open_or_build, resolve_kind
from reidkit.runtime.knn import database_augment, query_expand, rank
from reidkit.runtime.rerank import RerankParams, distance_to_similarity, rerank_shortlist


def rank_indexed(index: GalleryIndex, gallery: np.ndarray, queries: np.ndarray, k: int, self_index: np.ndarray | None = None,
                 qe: int = 0, rerank: RerankParams | None = None, batch: int = 4096) -> list[list[tuple[int, float]]]:
    """``gallery`` is the indexed matrix (row i = index row i), needed for QE and re-ranking.

    Queries go through the index in batches, so memory stays O(batch * K) whatever Q is.
    """
    out: list[list[tuple[int, float]]] = []
    want = (max(k, rerank.shortlist) if rerank else k) + 1  # +1: the query itself may be in the gallery
    for s in range(0, len(queries), batch):
        q = queries[s:s + batch]
        own = self_index[s:s + batch] if self_index is not None else np.full(len(q), -1)
        if qe:
            q = query_expand(q, gallery, qe, own, neighbours=index.search(q, qe + 1)[1]).astype(np.float32)
        sims, idx = index.search(q, want)
        if rerank:
            shortlist = np.where(idx == own[:, None], -1, idx)  # the query's own image is not a candidate
            d, idx = rerank_shortlist(q, gallery, shortlist, rerank)
            sims = distance_to_similarity(d)
        for i in range(len(q)):
            out.append([(int(j), float(v)) for j, v in zip(idx[i], sims[i]) if j >= 0 and j != own[i]][:k])
    return out


@dataclass(frozen=True)
class RankOptions:
    """How ``reid-infer`` searches a gallery: ``--index``, ``--index-file``, ``--rerank``."""

    index: str = "auto"
    index_file: Path | None = None
    rerank: RerankParams | None = None
    bundle_key: str = ""

    def plain(self, n_gallery: int) -> bool:
        """True when this is the exact search ``knn.rank`` already does (the small-gallery default)."""
        return self.index_file is None and self.rerank is None and resolve_kind(self.index, n_gallery) == "exact"


def gallery_ranker(opts: RankOptions | None, gallery: np.ndarray, k: int, qe: int = 0, dba: int = 0,
                   keys: Sequence[str] = ()) -> Callable[[np.ndarray, np.ndarray], list[list[tuple[int, float]]]]:
    """The gallery side done once (DBA, or the index built or opened from ``--index-file``),
    returned as ``rank(queries, self_index)``: callers feed queries in batches, so ranked rows
    can stream to disk whatever the number of queries. ``keys``: content hash per gallery row."""
    if opts is None or opts.plain(len(gallery)):
        augmented = database_augment(gallery, dba)
        return lambda queries, self_index: rank(augmented, queries, k, self_index, qe)
    if dba:
        raise ReidkitError("--dba needs the exact search of the whole gallery; drop --dba, or use --index exact without --index-file/--rerank")
    index = open_or_build(opts.index_file, gallery, list(keys), opts.bundle_key, opts.index)
    return lambda queries, self_index: rank_indexed(index, gallery, queries, k, self_index, qe, opts.rerank)
