"""The public Python API and the architecture rules it rests on."""

from __future__ import annotations

import ast
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import reidkit
from conftest import cli
from reidkit.errors import ReidkitError

ROOT = Path(__file__).resolve().parent.parent


def test_the_readme_snippet_on_paths_a_pil_image_and_an_array(tmp_path, bundle, orl_split):
    paths = sorted((orl_split / "gallery").rglob("*.pgm"))[:5]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    pil = Image.open(paths[0])  # greyscale: converted like a decoded file
    arr = np.asarray(Image.open(paths[1]).convert("RGB"))
    inputs = [str(paths[2]), pil, str(broken), arr, paths[3], np.zeros((4, 4), np.float32)]

    b = reidkit.load_bundle(bundle)
    with b.embedder(backend="ort-cpu", precision="fp32", cache=None) as emb:
        out = emb.embed(inputs)
    assert out.vectors.dtype == np.float32 and out.vectors.shape == (4, b.dim)
    assert np.allclose(np.linalg.norm(out.vectors, axis=1), 1, atol=1e-5)
    assert out.ids == [str(paths[2]), 1, 3, str(paths[3])]  # paths as given, positions for in-memory images
    assert out.positions.tolist() == [0, 1, 3, 4]
    (bad_id, reason), (arr_id, arr_reason) = out.skipped
    assert bad_id == str(broken) and reason and arr_id == 5 and "uint8" in arr_reason
    # an in-memory image embeds exactly like the file it came from
    with b.embedder(backend="ort-cpu") as emb:
        files = emb.embed([paths[0], paths[1]])
    assert np.abs(files.vectors - out.vectors[[1, 2]]).max() < 1e-6

    # the path rows equal reid-infer --embeddings-out
    cli("reid-infer", "--model", bundle, "--query", orl_split / "query", "--gallery", orl_split / "gallery", "-o", tmp_path / "m.csv",
        "--embeddings-out", tmp_path / "e.npz", "--backend", "ort-cpu", "--quiet")
    npz = np.load(tmp_path / "e.npz")
    by_id = dict(zip(npz["ids"].tolist(), npz["embeddings"]))
    for i, row in ((str(paths[2]), 0), (str(paths[3]), 3)):
        key = "gallery/" + Path(i).relative_to(orl_split / "gallery").as_posix()
        assert np.abs(by_id[key] - out.vectors[row]).max() < 1e-6


def test_rank_is_best_first_and_never_matches_a_query_to_itself(bundle, orl_split):
    gallery = sorted((orl_split / "gallery").rglob("*.pgm"))
    b = reidkit.load_bundle(bundle)
    with b.embedder(backend="ort-cpu") as emb:
        g = emb.embed(gallery)
        q = emb.embed(gallery[:3])
    matches = reidkit.rank(q, g, top_k=5)
    assert len(matches) == 3
    for qid, row in zip(q.ids, matches):
        assert len(row) == 5 and qid not in [gid for gid, _ in row]
        scores = [s for _, s in row]
        assert scores == sorted(scores, reverse=True)
        gid, cos = row[0]
        assert cos == pytest.approx(float(q.vectors[q.ids.index(qid)] @ g.vectors[g.ids.index(gid)]), abs=1e-5)
    # plain arrays work too: ids are row numbers
    assert reidkit.rank(q.vectors, g.vectors, top_k=2)[0][0][0] in range(len(gallery))


def test_embedder_closes_its_cache(tmp_path, bundle, orl_split):
    b = reidkit.load_bundle(bundle)
    with b.embedder(backend="ort-cpu", cache=tmp_path / "c.sqlite") as emb:
        emb.embed(sorted((orl_split / "query").rglob("*.pgm"))[:2])
        db = emb.cache.db
    with pytest.raises(sqlite3.ProgrammingError):
        db.execute("SELECT 1")


def _modules_after(code: str, env: dict | None = None) -> dict:
    res = subprocess.run([sys.executable, "-c", code + "\nimport json, sys\nprint('MODULES', json.dumps(sorted(sys.modules)))"],
                         capture_output=True, text=True, check=True, env=env)
    line = next(l for l in res.stdout.splitlines() if l.startswith("MODULES "))
    return {"modules": set(json.loads(line[8:])), "stdout": res.stdout, "stderr": res.stderr}


def test_import_reidkit_loads_no_engine():
    mods = _modules_after("import reidkit")["modules"]
    heavy = {m for m in mods if m.split(".")[0] in ("torch", "timm", "torchvision", "onnxruntime", "openvino", "MNN", "tensorrt", "faiss")}
    assert not heavy, heavy
    # choosing among engines (and finding a bundle's compiled packages) loads none of them either
    mods = _modules_after("import reidkit.runtime.backends.select, reidkit.runtime.backends.aoti")["modules"]
    assert not {m for m in mods if m.split(".")[0] in ("torch", "onnxruntime", "openvino", "MNN", "tensorrt")}


def _imports(path: Path, top_level_only: bool = False) -> list[str]:
    names = []
    tree = ast.parse(path.read_text(), str(path))
    for node in (tree.body if top_level_only else ast.walk(tree)):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names.append(node.module)
    return names


def test_the_runtime_imports_nothing_above_it_nor_torch():
    """Every import statement under reidkit/runtime, including those inside functions."""
    from reidkit.runtime.backends.registry import BACKENDS

    forbidden = ("reidkit.export", "reidkit.train", "reidkit.bench", "reidkit.cli", "reidkit.demo", "torch", "timm", "torchvision")
    # an engine whose table row needs torch (PyTorch's compiled packages) may import it, inside its constructor only
    torch_engines = {f"reidkit/runtime/backends/{b.module.rsplit('.', 1)[1]}.py" for b in BACKENDS.values() if b.extra == "train"}
    assert torch_engines == {"reidkit/runtime/backends/aoti.py"}
    found = [(p.relative_to(ROOT).as_posix(), name) for p in sorted((ROOT / "reidkit" / "runtime").rglob("*.py"))
             for name in _imports(p, top_level_only=p.relative_to(ROOT).as_posix() in torch_engines)
             if any(name == f or name.startswith(f + ".") for f in forbidden)]
    assert found == []
    assert "torch" in _imports(ROOT / "reidkit" / "runtime" / "backends" / "aoti.py")  # the exception is real, and only that
    # the scan sees function-level imports (so a lazy import of the export would be caught)
    assert "reidkit.runtime.embedder" in _imports(ROOT / "reidkit" / "runtime" / "bundle.py")


def test_unknown_backend_is_refused_by_name(bundle):
    from reidkit.runtime.backends.select import make_backends

    with pytest.raises(ReidkitError, match="unknown backend 'onnx'.*auto, trt, ort-cuda"):
        make_backends(reidkit.load_bundle(bundle), "onnx")
    with pytest.raises(ReidkitError, match="unknown backend"):
        reidkit.load_bundle(bundle).embedder(backend="tensorflow")


def test_every_table_row_loads_or_says_why(bundle):
    from reidkit.runtime.backends.registry import BACKENDS, CHOICES
    from reidkit.cli import infer_cmd

    choices = next(p for p in infer_cmd.params if p.name == "backend").type.choices
    assert tuple(choices) == CHOICES  # the CLI derives from the table
    status = reidkit.backends()
    assert set(status) == set(BACKENDS)
    assert status["ort-cpu"] is None and "GPU" in status["trt"]
    for name, why in status.items():
        if why is None:
            assert callable(getattr(BACKENDS[name].load_class(), "run"))


def test_auto_on_a_cpu_times_the_fast_engines_and_never_runs_onnxruntime(tmp_path, bundle, orl_split):
    pytest.importorskip("MNN", reason="mnn is an optional extra; make test installs it")
    pytest.importorskip("openvino", reason="openvino is an optional extra; make test installs it")
    env = {**os.environ, "REIDKIT_CACHE_DIR": str(tmp_path / "cache")}
    code = f"""
import reidkit
b = reidkit.load_bundle(r"{bundle}")
with b.embedder(backend="auto") as emb:
    out = emb.embed([r"{sorted((orl_split / 'query').rglob('*.pgm'))[0]}"])
    print("CHOSE", emb.backend_name, "|", emb.reason)
"""
    first = _modules_after(code, env)
    chose = next(l for l in first["stdout"].splitlines() if l.startswith("CHOSE"))
    name = chose.split()[1]
    assert name in ("mnn", "openvino") and "timed now" in chose
    assert "onnxruntime" not in first["modules"]  # onnxruntime is the fallback, never loaded when a faster engine runs
    record = json.loads((tmp_path / "cache" / "auto-backend.json").read_text())
    (rec,) = record.values()
    assert rec["choice"] == name and set(rec["images_per_s"]) == {"mnn", "openvino"}
    assert rec["images_per_s"][name] == max(rec["images_per_s"].values())
    again = _modules_after(code, env)  # remembered: no second timing
    assert f"CHOSE {name} | auto: {name}, fastest here when timed on" in again["stdout"]
    # the CLI says which engine ran and why
    res = cli("reid-infer", "--model", bundle, "--query", orl_split / "query", "--gallery", orl_split / "gallery", "-o", tmp_path / "m.csv",
              "--quiet", env=env)
    assert f"engine: {name} fp32 (auto: {name}" in res.stdout


def test_auto_falls_back_to_onnxruntime_when_nothing_faster_is_installed(tmp_path, bundle, orl_split):
    code = f"""
import sys
sys.modules["MNN"] = None
sys.modules["openvino"] = None
import reidkit
with reidkit.load_bundle(r"{bundle}").embedder() as emb:
    print("CHOSE", emb.backend_name, "|", emb.reason)
"""
    out = _modules_after(code, {**os.environ, "REIDKIT_CACHE_DIR": str(tmp_path)})["stdout"]
    assert "CHOSE ort-cpu | auto: ort-cpu, no faster CPU engine is usable here (pip install 'reidkit[mnn]', 'reidkit[openvino]')" in out


def test_written_ensemble_toml_survives_quotes_in_paths(tmp_path):
    from reidkit.ensemble import EnsembleEntry, read_ensemble, write_ensemble

    d = tmp_path / "it's \"here\""
    d.mkdir()
    ckpt = d / "m'1.safetensors"
    ckpt.write_bytes(b"")
    write_ensemble(tmp_path / "e.toml", [EnsembleEntry(ckpt, 0.5)])
    (e,) = read_ensemble(tmp_path / "e.toml")
    assert e.checkpoint == ckpt.resolve() and e.weight == 0.5


def test_backend_trt_without_a_gpu_says_so_in_runtime_terms(tmp_path, bundle, orl_split):
    res = cli("reid-infer", "--model", bundle, "--query", orl_split / "query", "--gallery", orl_split / "gallery", "-o", tmp_path / "m.csv",
              "--backend", "trt", check=False)
    assert res.returncode == 2 and not (tmp_path / "m.csv").exists()
    (line,) = res.stderr.strip().splitlines()
    assert line.startswith("error: --backend trt: ") and "GPU" in line and "reid-export" not in line


def test_auto_stops_timing_an_engine_many_times_slower_after_one_round():
    """A slow engine keeps its first round's figure; only the close ones are timed again."""
    import time
    from types import SimpleNamespace

    from reidkit.runtime.backends import select

    class Engine:
        def __init__(self, seconds):
            self.seconds, self.calls = seconds, 0

        def run(self, x):
            self.calls += 1
            time.sleep(self.seconds)
            return np.ones((len(x), 4), dtype=np.float32) / 2

    bundle = SimpleNamespace(members=[SimpleNamespace(size_key=(8, 8, "stretch"), height=8, width=8, weight=1.0)])
    fast, close, slow = Engine(0.01), Engine(0.025), Engine(0.3)
    rates = select._time(bundle, {"fast": [fast], "close": [close], "slow": [slow]}, "fp32", size=4)
    assert fast.calls == close.calls == 1 + select.ROUNDS  # warm-up, then every round
    assert slow.calls == 2  # warm-up and one round
    assert rates["fast"] > rates["close"] > rates["slow"] > 0 and rates["slow"] < rates["fast"] / select.SLOWER_DROPPED
