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


def _weight_levels(student):
    """The largest |level| of the twin's frozen INT8 weights (levels = weight / its channel's scale)."""
    top = 0
    for conv in student.net.backbone.modules():
        if isinstance(conv, torch.nn.Conv2d) and hasattr(conv, "parametrizations"):
            q, w = conv.parametrizations["weight"][0], conv.parametrizations["weight"].original
            top = max(top, int(torch.round(w / q.scale.reshape(-1, *[1] * (w.dim() - 1))).abs().max()))
    return top


def test_distillation_brings_the_int8_twin_closer_to_the_member_and_its_scheme_sets_the_weight_levels(lite0):
    _, graph = lite0
    # enough images that the twin learns the member rather than its training set, and enough held-out
    # ones that the mean is steady: on 48 / 16 the gain depended on torch's thread count
    train, held_out = _images(192, 64, 48, seed=2), torch.from_numpy(_images(64, 64, 48, seed=3))
    with torch.no_grad():
        ref = graph(held_out)
        untrained = distil_int8(graph, train, steps=0, progress=False)
        trained = distil_int8(graph, train, steps=120, batch=8, lr=2e-5, progress=False)  # make bench's learning rate
        eight_bit = distil_int8(graph, train, steps=0, scheme="w8a8", progress=False)
        u, t = untrained(held_out), trained(held_out)
        assert _mean_cos(eight_bit(held_out), ref) > _mean_cos(u, ref)  # --int8-scheme w8a8 starts closer
    assert _worst_cos(u, ref) < 0.999  # INT8 really moved the embedding
    assert _weight_levels(untrained) == 63 and _weight_levels(eight_bit) == 127  # the default scheme is w7a8
    with pytest.raises(Exception, match="unknown INT8 scheme"):
        distil_int8(graph, train, steps=0, scheme="w4a4", progress=False)
    # on images it never saw: the gap to the member shrinks (by 16% on 1 or 2 threads and three
    # sampling seeds when written) and the worst image gets closer
    assert 1 - _mean_cos(t, ref) < 0.92 * (1 - _mean_cos(u, ref)), (_mean_cos(u, ref), _mean_cos(t, ref))
    assert _worst_cos(t, ref) > _worst_cos(u, ref), (_worst_cos(u, ref), _worst_cos(t, ref))
    # the member itself is untouched
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in graph.net.backbone.modules())


def test_reid_export_distil_writes_an_int8_twin_that_passes_the_gate_and_records_its_recipe(tmp_path, members, synth):
    out = tmp_path / "b"
    res = cli("reid-export", members[0], "-o", out, "--int8", "--int8-method", "distil", "--int8-keep-fp32", "depthwise",
              "--int8-steps", "20", "--int8-lr", "2e-5", "--int8-batch", "8", "--int8-images", synth / "images", "--device", "cpu")
    assert "onnx-int8" in res.stdout and "FAIL" not in res.stdout
    # resnet10t has no depthwise convolution: the option changes nothing, and the user is told
    assert "no depthwise convolution" in res.stderr
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["parity"]["int8_method"] == "distil"
    assert manifest["parity"]["int8_distil"] == {"steps": 20, "lr": 2e-5, "batch": 8, "fp32_depthwise": True, "scheme": "w7a8"}
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


def test_keeping_the_depthwise_convolutions_fp32_starts_the_twin_closer(lite0):
    _, graph = lite0
    train, held_out = _images(32, 64, 48, seed=5), torch.from_numpy(_images(16, 64, 48, seed=6))
    with torch.no_grad():
        ref = graph(held_out)
        everything = distil_int8(graph, train, steps=0, progress=False)(held_out)
        mixed = distil_int8(graph, train, steps=0, fp32_depthwise=True, progress=False)(held_out)
    assert _mean_cos(mixed, ref) > _mean_cos(everything, ref)
    assert _worst_cos(mixed, ref) < 0.99999  # the other convolutions are still INT8


def test_fp32_depthwise_twin_exports_only_those_convolutions_float(tmp_path, lite0):
    from reidkit.export.onnx_export import export_onnx

    _, graph = lite0
    twin = distil_int8(graph, _images(16, 64, 48, seed=7), steps=2, batch=4, fp32_depthwise=True, progress=False)
    export_onnx(twin, tmp_path / "twin.onnx")
    model = onnx.load(str(tmp_path / "twin.onnx"))
    producers = {o: n for n in model.graph.node for o in n.output}

    def quantised(name):  # the tensor comes out of a DequantizeLinear (through TF-style "same" padding)
        node = producers.get(name)
        while node is not None and node.op_type == "Pad":
            node = producers.get(node.input[0])
        return node is not None and node.op_type == "DequantizeLinear"

    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    depthwise = [n for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)]
    assert len(depthwise) >= 5 and len(convs) - len(depthwise) >= 10
    for n in convs:  # inputs and weights INT8, except the depthwise convolutions'
        assert quantised(n.input[0]) == quantised(n.input[1]) == (n not in depthwise), n.name
    x = _images(4, 64, 48, seed=8)
    assert np.allclose(np.linalg.norm(OrtBackend(tmp_path / "twin.onnx").run(x), axis=1), 1, atol=1e-5)


def test_keep_fp32_needs_int8(tmp_path, members):
    res = cli("reid-export", members[0], "-o", tmp_path / "b", "--int8-keep-fp32", "depthwise", check=False)
    assert res.returncode == 2 and "needs --int8" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "b").exists()


def test_int8_steps_zero_means_no_training(tmp_path, members, synth):
    # 0 must not fall back to the default (1500 steps): the recipe is logged before any work
    res = cli("reid-export", members[0], "-o", tmp_path / "b", "--int8", "--int8-method", "distil", "--int8-steps", "0",
              "--int8-images", synth / "images", "--device", "cpu", check=False)
    assert res.returncode in (0, 1), res.stderr  # an untrained twin may pass the gate or fail it; it must not crash
    assert "INT8 distillation: 0 steps" in res.stderr, res.stderr


def test_int8_cache_reuses_a_finished_twin_only_when_nothing_changed(tmp_path, members, synth):
    cache = tmp_path / "twins"
    base = ["reid-export", members[0], "--int8", "--int8-method", "distil", "--int8-images", synth / "images",
            "--int8-batch", "4", "--int8-cache", cache, "--device", "cpu"]
    first = cli(*base, "--int8-steps", "3", "-o", tmp_path / "b1")
    assert "INT8 distillation: 3 steps" in first.stderr and "reused" not in first.stderr
    (kept,) = cache.glob("*.int8.onnx")
    again = cli(*base, "--int8-steps", "3", "-o", tmp_path / "b2")
    assert "reused" in again.stderr and "INT8 distillation:" not in again.stderr
    m1, m2 = (json.loads((tmp_path / b / "manifest.json").read_text()) for b in ("b1", "b2"))
    assert m1["members"][0]["sha256_int8"] == m2["members"][0]["sha256_int8"]
    assert any(p["variant"] == "onnx-int8" and p["passed"] for p in m2["members"][0]["parity"])  # the gate still judged it
    other = cli(*base, "--int8-steps", "4", "-o", tmp_path / "b3")  # another recipe: trained, not reused
    assert "INT8 distillation: 4 steps" in other.stderr and "reused" not in other.stderr
    assert len(list(cache.glob("*.int8.onnx"))) == 2 and kept.exists()


def test_int8_cache_needs_the_distil_method(tmp_path, members):
    res = cli("reid-export", members[0], "-o", tmp_path / "b", "--int8", "--int8-cache", tmp_path / "c", check=False)
    assert res.returncode == 2 and "--int8-method distil" in res.stderr
    assert not (tmp_path / "b").exists()
