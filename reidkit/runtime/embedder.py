"""Images -> fused ensemble embeddings, with decoding overlapped with inference.

A thread pool reads, hashes, decodes and resizes ahead of the model (PIL releases the GIL
while decoding), in a bounded window so a 10^5-image run holds only a few batches of
pixels; each image is decoded once and resized once per distinct member input size;
identical contents are embedded once; batches go to every member, whose unit-norm outputs
are weighted, concatenated and L2-normalised. With a cache, finished batches are committed
as they complete, so an interrupted run resumes where it stopped.

This is the one copy of resize -> run -> fuse: ``reid-infer``, ``reid-bench``, the Python
API and the tests all come through :class:`Embedder`.
"""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Iterable, Mapping, Sequence

import numpy as np
from PIL import Image

from reidkit.cpus import usable_cpus
from reidkit.hashing import content_key
from reidkit.imaging import DEFAULT_MAX_PIXELS, ImageDecodeError, ImageRef, decode_rgb, from_array, resize_to, to_rgb
from reidkit.runtime.backends.registry import AUTO
from reidkit.runtime.backends.select import select_backends
from reidkit.runtime.cache import EmbeddingCache
from reidkit.runtime.members import SizeKey, fuse, input_sizes, resize_stacks, run_members

if TYPE_CHECKING:
    from reidkit.runtime.bundle import Bundle

__all__ = ["EmbedStats", "Embedder", "Embeddings", "SizeKey", "fuse", "input_sizes", "resize_stacks", "run_members"]

# A JPEG is decoded at the largest DCT reduction that still leaves the crop this many times the
# member's input: at 1x the resize from a barely-large-enough crop moved mAP@20 by 0.02 on camera
# frames, at 2x by under 0.01 for 18% more decode time (benchmarks/results/camera-photos.md).
DECODE_HEADROOM = 2

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


class Embedder:
    """Loads a bundle's engines once and embeds images with them; a context manager that
    closes its cache and engines on exit."""

    #: Decode large JPEGs at the DCT reduction the member inputs allow; False decodes every file
    #: at full resolution (only to measure what the reduction saves and costs).
    reduced_decode: bool = True

    def __init__(self, bundle: "Bundle", backend: str = AUTO, batch_size: int = 32, workers: int | None = None,
                 threads: int | None = None, cache: str | Path | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 precision: str | None = None) -> None:
        self.bundle = bundle
        sel = select_backends(bundle, backend, precision, threads)
        self.backend_name, self.precision, self.reason, self.backends = sel.name, sel.precision, sel.reason, sel.backends
        self.batch_size = max(1, batch_size)
        self.workers = workers or min(8, usable_cpus())
        self.max_pixels = max_pixels
        self.sizes = input_sizes(bundle)
        self.cache = EmbeddingCache(cache, bundle.key(self.precision, self.backend_name), bundle.dim) if cache else None

    @property
    def label(self) -> str:
        return f"{self.backend_name} {self.precision}"

    def __enter__(self) -> "Embedder":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
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

    def _prepare(self, item: Input, known: set[str]) -> tuple[str, dict[SizeKey, np.ndarray] | None, float]:
        t = time.perf_counter()
        if isinstance(item, (str, os.PathLike, ImageRef)):
            ref = item if isinstance(item, ImageRef) else ImageRef(Path(item))
            try:
                data = ref.path.read_bytes()
            except OSError as exc:
                raise ImageDecodeError(ref.path, f"cannot read file ({exc.strerror or exc})") from None
            key = content_key(data)
            if ref.bbox is not None:  # another box on the same photo is another subject
                key = content_key(f"{key} bbox {ref.bbox!r}".encode())
            if key in known:
                return key, None, time.perf_counter() - t
            # decoded once, at the DCT reduction that still covers DECODE_HEADROOM x the largest member input
            need = (DECODE_HEADROOM * max(sz[0] for sz in self.sizes),
                    DECODE_HEADROOM * max(sz[1] for sz in self.sizes)) if self.reduced_decode else None
            img = decode_rgb(data, str(ref), self.max_pixels, box=ref.bbox, min_hw=need)
        else:
            img = to_rgb(item) if isinstance(item, Image.Image) else from_array(item)
            key = content_key(b"rgb%dx%d:" % img.size + img.tobytes())
            if key in known:
                return key, None, time.perf_counter() - t
        arrays = {s: resize_to(img, s[0], s[1], s[2]) for s in self.sizes}
        return key, arrays, time.perf_counter() - t

    def embed(self, inputs: Sequence[Input], progress: bool = False, desc: str = "embedding") -> Embeddings:
        """Embed paths, :class:`ImageRef` boxes on photos, PIL images or uint8 arrays; inputs that cannot be used are reported in
        ``skipped`` with the reason and left out of ``vectors``, never fatal."""
        from reidkit.progress import progress_bar

        t0 = time.perf_counter()
        n = len(inputs)
        stats = EmbedStats(images=n)
        known = self.cache.keys() if self.cache is not None else set()
        out = np.zeros((n, self.bundle.dim), np.float32)
        keys: list[str | None] = [None] * n
        skipped: list[tuple[Any, str]] = []
        owner: dict[str, int] = {}  # content key -> the input position whose row holds it
        later: list[int] = []  # positions filled from the cache or from an identical input
        pending: list[tuple[int, dict[SizeKey, np.ndarray]]] = []
        window = max(2 * self.batch_size, 4 * self.workers)
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
            pending.clear()

        with ThreadPoolExecutor(self.workers, thread_name_prefix="decode") as pool:
            futures: deque[tuple[int, Future]] = deque()
            it = iter(range(n))

            def top_up() -> None:
                while len(futures) < window:
                    i = next(it, None)
                    if i is None:
                        return
                    futures.append((i, pool.submit(self._prepare, inputs[i], known)))

            top_up()
            try:
                while futures:
                    i, fut = futures.popleft()
                    top_up()
                    try:
                        key, arrays, dt = fut.result()
                    except ImageDecodeError as exc:
                        skipped.append((_describe(inputs[i], i), exc.reason))
                        bar.update(1)
                        continue
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
                for _, f in futures:
                    f.cancel()
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

