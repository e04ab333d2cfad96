import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from reidkit.metrics import (SubmissionError, SubmissionRow, average_precision, embedding_metrics, parse_submission,
                             whaledo_map)


def test_average_precision_matches_sklearn_on_random_and_tied_cases():
    rng = np.random.default_rng(0)
    n_cases = 0
    for i in range(3000):
        n = int(rng.integers(1, 21))
        y = rng.random(n) < rng.uniform(0.05, 0.9)
        if not y.any():
            y[rng.integers(n)] = True
        # a third continuous scores, two thirds heavily tied (few distinct values)
        scores = rng.random(n) if i % 3 == 0 else rng.integers(0, int(rng.integers(1, 5)), n) / 4
        assert average_precision(y, scores) == pytest.approx(average_precision_score(y, scores), abs=1e-12)
        n_cases += 1
    assert n_cases == 3000


def _official(sub_rows, labels, k=20):
    """Reference implementation of the challenge scorer built directly on scikit-learn."""
    aps = []
    for q, truth in labels.items():
        rows = [r for r in sub_rows if r[0] == q]
        if not truth:
            continue
        y = np.array([r[1] in truth for r in rows])
        if not rows or y.sum() == 0:
            aps.append(0.0)
            continue
        aps.append(average_precision_score(y, [r[2] for r in rows]) * y.sum() / min(len(truth), k))
    return float(np.mean(aps))


def test_whaledo_map_equals_sklearn_scorer_on_a_thousand_random_submissions():
    rng = np.random.default_rng(1)
    for trial in range(1000):
        n_q, n_db = int(rng.integers(1, 6)), int(rng.integers(2, 40))
        labels = {f"q{i}": {f"d{j}" for j in range(n_db) if rng.random() < 0.2} for i in range(n_q)}
        rows = []
        for i in range(n_q):
            chosen = rng.choice(n_db, size=min(20, int(rng.integers(0, n_db + 1))), replace=False)
            tied = trial % 2 == 0
            for j in chosen:
                s = round(float(rng.random()) * 4) / 4 if tied else float(rng.random())
                rows.append((f"q{i}", f"d{j}", s))
        if all(not t for t in labels.values()):
            continue
        got = whaledo_map([SubmissionRow(*r) for r in rows], labels).map
        assert got == pytest.approx(_official(rows, labels), abs=1e-12)


def test_whaledo_map_hand_worked():
    # truth {a, b}; ranking a(0.9) x(0.8) b(0.7): AP = (1/1 + 2/3)/2 = 5/6, hits/min(2,20) = 1
    sub = [SubmissionRow("q", "a", 0.9), SubmissionRow("q", "x", 0.8), SubmissionRow("q", "b", 0.7)]
    assert whaledo_map(sub, {"q": {"a", "b"}}).map == pytest.approx(5 / 6)
    # truth has 4 images, only 1 returned first: AP 1 * 1/4
    assert whaledo_map(sub[:1], {"q": {"a", "b", "c", "d"}}).map == pytest.approx(0.25)
    # a tie block [x, a] at the top: precision at the block is 1/2
    tie = [SubmissionRow("q", "x", 0.5), SubmissionRow("q", "a", 0.5)]
    assert whaledo_map(tie, {"q": {"a"}}).map == pytest.approx(0.5)
    # queries without a true match are skipped; a query with matches but no rows scores 0
    res = whaledo_map(sub, {"q": {"a", "b"}, "none": set(), "missing": {"z"}})
    assert res.n_queries == 2 and res.map == pytest.approx((5 / 6) / 2)


@pytest.mark.parametrize("rows, message", [
    ([{"query_id": "q", "database_image_id": "a", "score": "0.5"}] * 2, "row 2: duplicate"),
    ([{"query_id": "q", "database_image_id": f"d{i}", "score": "0.5"} for i in range(21)], "row 21: query 'q' has more than 20"),
    ([{"query_id": "q", "database_image_id": "a", "score": "1.5"}], "row 1: score '1.5' is outside"),
    ([{"query_id": "q", "database_image_id": "a", "score": "abc"}], "row 1: score 'abc' is not a number"),
    ([{"query_id": "q", "database_image_id": "a", "score": "nan"}], "outside"),
    ([{"query_id": "q", "database_image_id": "a"}], "missing column 'score'"),
])
def test_invalid_submissions_name_the_row(rows, message):
    with pytest.raises(SubmissionError, match=message):
        parse_submission(rows)


def test_missing_query_is_rejected():
    with pytest.raises(SubmissionError, match="query 'q2'"):
        parse_submission([{"query_id": "q1", "database_image_id": "a", "score": "0.1"}], expected_queries=["q1", "q2"])


def test_embedding_metrics_hand_worked():
    # 1-D embeddings on the unit circle; labels A A B B
    ang = np.array([0.0, 0.1, 1.0, 3.0])
    e = np.stack([np.cos(ang), np.sin(ang)], 1)
    m = embedding_metrics(e, ["A", "A", "B", "B"])
    # query 0: nearest 1 (A) -> hit. query 1: nearest 0 -> hit.
    # query 2 (B at 1.0): order by cos: 1 (0.9 away), 0 (1.0), 3 (2.0) -> first B at rank 3
    # query 3 (B at 3.0): 2 (2.0 away), 1, 0 -> hit
    assert m["P@1"] == pytest.approx(3 / 4)
    assert m["CMC@5"] == pytest.approx(1.0)
    assert m["mINP"] == pytest.approx((1 + 1 + 1 / 3 + 1) / 4)
    assert m["mAP@R"] == pytest.approx(3 / 4)
    # query/gallery form: gallery without the query itself
    g = embedding_metrics(e[:1], ["A"], e[1:], ["A", "B", "B"])
    assert g["P@1"] == 1.0
