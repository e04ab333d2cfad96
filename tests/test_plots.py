"""``reid-eval --plots``: the PNG files, and the submission CMC they draw."""

from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from conftest import cli
from reidkit.metrics import SubmissionRow, embedding_metrics, submission_cmc


def test_submission_cmc_by_hand():
    rows = [SubmissionRow("a", "x", 0.9), SubmissionRow("a", "t", 0.8),  # first true at rank 2
            SubmissionRow("b", "t", 0.3), SubmissionRow("b", "y", 0.7),  # by score y comes first: rank 2
            SubmissionRow("c", "t", 0.95)]  # rank 1
    cmc = submission_cmc(rows, {"a": {"t"}, "b": {"t"}, "c": {"t"}, "d": {"t"}, "e": set()}, max_rank=3)
    # queries with a true match: a, b, c, d (d has no rows: a miss); e is not scored
    np.testing.assert_allclose(cmc, [1 / 4, 3 / 4, 3 / 4])


def test_submission_cmc_equals_the_embedding_cmc_on_the_same_ranking():
    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(15), 4)
    x = rng.normal(size=(60, 8)) + 1.5 * rng.normal(size=(15, 8))[labels]
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    sims = x @ x.T
    rows, truth = [], {}
    for i in range(60):
        order = [j for j in np.argsort(-sims[i], kind="stable") if j != i][:20]
        rows += [SubmissionRow(str(i), str(j), float((sims[i, j] + 1) / 2)) for j in order]
        truth[str(i)] = {str(j) for j in range(60) if j != i and labels[j] == labels[i]}
    want = embedding_metrics(x, labels, ranks=range(1, 21))
    np.testing.assert_allclose(submission_cmc(rows, truth), [want[f"CMC@{k}"] for k in range(1, 21)], atol=1e-12)


def _png(path):
    with Image.open(path) as im:
        assert im.format == "PNG" and im.width > 200 and im.height > 150
        return np.asarray(im.convert("L")).std()


def test_reid_eval_plots_for_a_submission(tmp_path, synth):
    from reidkit.data.whaledo import read_scenarios

    rng = np.random.default_rng(3)
    with open(tmp_path / "sub.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["query_id", "database_image_id", "score"])
        for sc in read_scenarios(synth / "query_scenarios.csv"):
            for qid, img in sc.queries:
                for d in rng.choice([d for d in sc.database if d != img], 10, replace=False):
                    w.writerow([qid, d, f"{rng.uniform():.6f}"])
    res = cli("reid-eval", "--submission", tmp_path / "sub.csv", "--metadata", synth / "metadata.csv", "--scenarios",
              synth / "query_scenarios.csv", "--plots", tmp_path / "plots")
    names = sorted(p.name for p in (tmp_path / "plots").iterdir())
    assert names == ["cmc.png", "map_per_scenario.png", "map_per_viewpoint_pair.png", "scores.png"], names
    for n in names:
        assert _png(tmp_path / "plots" / n) > 1  # not a blank canvas
        assert f"plot: {tmp_path / 'plots' / n}" in res.stdout


def test_reid_eval_plots_for_embeddings(tmp_path):
    rng = np.random.default_rng(1)
    ids = [f"i{k}" for k in range(40)]
    whale = [f"w{k // 4}" for k in range(40)]
    x = rng.normal(size=(40, 8)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    np.savez(tmp_path / "e.npz", ids=np.array(ids), embeddings=x)
    with open(tmp_path / "metadata.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["image_id", "path", "whale_id"])
        w.writerows((i, f"{i}.jpg", wh) for i, wh in zip(ids, whale))
    cli("reid-eval", "--embeddings", tmp_path / "e.npz", "--labels-from", tmp_path / "metadata.csv", "--plots", tmp_path / "p")
    assert sorted(p.name for p in (tmp_path / "p").iterdir()) == ["cmc.png", "scores.png"]
    for p in (tmp_path / "p").iterdir():
        _png(p)


@pytest.mark.parametrize("flag", [[], ["--json", "x.json"]])
def test_reid_eval_without_plots_loads_no_matplotlib(tmp_path, synth, flag):
    import subprocess
    import sys

    code = ("import sys; from reidkit.cli import eval_cmd\n"
            "try:\n eval_cmd(sys.argv[1:])\nexcept SystemExit as e:\n assert e.code in (0, None), e.code\n"
            "assert 'matplotlib' not in sys.modules")
    sub = tmp_path / "s.csv"
    sub.write_text("query_id,database_image_id,score\nq,d,0.5\n")
    labels = tmp_path / "l.csv"
    labels.write_text("query_id,database_image_id\nq,d\n")
    res = subprocess.run([sys.executable, "-c", code, "--submission", str(sub), "--labels", str(labels),
                          *[str(tmp_path / f) if f.endswith(".json") else f for f in flag]], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
