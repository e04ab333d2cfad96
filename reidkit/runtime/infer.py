"""The two ``reid-infer`` jobs: folder mode and Whale-do scenario mode."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, Sequence

import numpy as np

from reidkit.atomic import atomic_write
from reidkit.data.csvio import write_rows
from reidkit.data.items import Item, ItemSet, read_items
from reidkit.data.whaledo import read_metadata, read_scenarios
from reidkit.errors import ReidkitError
from reidkit.imaging import ImageRef
from reidkit.runtime.embedder import Embeddings
from reidkit.runtime.encounters import GROUPINGS
from reidkit.runtime.identity import HEADER as IDENTITY_HEADER
from reidkit.runtime.identity import folder_identities, identity_rows, rank_identities
from reidkit.runtime.knn import database_augment, to_unit_score
from reidkit.runtime.search import RankOptions, gallery_ranker
from reidkit.data import schemas

log = logging.getLogger("reidkit")
HEADER = list(schemas.MATCHES)


class ImageEmbedder(Protocol):
    """What the two jobs need: the single-process Embedder, or reid-infer --ray's RayEmbedder."""

    @property
    def label(self) -> str: ...

    @property
    def reason(self) -> str: ...

    def embed(self, inputs: Sequence[Any], progress: bool = ..., desc: str = ...) -> Embeddings: ...


@dataclass
class RunSummary:
    images: int
    embedded: int
    from_cache: int
    skipped: list[tuple[str, str]]
    seconds: float
    embed_seconds: float
    rank_seconds: float
    backend: str
    rows: int
    backend_reason: str = ""
    infer_seconds: float = 0.0  # inside the engines, of embed_seconds; the rest waited on decoding or ran the cache
    decode_cpu_seconds: float = 0.0  # summed over the decode workers, so it can exceed embed_seconds
    decode_mode: str = ""  # threads | processes
    startup_seconds: float = float("nan")  # from the process's launch to the first batch embedded
    steady_images_per_s: float = float("nan")  # embedded after the first batch, per second, to the last

    def line(self) -> str:
        ips = self.images / self.seconds if self.seconds else float("nan")
        return (f"{self.images} images ({self.embedded} embedded, {self.from_cache} from cache, {len(self.skipped)} skipped) "
                f"in {self.seconds:.2f}s = {ips:.1f} images/s on {self.backend}; embed {self.embed_seconds:.2f}s, "
                f"rank {self.rank_seconds:.2f}s; {self.rows} rows\nengine: {self.backend} ({self.backend_reason})"
                + (f"\nstart-up {self.startup_seconds:.2f}s from launch to the first batch, then "
                   f"{self.steady_images_per_s:.0f} images/s (decoding in {self.decode_mode})"
                   if self.steady_images_per_s == self.steady_images_per_s else ""))


def write_embeddings(path: Path, ids: Sequence[str], emb: Embeddings) -> None:
    """``.npz`` with ``ids`` (str) and ``embeddings`` (float32 [N, D]), skipped images left out;
    ``ids[i]`` names input position i. A ``.parquet`` path gets Parquet (id, embedding, content_hash)."""
    if path.suffix == ".parquet":
        from reidkit.runtime.parquet_out import write_embeddings_parquet

        write_embeddings_parquet(path, [ids[i] for i in emb.positions.tolist()], emb.vectors, emb.keys)
        return
    with atomic_write(path, "wb") as fh:
        np.savez(fh, ids=np.array([ids[i] for i in emb.positions.tolist()]), embeddings=emb.vectors.astype(np.float32, copy=False))


def _rows(results, qids: Sequence[str], dids: Sequence[str]) -> list[tuple[str, ...]]:
    """CSV rows; the scores are mapped in one numpy call (per row it was most of the rank stage)."""
    pairs = [(qid, j) for qid, matches in zip(qids, results) for j, _ in matches]
    scores = to_unit_score(np.fromiter((c for matches in results for _, c in matches), np.float64, count=len(pairs)))
    return [(qid, dids[j], f"{s:.6f}") for (qid, j), s in zip(pairs, scores.tolist())]


QUERY_BATCH = 2048  # queries ranked per step: memory stays O(batch * top_k) and rows stream to the CSV


def _ranked_rows(G: np.ndarray, Q: np.ndarray, top_k: int, self_idx: np.ndarray, qe: int, dba: int, qids: Sequence[str],
                 dids: Sequence[str], identities: Sequence[str] | None, aggregate: str, ranking: RankOptions | None = None,
                 keys: Sequence[str] = ()) -> Iterator[tuple[str, ...]]:
    """Image rows (through the gallery index when one is asked for), or with ``identities``
    (one per database row) identity rows (``--by identity``, over the exact search), yielded
    QUERY_BATCH queries at a time. Bad options raise here, before the first row is written."""
    step: Callable[[np.ndarray, np.ndarray, Sequence[str]], list[tuple[str, ...]]]
    if identities is None:
        ranker = gallery_ranker(ranking, G, top_k, qe, dba, keys)
        step = lambda q, own, ids: _rows(ranker(q, own), ids, dids)  # noqa: E731
    else:
        if ranking is not None and not ranking.plain(len(G)):
            raise ReidkitError("--by identity aggregates over the exact search; drop --index ivf/hnsw, --index-file and --rerank")
        augmented, idents = database_augment(G, dba), identities
        step = lambda q, own, ids: identity_rows(rank_identities(augmented, q, idents, top_k, own, aggregate, qe), ids, dids)  # noqa: E731

    def batches() -> Iterator[tuple[str, ...]]:
        for s in range(0, len(Q), QUERY_BATCH):
            yield from step(Q[s:s + QUERY_BATCH], self_idx[s:s + QUERY_BATCH], qids[s:s + QUERY_BATCH])

    return batches()


def seconds_since_launch() -> float:
    """How long this process has run, from the kernel's record of its start (Linux), so start-up
    counts the interpreter and the imports too; elsewhere, since reidkit was imported."""
    try:
        start_ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return uptime - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.perf_counter() - _IMPORTED


_IMPORTED = time.perf_counter()


def _summary(embedder: ImageEmbedder, emb: Embeddings, t: tuple[float, float, float], rows: int) -> RunSummary:
    st = emb.stats
    startup = st.first_batch_at - (time.time() - seconds_since_launch()) if st.first_batch_at else float("nan")
    return RunSummary(st.images, st.embedded, st.from_cache, emb.skipped, t[2] - t[0], t[1] - t[0], t[2] - t[1],
                      embedder.label, rows, embedder.reason, st.infer_seconds, st.decode_seconds, getattr(st, "decode_mode", ""),
                      startup, getattr(st, "steady_images_per_s", float("nan")))


def check_grouping(group_by: str, by: str, exact: bool = True) -> None:
    """Refuse a --group-by that cannot run, before any engine loads or image is decoded."""
    if group_by not in GROUPINGS:
        raise ReidkitError(f"--group-by {group_by!r}: choose one of {', '.join(GROUPINGS)}")
    if group_by == "encounter" and by != "identity":
        raise ReidkitError("--group-by encounter ranks individuals: add --by identity")
    if group_by == "encounter" and not exact:
        raise ReidkitError("--group-by encounter fuses exact per-photo scores; drop --index ivf/hnsw, --index-file and --rerank")


def run_folders(embedder: ImageEmbedder, query: Path, gallery: Path, out: Path, top_k: int = 20, qe: int = 0, dba: int = 0,
                embeddings_out: Path | None = None, progress: bool = True, by: str = "image", aggregate: str = "max",
                ranking: RankOptions | None = None, coco_identity: str | None = None, group_by: str = "image",
                fusion: str = "max") -> RunSummary:
    """Rank ``gallery`` for each of ``query``: each a folder (flat or per identity), a metadata or
    wildlife-datasets CSV, or a COCO JSON (:mod:`reidkit.data.items`). Rows are the items' ids;
    boxes are embedded as their subjects; rows the reader refused lead the summary's skipped list.
    ``group_by="encounter"`` (with ``by="identity"``) ranks once per encounter, its id the row's query id."""
    import time

    check_grouping(group_by, by, ranking is None or ranking.plain(0))
    t0 = time.perf_counter()
    qset, gset = read_items(query, coco_identity), read_items(gallery, coco_identity)
    if not qset.items:
        raise ReidkitError(f"--query {query}: no images found")
    if not gset.items:
        raise ReidkitError(f"--gallery {gallery}: no images found")
    qitems = qset.items
    gitems = _identified(gset, gallery) if by == "identity" else gset.items  # refused before any embedding work

    def key(it: Item) -> tuple[Path, Any]:
        return it.path.resolve(), it.bbox

    allk = list(dict.fromkeys([key(it) for it in qitems] + [key(it) for it in gitems]))
    pos = {k: i for i, k in enumerate(allk)}
    emb = embedder.embed([ImageRef(p, b) if b is not None else p for p, b in allk], progress=progress)
    t1 = time.perf_counter()
    qrow = emb.rows_of(pos[key(it)] for it in qitems)
    grow = emb.rows_of(pos[key(it)] for it in gitems)
    q_ok = [it for it, r in zip(qitems, qrow) if r >= 0]
    g_ok = [it for it, r in zip(gitems, grow) if r >= 0]
    qrow, grow = qrow[qrow >= 0], grow[grow >= 0]
    gindex = {key(it): j for j, it in enumerate(g_ok)}
    rows: Iterator[tuple[str, ...]] = iter(())
    if q_ok and g_ok:
        self_idx = np.array([gindex.get(key(it), -1) for it in q_ok])
        idents = [str(it.identity) for it in g_ok] if by == "identity" else None
        if group_by == "encounter":  # one ranking per sighting; its own photos are never candidates
            from reidkit.runtime.encounters import rank_encounters

            encounters = [qset.encounter_of(it) or it.id for it in q_ok]
            groups, results = rank_encounters(emb.vectors[grow], emb.vectors[qrow], [str(it.identity) for it in g_ok],
                                              self_idx.tolist(), encounters, top_k, fusion, [gset.encounter_of(it) for it in g_ok])
            rows = iter(identity_rows(results, groups, [it.id for it in g_ok]))
        else:
            rows = _ranked_rows(emb.vectors[grow], emb.vectors[qrow], top_k, self_idx, qe, dba, [it.id for it in q_ok],
                                [it.id for it in g_ok], idents, aggregate, ranking, [emb.keys[r] for r in grow.tolist()])
    n_rows = write_rows(out, IDENTITY_HEADER if by == "identity" else HEADER, rows)
    t2 = time.perf_counter()
    if embeddings_out:
        rel = {key(it): f"gallery/{it.id}" for it in gitems}
        rel.update({key(it): f"query/{it.id}" for it in qitems})
        write_embeddings(embeddings_out, [rel[k] for k in allk], emb)
    summary = _summary(embedder, emb, (t0, t1, t2), n_rows)
    summary.skipped = [*qset.problems, *gset.problems, *summary.skipped]
    return summary


def _identified(found: ItemSet, gallery: Path) -> list[Item]:
    """The gallery items ``--by identity`` ranks: those of a known individual."""
    if found.layout == "folders":  # a loose image in a folder gallery is a mistake, not an unknown individual
        folder_identities([it.id for it in found.items], gallery)
        return found.items
    return found.require_identified("--by identity")


def run_scenarios(embedder: ImageEmbedder, scenarios_csv: Path, metadata_csv: Path, out: Path, top_k: int = 20, qe: int = 0,
                  dba: int = 0, embeddings_out: Path | None = None, progress: bool = True, by: str = "image",
                  aggregate: str = "max", ranking: RankOptions | None = None) -> RunSummary:
    """The Whale-do submission: every image embedded once, each query ranked in its scenario's
    database; rows stream to the (atomically renamed) CSV scenario by scenario."""
    if ranking is not None and ranking.index_file is not None:
        raise ReidkitError("--index-file serves one gallery (folder mode); scenario mode builds each scenario's index in memory")
    import time

    t0 = time.perf_counter()
    meta = read_metadata(metadata_csv)
    scenarios = read_scenarios(scenarios_csv, set(meta.image_ids))
    if by == "identity" and not meta.whale_id:
        raise ReidkitError(f"--by identity needs a whale_id column in {metadata_csv} (the identity of each image)")
    listed = list(dict.fromkeys([img for s in scenarios for _, img in s.queries] + [d for s in scenarios for d in s.database]))
    needed = [i for i in listed if i not in meta.bad_boxes]  # a row with an unusable box is reported, not embedded
    emb = embedder.embed([ImageRef(meta.paths[i], meta.bbox[i]) if i in meta.bbox else meta.paths[i] for i in needed], progress=progress)
    t1 = time.perf_counter()
    row_of = dict(zip(needed, emb.rows_of(range(len(needed))).tolist())) | {i: -1 for i in listed if i in meta.bad_boxes}
    def rows() -> Iterator[tuple[str, ...]]:
        for sc in scenarios:
            # an unidentified animal (wildlife-datasets' "unknown") is no individual a query could be
            db = [d for d in sc.database if row_of[d] >= 0 and (by != "identity" or meta.whale_id[d] != schemas.UNKNOWN_IDENTITY)]
            qs = [(q, img) for q, img in sc.queries if row_of[img] >= 0]
            if not db or not qs:
                continue
            dbi = {d: j for j, d in enumerate(db)}
            G = emb.vectors[[row_of[d] for d in db]]
            Q = emb.vectors[[row_of[img] for _, img in qs]]
            self_idx = np.array([dbi.get(img, -1) for _, img in qs])
            idents = [meta.whale_id[d] for d in db] if by == "identity" else None
            part = _ranked_rows(G, Q, top_k, self_idx, qe, dba, [q for q, _ in qs], db, idents, aggregate, ranking,
                                [emb.keys[row_of[d]] for d in db])
            yield from part

    n_rows = write_rows(out, IDENTITY_HEADER if by == "identity" else HEADER, rows())
    t2 = time.perf_counter()
    if embeddings_out:
        write_embeddings(embeddings_out, needed, emb)
    summary = _summary(embedder, emb, (t0, t1, t2), n_rows)
    summary.skipped = [meta.bad_boxes[i] for i in listed if i in meta.bad_boxes] + summary.skipped
    return summary
