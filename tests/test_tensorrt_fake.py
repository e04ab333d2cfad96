"""TensorRT build and runtime logic against a fake of the API (no GPU, no TensorRT here).

These prove the logic (profiles, precision strategy, timing cache, parser errors, sidecar
checks, pointer handling and batch splitting), not that real TensorRT accepts it: the
README lists these paths as unverified on hardware.
"""

import json

import numpy as np
import pytest

from fake_tensorrt import FakeCudart, make_trt
from reidkit.errors import ReidkitError
from reidkit.export import tensorrt_build as tb
from reidkit.runtime.backends.ort import OrtBackend
from reidkit.runtime.backends.trt import TensorRTBackend, check_sidecar
from reidkit.runtime.bundle import load_bundle
from reidkit.runtime.gpu import GpuInfo

GPU = GpuInfo(0, "NVIDIA H100 80GB HBM3", (9, 0), 80 << 30)


@pytest.fixture()
def member(bundle):
    return load_bundle(bundle).members[0]


def _build(trt, member, tmp_path, onnx=None, cache=None):
    onnx = onnx or member.onnx
    plan = tmp_path / "engines" / tb.engine_filename(member.name, GPU, trt.__version__)
    side = tb.build_engine(trt, onnx, plan, input_hw=(member.height, member.width), profile=tb.Profile(1, 4, 8),
                           workspace_gb=2, timing_cache=cache, gpu=GPU, onnx_sha256="abc")
    return plan, side


def test_trt10_uses_the_fp16_builder_flag(tmp_path, member):
    trt = make_trt("10.13.0")
    plan, side = _build(trt, member, tmp_path)
    (b,) = trt.built
    assert b["flags"] == {trt.BuilderFlag.FP16} and not b["strongly_typed"]
    assert b["profile"] == ((1, member.height, member.width, 3), (4, member.height, member.width, 3), (8, member.height, member.width, 3))
    assert b["workspace"] == 2 << 30
    assert plan.name == f"{member.name}.nvidia-h100-80gb-hbm3.10.13.0.fp16.plan"
    on_disk = json.loads(plan.with_suffix(".json").read_text())
    assert on_disk == side.to_dict() and side.strongly_typed is False and on_disk["compute_capability"] == [9, 0]
    assert side.profile["max"] == [8, member.height, member.width, 3] and side.max_batch == 8


def test_trt11_builds_the_fp16_onnx_strongly_typed(tmp_path, member):
    trt = make_trt("11.0.0")
    assert not hasattr(trt.BuilderFlag, "FP16") and tb.strongly_typed(trt)
    _build(trt, member, tmp_path, onnx=member.onnx_for("fp16")[0])
    (b,) = trt.built
    assert b["strongly_typed"] and b["flags"] == set()


def test_timing_cache_is_read_and_written(tmp_path, member):
    trt = make_trt()
    cache = tmp_path / "timing.cache"
    _build(trt, member, tmp_path, cache=cache)
    first = cache.read_bytes()
    _build(trt, member, tmp_path, cache=cache)
    assert trt.built[1]["cache_in"] == first  # the second build started from the first's cache
    assert cache.read_bytes() == first + b"+"


def test_parser_errors_are_reported_in_full(tmp_path, member):
    with pytest.raises(ReidkitError) as info:
        _build(make_trt(fail_parse=True), member, tmp_path)
    assert "unsupported op Foo" in str(info.value) and "in_node 3 failed" in str(info.value)


def test_profile_must_be_ordered():
    with pytest.raises(ReidkitError, match="min <= opt <= max"):
        tb.Profile(8, 4, 16)


def test_engine_runs_like_onnxruntime_and_splits_batches(tmp_path, member):
    trt = make_trt()
    plan, side = _build(trt, member, tmp_path)
    cu = FakeCudart()
    be = TensorRTBackend(plan, trt=trt, cudart=cu, gpu=GPU)
    x = np.random.default_rng(0).integers(0, 256, (19, member.height, member.width, 3), dtype=np.uint8)
    got = be.run(x)
    ref = OrtBackend(member.onnx).run(x)
    assert np.allclose(got, ref, atol=1e-6)
    h2d = [n for kind, n in cu.copies if kind == cu.cudaMemcpyKind.cudaMemcpyHostToDevice]
    assert h2d == [8 * x[0].nbytes, 8 * x[0].nbytes, 3 * x[0].nbytes]  # split at the profile's max batch


def test_engine_close_synchronises_frees_and_destroys_its_stream(tmp_path, member):
    import fake_tensorrt

    trt = make_trt()
    plan, _ = _build(trt, member, tmp_path)
    cu = FakeCudart()
    be = TensorRTBackend(plan, trt=trt, cudart=cu, gpu=GPU)
    stream = be.stream
    be.run(np.zeros((2, member.height, member.width, 3), np.uint8))
    be.close()
    assert cu.destroyed == [stream] and stream not in fake_tensorrt.STREAMS
    assert len(cu.freed) == 4  # two device buffers and two pinned host buffers
    be.close()  # a second close (and __del__ later) frees nothing twice
    assert len(cu.freed) == 4 and cu.destroyed == [stream]


@pytest.mark.parametrize("field, value, needle", [
    ("tensorrt_version", "10.0.1", "TensorRT 10.0.1"),
    ("gpu_name", "NVIDIA A100-SXM4-40GB", "built for NVIDIA A100"),
    ("compute_capability", [8, 0], "sm [8, 0]"),
])
def test_engine_for_another_gpu_or_version_is_refused(tmp_path, member, field, value, needle):
    trt = make_trt()
    plan, side = _build(trt, member, tmp_path)
    import dataclasses

    side = dataclasses.replace(side, **{field: tuple(value) if isinstance(value, list) else value})
    with pytest.raises(ReidkitError, match="reid-export --trt") as info:
        TensorRTBackend(plan, side, trt=trt, cudart=FakeCudart(), gpu=GPU)
    assert needle in str(info.value)


def test_stubs_alone_are_not_tensorrt(monkeypatch):
    import sys
    import types

    monkeypatch.setitem(sys.modules, "tensorrt", types.ModuleType("tensorrt"))  # what tensorrt-stubs installs
    with pytest.raises(ReidkitError, match="only TensorRT.s type stubs"):
        tb.load_tensorrt()


def _export_with_fake(tmp_path, members, monkeypatch):
    """reid-export --trt of the first member through the fake; returns (fake trt module, manifest dict)."""
    from reidkit.ensemble import EnsembleEntry
    from reidkit.export.bundle import ExportOptions, export_bundle
    from reidkit.runtime.backends import trt as trt_backend

    trt = make_trt()
    monkeypatch.setattr(tb, "require_tensorrt", lambda: (trt, GPU))
    monkeypatch.setattr(trt_backend, "_cudart", lambda: FakeCudart())
    return trt, export_bundle([EnsembleEntry(members[0])], tmp_path / "b", ExportOptions(trt=True, max_batch=8, opt_batch=4))


def test_bundle_engines_with_the_fake(tmp_path, members, monkeypatch):
    """reid-export --trt end to end through the fake: engines listed in the manifest, parity checked."""
    _, manifest = _export_with_fake(tmp_path, members, monkeypatch)
    (eng,) = manifest["engines"]
    assert eng["file"].startswith("engines/a.nvidia-h100") and eng["precision"] == "fp16"
    assert (tmp_path / "b" / eng["file"]).exists() and (tmp_path / "b" / eng["sidecar"]).exists()
    assert any(p["variant"] == "trt-fp16" and p["passed"] for p in manifest["members"][0]["parity"])
    # TensorRT 10 builds from the fp32 ONNX, so the bundle has no FP16 ONNX: the cache key of a
    # TensorRT run must come from the engines, and differ from every onnxruntime key
    b = load_bundle(tmp_path / "b")
    assert "fp16" not in b.members[0].files
    trt_key = b.key("fp16", "trt")
    assert trt_key not in {b.key("fp32", "ort-cpu"), b.key("fp32", "ort-cuda")}
    from reidkit.runtime.bundle_format import Manifest

    manifest["engines"][0]["sha256"] = "0" * 64  # another engine: another key
    Manifest.from_dict(manifest).write(tmp_path / "b")
    assert load_bundle(tmp_path / "b").key("fp16", "trt") != trt_key


def test_engine_sidecar_is_covered_by_the_manifest(tmp_path, members, monkeypatch):
    """The sidecar sets the batch profile the runtime trusts: a changed sidecar is refused."""
    from reidkit.runtime.backends import select, trt as trt_backend

    trt, manifest = _export_with_fake(tmp_path, members, monkeypatch)
    (eng,) = manifest["engines"]
    assert len(eng["sidecar_sha256"]) == 64
    # make this machine look like the one the engine was built on
    monkeypatch.setattr(trt_backend, "load_tensorrt", lambda hint="": trt)
    monkeypatch.setattr("reidkit.runtime.gpu.detect_gpus", lambda: [GPU])
    monkeypatch.setattr(trt_backend, "TensorRTBackend", lambda plan, **kw: TensorRTBackend(plan, trt=trt, cudart=FakeCudart(), gpu=GPU))
    import dataclasses

    from reidkit.runtime.backends.registry import BACKENDS

    monkeypatch.setitem(BACKENDS, "trt", dataclasses.replace(BACKENDS["trt"], probe=lambda: None))
    b = load_bundle(tmp_path / "b")
    assert len(select.make_backends(b, "trt")) == 1  # untouched: loads
    side = tmp_path / "b" / eng["sidecar"]
    doc = json.loads(side.read_text())
    doc["profile"]["max"][0] = 4096  # a bigger batch than the buffers the engine was built for
    side.write_text(json.dumps(doc))
    with pytest.raises(ReidkitError, match="sidecar .* does not match its manifest sha256"):
        select.make_backends(load_bundle(tmp_path / "b"), "trt")
