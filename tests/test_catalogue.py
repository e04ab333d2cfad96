"""reid catalogue: the photo-ID loop on unseen ORL people, through the CLI as a user runs it.

A catalogue of s31-s35 (five photos each) meets new sightings of s31-s40, of whom s36-s40
are new individuals; the decisions a reviewer would make from the truth are applied; the
newcomers then rank first for their own later sightings. The bundle is the ImageNet
Lite0 of the [weights] extra, not fine-tuned (``--lr 0``): the cheapest member whose
embeddings really separate faces, so "ranks first" means something.
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli
from test_review import read_page
from reidkit.data.orl import orl_root

pytestmark = pytest.mark.slow

KNOWN, NEW = range(31, 36), range(36, 41)


@pytest.fixture(scope="module")
def lite0_bundle(tmp_path_factory) -> Path:
    from reidkit.train.pretrained import pretrained_weights

    d = tmp_path_factory.mktemp("lite0")
    cli("reid-train", "--data", "orl:1-4", "--val-identities", "s4", "--image-size", "64x56", "--embedding-dim", "64",
        "--batch-size", "16", "--epochs", "1", "--backbone", "tf_efficientnet_lite0", "--weights",
        pretrained_weights("tf_efficientnet_lite0"), "--lr", "0", "--out", d / "m.safetensors")
    cli("reid-export", d / "m.safetensors", "-o", d / "bundle")
    return d / "bundle"


@pytest.fixture()
def photos(tmp_path) -> Path:
    """gallery/<s31..s35>/ photos 1-5; batch1/ photos 6-8 of s31-s40; batch2/ photos 9-10 of s31-s40."""
    root = orl_root()
    for k in range(31, 41):
        for i in range(1, 11):
            if i <= 5:
                if k not in KNOWN:
                    continue
                dst = tmp_path / "gallery" / f"s{k}" / f"{i}.pgm"
            else:
                dst = tmp_path / ("batch1" if i <= 8 else "batch2") / f"s{k}_{i}.pgm"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(root / f"s{k}" / f"{i}.pgm", dst)
    return tmp_path


def _catalogue(*args) -> object:
    return cli("reid", "catalogue", *args)


def _info(cat: Path) -> dict:
    return json.loads(_catalogue("info", cat, "--json").stdout)


def _rankings(path: Path) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = {}
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            out.setdefault(r["query_id"], []).append(r)
    return out


def _write(path: Path, rows) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["query_id", "decision", "identity_or_image"])
        w.writerows(rows)
    return path


def test_the_loop_grows_the_catalogue_replays_refuses_conflicts_and_undoes(tmp_path, lite0_bundle, photos):
    cat = tmp_path / "cat"
    _catalogue("init", cat, "--model", lite0_bundle, "--gallery", photos / "gallery", "--quiet")
    before = _info(cat)
    assert sorted(before["identities"]) == [f"s{k}" for k in KNOWN] and before["images"] == 25

    _catalogue("match", cat, "--query", photos / "batch1", "-o", tmp_path / "ids1.csv", "--new-individual", "0.5", "--quiet",
               "--review", tmp_path / "page")
    first = _rankings(tmp_path / "ids1.csv")
    assert len(first) == 30
    page = read_page(tmp_path / "page")  # the review page shows every photo with its identities (not the open-set row)
    assert sorted(page.blocks()) == sorted(first) and all(len(c) == 5 for c in page.blocks().values())
    for qid, rows in first.items():
        assert [r["identity"] for r in rows].count("new_individual") == 1
        scores = [float(r["score"]) for r in rows]
        assert scores == sorted(scores, reverse=True)
        if int(qid[1:3]) in KNOWN:  # a known individual's new photo finds it
            assert rows[0]["identity"] == qid.split("_")[0], rows

    # the reviewer's decisions, from the truth; one reject is recorded too
    decisions = [(q, "confirm", q.split("_")[0]) if int(q[1:3]) in KNOWN else (q, "new_individual", q.split("_")[0]) for q in first]
    good = _write(tmp_path / "decisions.csv", decisions + [("s31_6.pgm", "reject", "s32")])
    out = _catalogue("apply", cat, good, "--reviewer", "ana").stdout
    grown = _info(cat)
    assert sorted(grown["identities"]) == sorted(f"s{k}" for k in range(31, 41))
    assert grown["images"] == 55 and all(grown["identities"][f"s{k}"] == 3 for k in NEW), out
    assert grown["applies"][-1]["reviewer"] == "ana" and grown["applies"][-1]["changes"]["rejected"] == 1

    # the same file again changes nothing
    again = _catalogue("apply", cat, good, "--reviewer", "ana")
    assert "already applied" in again.stdout and _info(cat) == grown

    # a conflicting file: refused whole, one line per conflict, nothing changed
    bad = _write(tmp_path / "bad.csv", [
        ("s36_9.pgm", "confirm", "s36"),  # not in the last match
        ("s31_6.pgm", "confirm", "s32"),  # already enrolled as s31
        ("s32_6.pgm", "new_individual", "s33"),  # a new name that exists
        ("s33_6.pgm", "confirm", "s99"),  # unknown identity
        ("s34_6.pgm", "confirm", "s34"),  # fine on its own, but the file is refused whole
    ])
    res = cli("reid", "catalogue", "apply", cat, bad, "--reviewer", "bo", check=False)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 2 and len(lines) == 5 and "4 conflict" in lines[0], res.stderr
    assert _info(cat) == grown

    # later sightings of the newcomers rank their new identities first
    _catalogue("match", cat, "--query", photos / "batch2", "-o", tmp_path / "ids2.csv", "--quiet")
    second = _rankings(tmp_path / "ids2.csv")
    assert {q: rows[0]["identity"] for q, rows in second.items()} == {q: q.split("_")[0] for q in second}

    # undo restores the catalogue exactly (info --json equal); the log keeps the undone apply
    _catalogue("undo", cat)
    assert _info(cat) == before
    log = json.loads(cli("reid", "catalogue", "info", cat, "--json", "--history").stdout)
    assert [a["sha256"] for a in log["undone"]] == [grown["applies"][-1]["sha256"]]
    _catalogue("match", cat, "--query", photos / "batch2", "-o", tmp_path / "ids3.csv", "--quiet")
    assert {r["identity"] for rows in _rankings(tmp_path / "ids3.csv").values() for r in rows} == {f"s{k}" for k in KNOWN}
    assert cli("reid", "catalogue", "undo", cat, check=False).returncode == 2  # nothing left to undo


def test_unnamed_newcomers_get_ids_that_never_collide_and_another_engine_is_refused(tmp_path, lite0_bundle, photos):
    cat = tmp_path / "cat"
    _catalogue("init", cat, "--model", lite0_bundle, "--gallery", photos / "gallery", "--quiet", "--backend", "ort-cpu")
    _catalogue("match", cat, "--query", photos / "batch2", "-o", tmp_path / "ids.csv", "--quiet")
    _catalogue("apply", cat, _write(tmp_path / "d.csv", [("s36_9.pgm", "new_individual", ""), ("s37_9.pgm", "new_individual", ""),
                                                         ("s38_9.pgm", "new_individual", "x"), ("s38_10.pgm", "new_individual", "x")]),
               "--reviewer", "ana")
    idents = _info(cat)["identities"]
    unnamed = [n for n in idents if n.startswith("ind-")]
    assert len(unnamed) == 2 and idents["x"] == 2 and len(idents) == 8
    # the page's optional reviewer column names the reviewer when --reviewer is not given
    with open(tmp_path / "r.csv", "w", newline="") as fh:
        fh.write("query_id,decision,identity_or_image,reviewer\ns39_9.pgm,confirm,x,Bo Li\n")
    _catalogue("apply", cat, tmp_path / "r.csv")
    assert _info(cat)["applies"][-1]["reviewer"] == "Bo Li"
    assert cli("reid", "catalogue", "apply", cat, _write(tmp_path / "n.csv", [("s40_9.pgm", "reject", "x")]), check=False).returncode == 2
    res = cli("reid", "catalogue", "match", cat, "--query", photos / "batch2", "-o", tmp_path / "o.csv", "--backend", "openvino",
              check=False)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "reid catalogue init" in res.stderr


def test_match_runs_on_the_lean_runtime(tmp_path, lite0_bundle, photos):
    cat = tmp_path / "cat"
    _catalogue("init", cat, "--model", lite0_bundle, "--gallery", photos / "gallery", "--quiet")
    code = f"""
import sys
from reidkit.cli.catalogue import catalogue_cmd
try:
    catalogue_cmd(["match", r"{cat}", "--query", r"{photos / 'batch1'}", "-o", r"{tmp_path / 'ids.csv'}", "--quiet"])
except SystemExit as e:
    assert e.code in (0, None), e.code
print("HEAVY", sorted(m for m in sys.modules if m.split('.')[0] in ("torch", "timm", "torchvision", "sklearn")))
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in res.stdout and len(_rankings(tmp_path / "ids.csv")) == 30, res.stdout + res.stderr


def test_calibrated_open_set_ranking_and_its_report(tmp_path, lite0_bundle, photos):
    """Calibrated on s5-s30, applied to s31-s40: new individuals are mostly called new_individual."""
    from reidkit.demo import prepare

    dev = tmp_path / "dev"
    prepare(dev, range(5, 31))
    wd = dev / "whaledo"
    cli("reid-infer", "--model", lite0_bundle, "--scenarios", wd / "query_scenarios.csv", "--metadata", wd / "metadata.csv",
        "-o", tmp_path / "sub.csv", "--embeddings-out", tmp_path / "emb.npz", "--quiet")
    cli("reid", "eval", "--embeddings", tmp_path / "emb.npz", "--labels-from", wd / "metadata.csv", "--calibrate", tmp_path / "cal.json")
    query = tmp_path / "query"
    for f in (photos / "batch1").iterdir():
        person, n = f.stem.split("_")
        (query / person).mkdir(parents=True, exist_ok=True)
        shutil.copyfile(f, query / person / f"{n}.pgm")
    cli("reid-infer", "--model", lite0_bundle, "--query", query, "--gallery", photos / "gallery", "--by", "identity", "--quiet",
        "--calibration", tmp_path / "cal.json", "--new-individual", "0.5", "-o", tmp_path / "ids.csv")
    ranked = _rankings(tmp_path / "ids.csv")
    assert len(ranked) == 30
    for rows in ranked.values():
        assert [r["identity"] for r in rows].count("new_individual") == 1
        p = [float(r["p_same"]) for r in rows]
        assert p == sorted(p, reverse=True) and 0 <= min(p) and max(p) <= 1
    cli("reid", "eval", "--submission", tmp_path / "ids.csv", "--query", query, "--gallery", photos / "gallery",
        "--json", tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["known_queries"] == report["new_queries"] == 15
    assert report["balanced_open_set"] >= 0.75, report
