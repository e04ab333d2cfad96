"""k-reciprocal re-ranking (Zhong et al., CVPR 2017) on each query's shortlist.

fast-reid and TAO re-rank with dense (Q+G) x (Q+G) matrices: 1.5 GB at 8,000 images, out of
memory at 10^5. Here each query is re-ranked on its own working set W = {query} + its top-K
shortlist from the gallery index, so time and memory are O(Q * K^2): linear in the number of
queries and independent of the gallery size.

Two differences from the dense algorithm, both stated in the README:
- queries are re-ranked one at a time against the gallery (other queries are not nodes of
  the neighbourhood graph), so a query's result does not depend on the batch it came with;
- neighbourhoods are computed inside W: a shortlisted image's k-reciprocal neighbours are
  the ones in the shortlist. When K covers the whole gallery, W is the whole gallery plus the
  query and the result equals ``dense_rerank_reference`` (tests/test_rerank.py checks it).

``dense_rerank_reference`` is the REFERENCE: a direct, loop-for-loop transcription of the
authors' published code, for validation and benchmarks only; it is O((Q+G)^2) in memory.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class RerankParams:
    k1: int = 20
    k2: int = 6
    lambda_value: float = 0.3
    shortlist: int = 100  # K: gallery candidates per query taken from the index


def _sq_dist(x: np.ndarray) -> np.ndarray:
    """Squared Euclidean distances of unit vectors: 2 - 2 cos, clipped at 0."""
    x = x.astype(np.float32)
    d = np.maximum(2.0 - 2.0 * (x @ x.T), 0.0)
    return ((d + d.T) / 2).astype(np.float32)  # exactly symmetric, whatever the BLAS blocking


def _rerank_working_set(x: np.ndarray, k1: int, k2: int, lam: float) -> np.ndarray:
    """Final distance of node 0 (the query) to nodes 1..n-1 of one working set, vectorised.

    Same steps as the reference, in matrix form: membership matrices for forward k-NN, the
    reciprocal test as M & M.T, the 2/3-overlap expansion as one matrix product.
    """
    n = len(x)
    dist = _sq_dist(x)
    dist = dist / np.maximum(dist.max(axis=1, keepdims=True), 1e-12)  # the authors' row normalisation
    order = np.argsort(dist, axis=1)
    rows = np.arange(n)[:, None]

    def reciprocal(k: int) -> np.ndarray:
        m = np.zeros((n, n), bool)
        m[rows, order[:, :k + 1]] = True
        return m & m.T

    kr = reciprocal(k1)
    kr_half = reciprocal(int(np.around(k1 / 2.0)))
    overlap = kr.astype(np.float32) @ kr_half.T.astype(np.float32)  # |KR(i) & KR_half(c)|
    take = kr & (overlap > (2.0 / 3.0) * kr_half.sum(axis=1)[None, :])
    expanded = kr | ((take.astype(np.float32) @ kr_half.astype(np.float32)) > 0)
    w = np.where(expanded, np.exp(-dist), 0.0).astype(np.float32)
    v = w / w.sum(axis=1, keepdims=True)
    if k2 != 1:
        v = v[order[:, :k2]].mean(axis=1)
    shared = np.minimum(v[0][None, :], v).sum(axis=1)
    jaccard = 1.0 - shared / (2.0 - shared)
    final = jaccard * (1.0 - lam) + dist[0] * lam
    return final[1:]


def rerank_shortlist(queries: np.ndarray, gallery: np.ndarray, shortlist: np.ndarray,
                     params: RerankParams = RerankParams()) -> tuple[np.ndarray, np.ndarray]:
    """Re-rank each query's shortlist.

    ``shortlist`` [Q, K] holds gallery rows (-1 pads). Returns (distance [Q, K], gallery rows
    [Q, K]) sorted by re-ranked distance, ascending; pads stay -1 with distance inf.
    """
    q_n, k = shortlist.shape
    out_d = np.full((q_n, k), np.inf, np.float32)
    out_i = np.full((q_n, k), -1, np.int64)
    with _one_blas_thread():
        _rerank_rows(queries, gallery, shortlist, params, out_d, out_i)
    return out_d, out_i


def _one_blas_thread():  # type: ignore[no-untyped-def]
    """The working sets are ~100x100: a multi-threaded BLAS spends 20x more CPU spinning than
    computing on them (measured: 25 ms vs 1.4 ms CPU per query). threadpoolctl where installed."""
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-untyped]
    except ImportError:
        import contextlib

        return contextlib.nullcontext()
    return threadpool_limits(1, user_api="blas")


def _rerank_rows(queries: np.ndarray, gallery: np.ndarray, shortlist: np.ndarray, params: RerankParams,
                 out_d: np.ndarray, out_i: np.ndarray) -> None:
    for i in range(len(shortlist)):
        cand = shortlist[i][shortlist[i] >= 0]
        if len(cand) == 0:
            continue
        d = _rerank_working_set(np.vstack([queries[i:i + 1], gallery[cand]]), params.k1, params.k2, params.lambda_value)
        o = np.argsort(d, kind="stable")
        out_d[i, :len(cand)] = d[o]
        out_i[i, :len(cand)] = cand[o]


def distance_to_similarity(d: np.ndarray) -> np.ndarray:
    """Re-ranked distance (0 best, 1 worst) -> a similarity in [-1, 1] like a cosine, so the
    submission's usual cosine -> [0, 1] mapping (knn.to_unit_score) turns it into 1 - d."""
    return 1.0 - 2.0 * d.astype(np.float64)


# ------------------------------------------------------------------------------------------
# REFERENCE ONLY (validation and benchmarks): dense, quadratic in memory.
def dense_rerank_reference(queries: np.ndarray, gallery: np.ndarray, k1: int = 20, k2: int = 6, lambda_value: float = 0.3,
                           per_query: bool = True) -> np.ndarray:
    """Distance [Q, G] after k-reciprocal re-ranking, transcribed from the authors' code
    (zhunzhong07/person-re-ranking, as fast-reid and TAO ship it) on squared Euclidean
    distances of the unit vectors.

    ``per_query=True`` runs it once per query on {query} + gallery (the form the shortlist
    version approximates); ``per_query=False`` is the original joint run on all queries and
    the gallery together.
    """
    if per_query:
        return np.vstack([_dense_joint(queries[i:i + 1], gallery, k1, k2, lambda_value) for i in range(len(queries))])
    return _dense_joint(queries, gallery, k1, k2, lambda_value)


def _dense_joint(q: np.ndarray, g: np.ndarray, k1: int, k2: int, lambda_value: float) -> np.ndarray:
    original_dist = _sq_dist(np.vstack([q, g]))
    original_dist = np.transpose(1.0 * original_dist / np.max(original_dist, axis=0))
    V = np.zeros_like(original_dist).astype(np.float32)
    initial_rank = np.argsort(original_dist).astype(np.int32)
    query_num = len(q)
    gallery_num = all_num = original_dist.shape[0]
    for i in range(all_num):
        forward_k_neigh_index = initial_rank[i, :k1 + 1]
        backward_k_neigh_index = initial_rank[forward_k_neigh_index, :k1 + 1]
        fi = np.where(backward_k_neigh_index == i)[0]
        k_reciprocal_index = forward_k_neigh_index[fi]
        k_reciprocal_expansion_index = k_reciprocal_index
        for j in range(len(k_reciprocal_index)):
            candidate = k_reciprocal_index[j]
            candidate_forward_k_neigh_index = initial_rank[candidate, :int(np.around(k1 / 2.0)) + 1]
            candidate_backward_k_neigh_index = initial_rank[candidate_forward_k_neigh_index, :int(np.around(k1 / 2.0)) + 1]
            fi_candidate = np.where(candidate_backward_k_neigh_index == candidate)[0]
            candidate_k_reciprocal_index = candidate_forward_k_neigh_index[fi_candidate]
            if len(np.intersect1d(candidate_k_reciprocal_index, k_reciprocal_index)) > 2.0 / 3 * len(candidate_k_reciprocal_index):
                k_reciprocal_expansion_index = np.append(k_reciprocal_expansion_index, candidate_k_reciprocal_index)
        k_reciprocal_expansion_index = np.unique(k_reciprocal_expansion_index)
        weight = np.exp(-original_dist[i, k_reciprocal_expansion_index])
        V[i, k_reciprocal_expansion_index] = 1.0 * weight / np.sum(weight)
    original_dist = original_dist[:query_num, ]
    if k2 != 1:
        V_qe = np.zeros_like(V, dtype=np.float32)
        for i in range(all_num):
            V_qe[i, :] = np.mean(V[initial_rank[i, :k2], :], axis=0)
        V = V_qe
    invIndex = []
    for i in range(gallery_num):
        invIndex.append(np.where(V[:, i] != 0)[0])
    jaccard_dist = np.zeros_like(original_dist, dtype=np.float32)
    for i in range(query_num):
        temp_min = np.zeros(shape=[1, gallery_num], dtype=np.float32)
        indNonZero = np.where(V[i, :] != 0)[0]
        indImages = [invIndex[ind] for ind in indNonZero]
        for j in range(len(indNonZero)):
            temp_min[0, indImages[j]] = temp_min[0, indImages[j]] + np.minimum(V[i, indNonZero[j]], V[indImages[j], indNonZero[j]])
        jaccard_dist[i] = 1 - temp_min / (2.0 - temp_min)
    final_dist = jaccard_dist * (1 - lambda_value) + original_dist * lambda_value
    return final_dist[:query_num, query_num:]
