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
    cuda = OrtBackend(m.onnx, "cuda")
    assert cuda.session.get_providers()[0] == "CUDAExecutionProvider"  # not a quiet fallback to the CPU
    assert np.allclose(cuda.run(x), OrtBackend(m.onnx, "cpu").run(x), atol=1e-4)


def _scores(path):
    import csv

    with open(path, newline="") as fh:
        return {(r["query_id"], r["database_image_id"]): float(r["score"]) for r in csv.DictReader(fh)}


def _assert_ranks_alike(a_csv, b_csv, tol):
    a, b = _scores(a_csv), _scores(b_csv)
    both = a.keys() & b.keys()
    assert len(both) / len(b) > 0.95 and max(abs(a[k] - b[k]) for k in both) < tol


@pytest.mark.gpu
def test_auto_on_a_gpu_without_engines_runs_onnxruntime_cuda_and_ranks_like_the_cpu(tmp_path, bundle, orl_split):
    q, g = orl_split / "query", orl_split / "gallery"
    res = cli("reid-infer", "--model", bundle, "--query", q, "--gallery", g, "-o", tmp_path / "auto.csv")
    assert "engine: ort-cuda fp32" in res.stdout
    res16 = cli("reid-infer", "--model", bundle, "--query", q, "--gallery", g, "-o", tmp_path / "fp16.csv", "--backend", "ort-cuda",
                "--precision", "fp16")
    assert "engine: ort-cuda fp16" in res16.stdout
    cli("reid-infer", "--model", bundle, "--query", q, "--gallery", g, "-o", tmp_path / "cpu.csv", "--backend", "ort-cpu")
    _assert_ranks_alike(tmp_path / "auto.csv", tmp_path / "cpu.csv", 1e-4)
    _assert_ranks_alike(tmp_path / "fp16.csv", tmp_path / "cpu.csv", 5e-3)


@pytest.mark.gpu
def test_training_on_cuda_resumes_and_exports_through_the_parity_gate(tmp_path, synth):
    """AMP and channels_last on the GPU: the checkpoint must still load on the CPU and match its ONNX."""
    from reidkit.checkpoint_meta import read_member_metadata

    args = ["--data", synth / "metadata.csv", "--backbone", "resnet10t", "--image-size", "64x32", "--embedding-dim", "16",
            "--batch-size", "32", "--device", "cuda", "--out", tmp_path / "g.safetensors"]
    cli("reid-train", *args, "--epochs", "2")
    cli("reid-train", *args, "--epochs", "3", "--resume")
    assert len(read_member_metadata(tmp_path / "g.safetensors")["training"]["history"]) == 3
    cli("reid-export", tmp_path / "g.safetensors", "-o", tmp_path / "b")


@pytest.mark.gpu
def test_real_tensorrt_engine_passes_parity_and_ranks_like_onnxruntime(tmp_path, members, orl_split):
    from reidkit.runtime.backends.trt import load_tensorrt

    load_tensorrt()  # fails the test, with the reason, where the GPU has no real TensorRT
    cli("reid-export", members[0], "-o", tmp_path / "b", "--trt", "--fp16", "--timing-cache", tmp_path / "tc")
    q, g = orl_split / "query", orl_split / "gallery"
    res = cli("reid-infer", "--model", tmp_path / "b", "--query", q, "--gallery", g, "-o", tmp_path / "trt.csv", "--backend", "trt")
    assert "engine: trt" in res.stdout
    cli("reid-infer", "--model", tmp_path / "b", "--query", q, "--gallery", g, "-o", tmp_path / "cpu.csv", "--backend", "ort-cpu")
    _assert_ranks_alike(tmp_path / "trt.csv", tmp_path / "cpu.csv", 5e-3)


@pytest.mark.gpu
def test_aoti_packages_compile_for_this_gpu_pass_the_gate_and_rank_like_the_cpu(tmp_path, orl_split):
    """reid-export --aoti --fp16 on the GPU, then reid-infer on each package and on auto, which must time the GPU engines."""
    import json

    from conftest import make_member

    ckpt = make_member(tmp_path / "m.safetensors", (64, 48), dim=16, seed=4)
    res = cli("reid-export", ckpt, "-o", tmp_path / "b", "--fp16", "--aoti", "--aoti-batch", "8")
    assert "aoti-cuda-fp32" in res.stdout and "aoti-cuda-fp16" in res.stdout
    doc = json.loads((tmp_path / "b" / "manifest.json").read_text())
    assert sorted(c["precision"] for c in doc["compiled"]) == ["fp16", "fp32"] and {c["device"] for c in doc["compiled"]} == {"cuda"}
    q, g = orl_split / "query", orl_split / "gallery"
    cli("reid-infer", "--model", tmp_path / "b", "--query", q, "--gallery", g, "-o", tmp_path / "cpu.csv", "--backend", "ort-cpu")
    for precision, tol in (("fp32", 1e-4), ("fp16", 5e-3)):
        out = tmp_path / f"{precision}.csv"
        res = cli("reid-infer", "--model", tmp_path / "b", "--query", q, "--gallery", g, "-o", out, "--backend", "aoti-cuda",
                  "--precision", precision)
        assert f"engine: aoti-cuda {precision}" in res.stdout and "decoding in processes" in res.stdout
        _assert_ranks_alike(out, tmp_path / "cpu.csv", tol)
    res = cli("reid-infer", "--model", tmp_path / "b", "--query", q, "--gallery", g, "-o", tmp_path / "auto.csv",
              env={**__import__("os").environ, "REIDKIT_CACHE_DIR": str(tmp_path / "cache")})
    assert "aoti-cuda" in res.stdout  # chosen, or named among the engines timed
