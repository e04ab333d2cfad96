"""Large-gallery search (faiss exact/IVF/HNSW, persisted indexes) and shortlist re-ranking."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import cli
from reidkit.errors import ReidkitError
from reidkit.runtime.index import GalleryIndex, IndexParams, open_or_build
from reidkit.runtime.rerank import RerankParams, dense_rerank_reference, rerank_shortlist


def clustered(n: int, dim: int, seed: int, centres: int = 50, spread: float = 0.6, latent: int = 16) -> np.ndarray:
    """Identities around `centres` in a `latent`-dimensional space rotated into `dim`: learned
    embeddings have a low intrinsic dimension (isotropic noise in every dimension has none)."""
    rng = np.random.default_rng(seed)
    proj = np.linalg.qr(np.random.default_rng(0).standard_normal((dim, min(latent, dim))))[0].T
    c = np.random.default_rng(99).standard_normal((centres, proj.shape[0]))
    z = c[rng.integers(0, centres, n)] + spread * rng.standard_normal((n, proj.shape[0]))
    x = z @ proj + 0.05 * rng.standard_normal((n, dim))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def brute_top(g: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    return np.argsort(-(q.astype(np.float64) @ g.T.astype(np.float64)), axis=1, kind="stable")[:, :k]


def overlap(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([len(set(x) & set(y)) / len(y) for x, y in zip(a, b)]))


@pytest.fixture(scope="module")
def vectors():
    return clustered(6000, 64, seed=1), clustered(200, 64, seed=2)


@pytest.mark.parametrize("kind,min_recall", [("exact", 1.0), ("ivf", 0.95), ("hnsw", 0.95)])
def test_index_kinds_find_the_true_neighbours(vectors, kind, min_recall):
    g, q = vectors
    sims, idx = GalleryIndex.build(g, kind).search(q, 20)
    assert overlap(idx, brute_top(g, q, 20)) >= min_recall
    assert np.all(np.diff(sims, axis=1) <= 1e-6)  # best first
    np.testing.assert_allclose(sims[:, 0], np.max(q @ g.T, axis=1), atol=1e-5 if kind == "exact" else 0.05)


def test_auto_is_exact_for_small_galleries_and_approximate_for_large(vectors):
    from reidkit.runtime.index import AUTO_EXACT_BELOW, resolve_kind

    assert resolve_kind("auto", AUTO_EXACT_BELOW - 1) == "exact"
    assert resolve_kind("auto", AUTO_EXACT_BELOW) in ("ivf", "hnsw")
    with pytest.raises(ReidkitError, match="choose one of"):
        resolve_kind("annoy", 10)


def test_unnormalised_vectors_are_refused():
    with pytest.raises(ReidkitError, match="L2-normalised"):
        GalleryIndex.build(np.full((10, 4), 3.0, np.float32), "exact")


@pytest.mark.parametrize("kind", ["ivf", "hnsw"])
def test_saved_index_answers_like_the_built_one_and_knows_what_it_indexes(tmp_path, vectors, kind):
    g, q = vectors
    keys = [f"k{i}" for i in range(len(g))]
    built = GalleryIndex.build(g, kind, bundle_key="B1", keys=keys)
    built.save(tmp_path / "idx")
    loaded = GalleryIndex.load(tmp_path / "idx")
    assert loaded.kind == kind and loaded.ntotal == len(g)
    for a, b in zip(built.search(q, 20), loaded.search(q, 20)):
        np.testing.assert_array_equal(a, b)
    assert loaded.staleness("B1", keys) is None
    assert "another bundle" in loaded.staleness("B2", keys)
    assert "differ" in loaded.staleness("B1", keys[:-1] + ["other"])
    assert loaded.staleness("B1", keys + ["new"]) == "prefix"


def test_open_or_build_reuses_extends_and_rebuilds_with_a_message(tmp_path, vectors, caplog):
    g, q = vectors
    keys = [f"k{i}" for i in range(len(g))]
    path = tmp_path / "idx"
    caplog.set_level(logging.INFO, logger="reidkit")
    open_or_build(path, g[:5000], keys[:5000], "B1", "hnsw")
    assert "built" in caplog.text
    caplog.clear()
    grown = open_or_build(path, g, keys, "B1", "hnsw")  # 1,000 images added to the catalogue
    assert "added 1000 new gallery images" in caplog.text and grown.ntotal == len(g)
    caplog.clear()
    again = open_or_build(path, g, keys, "B1", "hnsw")
    assert "reused" in caplog.text and again.keys == keys
    assert overlap(again.search(q, 20)[1], brute_top(g, q, 20)) >= 0.97
    caplog.clear()
    open_or_build(path, g, keys, "B2", "hnsw")
    assert "stale" in caplog.text and "another bundle" in caplog.text
    assert GalleryIndex.load(path).bundle_key == "B2"


def test_damaged_index_is_refused_with_the_fix(tmp_path, vectors):
    g, _ = vectors
    GalleryIndex.build(g[:500], "exact", keys=[str(i) for i in range(500)]).save(tmp_path / "idx")
    (tmp_path / "idx" / "index.faiss").write_bytes(b"garbage")
    with pytest.raises(ReidkitError, match="delete"):
        GalleryIndex.load(tmp_path / "idx")


# ------------------------------------------------------------------------------ re-ranking
def _orl_pixels() -> tuple[np.ndarray, np.ndarray]:
    """Real faces (ORL s31-s40, 100 images) as L2-normalised 28x23 grey pixel vectors."""
    from reidkit.data.orl import read_orl

    samples = read_orl(range(31, 41))
    x = np.stack([np.asarray(Image.open(s.path).convert("L").resize((23, 28)), np.float32).ravel() for s in samples])
    x -= x.mean(axis=0)
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32), np.array([s.identity for s in samples])


def _full_shortlist(q: np.ndarray, g: np.ndarray) -> np.ndarray:
    return brute_top(g, q, len(g))


@pytest.mark.parametrize("data", ["synthetic", "orl"])
def test_shortlist_covering_the_gallery_equals_the_dense_reference(data):
    if data == "orl":
        x, labels = _orl_pixels()
        qi = np.array([np.flatnonzero(labels == lab)[0] for lab in np.unique(labels)])  # one query per person
        q, g = x[qi], np.delete(x, qi, axis=0)
    else:
        g, q = clustered(150, 32, seed=5, centres=15), clustered(8, 32, seed=6, centres=15)
    ref = dense_rerank_reference(q, g, per_query=True)
    d, idx = rerank_shortlist(q, g, _full_shortlist(q, g), RerankParams(shortlist=len(g)))
    for r in range(len(q)):
        np.testing.assert_allclose(d[r], ref[r][idx[r]], atol=1e-5)  # same distance for every gallery image
        np.testing.assert_array_equal(np.sort(idx[r]), np.arange(len(g)))
    top_ref = np.argsort(ref, axis=1, kind="stable")[:, :20]
    assert overlap(idx[:, :20], top_ref) == 1.0


def test_rerank_changes_the_order_and_a_short_shortlist_stays_close():
    g, q = clustered(400, 32, seed=7, centres=40), clustered(20, 32, seed=8, centres=40)
    ref_top = np.argsort(dense_rerank_reference(q, g, per_query=True), axis=1, kind="stable")[:, :20]
    assert overlap(ref_top, brute_top(g, q, 20)) < 1.0  # re-ranking is not a no-op on this data
    _, idx = rerank_shortlist(q, g, brute_top(g, q, 100), RerankParams(shortlist=100))
    # neighbourhoods are computed within the shortlist only, so it is not the dense result, but
    # it moves the ranking towards it
    assert overlap(idx[:, :20], ref_top) > overlap(brute_top(g, q, 20), ref_top)


# ------------------------------------------------------------------------------ through reid-infer
def _read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_reid_infer_index_file_is_built_once_then_reused_and_refused_for_another_bundle(tmp_path, bundle, members, synth):
    base = ["--model", bundle, "--query", synth / "images", "--gallery", synth / "images", "--quiet"]
    plain = cli("reid-infer", *base, "-o", tmp_path / "plain.csv")
    assert "index" not in plain.stderr  # the default (auto, small gallery) is the exact search it always was
    first = cli("reid-infer", *base, "-o", tmp_path / "a.csv", "--index", "hnsw", "--index-file", tmp_path / "idx")
    assert "built (hnsw" in first.stderr
    second = cli("reid-infer", *base, "-o", tmp_path / "b.csv", "--index", "hnsw", "--index-file", tmp_path / "idx")
    assert "reused (hnsw" in second.stderr
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    a, p = _read(tmp_path / "a.csv"), _read(tmp_path / "plain.csv")
    top = lambda rows: {(r["query_id"], r["database_image_id"]) for r in rows}  # noqa: E731
    assert len(top(a) & top(p)) / len(top(p)) >= 0.99  # HNSW at the default efSearch: recall@20 vs exact
    cli("reid-export", members[0], "-o", tmp_path / "other")
    other = cli("reid-infer", "--model", tmp_path / "other", *base[2:], "-o", tmp_path / "c.csv", "--index", "hnsw",
                "--index-file", tmp_path / "idx")
    assert "stale" in other.stderr and "another bundle" in other.stderr


def test_reid_infer_rerank_matches_the_dense_reference_on_its_embeddings(tmp_path, bundle, synth):
    from reidkit.runtime.parquet_out import read_embeddings_parquet

    out = tmp_path / "r.csv"
    res = cli("reid-infer", "--model", bundle, "--query", synth / "images", "--gallery", synth / "images", "--quiet", "-o", out,
              "--rerank", "--rerank-shortlist", "200", "--embeddings-out", tmp_path / "e.parquet")
    assert res.returncode == 0
    ids, vecs, hashes = read_embeddings_parquet(tmp_path / "e.parquet")
    assert vecs.shape[0] == len(ids) == len(hashes) == 120
    import xxhash  # the content hash docs/formats.md names: XXH3-128 of the file's bytes

    names = [i.split("/", 1)[1] for i in ids]  # ids: query/NAME, gallery/NAME
    assert hashes == [xxhash.xxh3_128_hexdigest((synth / "images" / n).read_bytes()) for n in names]
    rows = _read(out)
    for qn in names[:10]:
        qi = names.index(qn)
        g = np.delete(vecs, qi, axis=0)  # reid-infer never matches a query to itself
        gnames = names[:qi] + names[qi + 1:]
        ref = dense_rerank_reference(vecs[qi:qi + 1], g, per_query=True)[0]
        want = [gnames[j] for j in np.argsort(ref, kind="stable")[:20]]
        got = [r["database_image_id"] for r in rows if r["query_id"] == qn]
        assert got == want
        scores = [float(r["score"]) for r in rows if r["query_id"] == qn]
        np.testing.assert_allclose(scores, 1 - np.sort(ref)[:20], atol=2e-6)
