"""Load and faults: a cache shared by concurrent runs, caches that must be refused, a full disk."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import uuid
from pathlib import Path

import pytest

from conftest import BIN, cli


def _scenario_args(bundle: Path, synth: Path, out: Path) -> list[str]:
    return ["--model", str(bundle), "--scenarios", str(synth / "query_scenarios.csv"), "--metadata", str(synth / "metadata.csv"),
            "--quiet", "--batch-size", "4", "-o", str(out)]


def test_two_runs_sharing_one_cache_both_finish_with_solo_outputs(tmp_path, bundle, synth):
    solo = tmp_path / "solo.csv"
    cli("reid-infer", *_scenario_args(bundle, synth, solo))
    cache = tmp_path / "shared.sqlite"
    procs = [subprocess.Popen([str(BIN / "reid-infer"), *_scenario_args(bundle, synth, tmp_path / f"run{i}.csv"), "--cache", str(cache)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    results = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, results):
        assert p.returncode == 0, err
    for i in range(2):
        assert (tmp_path / f"run{i}.csv").read_bytes() == solo.read_bytes()
    # both wrote into the cache at the same time; it is whole, and a third run embeds nothing
    with sqlite3.connect(cache) as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    third = cli("reid-infer", *_scenario_args(bundle, synth, tmp_path / "third.csv"), "--cache", cache)
    assert " 0 embedded" in third.stdout.replace("(0 embedded", " 0 embedded")
    assert (tmp_path / "third.csv").read_bytes() == solo.read_bytes()


def _snapshot(cache: Path) -> object:
    """What the cache holds: its rows and stamps for an SQLite file (SQLite itself may bump header
    counters when a file is merely opened), its bytes for anything else."""
    try:
        with sqlite3.connect(f"file:{cache}?mode=ro", uri=True) as db:
            return (list(db.iterdump()), db.execute("PRAGMA user_version").fetchone(), db.execute("PRAGMA application_id").fetchone())
    except sqlite3.DatabaseError:
        return cache.read_bytes()


def _refused(tmp_path: Path, bundle: Path, synth: Path, cache: Path) -> str:
    before = _snapshot(cache)
    res = cli("reid-infer", *_scenario_args(bundle, synth, tmp_path / "r.csv"), "--cache", cache, check=False)
    assert res.returncode == 2, res.stderr
    assert "Traceback" not in res.stderr and str(cache) in res.stderr
    assert "delete" in res.stderr and "--cache" in res.stderr  # the fix: delete it or point --cache elsewhere
    assert _snapshot(cache) == before  # never modified, never used
    assert not (tmp_path / "r.csv").exists()
    return res.stderr


def test_cache_that_is_not_sqlite_is_refused(tmp_path, bundle, synth):
    cache = tmp_path / "c.sqlite"
    cache.write_bytes(os.urandom(8192))
    assert "not a readable reidkit cache" in _refused(tmp_path, bundle, synth, cache)


def test_cache_from_another_reidkit_format_is_refused(tmp_path, bundle, synth):
    cache = tmp_path / "c.sqlite"
    cli("reid-infer", *_scenario_args(bundle, synth, tmp_path / "first.csv"), "--cache", cache)
    with sqlite3.connect(cache) as db:
        db.execute("PRAGMA user_version=99")
    assert "format 99" in _refused(tmp_path, bundle, synth, cache)


def test_unversioned_cache_of_reidkit_0_1_is_refused(tmp_path, bundle, synth):
    cache = tmp_path / "c.sqlite"
    with sqlite3.connect(cache) as db:  # the table reidkit 0.1.0 created, with no format stamp
        db.execute("CREATE TABLE emb (ns TEXT, key TEXT, vec BLOB, PRIMARY KEY (ns, key))")
    assert "older reidkit" in _refused(tmp_path, bundle, synth, cache)


def test_sqlite_file_of_another_application_is_refused(tmp_path, bundle, synth):
    cache = tmp_path / "c.sqlite"
    with sqlite3.connect(cache) as db:
        db.execute("CREATE TABLE photos (id INTEGER)")
    assert "not a reidkit embedding cache" in _refused(tmp_path, bundle, synth, cache)


def test_damaged_cache_is_refused(tmp_path, bundle, synth):
    cache = tmp_path / "c.sqlite"
    cli("reid-infer", *_scenario_args(bundle, synth, tmp_path / "first.csv"), "--cache", cache)
    with sqlite3.connect(cache) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(cache.read_bytes())
    page = 4096
    assert len(data) > 4 * page
    data[2 * page + 8: 3 * page] = os.urandom(page - 8)  # scribble over a b-tree page, keep the header
    cache.write_bytes(bytes(data))
    err = _refused(tmp_path, bundle, synth, cache)
    assert "damaged" in err or "not a readable" in err


@pytest.fixture
def tiny_fs(tmp_path):
    """A real 64 KiB tmpfs (needs root and mount); skipped, naming why, where it cannot be mounted."""
    d = tmp_path / f"full-{uuid.uuid4().hex[:6]}"
    d.mkdir()
    res = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(d)], capture_output=True, text=True)
    if res.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs to fill (needs root): {res.stderr.strip()}")
    try:
        yield d
    finally:
        subprocess.run(["umount", str(d)], check=True)


def test_full_disk_leaves_no_partial_output_and_says_why(tmp_path, bundle, synth, tiny_fs):
    out = tiny_fs / "results.csv"
    res = cli("reid-infer", "--model", bundle, "--query", synth / "images", "--gallery", synth / "images", "--quiet",
              "-o", out, check=False)
    assert res.returncode == 2, res.stderr
    assert "no space left on device" in res.stderr and str(out) in res.stderr and "Traceback" not in res.stderr
    assert list(tiny_fs.iterdir()) == []  # neither the output nor its temporary file is left
