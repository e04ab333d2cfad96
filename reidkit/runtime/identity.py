"""Rank individuals instead of images (``reid-infer --by identity``).

A photo-ID team decides per individual: "which known whale is this?", not "which photo
is closest?". Each gallery identity gets one score aggregated over its images, and the
query's own image never counts.

Aggregates (cosines, mapped to [0, 1] afterwards exactly like image scores):

- ``max``: the identity's best image. Robust when an individual has one good photo among
  many poor ones, and what Wildbook and wildlife-tools show by default.
- ``mean-top2``: the mean of the identity's two best images (its only image when it has
  one). Rewards individuals that match on more than one photo.

How deep the image shortlist must be. The top-k identities by ``max`` are the first k
distinct identities of the image ranking, so ``k * (most images of one identity)`` images
are always enough: that is the first depth tried. ``mean-top2`` can need more: an
identity with one image in the shortlist has an unknown second score, at most the
shortlist's last score ``t``. A query's answer is accepted only when the k best exactly
known identities score at least every bound (``(best + t) / 2`` for a half-seen identity,
``t`` for an unseen one); otherwise the query's shortlist grows four-fold, up to the whole
gallery, where everything is exact. So the result equals aggregating over every gallery
image, while the usual cost stays a faiss search of a few hundred neighbours.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import Sequence

import numpy as np

from reidkit.errors import ReidkitError
from reidkit.runtime.knn import shortlist, to_unit_score
from reidkit.data import schemas

AGGREGATES = ("max", "mean-top2")
HEADER = list(schemas.IDENTITY_MATCHES)


@dataclass(frozen=True)
class IdentityMatch:
    identity: str
    cosine: float  # aggregated cosine in [-1, 1]
    image: int  # database row of the identity's best image


def folder_identities(gallery_ids: Sequence[str], gallery: object) -> list[str]:
    """Identity of each gallery image id (``<identity>/<...>/<image>``, posix, relative to the
    gallery): its first folder. A loose image means the gallery is not folder-per-identity."""
    out = []
    for gid in gallery_ids:
        parts = PurePosixPath(gid).parts
        if len(parts) < 2:
            raise ReidkitError(f"--by identity needs --gallery {gallery} as one folder per identity (<identity>/<image>), "
                               f"but {gid!r} lies directly in it; move each image into its identity's folder")
        out.append(parts[0])
    return out


def rank_identities(database: np.ndarray, queries: np.ndarray, identities: Sequence[str], top_k: int,
                    self_index: np.ndarray | None = None, aggregate: str = "max", qe: int = 0,
                    dba: int = 0) -> list[list[IdentityMatch]]:
    """Per query: up to ``top_k`` identities, best first, each once; exact over the whole gallery
    (see the module docstring for the shortlist depth)."""
    if aggregate not in AGGREGATES:
        raise ReidkitError(f"unknown aggregate {aggregate!r}; use one of {', '.join(AGGREGATES)}")
    if len(identities) != len(database):
        raise ValueError("one identity per database row is needed")
    n_db = len(database)
    names, codes = np.unique(np.asarray(identities, dtype=object).astype(str), return_inverse=True)
    counts = np.bincount(codes, minlength=len(names))
    own = np.full(len(queries), -1, np.int64) if self_index is None else np.asarray(self_index, np.int64)
    out: list[list[IdentityMatch]] = [[] for _ in range(len(queries))]
    if n_db == 0 or len(queries) == 0:
        return out
    depth = min(n_db, top_k * int(counts.max()))
    pending = np.arange(len(queries))
    while len(pending):
        sims, idx = shortlist(database, queries[pending], depth, own[pending], qe, dba)
        retry = []
        for row, q in enumerate(pending.tolist()):
            eff = counts.copy()  # images per identity that may count for this query
            if own[q] >= 0:
                eff[codes[own[q]]] -= 1
            got = _aggregate(sims[row], idx[row], codes, eff, top_k, aggregate)
            if got is None:
                retry.append(q)
            else:
                out[q] = [IdentityMatch(str(names[c]), v, j) for c, v, j in got]
        if depth >= n_db:  # the whole gallery was seen: _aggregate cannot have refused
            break
        pending = np.asarray(retry, np.int64)
        depth = min(n_db, depth * 4)
    return out


def identity_rows(results: Sequence[Sequence[IdentityMatch]], qids: Sequence[str],
                  dids: Sequence[str]) -> list[tuple[str, ...]]:
    """CSV rows ``query_id,identity,score,database_image_id``; scores mapped like image scores."""
    flat = [(q, m) for q, ms in zip(qids, results) for m in ms]
    scores = to_unit_score(np.array([m.cosine for _, m in flat], np.float64)).tolist()
    return [(q, m.identity, f"{s:.6f}", dids[m.image]) for (q, m), s in zip(flat, scores)]


def _aggregate(sims: np.ndarray, idx: np.ndarray, codes: np.ndarray, eff: np.ndarray, k: int,
               aggregate: str) -> list[tuple[int, float, int]] | None:
    """(identity code, aggregated cosine, best row) for the top k, or None when this
    shortlist cannot prove them (mean-top2 only)."""
    keep = idx >= 0
    idx, sims = idx[keep], sims[keep].astype(np.float64)
    if len(idx) == 0:
        return [] if not (eff > 0).any() else None
    c = codes[idx]
    order = np.argsort(c, kind="stable")  # grouped by identity, best image first within each
    cs = c[order]
    starts = np.flatnonzero(np.r_[True, cs[1:] != cs[:-1]])
    ident = cs[starts]
    first = order[starts]
    best = sims[first]
    n_in = np.diff(np.r_[starts, len(cs)])
    t = sims[-1]
    value = best.copy()
    bounds: list[float] = []
    if aggregate == "mean-top2":
        two = n_in >= 2
        value[two] = (best[two] + sims[order[starts[two] + 1]]) / 2
        exact = two | (n_in >= eff[ident])
        bounds += ((best[~exact] + t) / 2).tolist()
    else:
        exact = np.ones(len(ident), bool)
    if (eff > 0).sum() > len(ident):  # some identity has no image in the shortlist
        bounds.append(t)
    need = min(k, int((eff > 0).sum()))
    e = np.flatnonzero(exact)
    top = e[np.lexsort((first[e], -value[e]))][:need]
    if len(top) < need or (bounds and value[top[-1]] < max(bounds)):
        return None
    return [(int(ident[i]), float(value[i]), int(idx[first[i]])) for i in top]
