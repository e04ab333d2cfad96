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


def _item_identities(source: Path) -> dict[str, str]:
    from reidkit.data.items import read_items

    return {it.id: it.identity for it in read_items(source).items if it.identity is not None}


def score_identities(submission: Path, query: Path | None = None, gallery: Path | None = None, metadata: Path | None = None,
                     scenarios: Path | None = None) -> dict[str, Any]:
    """An identity ranking (``--by identity``, maybe with ``new_individual`` rows) against the truth.

    Queries whose individual is in their gallery are scored by top-1 accuracy (a first row
    ``new_individual`` is wrong); the others by the share whose first row is ``new_individual``;
    the balanced mean of the two weighs known and new individuals equally (AnimalCLEF style),
    however many of each there are.
    """
    q_ident: dict[str, str] = {}
    q_gallery: dict[str, set[str]] = {}
    if query is not None and gallery is not None:
        q_ident = _item_identities(query)
        idents = set(_item_identities(gallery).values())
        q_gallery = {q: idents for q in q_ident}
    elif metadata is not None and scenarios is not None:
        meta = read_metadata(metadata)
        if not meta.whale_id:
            raise ReidkitError(f"{metadata} has no whale_id column; the identity of each image is needed")
        for sc in read_scenarios(scenarios, set(meta.image_ids)):
            db = {meta.whale_id[d] for d in sc.database}
            for qid, img in sc.queries:
                q_ident[qid], q_gallery[qid] = meta.whale_id[img], db
    else:
        raise ReidkitError("an identity ranking is scored against --query and --gallery (with identities), "
                           "or --metadata with --scenarios")
    first: dict[str, str] = {}
    for r in read_rows(submission, schemas.IDENTITY_MATCHES):
        first.setdefault(r["query_id"], r["identity"])
    unknown = sorted(set(first) - set(q_ident))
    if unknown:
        raise ReidkitError(f"{submission}: query {unknown[0]!r} has no known identity in the truth given")
    known = [q for q in first if q_ident[q] in q_gallery[q]]
    new = [q for q in first if q_ident[q] not in q_gallery[q]]
    report: dict[str, Any] = {"queries": len(first), "known_queries": len(known), "new_queries": len(new)}
    acc = float(np.mean([first[q] == q_ident[q] for q in known])) if known else None
    report["top1_known"] = acc
    if new:
        rate = float(np.mean([first[q] == schemas.NEW_INDIVIDUAL for q in new]))
        report["new_individual_rate"] = rate
        report["balanced_open_set"] = (rate + acc) / 2 if acc is not None else None
    return report


def format_identity_report(report: dict[str, Any]) -> str:
    def f(v: Any) -> str:
        return "n/a" if v is None else f"{v:.4f}"

    line = f"top-1 on known individuals {f(report['top1_known'])} ({report['known_queries']} queries)"
    if report["new_queries"]:
        line += (f"\nnew individuals called new_individual {f(report['new_individual_rate'])} ({report['new_queries']} queries)"
                 f"\nbalanced open-set mean {f(report['balanced_open_set'])}")
    return line
