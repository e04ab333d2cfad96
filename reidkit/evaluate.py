"""``reid-eval``: score a submission (overall, per scenario, per viewpoint pair) or embeddings."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from reidkit.data.csvio import read_rows
from reidkit.data.whaledo import read_metadata, read_scenarios
from reidkit.errors import ReidkitError
from reidkit.metrics import SubmissionError, SubmissionRow, embedding_metrics, parse_submission, whaledo_map
from reidkit.data import schemas


def labels_from_csv(path: Path) -> dict[str, set[str]]:
    out: dict[str, set[str]] = defaultdict(set)
    for r in read_rows(path, schemas.LABELS):
        out[r["query_id"]].add(r["database_image_id"])
    return dict(out)


def labels_from_metadata(metadata: Path, scenarios_csv: Path) -> tuple[dict[str, set[str]], dict[str, str], dict[str, str]]:
    """Ground truth from whale_id: true matches are same-whale database images, never the query itself."""
    meta = read_metadata(metadata)
    if not meta.whale_id:
        raise ReidkitError(f"{metadata} has no whale_id column; pass --labels labels.csv instead")
    labels: dict[str, set[str]] = {}
    q_image: dict[str, str] = {}
    q_scen: dict[str, str] = {}
    for sc in read_scenarios(scenarios_csv, set(meta.image_ids)):
        by_whale: dict[str, list[str]] = defaultdict(list)
        for d in sc.database:
            by_whale[meta.whale_id[d]].append(d)
        for qid, img in sc.queries:
            labels[qid] = {d for d in by_whale.get(meta.whale_id[img], []) if d != img}
            q_image[qid], q_scen[qid] = img, sc.scenario_id
    return labels, q_image, q_scen


@dataclass(frozen=True)
class ScoredSubmission:
    """The report and what it was computed from (``reid-eval --plots`` draws from these)."""

    report: dict[str, Any]
    rows: list[SubmissionRow]
    labels: dict[str, set[str]]


def evaluate_submission(submission: Path, labels_csv: Path | None = None, metadata: Path | None = None,
                        scenarios: Path | None = None) -> dict[str, Any]:
    return score_submission(submission, labels_csv, metadata, scenarios).report


def score_submission(submission: Path, labels_csv: Path | None = None, metadata: Path | None = None,
                     scenarios: Path | None = None) -> ScoredSubmission:
    q_image: dict[str, str] = {}
    q_scen: dict[str, str] = {}
    views: dict[str, str] = {}
    expected = None
    if metadata is not None and scenarios is not None:
        derived, q_image, q_scen = labels_from_metadata(metadata, scenarios)
        views = read_metadata(metadata).viewpoint
        expected = list(q_image)
        labels = labels_from_csv(labels_csv) if labels_csv else derived
    elif labels_csv is not None:
        labels = labels_from_csv(labels_csv)
    else:
        raise ReidkitError("pass --labels labels.csv, or --metadata metadata.csv with --scenarios query_scenarios.csv")
    rows = read_rows(submission, schemas.MATCHES)
    try:
        sub = parse_submission(rows, expected)
    except SubmissionError as exc:
        raise ReidkitError(f"{submission}: invalid submission: {exc}") from None
    res = whaledo_map(sub, labels)
    report: dict[str, Any] = {"mAP@20": res.map, "queries_scored": res.n_queries, "rows": len(sub)}
    if q_scen:
        per: dict[str, list[float]] = defaultdict(list)
        for q, ap in res.per_query.items():
            per[q_scen.get(q, "?")].append(ap)
        report["per_scenario"] = {k: {"mAP@20": float(np.mean(v)), "queries": len(v)} for k, v in sorted(per.items())}
    if views and q_image:
        def kind(v: str | None) -> str:
            return "top" if v in (None, "", "top") else "lateral"

        pairs: dict[str, list[float]] = defaultdict(list)
        by_q: dict[str, list[str]] = defaultdict(list)
        for r in sub:
            by_q[r.query_id].append(r.database_image_id)
        for q, ap in res.per_query.items():
            truth_views = {kind(views.get(d)) for d in labels[q]}
            for tv in sorted(truth_views):
                pairs[f"{kind(views.get(q_image[q]))}->{tv}"].append(ap)
        report["per_viewpoint_pair"] = {k: {"mAP@20": float(np.mean(v)), "queries": len(v)} for k, v in sorted(pairs.items())}
    return ScoredSubmission(report, sub, labels)


def evaluate_embeddings(npz: Path, labels_from: Path) -> dict[str, Any]:
    vectors, labels = labelled_embeddings(npz, labels_from)
    m = embedding_metrics(vectors, labels)
    return {k: float(v) for k, v in m.items()}


def labelled_embeddings(npz: Path, labels_from: Path) -> tuple[np.ndarray, list[str]]:
    """The embeddings whose ids metadata labels, with their whale_id."""
    try:
        data = np.load(npz, allow_pickle=False)
        ids, emb = [str(x) for x in data["ids"]], data["embeddings"]
    except (OSError, KeyError, ValueError) as exc:
        raise ReidkitError(f"{npz}: not a reidkit embeddings file with ids and embeddings ({exc})") from None
    meta = read_metadata(labels_from)
    if not meta.whale_id:
        raise ReidkitError(f"{labels_from} has no whale_id column to take labels from")
    keep = [i for i, x in enumerate(ids) if x in meta.whale_id]
    if not keep:
        raise ReidkitError(f"none of the ids in {npz} appear in {labels_from}")
    return emb[keep], [meta.whale_id[ids[i]] for i in keep]


def format_report(report: dict[str, Any]) -> str:
    lines = [f"mAP@20  {report['mAP@20']:.4f}  ({report['queries_scored']} queries with a true match, {report['rows']} rows)"]
    for section in ("per_scenario", "per_viewpoint_pair"):
        if section in report:
            lines.append(section.replace("_", " ") + ":")
            lines += [f"  {k:<20} {v['mAP@20']:.4f}  ({v['queries']} queries)" for k, v in report[section].items()]
    return "\n".join(lines)
