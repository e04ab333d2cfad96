"""``reid eval``: score a Whale-do submission, or labelled embeddings."""

from __future__ import annotations

import json
from pathlib import Path

import click

from reidkit.cli.common import CONTEXT, friendly


@click.command("eval", context_settings=CONTEXT)
@click.option("--submission", type=click.Path(path_type=Path), help="Submission CSV to score.")
@click.option("--labels", type=click.Path(path_type=Path), help="Ground truth labels.csv (query_id,database_image_id).")
@click.option("--metadata", type=click.Path(path_type=Path), help="metadata.csv: derive truth from whale_id (with --scenarios).")
@click.option("--scenarios", type=click.Path(path_type=Path), help="query_scenarios.csv (with --metadata).")
@click.option("--embeddings", type=click.Path(path_type=Path), help="Embeddings .npz from reid infer --embeddings-out.")
@click.option("--labels-from", type=click.Path(path_type=Path), help="metadata.csv with whale_id, for --embeddings.")
@click.option("--json", "json_out", type=click.Path(dir_okay=False, path_type=Path), help="Also write the report as JSON.")
@click.option("--plots", type=click.Path(file_okay=False, path_type=Path),
              help="Also write PNG figures here: CMC curve, true/false score distributions and, for a submission, "
                   "mAP@20 per scenario and per viewpoint pair (needs matplotlib: the bench extra).")
@friendly()
def eval_cmd(submission: Path | None, labels: Path | None, metadata: Path | None, scenarios: Path | None,
             embeddings: Path | None, labels_from: Path | None, json_out: Path | None, plots: Path | None = None) -> None:
    """Score a Whale-do submission (official mAP@20) or labelled embeddings (P@1, mAP@R, CMC, mINP)."""
    from reidkit.atomic import atomic_write
    from reidkit.errors import ReidkitError
    from reidkit.evaluate import evaluate_embeddings, format_report, score_submission

    figures: list[Path] = []
    if submission is not None:
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
    else:
        raise ReidkitError("pass --submission (with --labels, or --metadata and --scenarios) or --embeddings with --labels-from")
    if json_out:
        with atomic_write(json_out, "w", encoding="utf-8") as fh:
            json.dump(report, fh, indent=2)
    for f in figures:
        click.echo(f"plot: {f}")
