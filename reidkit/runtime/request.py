"""One ``reid infer`` run as a value: what to rank, with which engine, and where to write it.

The CLI, the Python API and the tests build an :class:`InferRequest` and call
:func:`run_inference`; the mode checks, the engine (one process, or Ray actors), the index
key and the optional review page live here once, not in the command-line parser.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

from reidkit.errors import ReidkitError
from reidkit.runtime.infer import RunSummary


@dataclass
class InferRequest:
    model: Path
    out: Path
    query: Path | None = None  # folder mode: each a folder, a metadata or wildlife-datasets CSV, or a COCO JSON
    gallery: Path | None = None
    coco_identity: str | None = None  # the COCO annotation key that names the individual, where not identity or name
    group_by: str = "image"  # "encounter": one identity ranking per encounter (folder mode, --by identity)
    fusion: str = "max"  # how an encounter fuses its photos' identity scores (runtime/encounters.py)
    scenarios: Path | None = None  # Whale-do scenario mode
    metadata: Path | None = None
    top_k: int = 20
    backend: str = "auto"
    precision: str | None = None
    batch_size: int = 32
    workers: int | None = None
    threads: int | None = None
    decode: str = "auto"  # where images are decoded: threads, processes, or auto (processes when the engine is on a GPU)
    cache: Path | None = None
    embeddings_out: Path | None = None
    qe: int = 0
    dba: int = 0
    index_kind: str = "auto"
    index_file: Path | None = None
    rerank: bool = False
    rerank_shortlist: int = 100
    ray_address: str | None = None
    ray_parquet: str | None = None
    by: str = "image"
    aggregate: str = "max"
    review: Path | None = None
    labels: Path | None = None
    report_json: Path | None = None
    progress: bool = True
    calibration: Path | None = None  # `reid eval --calibrate` file: adds p_same
    new_individual: float | None = None  # with --by identity: where the new_individual row sits (P with a calibration, else score)

    @property
    def mode(self) -> str:
        """``folders`` or ``scenarios``; raises the one-line error a user can act on."""
        folder_mode = self.query is not None or self.gallery is not None
        scen_mode = self.scenarios is not None or self.metadata is not None
        if folder_mode == scen_mode:
            raise ReidkitError("choose one mode: --query and --gallery (folder mode), or --scenarios and --metadata (scenario mode)")
        if folder_mode and (self.query is None or self.gallery is None):
            raise ReidkitError("folder mode needs both --query and --gallery (each a folder, a metadata CSV or a COCO JSON)")
        if scen_mode and (self.scenarios is None or self.metadata is None):
            raise ReidkitError("scenario mode needs both --scenarios query_scenarios.csv and --metadata metadata.csv")
        if self.ray_address and self.cache:
            raise ReidkitError("--cache is for single-process runs; with --ray keep the embeddings with --ray-parquet DIR")
        from reidkit.runtime.infer import check_grouping

        check_grouping(self.group_by, self.by, self.index_kind in ("auto", "exact") and self.index_file is None and not self.rerank)
        if self.group_by == "encounter" and not folder_mode:
            raise ReidkitError("--group-by encounter reads each query's encounter_id from a --query metadata CSV (or one "
                               "query sub-folder per encounter); pass --query and --gallery")
        return "folders" if folder_mode else "scenarios"


@dataclass
class InferResult:
    summary: RunSummary
    page: Path | None = None  # the review page's index.html, when one was asked for


def run_inference(req: InferRequest) -> InferResult:
    """Embed, rank and write ``req.out`` (and the embeddings, report and review page asked for)."""
    mode = req.mode
    from reidkit.distributed.ray_embed import RayEmbedder  # light: Ray itself is imported only when connecting
    from reidkit.runtime.bundle import load_bundle
    from reidkit.runtime.embedder import Embedder
    from reidkit.runtime.infer import run_folders, run_scenarios
    from reidkit.runtime.rerank import RerankParams
    from reidkit.runtime.search import RankOptions

    calibration = None
    if req.calibration is not None or req.new_individual is not None:  # refused before any embedding work
        from reidkit.calibration import load_calibration
        from reidkit.runtime.open_set import check_options

        calibration = load_calibration(req.calibration) if req.calibration is not None else None
        check_options(req.by, calibration, req.new_individual)
    bundle = load_bundle(req.model)
    embedder: RayEmbedder | Embedder
    if req.ray_address:
        embedder = RayEmbedder(req.model, req.ray_address, req.backend, req.precision, req.batch_size, req.ray_parquet)
    else:
        embedder = bundle.embedder(req.backend, req.precision, req.cache, req.batch_size, req.workers, req.threads, req.decode)
    with embedder as emb:
        # the index is tied to what made the vectors; Ray actors resolve `auto` themselves, so their key is the graphs'
        key = bundle.key(req.precision or "fp32") if isinstance(emb, RayEmbedder) else bundle.key(emb.precision, emb.backend_name)
        ranking = RankOptions(req.index_kind, req.index_file, RerankParams(shortlist=req.rerank_shortlist) if req.rerank else None, key)
        if mode == "folders":
            assert req.query is not None and req.gallery is not None
            summary = run_folders(emb, req.query, req.gallery, req.out, req.top_k, req.qe, req.dba, req.embeddings_out,
                                  progress=req.progress, by=req.by, aggregate=req.aggregate, ranking=ranking,
                                  coco_identity=req.coco_identity, group_by=req.group_by, fusion=req.fusion)
        else:
            assert req.scenarios is not None and req.metadata is not None
            summary = run_scenarios(emb, req.scenarios, req.metadata, req.out, min(req.top_k, 20), req.qe, req.dba,
                                    req.embeddings_out, progress=req.progress, by=req.by, aggregate=req.aggregate, ranking=ranking)
    if calibration is not None or req.new_individual is not None:
        from reidkit.runtime.open_set import rewrite_matches

        summary.rows = rewrite_matches(req.out, req.by, calibration, req.new_individual)
    if req.report_json:
        from reidkit.atomic import atomic_write

        with atomic_write(req.report_json, "w", encoding="utf-8") as fh:
            json.dump({**dataclasses.asdict(summary), "images_per_s": summary.images / summary.seconds}, fh, indent=2)
    page = None
    if req.review is not None:
        from reidkit.review import review_page

        page = review_page(req.out, req.review, query=req.query, gallery=req.gallery, metadata=req.metadata,
                           scenarios=req.scenarios, labels=req.labels, progress=req.progress)
    return InferResult(summary, page)
