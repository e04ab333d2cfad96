"""Retrieval metrics, numpy only: the official Where's Whale-do mAP@20 and the usual re-ID
metrics on labelled embeddings.

Every figure reidkit reports (training validation, ``reid-eval``, benchmarks) comes from
here. scikit-learn is not a runtime dependency, so :func:`average_precision` re-implements
``sklearn.metrics.average_precision_score`` (the tests compare the two on thousands of
random and tie-heavy cases).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

import numpy as np

from reidkit.data.schemas import MATCHES

PREDICTION_LIMIT = 20


class SubmissionError(ValueError):
    """An invalid submission; the message names the row (1-based data row, header excluded)."""


def average_precision(y_true: np.ndarray, y_score: np.ndarray) -> float:
    """sklearn's average_precision_score for one binary ranking.

    Rows with equal scores form one threshold block (they are not ordered among
    themselves). With no positive row the result is 0, as sklearn returns.
    """
    y_true = np.asarray(y_true, dtype=bool)
    y_score = np.asarray(y_score, dtype=np.float64)
    n_pos = int(y_true.sum())
    if n_pos == 0:
        return 0.0
    order = np.argsort(-y_score, kind="mergesort")
    s = y_score[order]
    t = y_true[order]
    tp = np.cumsum(t)
    # last index of each block of equal scores
    ends = np.r_[np.flatnonzero(np.diff(s) != 0), len(s) - 1]
    tps = tp[ends].astype(np.float64)
    precision = tps / (ends + 1)
    recall = tps / n_pos
    prev = np.r_[0.0, recall[:-1]]
    return float(np.sum((recall - prev) * precision))


@dataclass(frozen=True)
class SubmissionRow:
    query_id: str
    database_image_id: str
    score: float


def parse_submission(rows: Sequence[Mapping[str, str]], expected_queries: Iterable[str] | None = None,
                     limit: int = PREDICTION_LIMIT) -> list[SubmissionRow]:
    """Validate a submission the way the challenge did; raise naming the offending row."""
    out: list[SubmissionRow] = []
    seen: set[tuple[str, str]] = set()
    per_query: dict[str, int] = defaultdict(int)
    for n, r in enumerate(rows, start=1):
        for col in MATCHES:
            if col not in r or r[col] is None:
                raise SubmissionError(f"row {n}: missing column {col!r}; a submission has columns {','.join(MATCHES)}")
        q, d, raw = str(r["query_id"]), str(r["database_image_id"]), r["score"]
        try:
            score = float(raw)
        except (TypeError, ValueError):
            raise SubmissionError(f"row {n}: score {raw!r} is not a number") from None
        if not math.isfinite(score) or score < 0.0 or score > 1.0:
            raise SubmissionError(f"row {n}: score {raw!r} is outside [0, 1]")
        if (q, d) in seen:
            raise SubmissionError(f"row {n}: duplicate row for query {q!r} and image {d!r}")
        seen.add((q, d))
        per_query[q] += 1
        if per_query[q] > limit:
            raise SubmissionError(f"row {n}: query {q!r} has more than {limit} rows")
        out.append(SubmissionRow(q, d, score))
    if expected_queries is not None:
        for q in expected_queries:
            if q not in per_query:
                raise SubmissionError(f"query {q!r} from the scenarios has no rows in the submission")
    return out


@dataclass
class MapResult:
    map: float
    per_query: dict[str, float] = field(default_factory=dict)

    @property
    def n_queries(self) -> int:
        return len(self.per_query)


def whaledo_map(submission: Sequence[SubmissionRow], labels: Mapping[str, set[str]], limit: int = PREDICTION_LIMIT) -> MapResult:
    """Official Where's Whale-do mAP@20.

    Per query with at least one true match: AP over its submitted rows times
    hits / min(true matches, 20). Queries without a true match are skipped; a query with
    true matches and no rows scores 0.
    """
    by_q: dict[str, list[SubmissionRow]] = defaultdict(list)
    for r in submission:
        by_q[r.query_id].append(r)
    per_query: dict[str, float] = {}
    for q, truth in labels.items():
        if not truth:
            continue
        rows = by_q.get(q, [])
        if not rows:
            per_query[q] = 0.0
            continue
        y_true = np.array([r.database_image_id in truth for r in rows])
        hits = int(y_true.sum())
        if hits == 0:
            per_query[q] = 0.0
            continue
        ap = average_precision(y_true, np.array([r.score for r in rows]))
        per_query[q] = ap * hits / min(len(truth), limit)
    value = float(np.mean(list(per_query.values()))) if per_query else float("nan")
    return MapResult(value, per_query)


# ---------------------------------------------------------------------------------------
# embedding metrics


def _as_labels(labels: Sequence[object]) -> np.ndarray:
    return np.asarray([str(x) for x in labels])


def embedding_metrics(query: np.ndarray, query_labels: Sequence[object], gallery: np.ndarray | None = None,
                      gallery_labels: Sequence[object] | None = None, ranks: Sequence[int] = (1, 5, 10),
                      chunk: int = 1024) -> dict[str, float]:
    """P@1 (= R@1), mAP@R, CMC rank-k and mINP for L2-normalised embeddings.

    With no gallery, leave-one-out within ``query`` (each image queries all the others).
    Queries with no true match in the gallery are skipped, as in fast-reid.
    """
    ql = _as_labels(query_labels)
    loo = gallery is None
    g = query if loo else gallery
    gl = ql if loo else _as_labels(gallery_labels if gallery_labels is not None else [])
    assert g is not None
    if len(gl) != len(g) or len(ql) != len(query):
        raise ValueError("labels and embeddings differ in length")
    cmc_hits = np.zeros(max(ranks), dtype=np.float64)
    p1 = map_r = inp = 0.0
    n_valid = 0
    for start in range(0, len(query), chunk):
        sims = query[start:start + chunk] @ g.T
        if loo:
            idx = np.arange(start, min(start + chunk, len(query)))
            sims[np.arange(len(idx)), idx] = -np.inf
        order = np.argsort(-sims, axis=1, kind="stable")
        matches = gl[order] == ql[start:start + chunk, None]
        if loo:
            matches[:, -1] = False  # the query itself, sorted last by -inf
        for row in matches:
            r = int(row.sum())
            if r == 0:
                continue
            n_valid += 1
            pos = np.flatnonzero(row)
            first = pos[0]
            if first < len(cmc_hits):
                cmc_hits[first:] += 1
            p1 += float(row[0])
            top = row[:r]
            prec = np.cumsum(top) / np.arange(1, r + 1)
            map_r += float(np.sum(prec * top) / r)
            inp += r / (pos[-1] + 1)
    if n_valid == 0:
        raise ValueError("no query has a true match in the gallery")
    out = {"n_queries": float(n_valid), "P@1": p1 / n_valid, "mAP@R": map_r / n_valid, "mINP": inp / n_valid}
    for k in ranks:
        out[f"CMC@{k}"] = cmc_hits[k - 1] / n_valid
    return out


def leave_one_out_whaledo_map(emb: np.ndarray, labels: Sequence[object], limit: int = PREDICTION_LIMIT) -> float:
    """mAP@20 where every image queries all the others, scored with the Whale-do rule.

    Used for training validation and the ORL figures: cosine mapped to (c+1)/2 as the
    runtime does, top 20 kept, queries with no other image of their identity skipped.
    """
    lab = _as_labels(labels)
    sims = emb @ emb.T
    np.fill_diagonal(sims, -np.inf)
    k = min(limit, len(emb) - 1)
    top = np.argsort(-sims, axis=1, kind="stable")[:, :k]
    aps = []
    for i in range(len(emb)):
        n_true = int((lab == lab[i]).sum()) - 1
        if n_true == 0:
            continue
        y = lab[top[i]] == lab[i]
        hits = int(y.sum())
        if hits == 0:
            aps.append(0.0)
            continue
        aps.append(average_precision(y, (sims[i, top[i]] + 1) / 2) * hits / min(n_true, limit))
    return float(np.mean(aps)) if aps else float("nan")


def submission_cmc(submission: Sequence[SubmissionRow], labels: Mapping[str, set[str]],
                   max_rank: int = PREDICTION_LIMIT) -> np.ndarray:
    """CMC of a submission: element k-1 is the share of queries with a true match (in
    ``labels``) whose first true row, by descending score, is at rank k or better. A query
    without rows counts as a miss."""
    by_q: dict[str, list[SubmissionRow]] = defaultdict(list)
    for r in submission:
        by_q[r.query_id].append(r)
    hits = np.zeros(max_rank)
    scored = [q for q, t in labels.items() if t]
    for q in scored:
        rows = sorted(by_q.get(q, []), key=lambda r: -r.score)
        first = next((i for i, r in enumerate(rows) if r.database_image_id in labels[q]), None)
        if first is not None and first < max_rank:
            hits[first:] += 1
    return hits / max(len(scored), 1)
