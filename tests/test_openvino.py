"""The OpenVINO CPU backend runs the bundle's own ONNX files and must agree with onnxruntime."""

import sys

import numpy as np
import pytest

from conftest import embed_with
from reidkit.errors import MissingDependencyError
from reidkit.export.parity import TOLERANCES
from reidkit.runtime.bundle import load_bundle
from reidkit.runtime.backends.select import make_backends

pytest.importorskip("openvino", reason="OpenVINO is the optional [openvino] extra; make test installs it")


@pytest.mark.parametrize("precision", ["fp32", "int8"])
def test_openvino_agrees_with_onnxruntime_fp32(bundle, precision):
    ref = embed_with(bundle, "ort-cpu", "fp32")
    got = embed_with(bundle, "openvino", precision)
    assert got.shape == ref.shape and got.dtype == np.float32
    cos = (ref * got).sum(axis=1)
    tol = TOLERANCES[precision]
    assert cos.min() >= tol.min_cosine, cos.min()
    if tol.max_abs is not None:
        assert np.abs(ref - got).max() <= tol.max_abs


def test_missing_openvino_names_the_extra(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingDependencyError, match=r"reidkit\[openvino\]"):
        make_backends(load_bundle(bundle), "openvino")
