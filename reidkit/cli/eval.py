"""``reid eval``: score a Whale-do submission, or labelled embeddings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from reidkit.cli.common import CONTEXT, friendly


@click.command("eval", context_settings=CONTEXT)
@click.option("--submission", type=click.Path(path_type=Path), help="Submission CSV to score.")
@click.option("--labels", type=click.Path(path_type=Path), help="Ground truth labels.csv (query_id,database_image_id).")
@click.option("--metadata", type=click.Path(path_type=Path), help="metadata.csv: derive truth from whale_id (with --scenarios).")
@click.option("--scenarios", type=click.Path(path_type=Path), help="query_scenarios.csv (with --metadata).")
@click.option("--embeddings", type=click.Path(path_type=Path), help="Embeddings .npz from reid infer --embeddings-out.")
@click.option("--labels-from", type=click.Path(path_type=Path), help="metadata.csv with whale_id, for --embeddings.")
@click.option("--query", type=click.Path(path_type=Path),
              help="For an identity ranking (--by identity output): the query photos with their identities (folder per identity or CSV).")
@click.option("--gallery", type=click.Path(path_type=Path),
              help="For an identity ranking: the gallery it was ranked against; queries whose individual is absent from it are new individuals.")
@click.option("--calibrate", type=click.Path(dir_okay=False, path_type=Path),
              help="With --embeddings: fit score -> P(same individual) (isotonic, image and identity level) and write it here "
                   "for `reid infer --calibration`; reports the calibration error on held-out identities (needs scikit-learn).")
@click.option("--calibration", type=click.Path(dir_okay=False, path_type=Path),
              help="With --embeddings: judge this calibration file on these embeddings (use identities it was not fitted on).")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the report as JSON.")
@click.option("--plots", type=click.Path(file_okay=False, path_type=Path),
              help="Also write PNG figures here: CMC curve, true/false score distributions and, for a submission, "
                   "mAP@20 per scenario and per viewpoint pair (needs matplotlib: the bench extra).")
@friendly()
def eval_cmd(submission: Path | None, labels: Path | None, metadata: Path | None, scenarios: Path | None,
             embeddings: Path | None, labels_from: Path | None, json_out: Path | None, plots: Path | None = None,
             query: Path | None = None, gallery: Path | None = None, calibrate: Path | None = None,
             calibration: Path | None = None) -> None:
    """Score a Whale-do submission (official mAP@20), an identity ranking (top-1, open set), or labelled
    embeddings (P@1, mAP@R, CMC, mINP; calibration with --calibrate).

    \b
    reid eval --submission submission.csv --metadata metadata.csv --scenarios query_scenarios.csv
    reid eval --submission ids.csv --query QUERY_IDS --gallery GALLERY_IDS     (reid infer --by identity output)
    reid eval --embeddings emb.npz --labels-from metadata.csv --calibrate calibration.json --plots plots/
    """
    from reidkit.atomic import atomic_write
    from reidkit.errors import ReidkitError
    from reidkit.evaluate import evaluate_embeddings, format_report, score_submission

    figures: list[Path] = []
    if submission is not None and _is_identity_ranking(submission):
        from reidkit.evaluate import format_identity_report, score_identities

        report = score_identities(submission, query, gallery, metadata, scenarios)
        click.echo(format_identity_report(report))
    elif submission is not None:
        scored = score_submission(submission, labels, metadata, scenarios)
        report = scored.report
        click.echo(format_report(report))
        if plots is not None:
            from reidkit.plots import submission_plots

            figures = submission_plots(scored, plots)
    elif embeddings is not None:
        if labels_from is None:
            raise ReidkitError("--embeddings needs --labels-from metadata.csv")
        report = evaluate_embeddings(embeddings, labels_from)
        click.echo("  ".join(f"{k} {v:.4f}" if k != "n_queries" else f"queries {int(v)}" for k, v in report.items()))
        if plots is not None:
            from reidkit.evaluate import labelled_embeddings
            from reidkit.plots import embedding_plots

            figures = embedding_plots(*labelled_embeddings(embeddings, labels_from), plots)
        if calibrate is not None or calibration is not None:
            report["calibration"] = _calibration(embeddings, labels_from, calibrate, calibration)
            if plots is not None:
                from reidkit.plots import reliability_plot

                figures.append(reliability_plot(report["calibration"], plots / "reliability.png"))
    else:
        raise ReidkitError("pass --submission (with --labels, or --metadata and --scenarios) or --embeddings with --labels-from")
    if json_out:
        with atomic_write(json_out, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
    for f in figures:
        click.echo(f"plot: {f}")


def _is_identity_ranking(path: Path) -> bool:
    import csv

    from reidkit.data import schemas

    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            return schemas.IDENTITY_MATCHES[1] in [h.strip() for h in next(csv.reader(fh), [])]
    except OSError:
        return False  # the scorer names the missing file


def _calibration(embeddings: Path, labels_from: Path, calibrate: Path | None, calibration: Path | None) -> dict[str, Any]:
    """Fit and/or judge a calibration; prints one line per level and returns the report section."""
    from reidkit.calibration import evaluate_calibration, fit_calibration, load_calibration
    from reidkit.evaluate import labelled_embeddings

    vectors, labels = labelled_embeddings(embeddings, labels_from)
    out: dict[str, Any] = {}
    if calibrate is not None:
        cal = fit_calibration(vectors, labels)
        cal.save(calibrate)
        for level in ("image", "identity"):
            i = cal.info[level]
            click.echo(f"calibration {level}: ECE {i['held_out_ece']:.4f} on held-out identities "
                       f"({i['pairs']} pairs, {i['positives']} same-individual)")
        click.echo(f"wrote {calibrate}")
        out["fitted"] = {k: v for k, v in cal.info.items()}
    if calibration is not None:
        judged = evaluate_calibration(load_calibration(calibration), vectors, labels)
        for level, j in judged.items():
            click.echo(f"calibration {level} ({calibration}): ECE {j['ece']:.4f} on these embeddings ({j['pairs']} pairs)")
        out["judged"] = judged
    return out
