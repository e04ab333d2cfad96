"""Images -> fused ensemble embeddings, with decoding overlapped with inference.

A thread pool reads, hashes, decodes and resizes ahead of the model (PIL releases the GIL
while decoding); each image is decoded once and resized once per distinct member input
size; identical files are embedded once; batches go to every member, whose unit-norm
outputs are weighted, concatenated and L2-normalised. With a cache, finished batches are
committed as they complete, so an interrupted run resumes where it stopped.
"""

from __future__ import annotations

import os
import time
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from reidkit.hashing import content_key
from reidkit.imaging import DEFAULT_MAX_PIXELS, ImageDecodeError, ResizePolicy, decode_rgb, resize_to
from reidkit.runtime.backends.select import Backend, make_backends, resolve_backend, resolve_precision
from reidkit.runtime.bundle import Bundle
from reidkit.runtime.cache import EmbeddingCache
from reidkit.runtime.knn import l2_normalise

SizeKey = tuple[int, int, ResizePolicy]


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
class EmbedOutput:
    keys: list[str | None]  # content key per input path (None: skipped)
    vectors: dict[str, np.ndarray]
    errors: list[tuple[str, str]] = field(default_factory=list)
    stats: EmbedStats = field(default_factory=EmbedStats)

    def matrix(self, indices: Sequence[int]) -> np.ndarray:
        return np.stack([self.vectors[self.keys[i]] for i in indices]) if len(indices) else np.zeros((0, 0), np.float32)  # type: ignore[index]


def fuse(parts: Sequence[np.ndarray], weights: Sequence[float]) -> np.ndarray:
    """Weighted concatenation of unit-norm member embeddings, then L2 normalisation."""
    x = np.concatenate([p.astype(np.float32) * np.float32(w) for p, w in zip(parts, weights)], axis=1)
    return l2_normalise(x)


class Embedder:
    def __init__(self, bundle: Bundle, backend: str = "auto", batch_size: int = 32, workers: int | None = None,
                 threads: int | None = None, cache: str | Path | None = None, max_pixels: int = DEFAULT_MAX_PIXELS,
                 precision: str | None = None) -> None:
        self.bundle = bundle
        self.backend_name = resolve_backend(bundle, backend)
        self.precision = resolve_precision(self.backend_name, precision)
        self.backends: list[Backend] = make_backends(bundle, self.backend_name, threads, self.precision)
        self.batch_size = max(1, batch_size)
        self.workers = workers or min(8, os.cpu_count() or 1)
        self.max_pixels = max_pixels
        self.sizes: list[SizeKey] = sorted({(m.height, m.width, m.resize) for m in bundle.members}, key=repr)
        self.cache = EmbeddingCache(cache, bundle.key(self.precision, self.backend_name), bundle.dim) if cache else None

    @property
    def label(self) -> str:
        return f"{self.backend_name} {self.precision}"

    def _prepare(self, path: Path, known: set[str]) -> tuple[str, dict[SizeKey, np.ndarray] | None, float]:
        t = time.perf_counter()
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ImageDecodeError(path, f"cannot read file ({exc.strerror or exc})") from None
        key = content_key(data)
        if key in known:
            return key, None, time.perf_counter() - t
        img = decode_rgb(data, path, self.max_pixels)
        arrays = {s: resize_to(img, s[0], s[1], s[2]) for s in self.sizes}
        return key, arrays, time.perf_counter() - t

    def _infer(self, items: list[tuple[str, dict[SizeKey, np.ndarray]]], stats: EmbedStats) -> dict[str, np.ndarray]:
        t = time.perf_counter()
        stacks = {s: np.stack([a[s] for _, a in items]) for s in self.sizes}
        parts = [be.run(stacks[(m.height, m.width, m.resize)]) for m, be in zip(self.bundle.members, self.backends)]
        fused = fuse(parts, [m.weight for m in self.bundle.members])
        stats.infer_seconds += time.perf_counter() - t
        out = {k: fused[i] for i, (k, _) in enumerate(items)}
        if self.cache is not None:
            self.cache.put(out)
        return out

    def embed(self, paths: Sequence[Path], progress: bool = True, desc: str = "embedding") -> EmbedOutput:
        from reidkit.progress import progress_bar

        t0 = time.perf_counter()
        stats = EmbedStats(images=len(paths))
        known = self.cache.keys() if self.cache is not None else set()
        keys: list[str | None] = [None] * len(paths)
        vectors: dict[str, np.ndarray] = {}
        errors: list[tuple[str, str]] = []
        pending: list[tuple[str, dict[SizeKey, np.ndarray]]] = []
        queued: set[str] = set()
        window = max(2 * self.batch_size, 4 * self.workers)
        bar = progress_bar(total=len(paths), enabled=progress, desc=desc, unit="img")
        with ThreadPoolExecutor(self.workers, thread_name_prefix="decode") as pool:
            futures: deque[tuple[int, Future]] = deque()
            it = iter(range(len(paths)))

            def top_up() -> None:
                while len(futures) < window:
                    i = next(it, None)
                    if i is None:
                        return
                    futures.append((i, pool.submit(self._prepare, Path(paths[i]), known)))

            top_up()
            try:
                while futures:
                    i, fut = futures.popleft()
                    top_up()
                    try:
                        key, arrays, dt = fut.result()
                    except ImageDecodeError as exc:
                        errors.append((str(paths[i]), exc.reason))
                        bar.update(1)
                        continue
                    stats.decode_seconds += dt
                    keys[i] = key
                    if arrays is None:
                        stats.from_cache += 1
                    elif key in queued:
                        stats.duplicates += 1
                    else:
                        queued.add(key)
                        pending.append((key, arrays))
                        if len(pending) >= self.batch_size:
                            vectors.update(self._infer(pending, stats))
                            stats.embedded += len(pending)
                            pending = []
                    bar.update(1)
                if pending:
                    vectors.update(self._infer(pending, stats))
                    stats.embedded += len(pending)
            finally:
                for _, f in futures:
                    f.cancel()
                bar.close()
        missing = {k for k in keys if k is not None and k not in vectors}
        if missing and self.cache is not None:
            vectors.update(self.cache.get(missing))
        stats.seconds = time.perf_counter() - t0
        return EmbedOutput(keys, vectors, errors, stats)
