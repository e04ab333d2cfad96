"""MNN CPU backend: the bundle's ``.mnn`` models (written by ``reid-export --mnn``).

The fastest fp32 engine measured on CPUs without AVX-512 (see reidkit.export.mnn_convert for
why, and benchmarks/results for the figures). Each model went through the export's parity
gate against PyTorch and is sha256-checked before it loads.

MNN prints a banner ("The device supports: ...", "MNN use high precision") on stdout from
C++ when it loads; stdout is reid-infer's output, so the file descriptor is pointed at
/dev/null while the runtime is created. Only the compiled engine is imported, never
``MNN.tools`` (whose Python wrappers pip-install a logging SDK and phone home).
"""

from __future__ import annotations

import contextlib
import os
import sys
from pathlib import Path
from typing import Iterator

import numpy as np

from reidkit.cpus import usable_cpus
from reidkit.errors import MissingDependencyError


@contextlib.contextmanager
def _stdout_silenced() -> Iterator[None]:
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):  # no real stdout (captured by a test runner, say)
        yield
        return
    sys.stdout.flush()
    saved = os.dup(fd)
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), fd)
        yield
    finally:
        os.dup2(saved, fd)
        os.close(saved)


def _mnn():
    try:
        with _stdout_silenced():
            import MNN.expr as F
            import MNN.nn as nn
    except ImportError:
        raise MissingDependencyError("--backend mnn needs MNN; pip install 'reidkit[mnn]'") from None
    return F, nn


class MnnBackend:
    name = "mnn"

    def __init__(self, mnn_path: str | Path, threads: int | None = None) -> None:
        F, nn = _mnn()
        self._F = F
        config = {"backend": "CPU", "precision": "high", "numThread": int(threads or usable_cpus())}
        with _stdout_silenced():
            self._runtime = nn.create_runtime_manager((config,))
            self._net = nn.load_module_from_file(str(mnn_path), ["images"], ["embedding"], runtime_manager=self._runtime)

    def run(self, batch: np.ndarray) -> np.ndarray:
        F = self._F
        batch = np.ascontiguousarray(batch, dtype=np.uint8)
        # MNN tags a converted ONNX input as NCHW whatever its axes mean; the graph itself
        # transposes the NHWC uint8 images, exactly as in the ONNX.
        x = F.placeholder(list(batch.shape), F.NCHW, F.uint8)
        x.write(batch)
        out = self._net.forward([x])[0]
        return np.array(out.read(), dtype=np.float32, copy=True).reshape(batch.shape[0], -1)
