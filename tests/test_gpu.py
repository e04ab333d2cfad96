"""Hardware tests: run only where the CUDA driver reports an NVIDIA GPU (skipped elsewhere
with the reason). These are the checks a fake cannot make."""

import numpy as np
import pytest

from conftest import cli
from reidkit.runtime.bundle import load_bundle


@pytest.mark.gpu
def test_ort_cuda_matches_ort_cpu(bundle):
    from reidkit.runtime.backends.ort import OrtBackend, cuda_provider_usable

    if not cuda_provider_usable():
        pytest.skip("onnxruntime-gpu is not installed in this environment")
    m = load_bundle(bundle).members[0]
    x = np.random.default_rng(0).integers(0, 256, (16, m.height, m.width, 3), dtype=np.uint8)
    assert np.allclose(OrtBackend(m.onnx, "cuda").run(x), OrtBackend(m.onnx, "cpu").run(x), atol=1e-4)


@pytest.mark.gpu
def test_real_tensorrt_engine_passes_parity_and_ranks_like_onnxruntime(tmp_path, members, orl_split):
    from reidkit.runtime.backends.trt import load_tensorrt

    load_tensorrt()  # fails the test, with the reason, where the GPU has no real TensorRT
    cli("reid-export", members[0], "-o", tmp_path / "b", "--trt", "--fp16", "--timing-cache", tmp_path / "tc")
    q, g = orl_split / "query", orl_split / "gallery"
    res = cli("reid-infer", "--model", tmp_path / "b", "--query", q, "--gallery", g, "-o", tmp_path / "trt.csv", "--backend", "trt")
    assert "engine: trt" in res.stdout
    cli("reid-infer", "--model", tmp_path / "b", "--query", q, "--gallery", g, "-o", tmp_path / "cpu.csv", "--backend", "ort-cpu")
    import csv

    read = lambda p: {(r["query_id"], r["database_image_id"]): float(r["score"]) for r in csv.DictReader(open(p))}  # noqa: E731
    a, b = read(tmp_path / "trt.csv"), read(tmp_path / "cpu.csv")
    assert len(a.keys() & b.keys()) / len(b) > 0.95 and max(abs(a[k] - b[k]) for k in a.keys() & b.keys()) < 5e-3
