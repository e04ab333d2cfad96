import json

import numpy as np
import onnx
import pytest

from conftest import cli, make_member
from reidkit.runtime.bundle import load_bundle
from reidkit.runtime.backends.ort import OrtBackend
from reidkit.errors import ReidkitError


def _batch(h, w, n=6, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def test_bundle_layout_and_manifest(bundle):
    m = json.loads((bundle / "manifest.json").read_text())
    assert m["schema_version"] == 1 and m["fusion"] == {"flip": "mean", "members": "concat", "normalize": True}
    sizes = [(x["input_height"], x["input_width"]) for x in m["members"]]
    assert sizes == [(112, 96), (128, 112)]
    for x in m["members"]:
        assert {p["variant"] for p in x["parity"]} - {"mnn-fp32"} == {"onnx-fp32", "onnx-fp16", "onnx-int8"}  # mnn: test_mnn.py
        assert all(p["passed"] for p in x["parity"])
        assert x["resize"] == {"method": "stretch", "interpolation": "bilinear", "pad_value": 0, "decode_headroom": 2}
        model = onnx.load(str(bundle / x["onnx"]))
        onnx.checker.check_model(model, full_check=True)
        (inp,), (out,) = model.graph.input, model.graph.output
        dims = [d.dim_param or d.dim_value for d in inp.type.tensor_type.shape.dim]
        assert inp.type.tensor_type.elem_type == onnx.TensorProto.UINT8 and dims[1:] == [x["input_height"], x["input_width"], 3]
        assert isinstance(dims[0], str)  # only the batch axis is dynamic
        assert [d.dim_value for d in out.type.tensor_type.shape.dim][1:] == [32]


def test_mean_flip_makes_mirror_images_identical(bundle):
    b = load_bundle(bundle)
    for m in b.members:
        be = OrtBackend(m.onnx)
        x = _batch(m.height, m.width)
        e, e_mirror = be.run(x), be.run(x[:, :, ::-1].copy())
        assert np.max(np.abs(e - e_mirror)) < 1e-6
        assert np.allclose(np.linalg.norm(e, axis=1), 1, atol=1e-5)
        # and the flip really is in the graph: different images differ
        assert np.max(np.abs(e[0] - e[1])) > 1e-3


def test_concat_doubles_the_dimension_and_none_keeps_it(tmp_path, members):
    cli("reid-export", members[0], "-o", tmp_path / "concat", "--flip", "concat")
    cli("reid-export", members[0], "-o", tmp_path / "none", "--flip", "none")
    c, n = load_bundle(tmp_path / "concat").members[0], load_bundle(tmp_path / "none").members[0]
    assert c.dim == 64 and n.dim == 32
    x = _batch(c.height, c.width)
    ec, en = OrtBackend(c.onnx).run(x), OrtBackend(n.onnx).run(x)
    assert ec.shape == (6, 64) and en.shape == (6, 32)
    # concat's first half is the un-flipped embedding (scaled by 1/sqrt(2))
    assert np.allclose(ec[:, :32] * np.sqrt(2), en, atol=1e-5)


def test_tampered_onnx_is_caught_by_sha256(tmp_path, members):
    out = tmp_path / "b"
    cli("reid-export", members[0], "-o", out)
    m = onnx.load(str(out / "a.onnx"))
    init = next(i for i in m.graph.initializer if i.data_type == onnx.TensorProto.FLOAT and len(i.raw_data) >= 4)
    arr = onnx.numpy_helper.to_array(init).copy()
    arr.flat[0] += 0.5  # one weight changed
    init.CopyFrom(onnx.numpy_helper.from_array(arr, init.name))
    onnx.save(m, str(out / "a.onnx"))
    with pytest.raises(ReidkitError, match="does not match its manifest sha256"):
        load_bundle(out)
    res = cli("reid-infer", "--model", out, "--query", out, "--gallery", out, "-o", tmp_path / "r.csv", check=False)
    assert res.returncode == 2 and "sha256" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "r.csv").exists()


def test_tampered_int8_onnx_is_caught_when_chosen(tmp_path, bundle):
    import shutil

    from reidkit.runtime.backends.select import make_backends

    copy = tmp_path / "b"
    shutil.copytree(bundle, copy)
    target, _ = load_bundle(copy).members[1].onnx_for("int8")
    data = bytearray(target.read_bytes())
    data[len(data) // 2] ^= 0xFF
    target.write_bytes(bytes(data))
    b = load_bundle(copy)  # the fp32 graphs are intact: the bundle loads
    make_backends(b, "ort-cpu", precision="fp32")
    with pytest.raises(ReidkitError, match=r"int8 ONNX .* does not match its manifest sha256"):
        make_backends(b, "ort-cpu", precision="int8")


def test_unknown_schema_is_refused(tmp_path, bundle):
    import shutil

    b = tmp_path / "b"
    shutil.copytree(bundle, b)
    m = json.loads((b / "manifest.json").read_text())
    m["schema_version"] = 99
    (b / "manifest.json").write_text(json.dumps(m))
    with pytest.raises(ReidkitError, match="schema_version 99"):
        load_bundle(b)


def test_parity_failure_exits_nonzero_and_leaves_no_bundle(tmp_path, members, monkeypatch):
    from reidkit.errors import ParityError
    from reidkit.export.bundle import ExportOptions, export_bundle
    from reidkit.ensemble import EnsembleEntry
    from reidkit.runtime import bundle_format

    monkeypatch.setitem(bundle_format.TOLERANCES, "fp32", bundle_format.Tolerance(min_cosine=1.1, max_abs=0.0))  # impossible
    out = tmp_path / "never"
    with pytest.raises(ParityError, match="no bundle was written"):
        export_bundle([EnsembleEntry(members[0])], out, ExportOptions())
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_trt_without_tensorrt_exits_2_and_writes_nothing(tmp_path, members):
    res = cli("reid-export", members[0], "-o", tmp_path / "b", "--trt", check=False)
    assert res.returncode == 2
    assert "TensorRT" in res.stderr and "without --trt" in res.stderr and "Traceback" not in res.stderr
    assert list(tmp_path.iterdir()) == []


def test_export_refuses_existing_output(tmp_path, members):
    (tmp_path / "b").mkdir()
    res = cli("reid-export", members[0], "-o", tmp_path / "b", check=False)
    assert res.returncode == 2 and "--overwrite" in res.stderr


def test_int8_member_is_really_quantised_and_close(bundle):
    b = load_bundle(bundle)
    for m in b.members:
        path, _ = m.onnx_for("int8")
        model = onnx.load(str(path))
        ops = {n.op_type for n in model.graph.node}
        assert {"QuantizeLinear", "DequantizeLinear", "Conv"} <= ops
        int8_weights = [t for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8]
        assert len(int8_weights) >= 10 and path.stat().st_size < 0.5 * m.onnx.stat().st_size
        # the stem conv (raw pixels) keeps fp32 weights; the convs after it read int8 ones
        convs, inits = [n for n in model.graph.node if n.op_type == "Conv"], {t.name for t in model.graph.initializer}
        assert convs[0].input[1] in inits and all(c.input[1] not in inits for c in convs[1:])
        # same contract as the fp32 graph: uint8 in, unit-norm float32 out, mirror-invariant
        x = _batch(m.height, m.width, n=8, seed=3)
        e8, e32 = OrtBackend(path).run(x), OrtBackend(m.onnx).run(x)
        assert e8.shape == e32.shape and np.allclose(np.linalg.norm(e8, axis=1), 1, atol=1e-5)
        assert np.max(np.abs(e8 - OrtBackend(path).run(x[:, :, ::-1].copy()))) < 1e-5
        assert np.min(np.sum(e8 * e32, axis=1)) > 0.95 and np.max(np.abs(e8 - e32)) > 1e-6


def test_int8_calibrates_on_more_images_than_the_gate_checks(tmp_path, members, synth):
    # a user's folder: the gate checks up to 32 of its images, INT8 calibrates on up to 128
    cli("reid-export", members[0], "-o", tmp_path / "b", "--int8", "--parity-images", synth / "images")
    parity = json.loads((tmp_path / "b" / "manifest.json").read_text())["parity"]
    n_folder = len(list((synth / "images").glob("*.jpg")))
    assert n_folder > 32
    assert parity["images"] == 32 and parity["int8_calibration_images"] == min(128, n_folder)
    assert str(synth / "images") in parity["source"]


def test_default_calibration_set_is_larger_and_holds_the_parity_set():
    from reidkit.export.parity import calibration_images, parity_images

    gate, calib = parity_images(None), calibration_images(None)
    assert len(calib) >= 4 * len(gate)
    gate_pixels = {im.tobytes() for im in gate}
    assert gate_pixels <= {im.tobytes() for im in calib}


def test_int8_min_cosine_is_the_threshold_the_gate_applies_and_records(tmp_path, members):
    strict = cli("reid-export", members[0], "-o", tmp_path / "strict", "--int8", "--int8-min-cosine", "0.999999", check=False)
    assert strict.returncode == 1 and "onnx-int8" in strict.stderr and "fp32" not in strict.stderr.split("failed for")[-1]
    assert not (tmp_path / "strict").exists()
    loose = cli("reid-export", members[0], "-o", tmp_path / "loose", "--int8", "--int8-min-cosine", "0.9")
    assert "INT8 gate lowered to min cosine 0.9" in loose.stderr
    manifest = json.loads((tmp_path / "loose" / "manifest.json").read_text())
    assert manifest["parity"]["tolerances"]["int8"]["min_cosine"] == 0.9
    assert manifest["parity"]["tolerances"]["fp32"]["min_cosine"] == 0.99999  # only INT8 is the user's to set
    (int8,) = [p for p in manifest["members"][0]["parity"] if p["variant"] == "onnx-int8"]
    assert int8["passed"] and int8["tolerance"]["min_cosine"] == 0.9


def test_int8_min_cosine_needs_int8(tmp_path, members):
    res = cli("reid-export", members[0], "-o", tmp_path / "b", "--int8-min-cosine", "0.98", check=False)
    assert res.returncode == 2 and "--int8" in res.stderr
    assert not (tmp_path / "b").exists()


def _int8_weight_levels(onnx_path):
    """The largest |level| among the graph's INT8 weight initialisers."""
    from onnx import numpy_helper

    model = onnx.load(str(onnx_path))
    return max(int(np.abs(numpy_helper.to_array(t).astype(np.int32)).max())
               for t in model.graph.initializer if t.data_type == onnx.TensorProto.INT8)


def test_default_int8_scheme_keeps_weights_within_seven_bits(bundle):
    # 7-bit weights are what lets any x86 CPU (no VNNI) run the graph without int16 saturation
    b = load_bundle(bundle)
    assert b.manifest.int8_scheme.name == "w7a8"
    assert json.loads((bundle / "manifest.json").read_text())["parity"]["int8_scheme"] == "w7a8"
    for m in b.members:
        assert 32 <= _int8_weight_levels(m.onnx_for("int8")[0]) <= 64


def _pretend_cpu(monkeypatch, flags):
    import reidkit.cpus as cpus

    monkeypatch.setattr(cpus.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(cpus, "cpu_flags", lambda: frozenset(flags))


def test_int8_saturates_reads_the_vnni_flags(monkeypatch):
    from reidkit.cpus import int8_saturates

    _pretend_cpu(monkeypatch, {"avx2", "fma", "avx512f"})
    assert "no VNNI" in int8_saturates()
    for vnni in ("avx512_vnni", "avx_vnni", "amx_int8"):
        _pretend_cpu(monkeypatch, {"avx2", vnni})
        assert int8_saturates() is None
    _pretend_cpu(monkeypatch, set())
    assert "could not be read" in int8_saturates()
    import reidkit.cpus as cpus

    monkeypatch.setattr(cpus.platform, "machine", lambda: "aarch64")  # ARM's dot products accumulate in int32
    assert int8_saturates() is None


def test_w8a8_bundle_has_8_bit_weights_and_runs_only_where_vnni_is(tmp_path, monkeypatch, members):
    from reidkit.ensemble import resolve_members
    from reidkit.errors import MissingDependencyError
    from reidkit.export.bundle import ExportOptions, export_bundle
    from reidkit.runtime.backends.select import select_backends

    out = tmp_path / "w8a8"
    # the gate's threshold is not under test here: on a CPU without VNNI the real engine still saturates
    opts = ExportOptions(int8=True, int8_scheme="w8a8", int8_min_cosine=0.2)
    _pretend_cpu(monkeypatch, {"avx2"})
    with pytest.raises(ReidkitError, match="no VNNI.*--int8-scheme w7a8"):
        export_bundle(resolve_members([str(members[0])]), out, opts)
    assert not out.exists()  # refused before any work
    _pretend_cpu(monkeypatch, {"avx2", "avx512_vnni"})
    export_bundle(resolve_members([str(members[0])]), out, opts)
    b = load_bundle(out)
    assert b.manifest.int8_scheme.name == "w8a8" and b.manifest.parity["int8_scheme"] == "w8a8"
    assert _int8_weight_levels(b.members[0].onnx_for("int8")[0]) == 127
    x = _batch(b.members[0].height, b.members[0].width)
    (engine,) = select_backends(b, "ort-cpu", "int8").backends
    assert engine.run(x).shape == (6, 32)
    _pretend_cpu(monkeypatch, {"avx2"})  # the same bundle carried to a CPU without VNNI
    with pytest.raises(ReidkitError, match=r"8-bit weights \(--int8-scheme w8a8\).*--precision fp32"):
        select_backends(b, "ort-cpu", "int8")
    with pytest.raises(MissingDependencyError, match="no VNNI"):
        select_backends(b, "auto", "int8")
    assert select_backends(b, "ort-cpu", "fp32").precision == "fp32"  # fp32 still runs there


def test_int8_scheme_needs_int8(tmp_path, members):
    res = cli("reid-export", members[0], "-o", tmp_path / "b", "--int8-scheme", "w8a8", check=False)
    assert res.returncode == 2 and "--int8" in res.stderr
    assert not (tmp_path / "b").exists()
