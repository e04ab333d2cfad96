"""Decoding in worker processes: the same embeddings as threads, bounded memory, clean exits.

The fast tests run the real pool and the real Embedder on a stand-in engine (a fixed random
projection of the pixels), so any difference in what the two decode paths hand the engine
changes the vectors; one slow test repeats the comparison on an exported bundle.
"""

from __future__ import annotations

import os
import signal
import threading
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image, ImageDraw

import reidkit.runtime.embedder as embedder_mod
from reidkit.errors import ReidkitError
from reidkit.imaging import ImageRef, ResizePolicy, decode_rgb, resize_to
from reidkit.runtime.backends.select import Selection
from reidkit.runtime.bundle import MemberSpec
from reidkit.runtime.decode_pool import DecodePool, prepare
from reidkit.runtime.embedder import Embedder

SIZES = [(32, 16, ResizePolicy()), (24, 24, ResizePolicy("letterbox", "bicubic"))]


def _shm_exists(name: str) -> bool:
    return Path("/dev/shm", name.lstrip("/")).exists()


@pytest.fixture
def photos(tmp_path) -> list[Path]:
    """Five distinct small JPEGs with shapes on noise, and a corrupt one last."""
    rng = np.random.default_rng(7)
    out = []
    for i in range(5):
        img = Image.fromarray(rng.integers(0, 256, (90 + 10 * i, 120, 3), dtype=np.uint8))
        ImageDraw.Draw(img).ellipse((10, 10, 60 + 5 * i, 70), fill=(255, 40 * i, 0))
        p = tmp_path / f"p{i}.jpg"
        img.save(p, quality=90)
        out.append(p)
    bad = tmp_path / "corrupt.jpg"
    bad.write_bytes(out[0].read_bytes()[:200])
    return [*out, bad]


def _inputs(photos: list[Path]) -> list:
    """Every kind of input: str and Path files, a duplicate, a box, a corrupt and a missing file, pixels."""
    arr = np.arange(40 * 30 * 3, dtype=np.uint8).reshape(40, 30, 3)
    return [str(photos[0]), photos[1], ImageRef(photos[2], (10, 5, 60, 50)), photos[5], photos[3], str(photos[0]),
            arr, photos[4], photos[0].with_name("missing.jpg"), ImageRef(photos[2]), Image.fromarray(arr[::-1].copy())]


class _Projection:
    """A stand-in engine: a fixed random projection of the pixels, so any pixel difference shows."""

    name = "fake"

    def __init__(self, h: int, w: int, seed: int, fail_on: int | None = None, error: type[BaseException] = RuntimeError) -> None:
        self.w = np.random.default_rng(seed).standard_normal((h * w * 3, 8)).astype(np.float32)
        self.calls, self.fail_on, self.error = 0, fail_on, error

    def run(self, batch: np.ndarray) -> np.ndarray:
        self.calls += 1
        if self.calls == self.fail_on:
            raise self.error("engine failed")
        return batch.reshape(len(batch), -1).astype(np.float32) @ self.w


def _bundle() -> SimpleNamespace:
    members = [MemberSpec(f"m{i}", h, w, pol, 8, 1.0 + i, {}) for i, (h, w, pol) in enumerate(SIZES)]
    return SimpleNamespace(members=members, dim=16, root=Path("fake-bundle"), key=lambda precision, backend: f"fake {backend}")


@pytest.fixture
def engine(monkeypatch):
    """Patch engine loading; returns a setter for the engine's table name and failure point."""
    state = {"name": "ort-cpu", "fail_on": None, "error": RuntimeError}

    def select(bundle, backend, precision, threads):
        engines = [_Projection(m.height, m.width, i, state["fail_on"] if i == 0 else None, state["error"])  # fails once
                   for i, m in enumerate(bundle.members)]
        return Selection(state["name"], "fp32", "test engine", engines)

    monkeypatch.setattr(embedder_mod, "select_backends", select)
    return state


def _embed(decode: str, inputs: list, **kw):
    with Embedder(_bundle(), batch_size=3, workers=2, decode=decode, **kw) as emb:  # type: ignore[arg-type]
        return emb.embed(inputs), emb.decode


def test_pool_gives_what_decoding_in_the_parent_gives(photos):
    items = [photos[0], ImageRef(photos[1], (5, 5, 50, 40)), str(photos[2]), photos[5], np.zeros((9, 7, 3), np.uint8)]
    with DecodePool(SIZES, workers=2) as pool:
        for min_hw in (None, (20, 20)):  # full resolution, then a DCT-reduced decode
            got = list(pool.imap(items, min_hw=min_hw))
            for item, res in zip(items[:3], got):
                ref = item if isinstance(item, ImageRef) else ImageRef(Path(item))
                img = decode_rgb(ref.path.read_bytes(), str(ref), box=ref.bbox, min_hw=min_hw)
                for s in SIZES:
                    assert np.array_equal(res[1][s], resize_to(img, *s))
                assert res[0] == prepare(item, SIZES, 10**8, min_hw, set())[0]
            assert isinstance(got[3], Exception) and "corrupt.jpg" in str(got[3])
            assert got[4][1][SIZES[0]].shape == (32, 16, 3)


def test_items_in_flight_never_exceed_the_slots(photos):
    items = [photos[i % 5] for i in range(40)]
    with DecodePool(SIZES, workers=2, slots_per_worker=2) as pool:
        seen = []
        for _ in pool.imap(items, window=100):
            seen.append(pool.in_flight)
        assert pool.slots == 4 and pool.max_in_flight == 4 and max(seen) <= 4
        assert pool.in_flight == 0


def test_an_abandoned_run_leaks_nothing_into_the_next(photos, tmp_path):
    big = tmp_path / "big.jpg"
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (1200, 1600, 3), dtype=np.uint8)).save(big, quality=95)
    with DecodePool(SIZES, workers=2) as pool:
        first = pool.imap([big] * 12)
        next(first)
        first.close()
        assert pool.in_flight > 0  # results of the abandoned run are still on their way
        got = list(pool.imap(photos[:5]))
    assert [g[0] for g in got] == [prepare(p, SIZES, 10**8, None, set())[0] for p in photos[:5]]


def test_processes_and_threads_embed_alike(engine, photos):
    inputs = _inputs(photos)
    a, mode_a = _embed("threads", inputs)
    b, mode_b = _embed("processes", inputs)
    assert (mode_a, mode_b) == ("threads", "processes")
    assert np.array_equal(a.vectors, b.vectors)
    assert a.ids == b.ids and a.keys == b.keys and a.skipped == b.skipped and np.array_equal(a.positions, b.positions)
    assert [s for s, _ in a.skipped] == [str(photos[5]), str(photos[0].with_name("missing.jpg"))]
    assert (b.stats.embedded, b.stats.duplicates, b.stats.decode_mode) == (a.stats.embedded, 1, "processes")
    assert a.keys[0] == a.keys[4] and not np.array_equal(a.vectors[2], a.vectors[-2])  # duplicate; box != whole photo


def test_a_cache_rerun_in_processes_decodes_only_new_images(engine, photos, tmp_path):
    cache = tmp_path / "cache.sqlite"
    threads, _ = _embed("threads", _inputs(photos))
    with Embedder(_bundle(), batch_size=3, workers=2, decode="processes", cache=cache) as emb:  # type: ignore[arg-type]
        first = emb.embed(_inputs(photos)[:5])
        again = emb.embed(_inputs(photos))  # the workers learn the keys the first run cached
    assert first.stats.embedded == 4 and again.stats.from_cache == 5 and again.stats.embedded == 4
    assert np.allclose(again.vectors, threads.vectors, atol=1e-6) and again.ids == threads.ids


def test_auto_decodes_in_processes_only_for_a_gpu_engine(engine, photos):
    engine["name"] = "ort-cuda"  # what `auto` chose; no GPU here, so the guess before loading was threads
    assert _embed("auto", _inputs(photos)[:2])[1] == "processes"
    engine["name"] = "ort-cpu"
    assert _embed("auto", _inputs(photos)[:2])[1] == "threads"
    with pytest.raises(ReidkitError, match="choose one of auto, threads, processes"):
        Embedder(_bundle(), decode="fork")  # type: ignore[arg-type]


def test_too_little_shared_memory_is_refused_or_left_to_threads(engine, photos, monkeypatch):
    monkeypatch.setattr(os, "statvfs", lambda path: SimpleNamespace(f_bavail=1, f_frsize=4096))
    with pytest.raises(ReidkitError, match="docker --shm-size"):
        Embedder(_bundle(), workers=2, decode="processes")  # type: ignore[arg-type]
    engine["name"] = "ort-cuda"
    res, mode = _embed("auto", _inputs(photos)[:3])
    assert mode == "threads" and len(res) == 3


def test_decode_workers_follow_the_affinity_mask_unless_given(engine, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(12)), raising=False)
    with Embedder(_bundle(), decode="threads") as emb:  # type: ignore[arg-type]
        assert emb.workers == 8  # threads leave room for the engine
    with Embedder(_bundle(), decode="threads", workers=3) as emb:  # type: ignore[arg-type]
        assert emb.workers == 3
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    with DecodePool(SIZES) as pool:
        assert pool.workers == 3 and len(set(pool.pids)) == 3
    with Embedder(_bundle(), decode="processes", workers=2) as emb:  # type: ignore[arg-type]
        assert emb.workers == 2 and emb.pool is not None and len(emb.pool.pids) == 2


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_shared_memory_is_gone_after_a_failed_embed(engine, photos, error):
    engine["fail_on"], engine["error"] = 2, error
    inputs = [photos[i % 5] for i in range(30)]
    later = [photos[(i + 2) % 5] for i in range(7)]  # other images where the failed run's results were in flight
    with pytest.raises(error):
        with Embedder(_bundle(), batch_size=2, workers=2, decode="processes") as emb:  # type: ignore[arg-type]
            assert emb.pool is not None
            name, procs = emb.pool.shm_name, emb.pool._procs
            try:
                emb.embed(inputs)
            except error:  # the failed run's late results must not leak into the next run
                again = emb.embed(later)
                raise
    assert not _shm_exists(name) and not any(p.is_alive() for p in procs)
    engine["fail_on"] = None
    expected, _ = _embed("threads", later)
    assert again.ids == expected.ids and again.keys == expected.keys and np.allclose(again.vectors, expected.vectors, atol=1e-6)


def test_a_killed_worker_is_an_error_not_a_hang(photos):
    items = [photos[i % 5] for i in range(200)]
    caught: list[BaseException] = []
    with DecodePool(SIZES, workers=2) as pool:
        it = pool.imap(items)
        next(it)
        os.kill(pool.pids[0], signal.SIGKILL)

        def consume() -> None:
            try:  # the death shows in the rest of this run, or else when the next one starts
                list(it)
                list(pool.imap(items))
            except BaseException as exc:
                caught.append(exc)

        t = threading.Thread(target=consume, daemon=True)
        t.start()
        t.join(30)
        assert not t.is_alive(), "the pool hung after a worker was killed"
        name = pool.shm_name
    assert len(caught) == 1 and isinstance(caught[0], ReidkitError)
    assert "killed by SIGKILL" in str(caught[0]) and "\n" not in str(caught[0])
    assert not _shm_exists(name)


def test_infer_has_a_decode_option():
    from click.testing import CliRunner

    from reidkit.cli.infer import infer_cmd
    from reidkit.runtime.request import InferRequest

    out = CliRunner().invoke(infer_cmd, ["--help"]).output
    assert "--decode [auto|threads|processes]" in out and "GPU" in out
    assert InferRequest(model=Path(), out=Path()).decode == "auto"


def test_processes_and_threads_embed_alike_on_a_real_bundle(bundle, photos):
    import reidkit

    inputs = _inputs(photos)
    b = reidkit.load_bundle(bundle)
    with b.embedder("ort-cpu", decode="threads") as t, b.embedder("ort-cpu", workers=2, decode="processes") as p:
        a, c = t.embed(inputs), p.embed(inputs)
    assert np.array_equal(a.vectors, c.vectors) and a.ids == c.ids and a.skipped == c.skipped
