"""How far one ranking keeps another: the one copy of top-20 overlap, used by the engine sweep
(``reid bench``, on embeddings) and the headline comparison (``make bench``, on submissions)."""

from __future__ import annotations

import statistics
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from reidkit.data.csvio import read_rows
from reidkit.data.schemas import MATCHES


def list_overlap(a: Iterable[Sequence[object]], b: Iterable[Sequence[object]]) -> float:
    """Mean over queries of |A and B| / max(|A|, |B|): the share of one ranked list the other keeps."""
    return float(statistics.mean(len(set(x) & set(y)) / max(1, len(x), len(y)) for x, y in zip(a, b)))


def top_k_lists(embeddings: np.ndarray, k: int = 20) -> np.ndarray:
    """Each row's k nearest other rows by cosine (leave-one-out), best first."""
    s = embeddings @ embeddings.T
    np.fill_diagonal(s, -np.inf)
    return np.argsort(-s, axis=1)[:, :k]


def embedding_overlap(ref: np.ndarray, got: np.ndarray, k: int = 20) -> float:
    """Top-k overlap of two embeddings of the same images, each image querying the others."""
    k = min(k, len(ref) - 1)
    if k < 1:
        return float("nan")
    return list_overlap(top_k_lists(ref, k).tolist(), top_k_lists(got, k).tolist())


def embedding_true_kept(ref: np.ndarray, got: np.ndarray, labels: Sequence[object], k: int = 20) -> float:
    """The share of the true matches in ``ref``'s top-k lists that ``got``'s lists keep, each image
    querying the others: :func:`agreement`'s ``true_matches_kept``, on embeddings with labels."""
    k = min(k, len(ref) - 1)
    if k < 1:
        return float("nan")
    lab = np.asarray([str(x) for x in labels])
    a, b = top_k_lists(ref, k), top_k_lists(got, k)
    true_in_a = kept = 0
    for i, (x, y) in enumerate(zip(a, b)):
        hits = set(x[lab[x] == lab[i]].tolist())
        true_in_a += len(hits)
        kept += len(hits & set(y.tolist()))
    return kept / true_in_a if true_in_a else float("nan")


def read_submission(path: Path) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = defaultdict(dict)
    for r in read_rows(path, MATCHES):
        out[r["query_id"]][r["database_image_id"]] = float(r["score"])
    return out


def agreement(a: Path, b: Path, labels: Path | None = None) -> dict[str, float]:
    """How far submission ``b`` keeps ``a``'s ranked lists. With ``labels``, also the share of the
    true matches in ``a``'s lists that ``b``'s lists keep: top-20 overlap counts every swap
    alike, while a reviewer only loses something when a true match leaves the list."""
    from reidkit.evaluate import labels_from_csv

    A, B = read_submission(a), read_submission(b)
    truth = labels_from_csv(labels) if labels else None
    queries = sorted(set(A) | set(B))
    diffs: list[float] = []
    true_in_a = true_kept = 0
    for q in queries:
        x, y = A.get(q, {}), B.get(q, {})
        diffs += [abs(x[d] - y[d]) for d in set(x) & set(y)]
        if truth is not None:
            hits = set(x) & truth.get(q, set())
            true_in_a += len(hits)
            true_kept += len(hits & set(y))
    out = {"top20_overlap": list_overlap([list(A.get(q, {})) for q in queries], [list(B.get(q, {})) for q in queries]),
           "max_score_diff": max(diffs, default=0.0), "mean_score_diff": statistics.mean(diffs) if diffs else 0.0}
    if truth is not None:
        out["true_matches_kept"] = true_kept / true_in_a if true_in_a else float("nan")
    return out
