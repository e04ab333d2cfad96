"""AOTInductor packages: compiled by reid-export, gated, and run by reid-infer.

On a CPU machine the same path compiles for the CPU (``--device cpu``); the GPU half of it is in
test_gpu.py. Compiling takes tens of seconds, so one member is compiled once for the module.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from conftest import cli, make_member

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def compiled(tmp_path_factory):
    d = tmp_path_factory.mktemp("aoti")
    ckpt = make_member(d / "m.safetensors", (64, 48), dim=16, seed=3)
    res = cli("reid-export", ckpt, "-o", d / "bundle", "--aoti", "--device", "cpu", "--aoti-batch", "4")
    return d / "bundle", res.stdout


def _scores(path):
    import csv

    with open(path, newline="") as fh:
        return {(r["query_id"], r["database_image_id"]): float(r["score"]) for r in csv.DictReader(fh)}


def test_export_compiles_gates_and_records_the_package(compiled):
    bundle, out = compiled
    assert "aoti-cpu-fp32" in out and "PASS" in out  # the parity table shows the package's row
    doc = json.loads((bundle / "manifest.json").read_text())
    (rec,) = doc["compiled"]
    assert rec["device"] == "cpu" and rec["precision"] == "fp32" and rec["batch"] == 4
    assert (bundle / rec["file"]).is_file() and rec["file"].startswith("compiled/")
    assert any(p["variant"] == "aoti-cpu-fp32" and p["passed"] for p in doc["members"][0]["parity"])


def test_the_engine_pads_and_slices_to_its_one_batch_and_matches_onnxruntime(compiled):
    from reidkit.runtime.backends.select import make_backends
    from reidkit.runtime.bundle import load_bundle

    b = load_bundle(compiled[0])
    (aoti,), (ort,) = make_backends(b, "aoti-cpu"), make_backends(b, "ort-cpu")
    m = b.members[0]
    x = np.random.default_rng(1).integers(0, 256, (9, m.height, m.width, 3), dtype=np.uint8)
    for n in (1, 3, 4, 9):  # short (padded), exact, and longer than the package's batch of 4 (sliced)
        got = aoti.run(x[:n])
        assert got.shape == (n, m.dim)
        np.testing.assert_allclose(got, ort.run(x[:n]), atol=1e-4)


def test_reid_infer_runs_the_package_and_ranks_like_onnxruntime(compiled, tmp_path, orl_split):
    bundle = compiled[0]
    q, g = orl_split / "query", orl_split / "gallery"
    res = cli("reid-infer", "--model", bundle, "--query", q, "--gallery", g, "-o", tmp_path / "a.csv", "--backend", "aoti-cpu")
    assert "engine: aoti-cpu fp32" in res.stdout
    cli("reid-infer", "--model", bundle, "--query", q, "--gallery", g, "-o", tmp_path / "o.csv", "--backend", "ort-cpu")
    a, o = _scores(tmp_path / "a.csv"), _scores(tmp_path / "o.csv")
    assert a.keys() == o.keys() and max(abs(a[k] - o[k]) for k in a) < 1e-4


def test_a_package_for_another_machine_or_a_changed_file_is_refused(compiled, tmp_path, orl_split):
    q, g = orl_split / "query", orl_split / "gallery"
    other = tmp_path / "other"
    shutil.copytree(compiled[0], other)
    doc = json.loads((other / "manifest.json").read_text())
    doc["compiled"][0]["target"] = "Some Other CPU"
    (other / "manifest.json").write_text(json.dumps(doc))
    res = cli("reid-infer", "--model", other, "--query", q, "--gallery", g, "-o", tmp_path / "x.csv", "--backend", "aoti-cpu", check=False)
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "no fp32 package compiled for" in res.stderr and "Some Other CPU" in res.stderr and "--aoti" in res.stderr
    changed = tmp_path / "changed"
    shutil.copytree(compiled[0], changed)
    pkg = changed / json.loads((changed / "manifest.json").read_text())["compiled"][0]["file"]
    pkg.write_bytes(pkg.read_bytes() + b"x")
    res = cli("reid-infer", "--model", changed, "--query", q, "--gallery", g, "-o", tmp_path / "y.csv", "--backend", "aoti-cpu", check=False)
    assert res.returncode == 2 and "does not match its manifest sha256" in res.stderr and "Traceback" not in res.stderr


def test_auto_times_the_package_beside_the_other_cpu_engines(compiled, tmp_path, monkeypatch):
    from reidkit.runtime.backends.select import select_backends
    from reidkit.runtime.bundle import load_bundle

    monkeypatch.setenv("REIDKIT_CACHE_DIR", str(tmp_path))
    sel = select_backends(load_bundle(compiled[0]))
    assert "aoti-cpu" in sel.reason and "images/s" in sel.reason  # it was among the engines timed
    assert sel.name in json.loads((tmp_path / "auto-backend.json").read_text()).popitem()[1]["images_per_s"]


def test_without_a_compiled_package_the_engine_says_how_to_make_one(bundle, tmp_path, orl_split):
    res = cli("reid-infer", "--model", bundle, "--query", orl_split / "query", "--gallery", orl_split / "gallery", "-o", tmp_path / "z.csv",
              "--backend", "aoti-cpu", check=False)
    assert res.returncode == 2 and "has no compiled members" in res.stderr and "--aoti" in res.stderr


def test_reid_bench_measures_the_package_against_the_torch_reference(compiled, tmp_path, orl_split):
    out = tmp_path / "report"
    cli("reid-bench", "--model", compiled[0], "--images", orl_split / "query", "--backends", "torch,aoti-cpu",
        "--batch-sizes", "4", "--max-images", "8", "--repeats", "1", "-o", out, "--checkpoints", compiled[0].parent / "m.safetensors")
    rows = {(r["backend"], r["precision"]): r for r in json.loads((out / "report.json").read_text())["rows"]}
    aoti = rows[("aoti-cpu", "fp32")]
    assert aoti["status"] == "works" and aoti["images_per_s"] > 0 and aoti["min_cos"] > 0.9999
    assert aoti["model_mb"] > 0  # the package compiled for this machine, not an ONNX file
