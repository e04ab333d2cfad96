"""``reid catalogue``: a gallery that grows with each reviewed decision. Never imports torch."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from reidkit.cli.common import CONTEXT, friendly, quiet_option
from reidkit.runtime.backends.registry import CHOICES
from reidkit.runtime.bundle_format import PRECISIONS
from reidkit.runtime.encounters import FUSIONS, GROUPINGS

CAT = click.argument("catalogue", type=click.Path(file_okay=False, path_type=Path))


def _engine(default_help: str) -> Any:
    def deco(fn: Any) -> Any:
        fn = click.option("--precision", default=None, type=click.Choice(PRECISIONS), help=f"Which graph runs ({default_help}).")(fn)
        return click.option("--backend", default=None, type=click.Choice(CHOICES), help=f"The engine ({default_help}).")(fn)
    return deco


def _skipped(skipped: list[tuple[str, str]]) -> None:
    for sid, reason in skipped:
        click.echo(f"skipped {sid}: {reason}", err=True)


@click.group("catalogue", context_settings=CONTEXT)
def catalogue_cmd() -> None:
    """A growing catalogue of known individuals: enrol a gallery, match new photos, apply the review's decisions.

    \b
    reid catalogue init CAT --model BUNDLE --gallery IDENTITY_DIRS
    reid catalogue match CAT --query NEW_PHOTOS -o ids.csv --review review/ --new-individual 0.5
    reid catalogue apply CAT decisions.csv --reviewer NAME      (the review page's download)
    reid catalogue undo CAT                                      (reverts the last apply exactly)
    reid catalogue info CAT [--json]

    CAT is a folder: catalogue.sqlite (identities, images, embeddings, the last match, the apply log)
    and index.faiss, tied to the bundle that made the embeddings.
    """


@catalogue_cmd.command("init", context_settings=CONTEXT)
@CAT
@click.option("--model", required=True, type=click.Path(file_okay=False, path_type=Path), help="Bundle directory written by `reid export`.")
@click.option("--gallery", required=True, type=click.Path(path_type=Path),
              help="The known individuals: one folder per identity, or a metadata CSV with whale_id or identity (wildlife-datasets "
                   "CSV and COCO JSON too).")
@_engine("default: auto; the catalogue keeps the one chosen, and later commands use it")
@quiet_option
@friendly()
def init_cmd(catalogue: Path, model: Path, gallery: Path, backend: str | None, precision: str | None, quiet: bool) -> None:
    """Create catalogue CAT from a gallery of known individuals.

    Images are not copied: each is recorded by its absolute path and sha256 (with its box, for a box on a
    field photo), and its embedding is stored, so the catalogue stays small and a changed file is detected.
    Keep the photos where they are. The catalogue is tied to the bundle (its key: graphs, weights, fusion,
    backend and precision); matching with another bundle is refused.
    """
    from reidkit.catalogue import init_catalogue

    s = init_catalogue(catalogue, model, gallery, backend or "auto", precision, progress=not quiet)
    _skipped(s.skipped)
    click.echo(f"catalogue {catalogue}: {s.identities} identities, {s.images} images")


@catalogue_cmd.command("match", context_settings=CONTEXT)
@CAT
@click.option("--query", required=True, type=click.Path(path_type=Path),
              help="New photos: a folder (ids are paths inside it), or a metadata CSV (image_id,path[,encounter_id]...).")
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output CSV: query_id,identity,score,database_image_id (+ p_same with --calibration).")
@click.option("--top-k", default=20, type=click.IntRange(1, 10_000), help="Identities per query.")
@click.option("--new-individual", type=click.FloatRange(0.0, 1.0), default=None,
              help="Insert a new_individual row in each ranking where this threshold falls: a P(same) with --calibration, "
                   "else a score.")
@click.option("--calibration", type=click.Path(dir_okay=False, path_type=Path),
              help="A `reid eval --calibrate` file: adds p_same (identity level) to every row.")
@click.option("--group-by", default="image", type=click.Choice(GROUPINGS),
              help="encounter: one ranking per encounter_id of the --query CSV (photos without one stand alone); images of "
                   "the query's own encounter are never candidates.")
@click.option("--fusion", default="max", type=click.Choice(FUSIONS),
              help="With --group-by encounter: an identity's score is its best photo's (max) or the photos' mean.")
@click.option("--model", type=click.Path(file_okay=False, path_type=Path), help="The bundle (default: the one the catalogue was built with).")
@_engine("default: the catalogue's")
@click.option("--review", type=click.Path(file_okay=False, path_type=Path), help="Also write the review page here (DIR/index.html).")
@quiet_option
@friendly()
def match_cmd(catalogue: Path, query: Path, out: Path, review: Path | None, quiet: bool, **kw: Any) -> None:
    """Rank the catalogue's individuals for each new photo, and remember the photos for `apply`.

    The catalogue itself does not change: decisions enter it only through `reid catalogue apply`.
    """
    from reidkit.catalogue import match

    s = match(catalogue, query, out, progress=not quiet, **kw)
    _skipped(s.skipped)
    click.echo(f"{s.queries} photos ranked ({s.groups} rankings), {s.rows} rows; wrote {out}")
    if review is not None:
        from reidkit.catalogue.review import catalogue_review

        page = catalogue_review(catalogue, out, review, progress=not quiet)
        click.echo(f"review page: {page.resolve().as_uri()}")


@catalogue_cmd.command("apply", context_settings=CONTEXT)
@CAT
@click.argument("decisions", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--reviewer", help="Who made the decisions, kept in the apply log (default: the file's reviewer column).")
@friendly()
def apply_cmd(catalogue: Path, decisions: Path, reviewer: str | None) -> None:
    """Apply a review page's decisions CSV (query_id,decision,identity_or_image) as one transaction.

    \b
    confirm         the photo joins the named identity (or the identity of the named catalogue image)
    new_individual  the photo founds a new identity named by the third column; rows of the file with the
                    same name make one identity; an empty name gets a generated id that cannot collide
    reject          recorded only

    Any conflict (unknown query or identity, one photo to two identities, a photo already enrolled as
    another identity, a new name that exists) refuses the whole file, one line per conflict, exit 2,
    nothing changed. Applying the same file again changes nothing. `reid catalogue undo` reverts it.
    """
    from reidkit.catalogue import apply_decisions

    s = apply_decisions(catalogue, decisions, reviewer)
    if s.apply_id is None:
        prev = s.previous or {}
        click.echo(f"{decisions} was already applied (apply {prev.get('apply')} at {prev.get('time')} by {prev.get('reviewer')}); "
                   "nothing changed")
        return
    click.echo(f"apply {s.apply_id}: {s.images_added} images enrolled, {len(s.identities_added)} new identities, "
               f"{s.rejected} rejects recorded, {s.unchanged} rows already in the catalogue")


@catalogue_cmd.command("undo", context_settings=CONTEXT)
@CAT
@friendly()
def undo_cmd(catalogue: Path) -> None:
    """Revert the last apply exactly (its images, new identities and decisions); the log keeps it as undone."""
    from reidkit.catalogue import undo

    last = undo(catalogue)
    click.echo(f"undid apply {last['apply']} ({last['file']}, {last['reviewer']}, {last['time']})")


@catalogue_cmd.command("info", context_settings=CONTEXT)
@CAT
@click.option("--json", "as_json", is_flag=True, help="The whole description as JSON.")
@click.option("--history", is_flag=True, help="Also list the applies that were undone (the log keeps them).")
@friendly()
def info_cmd(catalogue: Path, as_json: bool, history: bool) -> None:
    """What the catalogue holds: identities, images, its bundle, and the apply log."""
    from reidkit.catalogue import info

    doc = info(catalogue, history)
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    b = doc["bundle"]
    click.echo(f"catalogue {doc['catalogue']}: {len(doc['identities'])} identities, {doc['images']} images")
    click.echo(f"bundle {b['path']} ({b['backend']} {b['precision']}, {b['dim']}-d, key {str(b['key'])[:12]})")
    for a in doc["applies"]:
        click.echo(f"apply {a['apply']}: {a['time']} {a['reviewer']} {a['file']} sha256 {a['sha256'][:12]} {json.dumps(a['changes'], sort_keys=True)}")
    for a in doc.get("undone", []):
        click.echo(f"undone apply {a['apply']}: {a['file']} ({a['reviewer']}), undone {a['undone_at']}")
