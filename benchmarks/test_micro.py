"""pytest-benchmark suites for the runtime's building blocks: decode, resize, kNN, metrics.

Run with `.venv/bin/python -m pytest benchmarks/test_micro.py --benchmark-only`
(not part of `make test`: timings are reported, never asserted).
"""

import io

import numpy as np
import pytest
from PIL import Image

from reidkit.imaging import ResizePolicy, decode_rgb, resize_to
from reidkit.metrics import SubmissionRow, average_precision, whaledo_map
from reidkit.runtime.knn import rank

RNG = np.random.default_rng(0)


def _jpeg(w, h):
    buf = io.BytesIO()
    Image.fromarray(RNG.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(buf, "JPEG", quality=90)
    return buf.getvalue()


@pytest.mark.parametrize("shape", [(152, 438), (1805, 344)], ids=["top-view", "lateral-view"])
def test_decode(benchmark, shape):
    data = _jpeg(*shape)
    benchmark(decode_rgb, data)


@pytest.mark.parametrize("interp", ["bilinear", "bicubic"])
def test_resize(benchmark, interp):
    img = decode_rgb(_jpeg(152, 438))
    benchmark(resize_to, img, 224, 96, ResizePolicy(interpolation=interp))


@pytest.mark.parametrize("n_db", [1000, 10000])
def test_knn_rank(benchmark, n_db):
    db = RNG.standard_normal((n_db, 256)).astype(np.float32)
    db /= np.linalg.norm(db, axis=1, keepdims=True)
    q = db[:500].copy()
    benchmark(rank, db, q, 20, np.arange(500))


def test_whaledo_map(benchmark):
    rows = [SubmissionRow(f"q{i}", f"d{j}", float(RNG.random())) for i in range(1000) for j in RNG.choice(200, 20, replace=False)]
    labels = {f"q{i}": {f"d{j}" for j in RNG.choice(200, 5, replace=False)} for i in range(1000)}
    benchmark(whaledo_map, rows, labels)


def test_average_precision(benchmark):
    y, s = RNG.random(20) < 0.3, RNG.random(20)
    benchmark(average_precision, y, s)
