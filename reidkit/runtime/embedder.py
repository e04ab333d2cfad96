"""Images -> fused ensemble embeddings, with decoding overlapped with inference.

Threads (PIL releases the GIL while decoding) or, where the engine runs on a GPU and leaves the
cores free, worker processes (:mod:`reidkit.runtime.decode_pool`) read, hash, decode and resize
ahead of the model, in a bounded window so a 10^5-image run holds only a few batches of
pixels; each image is decoded once and resized once per distinct member input size;
identical contents are embedded once; batches go to every member, whose unit-norm outputs
are weighted, concatenated and L2-normalised. With a cache, finished batches are committed
as they complete, so an interrupted run resumes where it stopped.

This is the one copy of resize -> run -> fuse: ``reid-infer``, ``reid-bench``, the Python
API and the tests all come through :class:`Embedder`.
"""

from __future__ import annotations

import logging
import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import closing
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generator, Iterable, Mapping, Sequence

import numpy as np

from reidkit.cpus import usable_cpus
from reidkit.errors import ReidkitError
from reidkit.imaging import DEFAULT_MAX_PIXELS, ImageDecodeError, ImageRef
from reidkit.imaging import decode_floor as imaging_decode_floor
from reidkit.runtime.backends.registry import AUTO, get_backend
from reidkit.runtime.backends.select import select_backends
from reidkit.runtime.cache import EmbeddingCache
from reidkit.runtime.decode_pool import DECODE_MODES, DecodePool, Outcome, photo_runs, prepare_span
from reidkit.runtime.members import SizeKey, fuse, input_sizes, resize_stacks, run_members

if TYPE_CHECKING:
    from reidkit.runtime.bundle import Bundle

__all__ = ["EmbedStats", "Embedder", "Embeddings", "SizeKey", "fuse", "input_sizes", "resize_stacks", "run_members"]

log = logging.getLogger("reidkit")

_END = object()

Input = Any  # str | os.PathLike | ImageRef (a file, or a box on it) | PIL.Image.Image | np.ndarray (uint8 HxW, HxWx3 or HxWx4)


@dataclass
class EmbedStats:
    images: int = 0
    embedded: int = 0
    from_cache: int = 0
    duplicates: int = 0
    seconds: float = 0.0
    decode_seconds: float = 0.0
    infer_seconds: float = 0.0
    decode_mode: str = ""  # threads | processes: which path decoded this run
    # wall clock (time.time()) when the first and the last batch left the engines, and the first batch's
    # size: what separates start-up (engines, workers, the first images) from the steady rate after it
    first_batch_at: float = 0.0
    first_batch_images: int = 0
    last_batch_at: float = 0.0

    @property
    def steady_images_per_s(self) -> float:
        """Embedding rate after the first batch (NaN with fewer than two batches)."""
        span = self.last_batch_at - self.first_batch_at
        return (self.embedded - self.first_batch_images) / span if span > 0 else float("nan")


@dataclass
class Embeddings:
    """What :meth:`Embedder.embed` returns: one row per input that could be used, in input order."""

    vectors: np.ndarray  # float32 [n_ok, D], L2-normalised
    ids: list[Any]  # per row: the path as given (str), or the input's position (int) for in-memory images
    skipped: list[tuple[Any, str]]  # (id, reason) per input that could not be used
    positions: np.ndarray  # int64 [n_ok]: the input index of each row
    keys: list[str] = field(default_factory=list)  # per row: the content hash the cache uses
    stats: EmbedStats = field(default_factory=EmbedStats)

    def __len__(self) -> int:
        return len(self.ids)

    def rows_of(self, positions: Iterable[int]) -> np.ndarray:
        """Row index of each given input position (-1 where that input was skipped)."""
        where = np.full(self.stats.images or (int(self.positions.max()) + 1 if len(self.positions) else 0), -1, np.int64)
        where[self.positions] = np.arange(len(self.positions))
        return where[np.fromiter(positions, np.int64)]


def _describe(item: Input, i: int) -> Any:
    return str(item) if isinstance(item, (str, os.PathLike, ImageRef)) else i


def decode_floor(sizes: Sequence[SizeKey], headroom: int | None = None) -> tuple[int, int] | None:
    """How small a JPEG may be decoded for these members (:func:`reidkit.imaging.decode_floor`),
    with their own headroom or ``headroom`` (0: full resolution)."""
    if headroom is not None:
        sizes = [(h, w, replace(p, decode_headroom=headroom)) for h, w, p in sizes]
    return imaging_decode_floor(sizes)


def _engine_on_gpu(backend: str) -> bool:
    """Before the engine loads: an explicit backend's device; for ``auto``, whether a GPU exists,
    since ``auto`` takes a GPU engine wherever one can run (checked again once it has chosen)."""
    if backend != AUTO:
        return get_backend(backend).device == "cuda"
    from reidkit.runtime.gpu import detect_gpus

    return bool(detect_gpus())


class Embedder:
    """Loads a bundle's engines once and embeds images with them; a context manager that
    closes its cache and engines on exit."""

    #: None decodes a JPEG as the members' policies say (``ResizePolicy.decode_headroom``); a
    #: number overrides their headroom, 0 decoding every file whole at full resolution. Only to
    #: measure what the reduction saves and costs (benchmarks/camera_photos.py).
    decode_headroom: int | None = None

    def __init__(self, bundle: "Bundle", backend: str = AUTO, batch_size: int = 32, workers: int | None = None,
                 threads: int | None = None, cache: str | Path | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 precision: str | None = None, decode: str = "auto") -> None:
        """``decode``: ``processes`` decodes in worker processes, one per usable CPU (what keeps a
        GPU fed); ``threads`` in this process, leaving the cores to a CPU engine; ``auto`` picks
        processes when the engine runs on a GPU. ``workers``: how many decode workers."""
        if decode not in DECODE_MODES:
            raise ReidkitError(f"decode {decode!r}: choose one of {', '.join(DECODE_MODES)}")
        self.bundle = bundle
        self.batch_size = max(1, batch_size)
        self.max_pixels = max_pixels
        self.sizes = input_sizes(bundle)
        self.cache: EmbeddingCache | None = None
        self.backends: list[Any] = []
        self.pool: DecodePool | None = None
        self._workers = workers
        self._pool_refused = False
        # the pool starts before the engines load, so the workers' start-up overlaps the loading
        self._use_decode("processes" if decode == "processes" or (decode == "auto" and _engine_on_gpu(backend)) else "threads",
                         fallback=decode == "auto")
        try:
            sel = select_backends(bundle, backend, precision, threads)
            self.backend_name, self.precision, self.reason, self.backends = sel.name, sel.precision, sel.reason, sel.backends
            if decode == "auto":  # the guess was made before `auto` chose its engine
                self._use_decode("processes" if get_backend(self.backend_name).device == "cuda" else "threads", fallback=True)
            self.cache = EmbeddingCache(cache, bundle.key(self.precision, self.backend_name), bundle.dim) if cache else None
        except BaseException:
            self.close()
            raise

    def _use_decode(self, mode: str, fallback: bool) -> None:
        """Switch to ``mode``, starting or closing the pool; with ``fallback``, a pool that cannot
        start (too little shared memory) leaves decoding to threads instead of failing the run."""
        if mode == "processes" and self._pool_refused:
            mode = "threads"
        elif mode == "processes" and self.pool is None:
            try:
                self.pool = DecodePool(self.sizes, self._workers)
            except ReidkitError as exc:
                if not fallback:
                    raise
                log.warning("decoding in threads: %s", exc)
                self._pool_refused, mode = True, "threads"
        elif mode == "threads" and self.pool is not None:
            self.pool.close()
            self.pool = None
        self.decode = mode
        self.workers = self.pool.workers if self.pool is not None else self._workers or min(8, usable_cpus())

    @property
    def label(self) -> str:
        return f"{self.backend_name} {self.precision}"

    def __enter__(self) -> "Embedder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
            self.pool = None
        if self.cache is not None:
            self.cache.close()
            self.cache = None
        for be in self.backends:
            close = getattr(be, "close", None)
            if close is not None:
                close()
        self.backends = []

    def run_prepared(self, stacks: Mapping[SizeKey, np.ndarray]) -> np.ndarray:
        return run_members(self.bundle, self.backends, stacks)

    def _outcomes(self, inputs: Sequence[Input], known: set[str]) -> Generator[Outcome, None, None]:
        """Each input prepared, in input order, by the pool's processes or by threads."""
        min_hw = decode_floor(self.sizes, self.decode_headroom)
        if self.pool is not None:
            return self.pool.imap(inputs, known, min_hw, self.max_pixels, max(2 * self.batch_size, 2 * self.pool.slots))
        return self._thread_outcomes(inputs, known, min_hw, max(2 * self.batch_size, 4 * self.workers))

    def _thread_outcomes(self, inputs: Sequence[Input], known: set[str], min_hw: tuple[int, int] | None,
                         window: int) -> Generator[Outcome, None, None]:
        """The boxes of one photo go to one thread together (:func:`prepare_span`), so the
        frame is read, hashed and decoded once for all of them."""
        with ThreadPoolExecutor(self.workers, thread_name_prefix="decode") as pool:
            futures: deque[tuple[Future, int]] = deque()
            spans = photo_runs(inputs)
            ahead = 0  # inputs submitted and not yet yielded

            def top_up() -> None:
                nonlocal ahead
                while ahead < window:
                    span = next(spans, None)
                    if span is None:
                        return
                    a, b = span
                    futures.append((pool.submit(prepare_span, inputs[a:b], self.sizes, self.max_pixels, min_hw, known), b - a))
                    ahead += b - a

            top_up()
            try:
                while futures:
                    fut, count = futures.popleft()
                    ahead -= count
                    top_up()
                    yield from fut.result()
            finally:
                for f, _ in futures:
                    f.cancel()

    def embed(self, inputs: Sequence[Input], progress: bool = False, desc: str = "embedding") -> Embeddings:
        """Embed paths, :class:`ImageRef` boxes on photos, PIL images or uint8 arrays; inputs that cannot be used are reported in
        ``skipped`` with the reason and left out of ``vectors``, never fatal."""
        from reidkit.progress import progress_bar

        t0 = time.perf_counter()
        n = len(inputs)
        stats = EmbedStats(images=n, decode_mode=self.decode)
        known = self.cache.keys() if self.cache is not None else set()
        out = np.zeros((n, self.bundle.dim), np.float32)
        keys: list[str | None] = [None] * n
        skipped: list[tuple[Any, str]] = []
        owner: dict[str, int] = {}  # content key -> the input position whose row holds it
        later: list[int] = []  # positions filled from the cache or from an identical input
        pending: list[tuple[int, dict[SizeKey, np.ndarray]]] = []
        bar = progress_bar(total=n, enabled=progress, desc=desc, unit="img")

        def flush() -> None:
            t = time.perf_counter()
            fused = self.run_prepared({s: np.stack([a[s] for _, a in pending]) for s in self.sizes})
            stats.infer_seconds += time.perf_counter() - t
            rows = [i for i, _ in pending]
            out[rows] = fused
            if self.cache is not None:
                self.cache.put({keys[i]: fused[j] for j, i in enumerate(rows)})  # type: ignore[misc]
            stats.embedded += len(rows)
            stats.last_batch_at = time.time()
            if not stats.first_batch_at:
                stats.first_batch_at, stats.first_batch_images = stats.last_batch_at, len(rows)
            pending.clear()

        try:
            with closing(self._outcomes(inputs, known)) as outcomes:
                for i, got in enumerate(outcomes):
                    if isinstance(got, ImageDecodeError):
                        skipped.append((_describe(inputs[i], i), got.reason))
                        bar.update(1)
                        continue
                    key, arrays, dt = got
                    stats.decode_seconds += dt
                    keys[i] = key
                    if arrays is None:
                        stats.from_cache += 1
                        later.append(i)
                    elif key in owner:
                        stats.duplicates += 1
                        later.append(i)
                    else:
                        owner[key] = i
                        pending.append((i, arrays))
                        if len(pending) >= self.batch_size:
                            flush()
                    bar.update(1)
            if pending:
                flush()
        finally:
            bar.close()
        cached_keys = {k for i in later if (k := keys[i]) is not None and k not in owner}
        cached = self.cache.get(cached_keys) if self.cache is not None and cached_keys else {}
        for i in later:
            k = keys[i]
            if k in owner:
                out[i] = out[owner[k]]
            elif k in cached:
                out[i] = cached[k]
            else:  # the cache lost the entry between keys() and get(): embed it now
                keys[i] = None
                skipped.append((_describe(inputs[i], i), "cache entry vanished during the run; rerun to embed it"))
        ok = np.fromiter((i for i in range(n) if keys[i] is not None), np.int64)
        stats.seconds = time.perf_counter() - t0
        return Embeddings(out[ok] if len(ok) < n else out, [_describe(inputs[i], i) for i in ok.tolist()], skipped, ok,
                          [keys[i] for i in ok.tolist()], stats)  # type: ignore[misc]

