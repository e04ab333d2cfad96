"""``reid infer``: rank gallery images (or individuals) for each query with a bundle.

The options map one to one onto :class:`reidkit.runtime.request.InferRequest`; the run itself
is :func:`reidkit.runtime.request.run_inference`. Never imports torch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from reidkit.cli.common import CONTEXT, coco_identity_option, engine_options, friendly, image_sources, labels_option, model_option, quiet_option
from reidkit.runtime.decode_pool import DECODE_MODES
from reidkit.runtime.encounters import FUSIONS, GROUPINGS
from reidkit.runtime.request import InferRequest

D = InferRequest(model=Path(), out=Path())  # the defaults live on the request, once


@click.command("infer", context_settings=CONTEXT)
@model_option()
@image_sources()
@coco_identity_option
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Output CSV: query_id,database_image_id,score (or the --by identity columns).")
@click.option("--top-k", default=D.top_k, type=click.IntRange(1, 10_000), help="Rows per query (scenario mode: at most 20).")
@engine_options(D.batch_size)
@click.option("--decode", default=D.decode, type=click.Choice(DECODE_MODES),
              help="Where images are decoded and resized. processes: one worker process per CPU this process may use, "
                   "which keeps a GPU fed where one process's threads cannot (they share one interpreter lock). "
                   "threads: inside this process, leaving the other cores to a CPU engine. auto: processes when the "
                   "engine runs on a GPU, threads otherwise.")
@click.option("--cache", type=click.Path(dir_okay=False, path_type=Path), help="SQLite embedding cache: reruns and resumed runs skip finished images.")
@click.option("--embeddings-out", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the embeddings with their ids: .npz, or .parquet (id, embedding, content_hash).")
@click.option("--qe", default=D.qe, type=click.IntRange(0, 100),
              help="Query expansion: each query also searches with its K nearest gallery images (never its own). "
                   "Helps where each individual has several gallery photos.")
@click.option("--dba", default=D.dba, type=click.IntRange(0, 100),
              help="Database-side augmentation: each gallery embedding becomes the mean of itself and its K nearest gallery embeddings.")
@click.option("--index", "index_kind", default=D.index_kind, type=click.Choice(["auto", "exact", "ivf", "hnsw"]),
              help="Gallery search: exact (faiss flat), ivf (IndexIVFFlat), hnsw (IndexHNSWFlat); auto picks exact for "
                   "small galleries and HNSW for large ones (docs/results.md).")
@click.option("--index-file", type=click.Path(path_type=Path),
              help="Folder mode: keep the gallery's index in this directory; reused while the bundle and gallery are the same, "
                   "extended when images were only added, rebuilt otherwise (index once, query many times; pair with --cache).")
@click.option("--rerank", is_flag=True, help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3) on each query's shortlist.")
@click.option("--rerank-shortlist", default=D.rerank_shortlist, type=click.IntRange(2, 10_000), help="Gallery candidates per query that --rerank re-orders.")
@click.option("--ray", "ray_address", help="Embed on a Ray cluster: 'local' starts one on this machine, or a cluster address "
                                          "(auto, ray://head:10001). pip install 'reidkit[ray]'.")
@click.option("--ray-parquet", help="With --ray: directory or cloud URI (s3://...) for the embeddings as Parquet (default: a temporary directory).")
@click.option("--strict", is_flag=True, help="Exit 1 if any image was skipped.")
@quiet_option
@click.option("--report-json", type=click.Path(dir_okay=False, path_type=Path), help="Write the run summary (timings, skipped files) as JSON.")
@click.option("--by", default=D.by, type=click.Choice(["image", "identity"]),
              help="identity: rank individuals, one row per (query, identity): query_id,identity,score,database_image_id. "
                   "Needs a folder-per-identity --gallery, or metadata whale_id in scenario mode.")
@click.option("--aggregate", default=D.aggregate, type=click.Choice(["max", "mean-top2"]),
              help="With --by identity: an identity's score is its best image (max) or the mean of its two best (mean-top2).")
@click.option("--calibration", type=click.Path(dir_okay=False, path_type=Path),
              help="A `reid eval --calibrate` file: adds p_same, the probability that each row is the query's individual.")
@click.option("--new-individual", type=float, default=None,
              help="With --by identity: insert a new_individual row in each ranking where this threshold falls: a p_same "
                   "with --calibration, else a score in [0, 1]. A first row new_individual means 'none of these'.")
@click.option("--group-by", default=D.group_by, type=click.Choice(GROUPINGS),
              help="With --by identity: encounter ranks individuals once per encounter (the encounter_id column of a "
                   "--query CSV, or one query sub-folder per encounter; photos without one stand alone), fusing its "
                   "photos' scores; the rows' query_id is the encounter, and images of the query's own encounter are "
                   "never candidates.")
@click.option("--fusion", default=D.fusion, type=click.Choice(FUSIONS),
              help="With --group-by encounter: an identity's score is its best photo's (max) or the photos' mean.")
@click.option("--review", type=click.Path(file_okay=False, path_type=Path), help="Also write the review page here (DIR/index.html; see reid review).")
@labels_option
@friendly("Finished batches are in the --cache file, if you gave one: rerun the same command to resume.")
def infer_cmd(quiet: bool, strict: bool, **kw: Any) -> None:
    """Rank gallery images for each query with a bundle: folder mode or Whale-do scenario mode.

    --query and --gallery each take a folder (flat, or one sub-folder per identity), a metadata CSV
    (image_id,path[,identity|whale_id][,bbox]...), a wildlife-datasets CSV (identity,path[,bbox]...) or a
    COCO JSON (one subject per annotation with a bbox). Boxes are cropped before embedding; rows with an
    unusable box are reported and skipped. The wildlife-datasets identity 'unknown' is never ranked as an
    individual.

    \b
    Folder mode:   reid infer --model BUNDLE --query DIR --gallery DIR -o results.csv
    Field photos:  reid infer --model BUNDLE --query new.csv --gallery catalogue.json -o results.csv
    Scenario mode: reid infer --model BUNDLE --scenarios query_scenarios.csv --metadata metadata.csv -o submission.csv
    Individuals:   reid infer --model BUNDLE --query DIR --gallery IDENTITY_DIRS --by identity -o ids.csv --review review/
    """
    from reidkit.runtime.request import InferRequest, run_inference

    req = InferRequest(progress=not quiet, **kw)
    result = run_inference(req)
    summary = result.summary
    for path, reason in summary.skipped:
        click.echo(f"skipped {path}: {reason}", err=True)
    click.echo(f"{summary.line()}\nwrote {req.out}" + (f" and {req.embeddings_out}" if req.embeddings_out else ""))
    if result.page is not None:
        click.echo(f"review page: {result.page.resolve().as_uri()}")
    if strict and summary.skipped:
        sys.exit(1)
