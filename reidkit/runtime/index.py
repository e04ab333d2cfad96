"""Gallery indexes for large catalogues: exact, IVF or HNSW on faiss, persisted and tied to
what they index.

Every index works in inner-product space on L2-normalised vectors, so scores are cosines
whichever kind answers. faiss's own index types do the work (``IndexFlatIP``,
``IndexIVFFlat`` with ``nprobe``, ``IndexHNSWFlat`` with ``efSearch``); exact and IVF move
to the GPU when faiss sees one (faiss has no GPU HNSW, so HNSW stays on the CPU).

A saved index is a directory (``index.faiss`` + ``meta.json``). The metadata names the
bundle key (which graphs, weights, fusion and backend made the vectors) and the content key
of every indexed image, in order. Loading for a gallery that is not exactly that gallery
under that bundle is refused; ``reid-infer --index-file`` then rebuilds, or adds the new
images when the old gallery is a prefix of the new one, and says which it did and why.
Parameters and the ``auto`` threshold come from benchmarks/results/scaling/ (see README).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from reidkit.atomic import atomic_dir
from reidkit.errors import ReidkitError
from reidkit.runtime.knn import _faiss

log = logging.getLogger("reidkit")

KINDS = ("exact", "ivf", "hnsw", "auto")
# Below this many gallery vectors `auto` searches exactly: measured in benchmarks/results/scaling/,
# where exact search stays under ~2 ms per query and an approximate index is not worth its build time.
AUTO_EXACT_BELOW = 50_000
INDEX_FORMAT = 1


@dataclass(frozen=True)
class IndexParams:
    """Search/build parameters; the defaults reach recall@20 >= 0.99 in the scaling report."""

    nlist: int | None = None  # IVF cells (default 2*sqrt(n), at least 39 training points per cell)
    nprobe: int | None = None  # IVF cells visited per query (default nlist/8, at least 16)
    hnsw_m: int = 32  # HNSW graph degree
    ef_construction: int = 40
    ef_search: int = 256
    train_per_cell: int = 32  # IVF k-means sample: faiss wants 39..256 points per cell; 32 bounds training at 10^6

    def ivf_nlist(self, n: int) -> int:
        if self.nlist:
            return max(1, min(self.nlist, n // 39 or 1))
        return max(1, min(int(2 * math.sqrt(n)), n // 39 or 1))

    def ivf_nprobe(self, nlist: int) -> int:
        return min(nlist, self.nprobe or max(16, nlist // 8))


def resolve_kind(kind: str, n: int) -> str:
    if kind not in KINDS:
        raise ReidkitError(f"--index {kind!r}: choose one of {', '.join(KINDS)}")
    if kind == "auto":
        return "exact" if n < AUTO_EXACT_BELOW else "hnsw"
    return kind


def _on_gpu(faiss: Any) -> bool:
    return hasattr(faiss, "get_num_gpus") and faiss.get_num_gpus() > 0


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.ascontiguousarray(x, dtype=np.float32)
    norms = np.linalg.norm(x, axis=1)
    if len(x) and not np.allclose(norms[norms > 0], 1.0, atol=1e-3):
        raise ReidkitError("index vectors must be L2-normalised (inner product = cosine); reidkit embeddings always are")
    return x


def gallery_digest(keys: Sequence[str]) -> str:
    """One hash of the ordered content keys: equal iff the gallery is the same images in the same order."""
    h = hashlib.sha256()
    for k in keys:
        h.update(k.encode())
        h.update(b"\n")
    return h.hexdigest()


@dataclass
class GalleryIndex:
    """A faiss index over gallery vectors plus what it was built from."""

    kind: str
    index: Any  # faiss index (CPU object; a GPU clone is made per search batch when available)
    dim: int
    bundle_key: str = ""
    keys: list[str] = field(default_factory=list)  # content key of each indexed row, in row order
    params: IndexParams = field(default_factory=IndexParams)

    @property
    def ntotal(self) -> int:
        return int(self.index.ntotal)

    @classmethod
    def build(cls, vectors: np.ndarray, kind: str = "exact", params: IndexParams | None = None,
              bundle_key: str = "", keys: Sequence[str] = ()) -> "GalleryIndex":
        faiss = _faiss()
        params = params or IndexParams()
        x = _unit(vectors)
        n, d = x.shape if x.ndim == 2 else (0, 0)
        kind = resolve_kind(kind, n)
        if kind == "exact":
            index = faiss.IndexFlatIP(d)
        elif kind == "ivf":
            nlist = params.ivf_nlist(n)
            index = faiss.IndexIVFFlat(faiss.IndexFlatIP(d), d, nlist, faiss.METRIC_INNER_PRODUCT)
            sample = max(39, params.train_per_cell) * nlist
            rows = np.random.default_rng(0).choice(n, sample, replace=False) if n > sample else slice(None)
            index.train(x[rows])
            index.nprobe = params.ivf_nprobe(nlist)
        elif kind == "hnsw":
            index = faiss.IndexHNSWFlat(d, params.hnsw_m, faiss.METRIC_INNER_PRODUCT)
            index.hnsw.efConstruction = params.ef_construction
            index.hnsw.efSearch = params.ef_search
        else:  # pragma: no cover - resolve_kind refuses anything else
            raise AssertionError(kind)
        index.add(x)
        return cls(kind, index, d, bundle_key, list(keys), params)

    def add(self, vectors: np.ndarray, keys: Sequence[str] = ()) -> None:
        """Append rows (IVF keeps its trained cells; HNSW links the new nodes into the graph)."""
        x = _unit(vectors)
        if len(x) and x.shape[1] != self.dim:
            raise ReidkitError(f"cannot add {x.shape[1]}-d vectors to a {self.dim}-d index; rebuild it")
        self.index.add(x)
        self.keys.extend(keys)

    def search(self, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """Top-k cosines and row indices per query, best first (-1 pads when fewer exist)."""
        faiss = _faiss()
        q = np.ascontiguousarray(queries, dtype=np.float32)
        k = min(k, self.ntotal)
        if k == 0 or len(q) == 0:
            return np.zeros((len(q), 0), np.float32), np.zeros((len(q), 0), np.int64)
        index = self.index
        if self.kind != "hnsw" and _on_gpu(faiss):
            index = faiss.index_cpu_to_all_gpus(index)
            if self.kind == "ivf":
                faiss.GpuParameterSpace().set_index_parameter(index, "nprobe", self.index.nprobe)
        return index.search(q, k)

    # ---------------------------------------------------------------- persistence
    def meta(self) -> dict[str, Any]:
        p = self.params
        return {"format": INDEX_FORMAT, "kind": self.kind, "dim": self.dim, "ntotal": self.ntotal,
                "bundle_key": self.bundle_key, "gallery_digest": gallery_digest(self.keys), "keys": self.keys,
                "params": {"nlist": getattr(self.index, "nlist", None), "nprobe": getattr(self.index, "nprobe", None),
                           "hnsw_m": p.hnsw_m, "ef_construction": p.ef_construction, "ef_search": p.ef_search}}

    def save(self, path: str | Path) -> None:
        """Write ``path/`` atomically: a crash leaves the previous index or the complete new one."""
        faiss = _faiss()
        with atomic_dir(path, overwrite=True) as tmp:
            faiss.write_index(self.index, str(tmp / "index.faiss"))
            (tmp / "meta.json").write_text(json.dumps(self.meta()), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "GalleryIndex":
        faiss = _faiss()
        path = Path(path)
        fix = f"delete {path} or rebuild it (reid-infer ... --index-file {path} rebuilds a missing one)"
        try:
            meta = json.loads((path / "meta.json").read_text(encoding="utf-8"))
            if meta.get("format") != INDEX_FORMAT:
                raise ReidkitError(f"{path} is an index of format {meta.get('format')!r}, this reidkit reads {INDEX_FORMAT}; {fix}")
            index = faiss.read_index(str(path / "index.faiss"))
        except (OSError, ValueError, RuntimeError) as exc:
            raise ReidkitError(f"{path} is not a readable reidkit index ({exc}); {fix}") from None
        if index.ntotal != meta["ntotal"] or len(meta["keys"]) != meta["ntotal"] or gallery_digest(meta["keys"]) != meta["gallery_digest"]:
            raise ReidkitError(f"{path}: index and metadata disagree (damaged or edited); {fix}")
        kind = meta["kind"]
        if kind == "hnsw":
            index.hnsw.efSearch = meta["params"]["ef_search"]
        elif kind == "ivf":
            index.nprobe = meta["params"]["nprobe"]
        p = meta["params"]
        params = IndexParams(p.get("nlist"), p.get("nprobe"), p["hnsw_m"], p["ef_construction"], p["ef_search"])
        return cls(kind, index, int(meta["dim"]), meta["bundle_key"], list(meta["keys"]), params)

    def staleness(self, bundle_key: str, keys: Sequence[str]) -> str | None:
        """Why this index cannot serve ``keys`` under ``bundle_key`` (None: it can, as is).

        Returns "prefix" when the index holds the first images of ``keys`` in order, so the
        rest can be added instead of rebuilding.
        """
        if self.bundle_key != bundle_key:
            return "it was built from another bundle (other graphs, weights, fusion or backend)"
        if list(keys) == self.keys:
            return None
        if len(keys) > len(self.keys) and list(keys[:len(self.keys)]) == self.keys:
            return "prefix"
        return "the gallery's images differ from the indexed ones"


def open_or_build(path: str | Path | None, vectors: np.ndarray, keys: Sequence[str], bundle_key: str, kind: str = "auto",
                  params: IndexParams | None = None) -> GalleryIndex:
    """The index for this gallery: loaded from ``path`` when it matches, extended when the
    gallery only grew, rebuilt (and saved) otherwise. ``path=None``: built in memory."""
    if path is None:
        return GalleryIndex.build(vectors, kind, params, bundle_key, keys)
    path = Path(path)
    wanted = resolve_kind(kind, len(vectors)) if kind != "auto" else None
    if (path / "meta.json").is_file():
        idx = GalleryIndex.load(path)
        why = idx.staleness(bundle_key, keys)
        if wanted and wanted != idx.kind:
            why = f"it is a {idx.kind} index and --index {wanted} was asked for"
        if why is None:
            log.info("index %s: reused (%s, %d vectors)", path, idx.kind, idx.ntotal)
            return idx
        if why == "prefix":
            n0 = idx.ntotal
            idx.add(vectors[n0:], keys[n0:])
            idx.save(path)
            log.info("index %s: added %d new gallery images to the %d indexed", path, len(keys) - n0, n0)
            return idx
        log.warning("index %s is stale: %s; rebuilding it", path, why)
    elif path.exists():
        raise ReidkitError(f"--index-file {path} exists but is not a reidkit index directory; choose another path")
    idx = GalleryIndex.build(vectors, kind, params, bundle_key, keys)
    idx.save(path)
    log.info("index %s: built (%s, %d vectors)", path, idx.kind, idx.ntotal)
    return idx
