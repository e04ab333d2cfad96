"""``--backend auto`` on a CPU with several fast engines: time them on this bundle, once.

No fixed order is right: on the resnet10t demo ensemble MNN ran fastest, on pretrained
EfficientNet-Lite0 members OpenVINO did (benchmarks/results/, and issue notes), and the
gap moves with the CPU's instruction set. So each candidate runs the bundle's own
members on a small batch, interleaved (A B A B ...) so that machine noise hits all of
them, and the fastest wins. The result is remembered per bundle, precision, CPU model,
core count, thread setting and engine versions in ``<cache dir>/auto-backend.json``
(``$REIDKIT_CACHE_DIR``, else ``$XDG_CACHE_HOME/reidkit``, else ``~/.cache/reidkit``), so
later runs start at once. ``REIDKIT_AUTO_MEASURE=0`` skips timing and uses the table's
order. The winner's loaded engines are kept, so measuring costs no second load.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import importlib.metadata
import json
import logging
import os
import platform
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from reidkit.cpus import usable_cpus
from reidkit.runtime.backends.registry import BackendSpec
from reidkit.runtime.backends.select import Selection, make_backends
from reidkit.runtime.bundle import Bundle

log = logging.getLogger("reidkit")
_DISTS = {"mnn": "MNN", "openvino": "openvino", "ort-cpu": "onnxruntime"}
BATCH, ROUNDS = 8, 3


def cache_dir() -> Path:
    if os.environ.get("REIDKIT_CACHE_DIR"):
        return Path(os.environ["REIDKIT_CACHE_DIR"])
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "reidkit"


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _version(spec: BackendSpec) -> str:
    try:
        return importlib.metadata.version(_DISTS.get(spec.name, spec.module))
    except importlib.metadata.PackageNotFoundError:
        return "?"


def _record_key(bundle: Bundle, specs: Sequence[BackendSpec], precision: str, threads: int | None) -> str:
    desc = [[bundle.key(precision, s.name) for s in specs], [(s.name, _version(s)) for s in specs], cpu_model(),
            usable_cpus(), threads]
    return hashlib.sha256(json.dumps(desc).encode()).hexdigest()


def _load_records(path: Path) -> dict:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        return doc if isinstance(doc, dict) else {}
    except (OSError, ValueError):
        return {}


def _save_record(path: Path, key: str, record: dict) -> None:
    from reidkit.atomic import atomic_write

    try:
        records = _load_records(path)
        records[key] = record
        with atomic_write(path, "w", encoding="utf-8") as fh:
            json.dump(records, fh, indent=1)
    except OSError as exc:  # a read-only home only costs a re-measure next time
        log.debug("could not remember the auto backend choice in %s: %s", path, exc)


def _time(bundle: Bundle, loaded: dict[str, list], precision: str) -> dict[str, float]:
    from reidkit.runtime.embedder import run_members

    rng = np.random.default_rng(0)
    batch = {m.size_key: rng.integers(0, 256, (BATCH, m.height, m.width, 3), dtype=np.uint8) for m in bundle.members}
    best = {name: float("inf") for name in loaded}
    for name, bes in loaded.items():  # warm-up: first runs allocate and pick kernels
        run_members(bundle, bes, batch)
    for _ in range(ROUNDS):
        for name, bes in loaded.items():
            t = time.perf_counter()
            run_members(bundle, bes, batch)
            best[name] = min(best[name], time.perf_counter() - t)
    return {name: BATCH / s for name, s in best.items()}


def fastest(bundle: Bundle, specs: Sequence[BackendSpec], precision: str, threads: int | None) -> Selection:
    path = cache_dir() / "auto-backend.json"
    key = _record_key(bundle, specs, precision, threads)
    names = [s.name for s in specs]
    if os.environ.get("REIDKIT_AUTO_MEASURE", "1") == "0":
        name = names[0]
        return Selection(name, precision, f"auto: {name}, first of {', '.join(names)} in the table's order (REIDKIT_AUTO_MEASURE=0)",
                         make_backends(bundle, name, threads, precision))
    rec = _load_records(path).get(key)
    if isinstance(rec, dict) and rec.get("choice") in names:
        name = rec["choice"]
        return Selection(name, precision, f"auto: {name}, fastest here when timed on {rec.get('measured_at', '?')} ({_rates(rec)})",
                         make_backends(bundle, name, threads, precision))
    log.info("auto: timing %s on this bundle once (remembered in %s)", ", ".join(names), path)
    loaded = {s.name: make_backends(bundle, s.name, threads, precision) for s in specs}
    rates = _time(bundle, loaded, precision)
    name = max(rates, key=lambda n: rates[n])
    rec = {"choice": name, "images_per_s": {n: round(r, 1) for n, r in rates.items()}, "precision": precision,
           "cpu": cpu_model(), "cores": usable_cpus(), "bundle": str(bundle.root),
           "measured_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")}
    _save_record(path, key, rec)
    return Selection(name, precision, f"auto: {name}, fastest of those timed now on this bundle ({_rates(rec)})", loaded[name])


def _rates(rec: dict) -> str:
    rates = rec.get("images_per_s") or {}
    return ", ".join(f"{n} {r:g} images/s" for n, r in sorted(rates.items(), key=lambda kv: -kv[1]))
