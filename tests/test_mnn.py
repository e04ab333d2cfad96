"""The MNN backend runs models converted at export and must agree with onnxruntime's fp32."""

import json
import shutil
import sys

import numpy as np
import pytest

from conftest import cli, embed_with
from reidkit.data.synth import sample_images
from reidkit.errors import MissingDependencyError, ReidkitError
from reidkit.export.parity import TOLERANCES
from reidkit.imaging import resize_to
from reidkit.runtime.backends.select import make_backends, resolve_precision
from reidkit.runtime.bundle import load_bundle

pytest.importorskip("MNN", reason="MNN is the optional [mnn] extra; make test installs it")


def test_export_records_mnn_models_that_passed_the_gate(bundle):
    manifest = json.loads((bundle / "manifest.json").read_text())
    for m in manifest["members"]:
        assert (bundle / m["mnn"]).is_file() and len(m["sha256_mnn"]) == 64
        gate = [p for p in m["parity"] if p["variant"] == "mnn-fp32"]
        assert gate and gate[0]["passed"] and gate[0]["tolerance"]["min_cosine"] == TOLERANCES["fp32"].min_cosine
    assert "mnn" in manifest["tools"]


def test_mnn_agrees_with_onnxruntime_fp32(bundle):
    ref = embed_with(bundle, "ort-cpu")
    got = embed_with(bundle, "mnn")
    assert got.shape == ref.shape and got.dtype == np.float32
    assert (ref * got).sum(axis=1).min() >= TOLERANCES["fp32"].min_cosine
    assert np.abs(ref - got).max() <= TOLERANCES["fp32"].max_abs
    assert not [m for m in sys.modules if m.startswith("MNN.tools")]  # those wrappers pip-install and send logs


def test_tampered_mnn_model_is_refused(tmp_path, bundle):
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    victim = copy / json.loads((copy / "manifest.json").read_text())["members"][0]["mnn"]
    data = bytearray(victim.read_bytes())
    data[len(data) // 2] ^= 0xFF
    victim.write_bytes(bytes(data))
    with pytest.raises(ReidkitError, match="MNN model"):
        make_backends(load_bundle(copy), "mnn")


def test_bundle_without_mnn_says_how_to_get_it(tmp_path, bundle):
    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    manifest = json.loads((copy / "manifest.json").read_text())
    for m in manifest["members"]:
        del m["mnn"], m["sha256_mnn"]
    (copy / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ReidkitError, match="--mnn"):
        make_backends(load_bundle(copy), "mnn")
    res = cli("reid-infer", "--model", copy, "--query", copy, "--gallery", copy, "-o", tmp_path / "r.csv", "--backend", "mnn", check=False)
    assert res.returncode != 0 and "--mnn" in res.stderr and not (tmp_path / "r.csv").exists()


def test_mnn_is_fp32_only():
    assert resolve_precision("mnn", None) == "fp32"
    with pytest.raises(ReidkitError, match="fp32"):
        resolve_precision("mnn", "int8")


def test_missing_mnn_names_the_extra(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "MNN", None)
    with pytest.raises(MissingDependencyError, match=r"reidkit\[mnn\]"):
        make_backends(load_bundle(bundle), "mnn")
    from reidkit.export.mnn_convert import require_mnn

    with pytest.raises(MissingDependencyError, match=r"reidkit\[mnn\]"):
        require_mnn()


def test_flip_rewrite_keeps_the_graph_exact(tmp_path, bundle):
    """The graph MNN converts flips with a Gather; onnxruntime must see no difference."""
    import onnx
    import onnxruntime as ort

    from reidkit.export.mnn_convert import flip_as_gather

    m = load_bundle(bundle).members[0]
    dst = tmp_path / "g.onnx"
    assert flip_as_gather(m.onnx, dst) == 1
    ops = [n.op_type for n in onnx.load(str(dst)).graph.node]
    assert "Gather" in ops and "Slice" not in ops
    x = np.stack([resize_to(im, m.height, m.width, m.resize) for im in sample_images(4, seed=9)])
    run = lambda p: ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"images": x})[0]  # noqa: E731
    np.testing.assert_array_equal(run(m.onnx), run(dst))
