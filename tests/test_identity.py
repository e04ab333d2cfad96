"""Identity ranking (``reid-infer --by identity``): the aggregation against brute force,
and the CLI on the ORL identity folders against the image-level run."""

from __future__ import annotations

import csv
from collections import defaultdict

import numpy as np
import pytest

from conftest import cli
from reidkit.runtime.identity import folder_identities, rank_identities


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def _brute(db, q, ids, k, own, aggregate):
    """Every identity's aggregate over all its images (the query's own row excluded)."""
    out = []
    for i in range(len(q)):
        sims = db.astype(np.float64) @ q[i].astype(np.float64)
        per = defaultdict(list)
        for j, s in enumerate(sims):
            if j != own[i]:
                per[ids[j]].append(s)
        vals = {}
        for ident, s in per.items():
            s = sorted(s, reverse=True)
            vals[ident] = s[0] if aggregate == "max" else float(np.mean(s[:2]))
        out.append(sorted(vals.items(), key=lambda kv: -kv[1])[:k])
    return out


@pytest.mark.parametrize("aggregate", ["max", "mean-top2"])
@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n_ids,big", [(30, 12), (120, 0)])
def test_aggregation_equals_brute_force_over_the_whole_gallery(aggregate, seed, n_ids, big):
    """Uneven identities (one to four images, optionally one with many more): the first
    shortlist depth depends on the largest, and small ones make mean-top2 deepen it."""
    rng = np.random.default_rng(seed)
    ids = [f"id{i}" for i in range(n_ids) for _ in range(1 + (i % 4) + (big if i == 0 else 0))]
    centres = rng.normal(size=(n_ids, 16))
    db = _unit(np.array([centres[int(s[2:])] for s in ids]) + rng.normal(scale=1.2, size=(len(ids), 16)))
    q = np.concatenate([db[:15], _unit(rng.normal(size=(10, 16)))])  # 15 queries are gallery images
    own = np.r_[np.arange(15), -np.ones(10, int)]
    got = rank_identities(db, q, ids, 5, own, aggregate)
    want = _brute(db, q, ids, 5, own, aggregate)
    for g, w in zip(got, want):
        assert [m.identity for m in g] == [ident for ident, _ in w]
        np.testing.assert_allclose([m.cosine for m in g], [v for _, v in w], atol=1e-5)
        for m in g:  # the named image is the identity's best, and never the query itself
            assert ids[m.image] == m.identity


def test_mean_top2_is_not_fooled_by_one_lucky_image():
    """An identity with one very close image and a distant second must rank by the mean, even
    when the second lies far outside the first shortlist."""
    d = 8
    base = np.eye(d, dtype=np.float32)
    q = base[:1]
    lucky = [base[0] * 0.99 + base[1] * 0.14, -base[0]]  # 0.99 and -1: mean about 0
    steady = [base[0] * 0.6 + base[2] * 0.8] * 2  # 0.6 and 0.6
    fillers = [base[3]] * 40  # identity "f" with many images at 0
    db = _unit(np.array(lucky + steady + fillers))
    ids = ["lucky"] * 2 + ["steady"] * 2 + ["f"] * 40
    top = rank_identities(db, q, ids, 1, None, "mean-top2")[0]
    assert [m.identity for m in top] == ["steady"]
    assert rank_identities(db, q, ids, 1, None, "max")[0][0].identity == "lucky"


def test_loose_gallery_image_is_a_user_error():
    from reidkit.errors import ReidkitError

    assert folder_identities(["a/1.jpg", "b/x/2.jpg"], "g") == ["a", "b"]
    with pytest.raises(ReidkitError, match="one folder per identity"):
        folder_identities(["a/1.jpg", "loose.jpg"], "g")


def _read(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_by_identity_on_orl_matches_the_image_level_run(tmp_path, bundle, orl_split):
    q, g = orl_split / "query", orl_split / "gallery"
    base = ["--model", bundle, "--query", q, "--gallery", g, "--quiet"]
    cli("reid-infer", *base, "-o", tmp_path / "images.csv", "--top-k", "1000")
    cli("reid-infer", *base, "-o", tmp_path / "ids.csv", "--top-k", "4", "--by", "identity")
    images, ids = _read(tmp_path / "images.csv"), _read(tmp_path / "ids.csv")
    assert list(ids[0]) == ["query_id", "identity", "score", "database_image_id"]
    best: dict[tuple[str, str], float] = defaultdict(float)
    best_image = {}
    for r in images:
        key = (r["query_id"], r["database_image_id"].split("/")[0])
        if float(r["score"]) > best[key]:
            best[key], best_image[key] = float(r["score"]), r["database_image_id"]
    per_q = defaultdict(list)
    for r in ids:
        per_q[r["query_id"]].append(r)
    assert set(per_q) == {r["query_id"] for r in images} and len(per_q) == 10
    for qid, rows in per_q.items():
        idents = [r["identity"] for r in rows]
        scores = [float(r["score"]) for r in rows]
        assert len(rows) == 4 and len(set(idents)) == 4
        assert scores == sorted(scores, reverse=True)
        # the top 4 identities by max image score, with that score and that image
        want = sorted((v for k, v in best.items() if k[0] == qid), reverse=True)[:4]
        np.testing.assert_allclose(scores, want, atol=2e-6)
        for r in rows:
            assert float(r["score"]) == pytest.approx(best[(qid, r["identity"])], abs=2e-6)
            assert r["database_image_id"].split("/")[0] == r["identity"]
            assert r["database_image_id"] == best_image[(qid, r["identity"])]


def test_by_identity_refuses_a_flat_gallery(tmp_path, bundle, orl_split):
    import shutil

    flat = tmp_path / "flat"
    flat.mkdir()
    for p in sorted((orl_split / "gallery").rglob("*.pgm"))[:5]:
        shutil.copy(p, flat / f"{p.parent.name}_{p.name}")
    res = cli("reid-infer", "--model", bundle, "--query", orl_split / "query", "--gallery", flat, "-o", tmp_path / "r.csv",
              "--by", "identity", "--quiet", check=False)
    assert res.returncode == 2, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "one folder per identity" in res.stderr
    assert not (tmp_path / "r.csv").exists()


def test_by_identity_in_scenario_mode_uses_whale_id(tmp_path, bundle, synth):
    from reidkit.data.whaledo import read_metadata

    whale = read_metadata(synth / "metadata.csv").whale_id
    base = ["--model", bundle, "--scenarios", synth / "query_scenarios.csv", "--metadata", synth / "metadata.csv", "--quiet"]
    cli("reid-infer", *base, "-o", tmp_path / "images.csv")
    cli("reid-infer", *base, "-o", tmp_path / "ids.csv", "--by", "identity", "--top-k", "5")
    best: dict[tuple[str, str], float] = defaultdict(float)
    for r in _read(tmp_path / "images.csv"):
        key = (r["query_id"], whale[r["database_image_id"]])
        best[key] = max(best[key], float(r["score"]))
    per_q = defaultdict(list)
    for r in _read(tmp_path / "ids.csv"):
        per_q[r["query_id"]].append(r)
        assert whale[r["database_image_id"]] == r["identity"]
    assert set(per_q) == {q for q, _ in best}
    for qid, rows in per_q.items():
        scores = [float(r["score"]) for r in rows]
        assert len({r["identity"] for r in rows}) == len(rows) <= 5 and scores == sorted(scores, reverse=True)
        # the image rows are a top-20 prefix: an identity seen there has its best image there
        for r in rows:
            if (qid, r["identity"]) in best:
                assert float(r["score"]) == pytest.approx(best[(qid, r["identity"])], abs=2e-6)
        top_image = max((v, ident) for (q, ident), v in best.items() if q == qid)
        assert rows[0]["identity"] == top_image[1]


def test_by_identity_in_scenario_mode_needs_whale_id(tmp_path, bundle, synth):
    import shutil

    rows = (synth / "metadata.csv").read_text().splitlines()
    keep = [i for i, h in enumerate(rows[0].split(",")) if h != "whale_id"]
    ds = tmp_path / "ds"
    shutil.copytree(synth, ds)
    (ds / "metadata.csv").write_text("\n".join(",".join(r.split(",")[i] for i in keep) for r in rows) + "\n")
    res = cli("reid-infer", "--model", bundle, "--scenarios", ds / "query_scenarios.csv", "--metadata", ds / "metadata.csv",
              "-o", tmp_path / "r.csv", "--by", "identity", "--quiet", check=False)
    assert res.returncode == 2 and "whale_id" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_group_by_encounter_ranks_each_sighting_once_and_never_proposes_its_own_photos(tmp_path, bundle):
    """`reid infer --by identity --group-by encounter`: one ranking per encounter_id of the query CSV
    (photos without one stand alone), none of whose candidates is a gallery photo of that encounter."""
    from reidkit.data.orl import orl_root

    import shutil

    for p in ("s31", "s32", "s33", "s34"):  # metadata paths are relative to the CSV's folder
        shutil.copytree(orl_root() / p, tmp_path / p)
    enc = {("s31", 1): "e1", ("s31", 2): "e1", ("s32", 1): "e2", ("s32", 2): "e2", ("s32", 3): "e2"}
    with open(tmp_path / "query.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "path", "encounter_id"])
        w.writerows([(f"{p}_{i}", f"{p}/{i}.pgm", e) for (p, i), e in enc.items()])
        w.writerow(("s33_1", "s33/1.pgm", ""))  # stands alone
    with open(tmp_path / "gallery.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "path", "whale_id", "encounter_id"])
        w.writerows([(f"g{p}_{i}", f"{p}/{i}.pgm", p, enc.get((p, i), "")) for p in ("s31", "s32", "s33", "s34")
                     for i in range(1, 6)])
    out = tmp_path / "enc.csv"
    cli("reid-infer", "--model", bundle, "--query", tmp_path / "query.csv", "--gallery", tmp_path / "gallery.csv", "-o", out,
        "--by", "identity", "--group-by", "encounter", "--top-k", "4", "--backend", "ort-cpu", "--review", tmp_path / "page", "--quiet")
    rows = list(csv.DictReader(open(out, newline="")))
    per: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        per[r["query_id"]].append(r)
    assert set(per) == {"e1", "e2", "s33_1"}
    own = {e: {f"g{p}_{i}" for (p, i), x in enc.items() if x == e} for e in ("e1", "e2")}
    for e, rs in per.items():
        assert len({r["identity"] for r in rs}) == len(rs) == 4  # every gallery individual once
        assert [float(r["score"]) for r in rs] == sorted((float(r["score"]) for r in rs), reverse=True)
        assert not {r["database_image_id"] for r in rs} & own.get(e, set()), e  # never a photo of the sighting itself
    page = (tmp_path / "page" / "index.html").read_text(encoding="utf-8")
    assert all(f'data-query="{q}"' in page for q in per)  # one page block per encounter
    bad = cli("reid-infer", "--model", bundle, "--query", tmp_path / "query.csv", "--gallery", tmp_path / "gallery.csv",
              "-o", tmp_path / "x.csv", "--group-by", "encounter", check=False)
    assert bad.returncode == 2 and bad.stderr.strip().count("\n") == 0 and "--by identity" in bad.stderr
    assert not (tmp_path / "x.csv").exists()
