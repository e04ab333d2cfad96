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


@pytest.mark.parametrize("precision", ["fp32", "int8", "bf16"])
def test_openvino_agrees_with_onnxruntime_fp32(bundle, precision):
    from reidkit.cpus import bf16_missing

    if precision == "bf16" and bf16_missing():  # refused there, which the next test checks
        pytest.skip(f"bf16 cannot run on this CPU: {bf16_missing()}")
    ref = embed_with(bundle, "ort-cpu", "fp32")
    got = embed_with(bundle, "openvino", precision)
    assert got.shape == ref.shape and got.dtype == np.float32
    cos = (ref * got).sum(axis=1)
    tol = TOLERANCES[precision]
    assert cos.min() >= tol.min_cosine, cos.min()
    if precision == "bf16":  # really computed in bf16: fp32 agrees to about 1e-6
        assert np.abs(ref - got).max() > 1e-4, np.abs(ref - got).max()
    if tol.max_abs is not None:
        assert np.abs(ref - got).max() <= tol.max_abs


def test_missing_openvino_names_the_extra(bundle, monkeypatch):
    monkeypatch.setitem(sys.modules, "openvino", None)
    with pytest.raises(MissingDependencyError, match=r"reidkit\[openvino\]"):
        make_backends(load_bundle(bundle), "openvino")


def test_bf16_is_refused_where_the_cpu_cannot_compute_it(bundle, monkeypatch):
    import reidkit.cpus as cpus
    from reidkit.errors import ReidkitError
    from reidkit.runtime.backends.select import select_backends

    b = load_bundle(bundle)
    monkeypatch.setattr(cpus.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(cpus, "cpu_flags", lambda: frozenset({"avx2", "fma", "avx512f", "avx512_vnni"}))
    with pytest.raises(ReidkitError, match=r"--precision bf16: .*no bf16 arithmetic \(AVX512-BF16 or AMX\); use --precision fp32"):
        b.embedder("openvino", "bf16")
    with pytest.raises(MissingDependencyError, match="at bf16 here: .*openvino: .*no bf16 arithmetic"):
        select_backends(b, "auto", "bf16")
    with pytest.raises(ReidkitError, match="ort-cpu runs fp32, fp16, int8 only; .*--backend openvino for bf16"):
        select_backends(b, "ort-cpu", "bf16")
    monkeypatch.setattr(cpus.platform, "machine", lambda: "aarch64")
    with pytest.raises(ReidkitError, match="x86-64 CPU with AVX512-BF16 or AMX, and this is aarch64"):
        select_backends(b, "openvino", "bf16")
    # bf16 runs the fp32 graphs, but its embeddings are cached apart from theirs
    assert b.key("bf16", "openvino") != b.key("fp32", "openvino")

