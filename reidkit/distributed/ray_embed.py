"""Embedding on a Ray cluster with Ray Data (``reid-infer --ray ADDRESS|local``).

Ray tasks read, key, decode and resize the images with the single-process runtime's
``prepare`` (boxes, each member's resize policy and decode scale); a pool of actors embeds them, each actor loading the bundle once and running the
runtime's own backends and ``fuse``, exactly as a single process does. Embeddings land as
Parquet (``id``, ``embedding``, ``content_hash``, ``error``) in a directory that may be local
or a cloud URI (``s3://``, ``gs://``: whatever pyarrow's filesystems reach); the driver reads
them back in input order and ranks them like a single-process run.

Resources: on a small machine an actor pool that reserves every CPU starves the read tasks
and the pipeline never finishes (seen with 2 actors x 1 CPU on 2 cores). ``plan_resources``
always leaves room for a read task beside the pool; tests/test_ray.py runs it on 2 CPUs.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import numpy as np

from reidkit.errors import MissingDependencyError, ReidkitError
from reidkit.imaging import DEFAULT_MAX_PIXELS, ImageRef

if TYPE_CHECKING:
    from reidkit.runtime.embedder import Embeddings

log = logging.getLogger("reidkit")
TASK_CPUS = 0.5  # each read/decode task


@dataclass(frozen=True)
class RayPlan:
    actors: int
    actor_cpus: float
    actor_gpus: float
    task_cpus: float
    threads: int  # inference threads inside each actor


def plan_resources(cpus: float, gpus: float = 0, actors: int | None = None) -> RayPlan:
    """Actor pool and task sizes that always complete: the pool's reservation leaves at least
    one read task's CPUs free. GPU nodes: one actor per GPU, each with one GPU."""
    if cpus < TASK_CPUS * 2:
        raise ReidkitError(f"the Ray cluster has {cpus} CPUs; reidkit needs at least {TASK_CPUS * 2}")
    if gpus >= 1:
        n = actors or int(gpus)
        actor_cpus = min(1.0, (cpus - TASK_CPUS) / n)
        return RayPlan(n, actor_cpus, 1.0, TASK_CPUS, max(1, int(actor_cpus)))
    free = cpus - TASK_CPUS  # CPUs the pool may reserve
    n = actors or max(1, int(math.floor(cpus)) - 1)
    actor_cpus = min(1.0, free / n)
    return RayPlan(n, actor_cpus, 0.0, TASK_CPUS, max(1, int(actor_cpus)))


def _ray() -> Any:
    try:
        import ray
    except ImportError:
        raise MissingDependencyError("Ray is not installed; pip install 'reidkit[ray]'") from None
    return ray


def _decode_batch(batch: dict[str, np.ndarray], sizes: list[tuple[int, int, Any]], max_pixels: int,
                  min_hw: tuple[int, int] | None) -> dict[str, Any]:
    """Ray task: read, key, decode (cropped to the box, at the members' DCT scale) and resize with
    the single-process runtime's own ``prepare_span``, so a photo embeds alike with and without Ray."""
    import json

    from reidkit.imaging import ImageDecodeError, ImageRef
    from reidkit.runtime.decode_pool import photo_runs, prepare_span

    n = len(batch["id"])
    out: dict[str, Any] = {"id": batch["id"], "content_hash": [""] * n, "error": [""] * n}
    arrays = [np.zeros((n, h, w, 3), np.uint8) for h, w, _ in sizes]
    refs = [ImageRef(Path(p), json.loads(b) if b else None) for p, b in zip(batch["path"], batch["bbox"])]
    for start, end in photo_runs(refs):  # the boxes of one photo: read, hashed and decoded once
        for i, got in enumerate(prepare_span(refs[start:end], sizes, max_pixels, min_hw, ()), start=start):
            if isinstance(got, ImageDecodeError):
                out["error"][i] = got.reason
                continue
            out["content_hash"][i] = got[0]
            for arr, s in zip(arrays, sizes):
                arr[i] = got[1][s]  # type: ignore[index]
    out["content_hash"] = np.array(out["content_hash"])
    out["error"] = np.array(out["error"])
    for j, a in enumerate(arrays):
        out[f"pixels{j}"] = a
    return out


class _EmbedActor:
    """Loads the bundle once; embeds decoded batches with the runtime's backends and fuse."""

    def __init__(self, bundle_dir: str, backend: str, precision: str | None, threads: int) -> None:
        from reidkit.runtime.backends.select import select_backends
        from reidkit.runtime.bundle import load_bundle
        from reidkit.runtime.embedder import input_sizes

        self.bundle = load_bundle(bundle_dir)
        self.backends = select_backends(self.bundle, backend, precision, threads).backends
        self.sizes = input_sizes(self.bundle)

    def __call__(self, batch: dict[str, np.ndarray]) -> Any:
        import pyarrow as pa

        from reidkit.runtime.embedder import run_members

        ok = np.flatnonzero(batch["error"] == "")
        dim = self.bundle.dim
        emb = np.zeros((len(batch["id"]), dim), np.float32)
        if len(ok):
            emb[ok] = run_members(self.bundle, self.backends, {s: batch[f"pixels{j}"][ok] for j, s in enumerate(self.sizes)})
        return pa.table({"id": pa.array(list(batch["id"]), pa.string()),
                         "embedding": pa.FixedSizeListArray.from_arrays(pa.array(emb.reshape(-1)), dim),
                         "content_hash": pa.array(list(batch["content_hash"]), pa.string()),
                         "error": pa.array(list(batch["error"]), pa.string())})


@dataclass
class RayEmbedding:
    ids: list[str]  # input order
    vectors: np.ndarray  # float32 [n, D]; rows of skipped images are zero
    content_hashes: list[str]
    errors: list[tuple[str, str]]  # (id, reason) of skipped images
    parquet: str
    seconds: float


def connect(address: str, num_cpus: int | None = None) -> None:
    """``local``: start a cluster on this machine; anything else: a running cluster's address
    (``auto``, ``ray://head:10001``, ``head:6379``). A cluster already joined is reused."""
    ray = _ray()
    if ray.is_initialized():
        return
    kw: dict[str, Any] = {"log_to_driver": False, "include_dashboard": False} if address == "local" else {"log_to_driver": False}
    if address == "local":  # address="local" never joins a cluster that happens to run here already
        ray.init(address="local", num_cpus=num_cpus, **kw)
    else:
        ray.init(address=address, **kw)


def embed_paths(bundle_dir: str | Path, paths: Sequence[str | Path | ImageRef], parquet_dir: str | None = None, backend: str = "auto",
                precision: str | None = None, batch_size: int = 32, max_pixels: int = DEFAULT_MAX_PIXELS,
                actors: int | None = None) -> RayEmbedding:
    """The Python entry point: embed ``paths`` (files, or :class:`ImageRef` boxes on photos) on the
    connected Ray cluster (``connect`` first) and return the embeddings in input order, also
    written as Parquet under ``parquet_dir``; a box's ``id`` is ``PATH bbox [x, y, w, h]``."""
    ray = _ray()
    import pyarrow.dataset as pads

    from reidkit.runtime.bundle import load_bundle
    from reidkit.runtime.embedder import decode_floor, input_sizes

    t0 = time.perf_counter()
    bundle = load_bundle(bundle_dir)  # refuse a bad bundle on the driver, before any task starts
    res = ray.cluster_resources()
    plan = plan_resources(float(res.get("CPU", 0)), float(res.get("GPU", 0)), actors)
    log.info("ray: %d embedding actor(s) x %.2g CPU%s, read tasks %.2g CPU", plan.actors, plan.actor_cpus,
             f" + {plan.actor_gpus:g} GPU" if plan.actor_gpus else "", plan.task_cpus)
    sizes = input_sizes(bundle)
    refs = [p if isinstance(p, ImageRef) else ImageRef(Path(p)) for p in paths]
    ids = [str(r) for r in refs]
    if parquet_dir is None:
        parquet_dir = tempfile.mkdtemp(prefix="reidkit-ray-")
    ds = ray.data.from_items([{"id": i, "path": str(r.path), "bbox": json.dumps(r.bbox) if r.bbox else ""}
                               for i, r in zip(ids, refs)], override_num_blocks=max(1, min(len(ids) // batch_size, 200)))
    ds = ds.map_batches(_decode_batch, fn_kwargs={"sizes": sizes, "max_pixels": max_pixels,
                                                        "min_hw": decode_floor(sizes)}, batch_size=batch_size,
                        batch_format="numpy", num_cpus=plan.task_cpus)
    ds = ds.map_batches(_EmbedActor, fn_constructor_kwargs={"bundle_dir": str(Path(bundle_dir).resolve()), "backend": backend,
                                                            "precision": precision, "threads": plan.threads},
                        batch_size=batch_size, batch_format="numpy", concurrency=plan.actors, num_cpus=plan.actor_cpus,
                        num_gpus=plan.actor_gpus or None)
    ds.write_parquet(parquet_dir, ray_remote_args={"num_cpus": plan.task_cpus})
    table = pads.dataset(parquet_dir, format="parquet").to_table()
    got_ids = table.column("id").to_pylist()
    pos = {p: i for i, p in enumerate(got_ids)}
    if len(pos) != len(set(ids)) or set(pos) != set(ids):
        raise ReidkitError(f"{parquet_dir}: the Parquet files do not hold exactly this run's images; use an empty directory")
    order = np.array([pos[i] for i in ids], np.int64)
    emb = table.column("embedding").combine_chunks()
    vectors = emb.flatten().to_numpy().reshape(len(got_ids), bundle.dim)[order].astype(np.float32)
    all_hashes, errs = table.column("content_hash").to_pylist(), table.column("error").to_pylist()
    hashes = [all_hashes[i] for i in order]
    errors = [(ids[k], errs[i]) for k, i in enumerate(order) if errs[i]]
    return RayEmbedding(ids, vectors, hashes, errors, parquet_dir, time.perf_counter() - t0)


class RayEmbedder:
    """What ``reid-infer --ray`` uses in place of the single-process ``Embedder``: same
    ``embed(paths) -> Embeddings`` contract, so ranking and outputs are shared code."""

    def __init__(self, bundle_dir: str | Path, address: str, backend: str = "auto", precision: str | None = None,
                 batch_size: int = 32, parquet_dir: str | None = None, max_pixels: int = DEFAULT_MAX_PIXELS) -> None:
        connect(address)
        self.bundle_dir, self.backend, self.precision = bundle_dir, backend, precision
        self.batch_size, self.parquet_dir, self.max_pixels = batch_size, parquet_dir, max_pixels
        self.label = f"ray ({backend}{' ' + precision if precision else ''}, {address})"
        self.reason = "--ray: Ray Data tasks decode, an actor pool embeds"

    def __enter__(self) -> "RayEmbedder":
        return self

    def __exit__(self, *exc: object) -> None:
        pass

    def embed(self, inputs: Sequence[Any], progress: bool = False, desc: str = "") -> "Embeddings":
        from reidkit.runtime.embedder import EmbedStats, Embeddings

        own_dir = self.parquet_dir is None
        r = embed_paths(self.bundle_dir, inputs, self.parquet_dir, self.backend, self.precision, self.batch_size, self.max_pixels)
        if own_dir:
            import shutil

            shutil.rmtree(r.parquet, ignore_errors=True)
        bad = {i for i, _ in r.errors}
        ok = np.array([k for k, i in enumerate(r.ids) if i not in bad], np.int64)
        stats = EmbedStats(images=len(r.ids), embedded=len(ok), seconds=r.seconds)
        return Embeddings(r.vectors[ok], [r.ids[k] for k in ok.tolist()], list(r.errors), ok,
                          [r.content_hashes[k] for k in ok.tolist()], stats)
