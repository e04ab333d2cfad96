import csv
import json
import re
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from PIL import Image
import pytest

from conftest import BIN, cli
from corpus import EXPECTED, make_corpus
from reidkit.data.whaledo import read_metadata, read_scenarios
from reidkit.metrics import parse_submission


def _read(path):
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("backend", ["ort-cpu", "openvino", "mnn"])
def test_full_run_imports_no_torch(tmp_path, bundle, orl_split, backend):
    if backend in ("openvino", "mnn"):
        pytest.importorskip(backend.replace("mnn", "MNN"), reason=f"{backend} is an optional extra; make test installs it")
    code = f"""
import sys
from reidkit.cli import infer_cmd
try:
    infer_cmd(["--model", r"{bundle}", "--query", r"{orl_split / 'query'}", "--gallery", r"{orl_split / 'gallery'}",
               "-o", r"{tmp_path / 'r.csv'}", "--quiet", "--backend", "{backend}"])
except SystemExit as e:
    assert e.code in (0, None), e.code
heavy = sorted(m for m in sys.modules if m.split('.')[0] in ("torch", "timm", "torchvision") or m.startswith("MNN.tools"))
print("HEAVY", heavy)
"""
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "HEAVY []" in res.stdout, res.stdout
    assert (tmp_path / "r.csv").exists()


@pytest.mark.parametrize("backend, module, max_score_diff", [("openvino", "openvino", 1e-5), ("mnn", "MNN", 1e-4)])
def test_optional_cpu_engine_ranks_like_ort_cpu_with_its_own_cache(tmp_path, bundle, synth, backend, module, max_score_diff):
    pytest.importorskip(module, reason=f"{backend} is an optional extra; make test installs it")
    args = ["--model", bundle, "--scenarios", synth / "query_scenarios.csv", "--metadata", synth / "metadata.csv", "--quiet",
            "--cache", tmp_path / "c.sqlite"]
    ort_run = cli("reid-infer", *args, "-o", tmp_path / "ort.csv", "--backend", "ort-cpu")
    run = cli("reid-infer", *args, "-o", tmp_path / "other.csv", "--backend", backend)
    assert f"{backend} fp32" in run.stdout and "ort-cpu fp32" in ort_run.stdout
    assert "0 from cache" in run.stdout  # another engine's embeddings are never served
    assert re.match(r"\d+ images \(", run.stdout)  # nothing of the engine's own chatter on stdout (MNN has a banner)
    read = lambda p: {(r["query_id"], r["database_image_id"]): float(r["score"]) for r in csv.DictReader(open(p))}  # noqa: E731
    a, b = read(tmp_path / "ort.csv"), read(tmp_path / "other.csv")
    assert len(a) == len(b) > 0
    assert len(a.keys() & b.keys()) / len(a) > 0.99  # only near-ties at rank 20 may swap
    assert max(abs(a[k] - b[k]) for k in a.keys() & b.keys()) < max_score_diff


def test_help_is_fast():
    t = time.perf_counter()
    cli("reid-infer", "--help")
    assert time.perf_counter() - t < 5  # generous bound for loaded CI; the README gives the measured figure


def test_folder_mode_on_orl(tmp_path, bundle, orl_split):
    out = tmp_path / "r.csv"
    res = cli("reid-infer", "--model", bundle, "--query", orl_split / "query", "--gallery", orl_split / "gallery", "-o", out,
              "--top-k", "5", "--embeddings-out", tmp_path / "e.npz")
    rows = _read(out)
    assert len(rows) == 10 * 5
    assert {r["query_id"] for r in rows} == {f"s{k}/1.pgm" for k in range(31, 41)}
    by_q = defaultdict(list)
    for r in rows:
        by_q[r["query_id"]].append(float(r["score"]))
    assert all(s == sorted(s, reverse=True) for s in by_q.values())
    assert all(r["database_image_id"].count("/") == 1 for r in rows)
    data = np.load(tmp_path / "e.npz")
    assert data["embeddings"].shape == (100, 64) and len(data["ids"]) == 100
    assert "images/s" in res.stdout


def test_scenario_mode_equals_brute_force_numpy(tmp_path, bundle, synth):
    out = tmp_path / "sub.csv"
    cli("reid-infer", "--model", bundle, "--scenarios", synth / "query_scenarios.csv", "--metadata", synth / "metadata.csv",
        "-o", out, "--embeddings-out", tmp_path / "e.npz", "--quiet")
    rows = _read(out)
    meta = read_metadata(synth / "metadata.csv")
    scen = read_scenarios(synth / "query_scenarios.csv")
    parse_submission(rows, expected_queries=[q for s in scen for q, _ in s.queries])  # valid submission
    data = np.load(tmp_path / "e.npz")
    emb = dict(zip([str(i) for i in data["ids"]], data["embeddings"]))
    assert len(emb) == len({i for s in scen for i in s.database} | {img for s in scen for _, img in s.queries})
    got = defaultdict(list)
    for r in rows:
        got[r["query_id"]].append((r["database_image_id"], float(r["score"])))
    for s in scen:
        G = np.stack([emb[d] for d in s.database])
        for qid, img in s.queries:
            sims = G.astype(np.float64) @ emb[img].astype(np.float64)
            ranked = [(s.database[j], (sims[j] + 1) / 2) for j in np.argsort(-sims, kind="stable") if s.database[j] != img][:20]
            mine = got[qid]
            assert len(mine) == len(ranked) <= 20
            assert all(d != img for d, _ in mine)
            # scores equal the brute-force ones, rank by rank, and each pair's score is its own cosine
            assert np.allclose([x for _, x in mine], [x for _, x in ranked], atol=2e-6)
            lookup = {d: (float(emb[d] @ emb[img]) + 1) / 2 for d, _ in mine}
            assert all(abs(lookup[d] - x) < 2e-6 for d, x in mine)
            # identical rankings wherever the brute-force scores are not tied
            for (d1, x1), (d2, _) in zip(mine, ranked):
                if d1 != d2:
                    assert abs(lookup[d2] - x1) < 2e-6
    assert all(0 <= float(r["score"]) <= 1 for r in rows)


def test_scenario_mode_qe_and_dba_equal_their_definitions_in_numpy(tmp_path, bundle, synth):
    """The ORL recipe ranks with --qe 2 --dba 2 (research/orl-recipe/README.md): DBA replaces each
    database vector by the normalised mean of itself and its 2 nearest database vectors; QE adds to
    each query its 2 nearest augmented database vectors (never its own image) before the search."""
    base = ["--model", bundle, "--scenarios", synth / "query_scenarios.csv", "--metadata", synth / "metadata.csv", "--quiet"]
    cli("reid-infer", *base, "-o", tmp_path / "plain.csv")
    cli("reid-infer", *base, "-o", tmp_path / "qd.csv", "--qe", "2", "--dba", "2", "--embeddings-out", tmp_path / "e.npz")
    data = np.load(tmp_path / "e.npz")
    emb = {str(i): v.astype(np.float64) for i, v in zip(data["ids"], data["embeddings"])}
    got, plain = defaultdict(list), defaultdict(list)
    for r in _read(tmp_path / "qd.csv"):
        got[r["query_id"]].append((r["database_image_id"], float(r["score"])))
    for r in _read(tmp_path / "plain.csv"):
        plain[r["query_id"]].append(r["database_image_id"])
    unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True)  # noqa: E731
    reordered = 0
    for s in read_scenarios(synth / "query_scenarios.csv"):
        G = np.stack([emb[d] for d in s.database])
        A = unit(G[np.argsort(-(G @ G.T), axis=1, kind="stable")[:, :3]].mean(axis=1))
        for qid, img in s.queries:
            others = [j for j, d in enumerate(s.database) if d != img]
            q = emb[img] + A[others][np.argsort(-(A[others] @ emb[img]), kind="stable")[:2]].sum(axis=0)
            sims = A[others] @ unit(q)
            ranked = [(s.database[others[j]], (sims[j] + 1) / 2) for j in np.argsort(-sims, kind="stable")[:20]]
            assert len(got[qid]) == len(ranked)
            assert np.allclose([x for _, x in got[qid]], [x for _, x in ranked], atol=2e-6), qid
            reordered += [d for d, _ in got[qid]] != plain[qid]
    assert reordered > 0  # the options change rankings, so the comparison above is not plain vs plain


def test_cache_rerun_embeds_nothing(tmp_path, bundle, synth):
    args = ["--model", bundle, "--scenarios", synth / "query_scenarios.csv", "--metadata", synth / "metadata.csv", "--quiet",
            "--cache", tmp_path / "c.sqlite"]
    first = cli("reid-infer", *args, "-o", tmp_path / "a.csv")
    second = cli("reid-infer", *args, "-o", tmp_path / "b.csv")
    assert "0 from cache" in first.stdout
    assert " 0 embedded" in second.stdout.replace("(0 embedded", " 0 embedded")
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()


def test_int8_precision_ranks_like_fp32_and_keeps_its_own_cache(tmp_path, bundle, synth):
    args = ["--model", bundle, "--scenarios", synth / "query_scenarios.csv", "--metadata", synth / "metadata.csv", "--quiet",
            "--cache", tmp_path / "c.sqlite"]
    args += ["--backend", "ort-cpu"]
    fp32 = cli("reid-infer", *args, "-o", tmp_path / "fp32.csv")
    int8 = cli("reid-infer", *args, "-o", tmp_path / "int8.csv", "--precision", "int8")
    assert "ort-cpu fp32" in fp32.stdout and "ort-cpu int8" in int8.stdout
    assert "0 from cache" in int8.stdout  # fp32 embeddings are never served for int8
    a, b = _read(tmp_path / "fp32.csv"), _read(tmp_path / "int8.csv")
    assert [r["query_id"] for r in a] != [] and len(a) == len(b)
    top = lambda rows: {(r["query_id"], r["database_image_id"]) for r in rows}  # noqa: E731
    assert len(top(a) & top(b)) / len(top(a)) > 0.5  # random-init members: close scores, yet mostly the same top 20
    assert {r["query_id"] for r in a} == {r["query_id"] for r in b}


def test_precision_missing_from_bundle_names_the_export_flag(tmp_path, members, synth):
    cli("reid-export", members[0], "-o", tmp_path / "b")
    res = cli("reid-infer", "--model", tmp_path / "b", "--scenarios", synth / "query_scenarios.csv", "--metadata",
              synth / "metadata.csv", "-o", tmp_path / "s.csv", "--precision", "int8", check=False)
    assert res.returncode == 2 and "--int8" in res.stderr and "Traceback" not in res.stderr
    assert not (tmp_path / "s.csv").exists()


def _cache_rows(path: Path) -> int:
    try:
        with sqlite3.connect(str(path)) as db:
            return db.execute("SELECT COUNT(*) FROM emb").fetchone()[0]
    except sqlite3.Error:
        return 0


@pytest.fixture(scope="module")
def many_images(tmp_path_factory):
    """1,200 distinct images: enough work that a signal always lands mid-run, however fast the machine."""
    d = tmp_path_factory.mktemp("many") / "g"
    d.mkdir()
    rng = np.random.default_rng(0)
    for i in range(1200):
        Image.fromarray(rng.integers(0, 256, (112, 92), dtype=np.uint8), mode="L").save(d / f"{i:04d}.png")
    return d


def test_sigkill_then_rerun_gives_identical_output_without_re_embedding(tmp_path, bundle, many_images):
    base = ["--model", str(bundle), "--query", str(many_images), "--gallery", str(many_images), "--batch-size", "8", "--quiet"]
    clean = cli("reid-infer", *base, "-o", tmp_path / "clean.csv")
    total = int(clean.stdout.split(" images")[0])
    cache = tmp_path / "c.sqlite"
    proc = subprocess.Popen([str(BIN / "reid-infer"), *base, "-o", str(tmp_path / "resumed.csv"), "--cache", str(cache)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 120
    while _cache_rows(cache) < 40 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run finished before it could be killed"
    done = _cache_rows(cache)
    assert 40 <= done < total
    assert not (tmp_path / "resumed.csv").exists()  # no half-written output
    res = cli("reid-infer", *base, "-o", tmp_path / "resumed.csv", "--cache", cache)
    embedded = int(res.stdout.split("(")[1].split(" embedded")[0])
    assert embedded == total - done  # nothing finished is embedded twice
    assert (tmp_path / "resumed.csv").read_bytes() == (tmp_path / "clean.csv").read_bytes()


def test_sigint_stops_cleanly_and_says_how_to_resume(tmp_path, bundle, many_images):
    cache = tmp_path / "c.sqlite"
    proc = subprocess.Popen([str(BIN / "reid-infer"), "--model", str(bundle), "--query", str(many_images), "--gallery",
                             str(many_images), "--batch-size", "8", "--quiet", "-o", str(tmp_path / "r.csv"), "--cache", str(cache)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            # as from a terminal: a runner that starts tests in the background (bash `&`)
                            # has SIGINT ignored, and children inherit that
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    deadline = time.time() + 120
    while _cache_rows(cache) < 16 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, "the run finished before it could be interrupted"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "rerun the same command to resume" in err and "Traceback" not in err
    assert not (tmp_path / "r.csv").exists()


def test_bad_images_never_crash_a_batch_run(tmp_path, bundle):
    g = make_corpus(tmp_path / "corpus")
    res = cli("reid-infer", "--model", bundle, "--query", g, "--gallery", g, "-o", tmp_path / "r.csv", "--quiet", "--batch-size", "4")
    bad = {n for n, e in EXPECTED.items() if e != "ok"}
    for name in bad:
        assert f"skipped {g / name}:" in res.stderr
    ids = {r["query_id"] for r in _read(tmp_path / "r.csv")}
    assert ids == {n for n, e in EXPECTED.items() if e == "ok"}
    strict = cli("reid-infer", "--model", bundle, "--query", g, "--gallery", g, "-o", tmp_path / "s.csv", "--quiet", "--strict", check=False)
    assert strict.returncode == 1


def test_ids_that_need_quoting_survive_the_csv(tmp_path, bundle):
    for sub in ("q", "g"):
        (tmp_path / sub).mkdir()
        Image.new("RGB", (30, 30), (1, 2, 3)).save(tmp_path / sub / 'a,b "c".png')
        Image.new("RGB", (30, 30), (200, 2, 3)).save(tmp_path / sub / "plain.png")
    cli("reid-infer", "--model", bundle, "--query", tmp_path / "q", "--gallery", tmp_path / "g", "-o", tmp_path / "r.csv", "--quiet")
    rows = _read(tmp_path / "r.csv")
    assert {r["query_id"] for r in rows} == {'a,b "c".png', "plain.png"}


@pytest.mark.parametrize("args, needle", [
    (["--query", "nope", "--gallery", "nope"], "does not exist"),
    (["--scenarios", "x.csv"], "needs both"),
    ([], "choose one mode"),
])
def test_cli_errors_are_one_line_exit_2(tmp_path, bundle, args, needle):
    res = cli("reid-infer", "--model", bundle, *args, "-o", tmp_path / "r.csv", check=False)
    assert res.returncode == 2 and needle in res.stderr and "Traceback" not in res.stderr


def test_missing_bundle_and_debug_traceback(tmp_path):
    res = cli("reid-infer", "--model", tmp_path / "none", "--query", tmp_path, "--gallery", tmp_path, "-o", tmp_path / "r.csv", check=False)
    assert res.returncode == 2 and "reid-export" in res.stderr and "Traceback" not in res.stderr
    dbg = cli("reid-infer", "--model", tmp_path / "none", "--query", tmp_path, "--gallery", tmp_path, "-o", tmp_path / "r.csv", "--debug", check=False)
    assert "Traceback" in dbg.stderr


def test_eval_rejects_bad_submission_naming_the_row(tmp_path, synth):
    (tmp_path / "s.csv").write_text("query_id,database_image_id,score\nq,a,0.5\nq,a,0.4\n")
    res = cli("reid-eval", "--submission", tmp_path / "s.csv", "--labels", synth / "labels.csv", check=False)
    assert res.returncode == 2 and "row 2: duplicate" in res.stderr


def test_folder_mode_streams_rows_in_query_batches(tmp_path, bundle, orl_split, monkeypatch):
    """Ranked rows reach the CSV a query batch at a time (the first rows are written before the
    last batch is ranked), and the batched CSV is byte-identical to ranking all queries at once,
    with DBA + query expansion, an approximate index, and identity ranking. One embedder with a
    cache serves every run, so the images are embedded once."""
    import reidkit
    from reidkit.runtime import infer
    from reidkit.runtime.search import RankOptions

    events: list[str] = []
    for name in ("_rows", "identity_rows"):
        real = getattr(infer, name)
        monkeypatch.setattr(infer, name, lambda *a, _real=real: events.append("rank") or _real(*a))
    real_write = infer.write_rows

    def write(path, header, rows):
        def seen():
            for r in rows:
                events.append("write")
                yield r
        return real_write(path, header, seen())

    monkeypatch.setattr(infer, "write_rows", write)
    cases = [("image", {"qe": 1, "dba": 2}), ("image", {"ranking": RankOptions(index="hnsw")}), ("identity", {"dba": 2})]
    with reidkit.load_bundle(bundle).embedder("ort-cpu", cache=tmp_path / "cache.sqlite") as emb:
        for n, (by, kw) in enumerate(cases):
            run = lambda out: infer.run_folders(emb, orl_split / "query", orl_split / "gallery", out, top_k=5, by=by,  # noqa: E731
                                                progress=False, **kw)
            monkeypatch.setattr(infer, "QUERY_BATCH", 2048)
            events.clear()
            run(tmp_path / f"one{n}.csv")
            assert events.count("rank") == 1
            events.clear()
            monkeypatch.setattr(infer, "QUERY_BATCH", 3)
            summary = run(tmp_path / f"batched{n}.csv")
            assert events.count("rank") == 4, by  # 10 queries in batches of 3
            assert events.index("write") < len(events) - 1 - events[::-1].index("rank")  # written before the last batch was ranked
            assert (tmp_path / f"batched{n}.csv").read_bytes() == (tmp_path / f"one{n}.csv").read_bytes(), (by, kw)
            assert summary.rows == 50


def test_padded_batches_keep_one_shape_and_give_the_same_rows(bundle):
    """onnxruntime CUDA pads a short batch to the largest it has run (a new shape costs a cuDNN
    algorithm choice per member); the padding must never reach the rows it returns. The same
    code path runs here on the CPU provider."""
    from reidkit.runtime.backends.ort import OrtBackend
    from reidkit.runtime.bundle import load_bundle

    m = load_bundle(bundle).members[0]
    x = np.random.default_rng(1).integers(0, 256, (11, m.height, m.width, 3), dtype=np.uint8)
    padded = OrtBackend(m.onnx, "cpu", pad_batches=True)
    assert not OrtBackend(m.onnx, "cpu").pad_batches  # the CPU default: no wasted work
    shapes, real = [], padded.session

    class Spy:
        def run(self, names, feeds):
            shapes.append(feeds["images"].shape[0])
            return real.run(names, feeds)

    padded.session = Spy()
    out = np.concatenate([padded.run(x[:8]), padded.run(x[8:])])
    assert shapes == [8, 8] and out.shape[0] == 11
    assert np.allclose(out, OrtBackend(m.onnx, "cpu").run(x), atol=1e-5)


@pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this platform")
def test_a_process_confined_to_one_cpu_starts_one_inference_thread_per_engine(bundle):
    """A cpuset job (taskset, Slurm) must not start one thread per machine core on its one core."""
    code = """
import json, reidkit
from reidkit.cpus import usable_cpus
with reidkit.load_bundle({b!r}).embedder("ort-cpu") as emb:
    threads = [be.session.get_session_options().intra_op_num_threads for be in emb.backends]
    print(json.dumps({{"cpus": usable_cpus(), "ort": threads, "workers": emb.workers}}))
""".format(b=str(bundle))
    one = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         preexec_fn=lambda: os.sched_setaffinity(0, {min(os.sched_getaffinity(0))}))
    assert json.loads(one.stdout) == {"cpus": 1, "ort": [1, 1], "workers": 1}


def test_onnxruntime_io_binding_reuses_its_buffers_and_matches_plain_runs(bundle):
    """The GPU path binds device buffers once per shape; on the CPU the same code path can be checked."""
    from reidkit.runtime.backends.ort import OrtBackend

    from reidkit.runtime.bundle import load_bundle

    m = load_bundle(bundle).members[0]
    x = np.random.default_rng(2).integers(0, 256, (7, m.height, m.width, 3), dtype=np.uint8)
    plain, bound = OrtBackend(m.onnx, "cpu"), OrtBackend(m.onnx, "cpu", pad_batches=True)
    bound._bind = True  # what device="cuda" sets; here on CPU memory
    first = bound.run(x[:4])
    kept = bound._bound
    assert kept is not None
    np.testing.assert_allclose(bound.run(x[4:]), plain.run(x[4:]), atol=1e-5)  # padded to 4: the same buffers, refilled
    assert bound._bound is kept
    np.testing.assert_allclose(first, plain.run(x[:4]), atol=1e-5)
    np.testing.assert_allclose(bound.run(x), plain.run(x), atol=1e-5)  # a larger batch: new buffers for the new shape
    assert bound._bound is not kept
