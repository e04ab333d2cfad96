"""``reid review``: the offline review page from earlier results."""

from __future__ import annotations

from pathlib import Path

import click

from reidkit.cli.common import CONTEXT, friendly


@click.command("review", context_settings=CONTEXT)
@click.option("--matches", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="reid infer output: image rows (query_id,database_image_id,score) or identity rows (--by identity).")
@click.option("--query", type=click.Path(path_type=Path), help="Folder mode: the query folder of the run.")
@click.option("--gallery", type=click.Path(path_type=Path), help="Folder mode: the gallery folder of the run.")
@click.option("--metadata", type=click.Path(path_type=Path), help="Scenario mode: metadata.csv (whale_id, when present, is the truth).")
@click.option("--scenarios", type=click.Path(path_type=Path), help="Scenario mode: query_scenarios.csv (maps query ids to images).")
@click.option("--labels", type=click.Path(path_type=Path), help="Ground truth labels.csv (query_id,database_image_id); "
                                                             "default: identity folders, or metadata whale_id.")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Page folder: index.html and thumbs/.")
@click.option("--top-k", default=None, type=click.IntRange(1, 10_000), help="Candidates shown per query (default: every row).")
@click.option("--thumb-height", default=160, type=click.IntRange(32, 1024), help="Thumbnail height in pixels.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@friendly()
def review_cmd(matches: Path, query: Path | None, gallery: Path | None, metadata: Path | None, scenarios: Path | None,
               labels: Path | None, out: Path, top_k: int | None, thumb_height: int, quiet: bool) -> None:
    """Build the review page from earlier results: OUT/index.html, self-contained, opens from file://.

    Per query: its image and the ranked candidates with rank, score, identity and, when the
    truth is known, a correct/incorrect mark; mAP@20, P@1 and a score histogram on top.
    Reviewers sort by uncertainty or worst first, filter the misses, and record Confirm /
    Reject / New individual decisions, downloaded as CSV (query_id,decision,identity_or_image).

    \b
    Folder mode:   reid-review --matches results.csv --query DIR --gallery DIR -o review/
    Scenario mode: reid-review --matches submission.csv --metadata metadata.csv --scenarios query_scenarios.csv -o review/
    """
    from reidkit.errors import ReidkitError
    from reidkit.review import review_page

    if (query is None) != (gallery is None) or (query is None) == (metadata is None):
        raise ReidkitError("give --query and --gallery (folder mode), or --metadata with optional --scenarios (scenario mode)")
    page = review_page(matches, out, query=query, gallery=gallery, metadata=metadata, scenarios=scenarios, labels=labels,
                       top_k=top_k, thumb_height=thumb_height, progress=not quiet)
    click.echo(f"review page: {page.resolve().as_uri()}")
