"""The engine sweep (`reid bench`), the headline comparison (`make bench`) and the seed-style baseline,
run as a user runs them."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import cli

from reidkit.bench.agreement import agreement

ROOT = Path(__file__).resolve().parent.parent


def _headline():
    """benchmarks/headline.py, the script `make bench` runs, loaded as a module."""
    spec = importlib.util.spec_from_file_location("headline", ROOT / "benchmarks" / "headline.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _strict_json(path: Path):
    def refuse(token):
        raise ValueError(f"{path} holds {token}, which is not JSON")
    return json.loads(path.read_text(), parse_constant=refuse)


def test_reid_bench_writes_a_report_with_parity_and_every_backend_accounted_for(tmp_path, bundle, members, synth):
    backends = ["torch", "ort-cpu", "trt"] + (["mnn"] if importlib.util.find_spec("MNN") else [])
    out = tmp_path / "report"
    cli("reid-bench", "--model", bundle, "--images", synth / "metadata.csv", "--backends", ",".join(backends),
              "--batch-sizes", "4,8", "--max-images", "16", "--repeats", "2", "-o", out,
              *[a for m in members for a in ("--checkpoints", m)])
    assert (out / "plots.png").stat().st_size > 0 and (out / "report.md").read_text().startswith("# reid-bench")
    report = _strict_json(out / "report.json")
    rows = {(r["backend"], r["precision"], r["batch"]): r for r in report["rows"]}
    assert report["reference"] == "torch fp32" and report["labelled"] and report["images"] == 16
    for bs in (4, 8):
        torch_row, fp32, int8 = rows[("torch", "fp32", bs)], rows[("ort-cpu", "fp32", bs)], rows[("ort-cpu", "int8", bs)]
        assert torch_row["status"] == fp32["status"] == "works" and torch_row["min_cos"] > 0.99999
        assert fp32["min_cos"] >= 0.99999 and fp32["top20_overlap"] > 0.99 and abs(fp32["map20_delta"]) < 1e-3
        assert int8["status"].startswith("works") and int8["min_cos"] < fp32["min_cos"]  # quantised: close, not equal
        assert fp32["images_per_s"] > 0 and fp32["p95_ms"] >= fp32["p50_ms"] > 0 and fp32["spread_pct"] is not None
        if "mnn" in backends:
            assert rows[("mnn", "fp32", bs)]["status"] == "works" and rows[("mnn", "fp32", bs)]["min_cos"] >= 0.99999
    trt = [r for r in report["rows"] if r["backend"] == "trt"]
    assert len(trt) == 1 and trt[0]["status"] == "failed" and "GPU" in trt[0]["reason"]  # listed with the reason, not dropped
    assert trt[0]["images_per_s"] is None  # NaN becomes null
    assert "failed (" in (out / "report.md").read_text()


def test_seed_baseline_and_reid_infer_give_the_same_submission(tmp_path, bundle, members, synth):
    scen, meta = synth / "query_scenarios.csv", synth / "metadata.csv"
    res = subprocess.run([sys.executable, ROOT / "benchmarks" / "seed_baseline.py", *members, "--scenarios", scen, "--metadata", meta,
                          "--out", tmp_path / "seed.csv"], capture_output=True, text=True, check=True)
    stages = json.loads(res.stdout.strip().splitlines()[-1])
    assert stages["images"] > 0 and all(stages[k] >= 0 for k in ("import", "decode", "embed", "rank", "total"))
    cli("reid-infer", "--model", bundle, "--scenarios", scen, "--metadata", meta, "-o", tmp_path / "ours.csv", "--backend", "ort-cpu", "--quiet")
    agree = agreement(tmp_path / "seed.csv", tmp_path / "ours.csv", synth / "labels.csv")
    assert agree["top20_overlap"] > 0.99 and agree["max_score_diff"] < 1e-4 and agree["true_matches_kept"] == 1.0


def test_bench_agreement_counts_the_true_matches_a_backend_drops_from_the_baselines_lists(tmp_path):
    head = "query_id,database_image_id,score\n"
    (tmp_path / "base.csv").write_text(head + "q1,t1,0.9\nq1,n1,0.8\nq1,t2,0.7\nq2,t3,0.9\nq2,n2,0.5\n")
    # q1 loses true match t2 to a non-match; q2 swaps one non-match for another
    (tmp_path / "cand.csv").write_text(head + "q1,t1,0.9\nq1,n1,0.8\nq1,n3,0.71\nq2,t3,0.9\nq2,n4,0.51\n")
    (tmp_path / "labels.csv").write_text("query_id,database_image_id\nq1,t1\nq1,t2\nq2,t3\nq2,t4\n")
    agree = agreement(tmp_path / "base.csv", tmp_path / "cand.csv", tmp_path / "labels.csv")
    assert agree["top20_overlap"] == pytest.approx((2 / 3 + 1 / 2) / 2)
    assert agree["true_matches_kept"] == pytest.approx(2 / 3)  # t4 was in neither list: not counted
    assert "true_matches_kept" not in agreement(tmp_path / "base.csv", tmp_path / "cand.csv")


def test_make_bench_export_keeps_the_variants_that_pass_and_names_the_one_that_failed(tmp_path, members):
    """An optional artefact that cannot be exported costs only its own columns, with the reason."""
    headline = _headline()
    ens = tmp_path / "ensemble.toml"
    ens.write_text(f'[[members]]\ncheckpoint = "{members[0].as_posix()}"\n')
    bundle = tmp_path / "bundle"
    failed = headline.export_bundle(ens, bundle, ["--int8", "--no-such-artefact"])  # the failing one last: the bundle is re-made without it
    assert list(failed) == ["--no-such-artefact"] and "no-such-artefact" in failed["--no-such-artefact"]
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert [m["onnx_int8"] for m in manifest["members"]] == ["a.int8.onnx"] and (bundle / "a.int8.onnx").exists()
    assert headline.export_bundle(ens, bundle, ["--int8"]) == {}
    parity = headline.int8_parity(bundle)  # what the report prints beside the INT8 columns
    assert list(parity) == ["a"] and 0.99 <= parity["a"] < 1.0
    # --int8-args reach the INT8 export (and only it): a bad one fails INT8 alone, with reid-export's own reason
    failed = headline.export_bundle(ens, tmp_path / "b2", ["--int8"], int8_args=["--int8-method", "nope"])
    assert list(failed) == ["--int8"] and "nope" in failed["--int8"]
    assert (tmp_path / "b2" / "manifest.json").exists() and not (tmp_path / "b2" / "a.int8.onnx").exists()


@pytest.mark.parametrize("method", [["--int8-method", "distil"], ["--int8-method=distil"]])
def test_make_bench_does_not_retry_a_variant_its_gate_refused(tmp_path, monkeypatch, method):
    """A gate refusal names its variants and is deterministic: re-running an hour-long INT8 distillation
    to learn the same thing is what the harness must not do."""
    headline = _headline()
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "bin" / "reid-export"
    fake.parent.mkdir()
    fake.write_text(f"""#!{sys.executable}
import sys
args = sys.argv[1:]
open({str(calls)!r}, "a").write(" ".join(args[3:]) + "\\n")
print("member  variant  ...  FAIL")  # the parity table goes to stdout
if "--int8" in args:
    sys.stderr.write("error: parity gate failed for a (onnx-int8); no bundle was written\\n")
    sys.exit(1)
""")
    fake.chmod(0o755)
    monkeypatch.setattr(headline, "BIN", fake.parent)
    failed = headline.export_bundle(tmp_path / "e.toml", tmp_path / "bundle", ["--int8", "--mnn"],
                                     int8_args=[*method, "--int8-steps", "5"])
    assert failed == {"--int8": "error: parity gate failed for a (onnx-int8); no bundle was written"}
    tried = calls.read_text().splitlines()
    twins = tmp_path / "int8-twins"  # a distillation keeps its twins, so the next attempt trains only what changed
    assert tried == [f"--int8 --mnn {' '.join(method)} --int8-steps 5 --int8-cache {twins} --overwrite", "--mnn --overwrite"]
    assert "parity gate failed" in (tmp_path / "bundle.export.log").read_text()  # the export's own words, kept
