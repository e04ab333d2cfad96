"""Decoding and resizing in worker processes, for runs whose engine leaves the cores to the host.

One process's decode threads share one GIL: PIL lets go of it inside the decoder and the
resampler, but the Python between those calls holds it, so threads stop scaling well before a
16-core GPU host's cores are busy, and the GPU waits for pixels. Here every core the process may
use (its affinity mask) runs a worker process. Pixels come back through shared memory, not pickles:
a fixed set of slots, each one image's resized arrays for every member input size. A slot is
the permit to send an item, so the pixels in flight are bounded whatever the run's length, and
the parent copies a result out and frees its slot as soon as it arrives. A thread in the parent
keeps the workers fed while the caller runs the engine, so decoding never waits on inference.

Workers are started with ``spawn`` (never ``fork``: forking a process with live CUDA,
onnxruntime or torch threads can deadlock the child) and attach to the slots once. A decode
error comes back as a reason, like the thread path's; a worker that dies is a clear
:class:`~reidkit.errors.ReidkitError`, never a hang.

:func:`prepare` is the one copy of read -> hash -> decode -> resize; the thread path calls it too.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import selectors
import signal
import threading
import time
import traceback
import weakref
from dataclasses import dataclass
from itertools import accumulate
from multiprocessing.connection import Connection
from multiprocessing.shared_memory import SharedMemory
from pathlib import Path
from typing import Any, Collection, Generator, NamedTuple, Sequence

import numpy as np
from PIL import Image

from reidkit.cpus import usable_cpus
from reidkit.errors import ReidkitError
from reidkit.hashing import content_key
from reidkit.imaging import DEFAULT_MAX_PIXELS, ImageDecodeError, ImageRef, decode_crops, from_array, resize_to, to_rgb
from reidkit.runtime.members import SizeKey

__all__ = ["DECODE_MODES", "DecodePool", "Outcome", "Prepared", "is_file_item", "photo_runs", "prepare", "prepare_photo", "prepare_span"]

#: ``auto`` picks processes when the engine runs on a GPU and threads when it needs the cores itself.
DECODE_MODES = ("auto", "threads", "processes")

#: (content key, one resized uint8 HxWx3 array per size, or None where ``known`` holds the key, seconds)
Prepared = tuple[str, dict[SizeKey, np.ndarray] | None, float]
Outcome = Prepared | ImageDecodeError

SHM_DIR = Path("/dev/shm")


def is_file_item(item: Any) -> bool:
    """Whether an input names a file (which a worker can open) rather than holding pixels."""
    return isinstance(item, (str, os.PathLike, ImageRef))


def prepare(item: Any, sizes: Sequence[SizeKey], max_pixels: int, min_hw: tuple[int, int] | None,
            known: Collection[str]) -> Prepared:
    """Key, decode once and resize once per size; an input whose key is in ``known`` (the cache)
    is keyed but not decoded. Raises :class:`ImageDecodeError` for an unusable input."""
    if is_file_item(item):
        got = prepare_photo([item if isinstance(item, ImageRef) else ImageRef(Path(item))], sizes, max_pixels, min_hw, known)[0]
        if isinstance(got, ImageDecodeError):
            raise got
        return got
    t = time.perf_counter()
    img = to_rgb(item) if isinstance(item, Image.Image) else from_array(item)
    key = content_key(b"rgb%dx%d:" % img.size + img.tobytes())
    if key in known:
        return key, None, time.perf_counter() - t
    arrays = {s: resize_to(img, s[0], s[1], s[2]) for s in sizes}
    return key, arrays, time.perf_counter() - t


def prepare_photo(refs: Sequence[ImageRef], sizes: Sequence[SizeKey], max_pixels: int, min_hw: tuple[int, int] | None,
                  known: Collection[str]) -> list[Outcome]:
    """:func:`prepare` for boxes on one file, each with its own outcome: the file is read and
    hashed once and decoded once per DCT reduction (:func:`reidkit.imaging.decode_crops`)."""
    t = time.perf_counter()
    path = refs[0].path
    try:
        data = path.read_bytes()
    except OSError as exc:
        return [ImageDecodeError(r.path, f"cannot read file ({exc.strerror or exc})") for r in refs]
    file_key = content_key(data)
    # another box on the same photo is another subject
    keys = [file_key if r.bbox is None else content_key(f"{file_key} bbox {r.bbox!r}".encode()) for r in refs]
    todo = [j for j, k in enumerate(keys) if k not in known]
    crops = decode_crops(data, str(path), [refs[j].bbox for j in todo], max_pixels, min_hw=min_hw) if todo else []
    arrays: dict[int, dict[SizeKey, np.ndarray] | ImageDecodeError] = {}
    for j, img in zip(todo, crops):
        arrays[j] = (ImageDecodeError(str(refs[j]), img.reason) if isinstance(img, ImageDecodeError)
                     else {s: resize_to(img, s[0], s[1], s[2]) for s in sizes})
    share = (time.perf_counter() - t) / len(refs)  # what each box cost, for the run's decode time
    out: list[Outcome] = []
    for j, key in enumerate(keys):
        got = arrays.get(j)  # None: the cache holds it
        out.append(got if isinstance(got, ImageDecodeError) else (key, got, share))
    return out


def photo_runs(items: Sequence[Any], most: int = 64) -> Generator[tuple[int, int], None, None]:
    """``[start, end)`` spans of consecutive inputs that name the same file (the boxes of one
    photo, as COCO and metadata tables list them), at most ``most`` long; other inputs alone."""
    start, n = 0, len(items)
    while start < n:
        end = start + 1
        if is_file_item(items[start]):
            path = _path_of(items[start])
            while end < n and end - start < most and is_file_item(items[end]) and _path_of(items[end]) == path:
                end += 1
        yield start, end
        start = end


def prepare_span(items: Sequence[Any], sizes: Sequence[SizeKey], max_pixels: int, min_hw: tuple[int, int] | None,
                 known: Collection[str]) -> list[Outcome]:
    """Each outcome of one :func:`photo_runs` span: a lone input by :func:`prepare`, the boxes
    of one photo together."""
    if len(items) > 1:
        return prepare_photo([x if isinstance(x, ImageRef) else ImageRef(Path(x)) for x in items], sizes, max_pixels, min_hw, known)
    try:
        return [prepare(items[0], sizes, max_pixels, min_hw, known)]
    except ImageDecodeError as exc:
        return [exc]


def _path_of(item: str | os.PathLike[str] | ImageRef) -> Path:
    return item.path if isinstance(item, ImageRef) else Path(item)


class _Layout:
    """Where each size's pixels sit inside a slot; parent and workers compute it alike from the sizes."""

    def __init__(self, sizes: Sequence[SizeKey]) -> None:
        self.sizes = list(sizes)
        self.offsets = list(accumulate([0] + [h * w * 3 for h, w, _ in self.sizes]))
        self.slot_bytes = self.offsets[-1]

    def views(self, buf: memoryview | None, slot: int) -> dict[SizeKey, np.ndarray]:
        base = slot * self.slot_bytes
        return {s: np.ndarray((s[0], s[1], 3), np.uint8, buffer=buf, offset=base + off)
                for s, off in zip(self.sizes, self.offsets)}


@dataclass(frozen=True)
class _Config:
    """What a run tells every worker before its first item: a change to the cache keys it skips
    (sent as a difference, so a large cache crosses the pipe once) and the decode limits."""

    max_pixels: int
    min_hw: tuple[int, int] | None
    added: frozenset[str]
    removed: frozenset[str]


class _Reply(NamedTuple):
    slot: int
    key: str
    status: bool | str  # True: arrays in the slot; False: key known, nothing decoded; str: why unusable
    seconds: float
    crash: str | None = None  # a traceback: a bug, not a bad image


def _serve(conn: Connection, shm_name: str, sizes: list[SizeKey]) -> None:
    """A worker's life: attach to the slots once, then decode what the pool sends until told to stop.
    Ctrl-C is the parent's to handle: it closes the pool, which ends the workers."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    shm = SharedMemory(name=shm_name)
    layout = _Layout(sizes)
    known: set[str] = set()
    cfg = _Config(DEFAULT_MAX_PIXELS, None, frozenset(), frozenset())
    conn.send(None)  # ready: a worker that dies before this failed while starting
    try:
        while (msg := conn.recv()) is not None:
            if isinstance(msg, _Config):
                known |= msg.added
                known -= msg.removed
                cfg = msg
            else:
                conn.send(_decode_into(shm, layout, msg[0], msg[1], cfg, known))
    except EOFError:  # the parent went away
        pass
    finally:
        try:
            shm.close()
        except BufferError:  # pragma: no cover - a view outlived its task; the mapping dies with the process
            pass


def _decode_into(shm: SharedMemory, layout: _Layout, slot: int, item: str | Path | ImageRef, cfg: _Config,
                 known: set[str]) -> _Reply:
    t = time.perf_counter()
    try:
        key, arrays, seconds = prepare(item, layout.sizes, cfg.max_pixels, cfg.min_hw, known)
    except ImageDecodeError as exc:
        return _Reply(slot, "", exc.reason, time.perf_counter() - t)
    except Exception:
        return _Reply(slot, "", False, time.perf_counter() - t, traceback.format_exc())
    if arrays is None:
        return _Reply(slot, key, False, seconds)
    for s, view in layout.views(shm.buf, slot).items():
        view[...] = arrays[s]
    return _Reply(slot, key, True, seconds)


def _check_room(nbytes: int) -> None:
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:  # no /dev/shm (not Linux): the platform's own shared memory has no such cap
        return
    free = st.f_bavail * st.f_frsize
    if nbytes > free:  # a full /dev/shm shows up later as a worker killed by SIGBUS
        raise ReidkitError(f"decoding in processes needs {nbytes / 2**20:.0f} MiB of shared memory and {SHM_DIR} has "
                           f"{free / 2**20:.0f} MiB free; enlarge it (docker --shm-size), use fewer workers, or decode in threads "
                           f"(--decode threads)")


def _shutdown(procs: list[Any], conns: list[Connection], shm: SharedMemory) -> None:
    """Unlink first, so /dev/shm is clean even if a worker is slow to die; workers hold nothing
    else that needs a goodbye, so they are terminated rather than asked."""
    try:
        shm.unlink()
    except FileNotFoundError:
        pass
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(2)
        if p.is_alive():  # pragma: no cover - SIGTERM is not ignored by the workers
            p.kill()
            p.join()
    for c in conns:
        c.close()
    try:
        shm.close()
    except BufferError:  # pragma: no cover - a dispatcher interrupted mid-copy still holds a view
        pass


class _Task(NamedTuple):
    run: int
    position: int  # in the run's inputs
    worker: int
    ref: str | Path | ImageRef


_IN_PARENT = object()  # an in-memory input: its pixels are already here, so the parent prepares it


class DecodePool:
    """Worker processes that prepare image files into shared-memory slots; see the module docstring.

    Start it early (workers take a moment to import), run :meth:`imap` once per batch of inputs,
    and :meth:`close` it (or use it as a context manager): that ends the workers and removes the
    shared memory, also after an exception.
    """

    def __init__(self, sizes: Sequence[SizeKey], workers: int | None = None, slots_per_worker: int = 4) -> None:
        if not sizes:
            raise ValueError("a decode pool needs at least one input size")
        self.sizes = list(sizes)
        self.workers = max(1, workers or usable_cpus())
        self.slots = self.workers * max(1, slots_per_worker)
        self._layout = _Layout(self.sizes)
        _check_room(self.slots * self._layout.slot_bytes)
        self._shm = SharedMemory(create=True, size=self.slots * self._layout.slot_bytes)
        self._procs: list[Any] = []
        self._conns: list[Connection] = []
        self._finalizer = weakref.finalize(self, _shutdown, self._procs, self._conns, self._shm)
        self._free = list(range(self.slots - 1, -1, -1))
        self._in_flight: dict[int, _Task] = {}  # slot -> what it holds, from this run or an abandoned one
        self._load = [0] * self.workers
        self._ready = [False] * self.workers
        self._known_sent: set[str] = set()
        self._settings: tuple[int, tuple[int, int] | None] = (DEFAULT_MAX_PIXELS, None)
        self._broken: str | None = None
        self._runs = 0
        self._active = False
        #: the most items that were ever with the workers at once (never more than ``slots``)
        self.max_in_flight = 0
        try:
            self._start()
        except BaseException:
            self.close()
            raise

    def _start(self) -> None:
        ctx = mp.get_context("spawn")
        for k in range(self.workers):
            parent, child = ctx.Pipe()
            p = ctx.Process(target=_serve, args=(child, self._shm.name, self.sizes), name=f"reidkit-decode-{k}", daemon=True)
            self._conns.append(parent)
            p.start()
            self._procs.append(p)
            child.close()

    # --- what callers and tests may look at ---------------------------------------------------
    @property
    def shm_name(self) -> str:
        return self._shm.name

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self._procs]

    @property
    def in_flight(self) -> int:
        return len(self._in_flight)

    @property
    def closed(self) -> bool:
        return not self._finalizer.alive

    def close(self) -> None:
        self._finalizer()

    def __enter__(self) -> "DecodePool":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- one pass over the inputs -------------------------------------------------------------
    def imap(self, items: Sequence[Any], known: Collection[str] = frozenset(), min_hw: tuple[int, int] | None = None,
             max_pixels: int = DEFAULT_MAX_PIXELS, window: int | None = None) -> Generator[Outcome, None, None]:
        """Each input's :data:`Prepared` tuple, or its :class:`ImageDecodeError`, in input order.

        Files go to the workers; in-memory images are prepared here, when their turn comes. At
        most ``window`` inputs (default: twice the slots) are decoded ahead of the consumer, so
        memory stays flat however slowly the caller consumes.
        """
        self._check_usable()
        self._configure(set(known), min_hw, max_pixels)
        self._runs += 1
        run = _Run(self, items, max(1, window or 2 * self.slots), self._runs)
        self._active = True
        try:
            run.start()
            for i, item in enumerate(items):
                got = run.take(i)
                if got is _IN_PARENT:
                    try:
                        got = prepare(item, self.sizes, max_pixels, min_hw, known)
                    except ImageDecodeError as exc:
                        got = exc
                yield got
        finally:
            run.stop()
            self._active = False

    def _check_usable(self) -> None:
        if self.closed:
            raise RuntimeError("this decode pool is closed")
        if self._active:
            raise RuntimeError("a decode pool runs one imap at a time")
        if self._broken:
            raise ReidkitError(self._broken)
        for k, p in enumerate(self._procs):
            if not p.is_alive():
                raise self._died(k)

    def _configure(self, known: set[str], min_hw: tuple[int, int] | None, max_pixels: int) -> None:
        added, removed = frozenset(known - self._known_sent), frozenset(self._known_sent - known)
        if not added and not removed and self._settings == (max_pixels, min_hw):
            return
        msg = _Config(max_pixels, min_hw, added, removed)
        for k in range(self.workers):
            self._send(k, msg)
        self._known_sent, self._settings = known, (max_pixels, min_hw)

    def _send(self, k: int, msg: Any) -> None:
        try:
            self._conns[k].send(msg)
        except OSError:
            raise self._died(k) from None

    def _submit(self, run: int, index: int, item: Any) -> None:
        """Send one file to the least-loaded worker; the caller has checked that a slot is free."""
        ref = item if isinstance(item, (str, Path, ImageRef)) else Path(os.fspath(item))  # another PathLike may not pickle
        slot = self._free.pop()
        k = min(range(self.workers), key=self._load.__getitem__)
        self._in_flight[slot] = _Task(run, index, k, ref)
        self._load[k] += 1
        self.max_in_flight = max(self.max_in_flight, len(self._in_flight))
        self._send(k, (slot, ref))

    def _selector(self, wake_r: int) -> selectors.BaseSelector:
        """What a run's dispatcher waits on, registered once: each worker's pipe, each worker's
        exit, and the consumer's wake-up pipe."""
        sel = selectors.DefaultSelector()
        for k, (conn, p) in enumerate(zip(self._conns, self._procs)):
            sel.register(conn.fileno(), selectors.EVENT_READ, ("reply", k))
            sel.register(p.sentinel, selectors.EVENT_READ, ("exit", k))
        sel.register(wake_r, selectors.EVENT_READ, ("wake", -1))
        return sel

    def _pump(self, run: "_Run") -> None:
        """Wait for anything: a result, a worker's death, or the consumer making room; handle it.
        One reply per ready pipe: a pipe with more stays ready for the next wait."""
        events = [key.data for key, _ in run.selector.select()]
        for what, k in events:
            if what == "reply":
                self._receive(k, run)
        for what, k in events:
            if what == "exit":
                raise self._died(k)
            if what == "wake":
                run.drain_wake()

    def _receive(self, k: int, run: "_Run") -> None:
        try:
            reply = self._conns[k].recv()
        except (EOFError, OSError):
            raise self._died(k) from None
        if reply is None:
            self._ready[k] = True
        else:
            self._on_reply(k, reply, run)

    def _on_reply(self, k: int, reply: _Reply, run: "_Run") -> None:
        task = self._in_flight.pop(reply.slot)
        self._load[k] -= 1
        outcome: Outcome | None = None
        if task.run == run.id:
            run.pending -= 1
        if task.run == run.id and reply.crash is None:
            if reply.status is True:
                views = self._layout.views(self._shm.buf, reply.slot)
                outcome = (reply.key, {s: v.copy() for s, v in views.items()}, reply.seconds)
                del views
            elif reply.status is False:
                outcome = (reply.key, None, reply.seconds)
            else:
                outcome = ImageDecodeError(str(task.ref), reply.status)
        self._free.append(reply.slot)
        if reply.crash is not None:
            raise RuntimeError(f"a decode worker failed on {task.ref}:\n{reply.crash}")
        if outcome is not None:  # else a result for an abandoned run: its slot is free again, that is all
            run.put(task.position, outcome)

    def _died(self, k: int) -> ReidkitError:
        p = self._procs[k]
        p.join(1)
        code = p.exitcode
        if code is None:
            how = "closed its pipe"
        elif code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = f"signal {-code}"
            how = f"was killed by {name}" + (" (the out-of-memory killer, or a user)" if -code == signal.SIGKILL else "")
        else:
            how = f"exited with code {code}"
        doing = next((f" while decoding {t.ref}" for t in self._in_flight.values() if t.worker == k), "")
        if not self._ready[k]:
            msg = (f"decode worker {k} (pid {p.pid}) {how} while starting; a script that decodes in processes must keep "
                   f"its top-level code under `if __name__ == \"__main__\":` (workers re-import it), or decode in threads "
                   f"(--decode threads)")
        else:
            msg = f"decode worker {k} (pid {p.pid}) {how}{doing}; rerun, or decode in threads (--decode threads)"
        self._broken = msg
        return ReidkitError(msg)


class _Run:
    """One :meth:`DecodePool.imap`: a parent thread sends files to workers while slots and the
    window allow, and copies each result out of its slot as it arrives, so the workers stay busy
    while the consumer is inside the engine."""

    def __init__(self, pool: DecodePool, items: Sequence[Any], window: int, run_id: int) -> None:
        self.pool, self.items, self.window, self.id = pool, items, window, run_id
        self.next = 0  # the next input to dispatch
        self.pending = 0  # inputs of this run with the workers
        self.taken = 0  # inputs the consumer has taken
        self.outcomes: dict[int, Any] = {}
        self.error: BaseException | None = None
        self.stopped = False
        self.cond = threading.Condition()
        self.wake_r, self._wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self._wake_w, False)
        self.selector = pool._selector(self.wake_r)
        self.waiting_for_room = False  # the dispatcher sleeps until the consumer takes something
        self.thread = threading.Thread(target=self._dispatch, name="reidkit-decode-dispatch", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def take(self, i: int) -> Any:
        with self.cond:
            while i not in self.outcomes:
                if self.error is not None:
                    raise self.error
                if not self.thread.is_alive() and self.error is None and i not in self.outcomes:
                    raise RuntimeError("the decode dispatcher stopped without a result")  # pragma: no cover
                self.cond.wait(0.5)
            got = self.outcomes.pop(i)
        self.taken = i + 1
        if self.waiting_for_room:  # read after `taken` is written; the dispatcher does the reverse
            self.wake()
        return got

    def put(self, i: int, outcome: Any) -> None:
        with self.cond:
            self.outcomes[i] = outcome
            self.cond.notify()

    def stop(self) -> None:
        self.stopped = True
        self.wake()
        if self.thread.ident is not None:
            self.thread.join()
        self.selector.close()
        os.close(self.wake_r)
        os.close(self._wake_w)

    def wake(self) -> None:
        try:
            os.write(self._wake_w, b"x")
        except BlockingIOError:  # the pipe is full of wake-ups already
            pass

    def drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 4096):
                pass
        except BlockingIOError:
            pass

    def _dispatch(self) -> None:
        try:
            while not self.stopped:
                self._send_ready()
                if self.next >= len(self.items) and not self.pending:
                    return
                self.pool._pump(self)
        except BaseException as exc:
            with self.cond:
                self.error = exc
                self.cond.notify()

    def _send_ready(self) -> None:
        pool = self.pool
        while self.next < len(self.items) and not self._window_full():
            item = self.items[self.next]
            if not is_file_item(item):
                self.put(self.next, _IN_PARENT)
            elif pool._free:
                pool._submit(self.id, self.next, item)
                self.pending += 1
            else:
                return
            self.next += 1

    def _window_full(self) -> bool:
        """Whether the consumer is a window behind; the flag is raised before `taken` is read so
        that a consumer taking an input meanwhile sees it and wakes the dispatcher."""
        self.waiting_for_room = True
        if self.next < self.taken + self.window:
            self.waiting_for_room = False
            return False
        return True
