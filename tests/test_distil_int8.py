"""INT8 by quantisation-aware distillation (reid-export --int8-method distil)."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest
import torch

from conftest import cli, make_member
from reidkit.export.distil_int8 import distil_int8, fold_batchnorm
from reidkit.export.graph import ExportGraph
from reidkit.runtime.backends.ort import OrtBackend
from reidkit.train.checkpoint import load_member


def _images(n, h, w, seed):
    # smooth random images: closer to photos than white noise, so activations have structure
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (n, h // 8, w // 8, 3)).astype(np.float32)
    big = np.repeat(np.repeat(small, 8, axis=1), 8, axis=2) + rng.normal(0, 12, (n, h, w, 3))
    return np.clip(big, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def lite0(tmp_path_factory):
    path = make_member(tmp_path_factory.mktemp("lite0") / "lite0.safetensors", (64, 48), dim=32, backbone="tf_efficientnet_lite0")
    model, _ = load_member(path)
    return path, ExportGraph(model).eval()


def _mean_cos(a, b):
    return float(torch.mean(torch.sum(a * b, dim=1)))


def _worst_cos(a, b):
    return float(torch.min(torch.sum(a * b, dim=1)))


def test_folding_batchnorm_into_the_convolutions_keeps_the_embedding(lite0):
    import copy

    _, graph = lite0
    folded = copy.deepcopy(graph)
    n = fold_batchnorm(folded.net.backbone)
    convs = sum(isinstance(m, torch.nn.Conv2d) for m in folded.net.backbone.modules())
    assert n == convs  # every EfficientNet-Lite conv is followed by its BatchNorm
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.net.backbone.modules())
    x = torch.from_numpy(_images(6, 64, 48, seed=1))
    with torch.no_grad():
        assert torch.max(torch.abs(folded(x) - graph(x))) < 1e-4


def test_distillation_brings_the_int8_twin_closer_to_the_member(lite0):
    _, graph = lite0
    train, held_out = _images(48, 64, 48, seed=2), torch.from_numpy(_images(16, 64, 48, seed=3))
    with torch.no_grad():
        ref = graph(held_out)
        untrained = distil_int8(graph, train, steps=0, progress=False)
        trained = distil_int8(graph, train, steps=60, batch=8, progress=False)  # the default learning rate
        u, t = untrained(held_out), trained(held_out)
    assert _worst_cos(u, ref) < 0.999  # INT8 really moved the embedding
    # on images it never saw: closer on average, and the worst image no worse
    assert _mean_cos(t, ref) > _mean_cos(u, ref) + 0.003, (_mean_cos(u, ref), _mean_cos(t, ref))
    assert _worst_cos(t, ref) > _worst_cos(u, ref) - 0.002
    # the member itself is untouched
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in graph.net.backbone.modules())


def test_reid_export_distil_writes_an_int8_twin_that_passes_the_gate(tmp_path, members, synth):
    out = tmp_path / "b"
    res = cli("reid-export", members[0], "-o", out, "--int8", "--int8-method", "distil", "--int8-steps", "20",
              "--int8-images", synth / "images", "--device", "cpu")
    assert "onnx-int8" in res.stdout and "FAIL" not in res.stdout
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parity"]["int8_method"] == "distil"
    assert manifest["parity"]["int8_calibration_images"] == len(list((synth / "images").glob("*.jpg")))
    (member,) = manifest["members"]
    int8 = next(p for p in member["parity"] if p["variant"] == "onnx-int8")
    assert int8["passed"] and int8["min_cosine"] >= 0.99
    path = out / member["onnx_int8"]
    model = onnx.load(str(path))
    ops = [n.op_type for n in model.graph.node]
    # every convolution reads quantised activations and quantised constant weights
    assert ops.count("Conv") >= 10 and ops.count("QuantizeLinear") == 2 * ops.count("Conv")
    assert len({n.name for n in model.graph.node}) == len(model.graph.node)
    x = _images(8, member["input_height"], member["input_width"], seed=4)
    e8, e32 = OrtBackend(path).run(x), OrtBackend(out / member["onnx"]).run(x)
    assert np.allclose(np.linalg.norm(e8, axis=1), 1, atol=1e-5) and np.max(np.abs(e8 - e32)) > 1e-6


def test_distil_refuses_to_train_on_the_gate_images(tmp_path, members, synth):
    res = cli("reid-export", members[0], "-o", tmp_path / "b", "--int8", "--int8-method", "distil",
              "--int8-images", synth / "images", "--parity-images", synth / "images", "--device", "cpu", check=False)
    assert res.returncode == 2 and "--int8-images" in res.stderr and "did not train on" in res.stderr
    assert not (tmp_path / "b").exists()


def test_distil_on_a_missing_gpu_names_the_fix(tmp_path, members):
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU; the message is for machines without one")
    res = cli("reid-export", members[0], "-o", tmp_path / "b", "--int8", "--int8-method", "distil", "--device", "cuda", check=False)
    assert res.returncode == 2 and "--device cpu" in res.stderr
    assert not (tmp_path / "b").exists()
