"""One identity ranking per encounter (``--group-by encounter``).

Photo-ID teams photograph an animal several times in one sighting; each photo alone may be
poor, and the decision is made once per sighting. Each photo scores every identity by its
best image (max cosine), and the encounter fuses its photos' scores per identity: ``max``
(one clear photo decides) or ``mean`` (every photo must agree). Images of the query's own
encounter are never candidates, so an encounter enrolled earlier cannot vote for itself.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from reidkit.errors import ReidkitError
from reidkit.runtime.identity import IdentityMatch

GROUPINGS = ("image", "encounter")  # --group-by: rank each photo, or each encounter's photos together
FUSIONS = ("max", "mean")  # how an encounter fuses its photos' identity scores; max measured best (research/encounter-fusion)
BLOCK = 256  # query photos per dense block: memory O(BLOCK x gallery)


def photo_identity_scores(gallery: np.ndarray, photos: np.ndarray, codes: np.ndarray, n_ids: int,
                          banned: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Per photo and identity: the best cosine over the identity's allowed images, and that image's row
    (-inf and -1 where an identity has no allowed image). ``banned[i]``: gallery rows photo i may not use."""
    order = np.argsort(codes, kind="stable")
    starts = np.flatnonzero(np.r_[True, codes[order][1:] != codes[order][:-1]])
    present = codes[order][starts]
    best = np.full((len(photos), n_ids), -np.inf, np.float64)
    arg = np.full((len(photos), n_ids), -1, np.int64)
    for s in range(0, len(photos), BLOCK):
        S = (photos[s:s + BLOCK] @ gallery.T).astype(np.float64)
        for i, rows in enumerate(banned[s:s + BLOCK]):
            S[i, rows] = -np.inf
        Ss = S[:, order]
        lines = np.arange(len(Ss))
        for st, en, c in zip(starts, np.r_[starts[1:], len(order)], present):
            j = st + np.argmax(Ss[:, st:en], axis=1)
            mx = Ss[lines, j]
            best[s:s + BLOCK, c] = mx
            arg[s:s + BLOCK, c] = np.where(np.isfinite(mx), order[j], -1)
    return best, arg


def rank_encounters(gallery: np.ndarray, photos: np.ndarray, identities: Sequence[str], own: Sequence[int],
                    encounters: Sequence[str], top_k: int, fusion: str = "max",
                    gallery_encounters: Sequence[str | None] | None = None) -> tuple[list[str], list[list[IdentityMatch]]]:
    """(encounter ids in first-seen order, per encounter up to ``top_k`` identities best first)."""
    if fusion not in FUSIONS:
        raise ReidkitError(f"--fusion {fusion!r}: choose one of {', '.join(FUSIONS)}")
    names, codes = np.unique(np.asarray(identities, dtype=object).astype(str), return_inverse=True)
    groups = list(dict.fromkeys(encounters))
    if len(gallery) == 0 or len(photos) == 0:
        return groups, [[] for _ in groups]
    genc = np.asarray([g or "" for g in (gallery_encounters or [None] * len(gallery))], dtype=object)
    banned = [np.unique(np.r_[np.flatnonzero(genc == e) if e else np.zeros(0, np.int64), [o] if o >= 0 else []]).astype(np.int64)
              for o, e in zip(own, encounters)]
    best, arg = photo_identity_scores(gallery, photos, codes, len(names), banned)
    enc = np.asarray(encounters, dtype=object)
    out = []
    for g in groups:
        rows = np.flatnonzero(enc == g)
        b = best[rows]
        valid = np.isfinite(b)
        if fusion == "max":
            fused = b.max(axis=0)
        else:  # photos that cannot see an identity (all its images banned) do not vote on it
            fused = np.where(valid.any(axis=0), np.where(valid, b, 0.0).sum(axis=0) / np.maximum(valid.sum(axis=0), 1), -np.inf)
        which = np.where(valid, b, -np.inf).argmax(axis=0)  # the photo whose image is shown
        ids = [int(i) for i in np.argsort(-fused, kind="stable") if np.isfinite(fused[i])][:top_k]
        out.append([IdentityMatch(str(names[i]), float(fused[i]), int(arg[rows[which[i]], i])) for i in ids])
    return groups, out
