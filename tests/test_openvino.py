"""The OpenVINO CPU backend runs the bundle's own ONNX files and must agree with onnxruntime."""

import csv
import sys

import numpy as np
import pytest

from conftest import cli
from reidkit.errors import MissingDependencyError
from reidkit.export.parity import TOLERANCES
from reidkit.imaging import resize_to
from reidkit.data.synth import sample_images
from reidkit.runtime.bundle import load_bundle
from reidkit.runtime.backends.select import make_backends
from reidkit.runtime.embedder import fuse

pytest.importorskip("openvino", reason="OpenVINO is the optional [openvino] extra; make test installs it")


def _embed(bundle, backend, precision):
    b = load_bundle(bundle)
    imgs = sample_images(12, seed=5)
    parts = []
    for m, be in zip(b.members, make_backends(b, backend, precision=precision)):
        batch = np.stack([resize_to(im, m.height, m.width, m.resize) for im in imgs])
        parts += [np.concatenate([be.run(batch[:5]), be.run(batch[5:])])]  # two batch sizes through one compiled model
    return fuse(parts, [m.weight for m in b.members])


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_openvino_agrees_with_onnxruntime_fp32(bundle, precision):
    ref = _embed(bundle, "ort-cpu", "fp32")
    got = _embed(bundle, "openvino", precision)
    assert got.shape == ref.shape and got.dtype == np.float32
    cos = (ref * got).sum(axis=1)
    tol = TOLERANCES[precision]
    assert cos.min() >= tol.min_cosine, cos.min()
    if tol.max_abs is not None:
        assert np.abs(ref - got).max() <= tol.max_abs


def test_reid_infer_openvino_ranks_like_ort_cpu_with_its_own_cache(tmp_path, bundle, synth):
    args = ["--model", bundle, "--scenarios", synth / "query_scenarios.csv", "--metadata", synth / "metadata.csv", "--quiet",
            "--cache", tmp_path / "c.sqlite"]
    ort_run = cli("reid-infer", *args, "-o", tmp_path / "ort.csv", "--backend", "ort-cpu")
    ov_run = cli("reid-infer", *args, "-o", tmp_path / "ov.csv", "--backend", "openvino")
    assert "openvino fp32" in ov_run.stdout and "ort-cpu fp32" in ort_run.stdout
    assert "0 from cache" in ov_run.stdout  # another engine's embeddings are never served
    read = lambda p: {(r["query_id"], r["database_image_id"]): float(r["score"]) for r in csv.DictReader(open(p))}  # noqa: E731
    a, b = read(tmp_path / "ort.csv"), read(tmp_path / "ov.csv")
    assert len(a) == len(b) > 0
    assert len(a.keys() & b.keys()) / len(a) > 0.99  # only near-ties at rank 20 may swap
    assert max(abs(a[k] - b[k]) for k in a.keys() & b.keys()) < 1e-5


def test_missing_openvino_names_the_extra(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingDependencyError, match=r"reidkit\[openvino\]"):
        make_backends(load_bundle(bundle), "openvino")
