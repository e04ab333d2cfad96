"""Calibrated P(same), the new_individual row, and the open-set report, without a model."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import cli
from reidkit.calibration import expected_calibration_error, fit_calibration, fit_curve, load_calibration
from reidkit.runtime.open_set import insert_new_individual, with_p_same


def _pairs(seed=0, n=4000):
    rng = np.random.default_rng(seed)
    s = rng.uniform(0, 1, n)
    return s, rng.uniform(0, 1, n) < s ** 3  # P(same | s) = s^3


def test_the_stored_curve_predicts_exactly_what_sklearn_predicts(tmp_path):
    from sklearn.isotonic import IsotonicRegression

    s, y = _pairs()
    curve = fit_curve(s, y)
    grid = np.linspace(-0.2, 1.2, 1001)
    iso = IsotonicRegression(y_min=0, y_max=1, out_of_bounds="clip").fit(s, y)
    np.testing.assert_allclose(curve(grid), iso.predict(grid), atol=1e-12)
    from reidkit.calibration import Calibration

    Calibration({"image": curve}, {}).save(tmp_path / "c.json")
    np.testing.assert_array_equal(load_calibration(tmp_path / "c.json").curve("image")(grid), curve(grid))
    for p in (0.05, 0.3, 0.7):  # the lowest score that reaches p
        t = curve.score_at(p)
        assert curve(np.array([t]))[0] >= p - 1e-12 and curve(np.array([t - 1e-6]))[0] < p


def test_a_fit_on_some_identities_is_calibrated_on_others():
    rng = np.random.default_rng(1)
    centres = rng.normal(size=(60, 16))
    labels = np.repeat(np.arange(60), 6)
    v = centres[labels] + rng.normal(scale=0.9, size=(len(labels), 16))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    cal = fit_calibration(v.astype(np.float32), [f"i{x}" for x in labels])
    for level in ("image", "identity"):
        assert cal.info[level]["held_out_ece"] < 0.05
    # an uncalibrated reading of the score as a probability is far off
    from reidkit.calibration import level_pairs

    s, same = level_pairs(v.astype(np.float32), [f"i{x}" for x in labels], "identity")
    assert expected_calibration_error(s, same) > 0.2


def test_new_individual_sits_where_the_threshold_falls():
    rows = [("q1", "a", "0.900000", "a/1"), ("q1", "b", "0.400000", "b/1"), ("q2", "a", "0.300000", "a/2"),
            ("q3", "c", "0.800000", "c/1")]
    out = list(insert_new_individual(rows, 0.5))
    assert [r[1] for r in out] == ["a", "new_individual", "b", "new_individual", "a", "c", "new_individual"]
    s, y = _pairs()
    curve = fit_curve(s, y)
    calibrated = with_p_same(rows, curve)
    out = list(insert_new_individual(calibrated, 0.5, curve))
    for q in ("q1", "q2", "q3"):
        mine = [r for r in out if r[0] == q]
        assert [float(r[2]) for r in mine] == sorted((float(r[2]) for r in mine), reverse=True)
        assert [float(r[4]) for r in mine] == sorted((float(r[4]) for r in mine), reverse=True)
        assert sum(r[1] == "new_individual" for r in mine) == 1


def _tree(root: Path, files: list[str]) -> Path:
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        Image.new("L", (8, 8)).save(root / f)
    return root


def test_eval_reports_the_open_set_figures(tmp_path):
    gallery = _tree(tmp_path / "g", ["a/1.png", "b/1.png"])
    query = _tree(tmp_path / "q", ["a/2.png", "b/2.png", "c/1.png", "d/1.png"])
    ids = tmp_path / "ids.csv"
    with open(ids, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["query_id", "identity", "score", "database_image_id"])
        w.writerows([("a/2.png", "a", "0.9", "a/1.png"), ("a/2.png", "new_individual", "0.5", ""),
                     ("b/2.png", "new_individual", "0.5", ""), ("b/2.png", "b", "0.4", "b/1.png"),  # a known one called new: wrong
                     ("c/1.png", "new_individual", "0.5", ""), ("c/1.png", "a", "0.3", "a/1.png"),
                     ("d/1.png", "b", "0.6", "b/1.png"), ("d/1.png", "new_individual", "0.5", "")])
    res = cli("reid", "eval", "--submission", ids, "--query", query, "--gallery", gallery, "--json", tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["top1_known"] == 0.5 and report["new_individual_rate"] == 0.5 and report["balanced_open_set"] == 0.5
    assert "balanced open-set mean 0.5000" in res.stdout


def test_calibrate_writes_a_file_the_runtime_reads_and_a_reliability_plot(tmp_path):
    rng = np.random.default_rng(2)
    labels = np.repeat(np.arange(24), 5)
    v = rng.normal(size=(24, 8))[labels] + rng.normal(scale=0.8, size=(len(labels), 8))
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    ids = [f"img{i}" for i in range(len(labels))]
    np.savez(tmp_path / "e.npz", ids=np.array(ids), embeddings=v.astype(np.float32))
    with open(tmp_path / "metadata.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "path", "whale_id"])
        w.writerows((i, f"{i}.jpg", f"w{x}") for i, x in zip(ids, labels))
    res = cli("reid", "eval", "--embeddings", tmp_path / "e.npz", "--labels-from", tmp_path / "metadata.csv",
              "--calibrate", tmp_path / "cal.json", "--plots", tmp_path / "plots", "--json", tmp_path / "r.json")
    assert "held-out identities" in res.stdout and (tmp_path / "plots" / "reliability.png").stat().st_size > 0
    cal = load_calibration(tmp_path / "cal.json")
    assert set(cal.curves) == {"image", "identity"}
    report = json.loads((tmp_path / "r.json").read_text())
    assert 0 <= report["calibration"]["fitted"]["identity"]["held_out_ece"] <= 1


@pytest.mark.parametrize("args, needle", [
    (["--new-individual", "0.5"], "--by identity"),
    (["--by", "identity", "--new-individual", "0.5", "--calibration", "missing.json"], "missing.json"),
])
def test_open_set_options_are_checked_before_any_work(tmp_path, args, needle):
    res = cli("reid", "infer", "--model", tmp_path / "no-bundle", "--query", tmp_path, "--gallery", tmp_path, "-o",
              tmp_path / "o.csv", *args, check=False, cwd=tmp_path)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and needle in res.stderr, res.stderr


@pytest.mark.parametrize("fusion, expected_b", [("max", 0.5 / np.sqrt(1.25)), ("mean", 0.25 / np.sqrt(1.25))])
def test_an_encounter_is_ranked_once_and_never_by_its_own_images(fusion, expected_b):
    from reidkit.runtime.encounters import rank_encounters

    G = np.eye(3, dtype=np.float32)  # A (photographed in encounter e1), B, C
    p2 = np.array([1, 0.5, 0], np.float32) / np.sqrt(1.25)
    photos = np.stack([G[0], p2, G[0]])
    groups, res = rank_encounters(G, photos, ["A", "B", "C"], [-1, -1, -1], ["e1", "e1", "e2"], 3, fusion, ["e1", None, None])
    assert groups == ["e1", "e2"]
    assert [m.identity for m in res[0]] == ["B", "C"]  # A's only image is e1's own
    assert res[0][0].cosine == pytest.approx(expected_b) and res[0][0].image == 1
    assert res[1][0].identity == "A" and res[1][0].image == 0


def test_rewriting_a_matches_file_streams_in_chunks_with_the_same_result(tmp_path, monkeypatch):
    """The open-set pass reads the written CSV while writing its replacement, a few rows at a time;
    the result must not depend on the chunk, and a failure must leave the original file whole."""
    from reidkit.calibration import Calibration
    from reidkit.runtime import open_set

    s, same = _pairs(3)
    cal = Calibration({"identity": fit_curve(s, same)}, {})
    rows = [(f"q{q}", f"w{j}", f"{score:.6f}", f"img{q}_{j}") for q in range(7)
            for j, score in enumerate(sorted(np.random.default_rng(q).uniform(0, 1, 5), reverse=True))]
    header = ["query_id", "identity", "score", "database_image_id"]
    outs = []
    for chunk in (3, 10_000):
        path = tmp_path / f"m{chunk}.csv"
        with open(path, "w", newline="") as fh:
            csv.writer(fh, lineterminator="\n").writerows([header, *rows])
        n = open_set.rewrite_matches(path, "identity", cal, 0.5, chunk=chunk)
        outs.append(path.read_text())
        assert n == len(rows) + 7  # one new_individual row per query
    assert outs[0] == outs[1] and outs[0].splitlines()[0].endswith(",p_same")
    path = tmp_path / "m3.csv"
    before = path.read_text()

    def broken(*a, **k):
        raise RuntimeError("disk full")
        yield  # a generator, as the real one

    monkeypatch.setattr(open_set, "insert_new_individual", broken)
    with pytest.raises(RuntimeError):
        open_set.rewrite_matches(path, "identity", cal, 0.5)
    assert path.read_text() == before
