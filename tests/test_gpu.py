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
def test_real_tensorrt_engine_passes_parity(tmp_path, members):
    pytest.importorskip("tensorrt")
    from reidkit.export.tensorrt_build import load_tensorrt

    load_tensorrt()  # raises with the reason if only stubs are installed
    cli("reid-export", members[0], "-o", tmp_path / "b", "--trt", "--fp16", "--timing-cache", tmp_path / "tc")
    res = cli("reid-infer", "--model", tmp_path / "b", "--backend", "trt", "--query", tmp_path / "b", "--gallery", tmp_path / "b",
              "-o", tmp_path / "r.csv", check=False)
    assert res.returncode in (0, 2)  # bundle folder has no images: exit 2 with a clear message, never a crash
