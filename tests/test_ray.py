"""Distributed embedding on Ray Data: same submission as a single process, on 2 CPUs, bounded time.

Ray start-up costs seconds, so the module shares one local cluster with fixed resources
(2 CPUs, no GPU), and the CLI run joins it by address. Every Ray call runs under a timeout:
a pipeline that hangs (the starved actor pool we once had) fails the test instead of
blocking CI.
"""

from __future__ import annotations

import csv
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import cli

ray = pytest.importorskip("ray", reason="the optional [ray] extra is not installed (pip install 'reidkit[ray]')")
TIMEOUT_S = 600


def _bounded(fn, *args, **kw):
    """Run ``fn`` in a thread; a run past TIMEOUT_S shuts Ray down and fails (never blocks)."""
    box: dict = {}

    def target():
        try:
            box["value"] = fn(*args, **kw)
        except BaseException as exc:  # re-raised in the test's thread
            box["error"] = exc

    t = threading.Thread(target=target, daemon=True)
    t.start()
    t.join(TIMEOUT_S)
    if t.is_alive():
        ray.shutdown()
        pytest.fail(f"the Ray pipeline did not finish in {TIMEOUT_S}s on a 2-CPU cluster (resource starvation?)")
    if "error" in box:
        raise box["error"]
    return box["value"]


@pytest.fixture(scope="module")
def cluster():
    ray.init(num_cpus=2, num_gpus=0, include_dashboard=False, log_to_driver=False)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()


@pytest.fixture(scope="module")
def synth600(tmp_path_factory) -> Path:
    from reidkit.data.synth import generate

    return generate(tmp_path_factory.mktemp("synth600") / "ds", n_images=600, n_identities=100, seed=11, n_scenarios=2, progress=False)


def test_plan_always_leaves_room_for_a_read_task():
    from reidkit.distributed.ray_embed import plan_resources

    for cpus in (1, 2, 3, 4, 16, 64):
        p = plan_resources(cpus)
        assert p.actors * p.actor_cpus + p.task_cpus <= cpus, cpus  # the pool never reserves every CPU
        assert p.actors >= 1 and p.threads >= 1
    two = plan_resources(2)
    assert (two.actors, two.actor_cpus) == (1, 1.0)  # 2 actors x 1 CPU starved the reads and hung
    gpu = plan_resources(8, gpus=2)
    assert gpu.actors == 2 and gpu.actor_gpus == 1.0 and gpu.actors * gpu.actor_cpus + gpu.task_cpus <= 8


def _read(path: Path) -> dict[str, list[tuple[str, float]]]:
    out: dict[str, list[tuple[str, float]]] = {}
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            out.setdefault(r["query_id"], []).append((r["database_image_id"], float(r["score"])))
    return out


def test_ray_submission_equals_the_single_process_one_on_two_cpus(tmp_path, bundle, synth600, cluster):
    args = ["--model", bundle, "--scenarios", synth600 / "query_scenarios.csv", "--metadata", synth600 / "metadata.csv", "--quiet"]
    single = cli("reid-infer", *args, "--backend", "ort-cpu", "-o", tmp_path / "plain.csv")
    res = cli("reid-infer", *args, "--backend", "ort-cpu", "--ray", cluster, "--ray-parquet", tmp_path / "emb",
              "-o", tmp_path / "ray.csv", timeout=TIMEOUT_S)
    n_images = single.stdout.split(" images")[0]  # the images the scenarios use
    assert res.stdout.startswith(f"{n_images} images ({n_images} embedded") and "on ray" in res.stdout
    plain, dist = _read(tmp_path / "plain.csv"), _read(tmp_path / "ray.csv")
    assert plain.keys() == dist.keys() and len(plain) > 100
    for q in plain:
        assert [g for g, _ in dist[q]] == [g for g, _ in plain[q]]  # top-20 overlap 1.0, same order
        np.testing.assert_allclose([s for _, s in dist[q]], [s for _, s in plain[q]], atol=1e-6)
    # the Parquet files hold every image once, with its content hash
    import pyarrow.dataset as pads

    t = pads.dataset(str(tmp_path / "emb"), format="parquet").to_table()
    assert t.num_rows == int(n_images) and {"id", "embedding", "content_hash"} <= set(t.column_names)
    from reidkit.runtime.bundle import load_bundle

    assert t.schema.field("embedding").type.list_size == load_bundle(bundle).dim


def test_python_entry_point_reports_bad_images_and_keeps_order(tmp_path, bundle, synth600, cluster):
    from reidkit.distributed.ray_embed import embed_paths
    from reidkit.runtime.bundle import load_bundle

    paths = sorted((synth600 / "images").glob("*.jpg"))[:40]
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"not a jpeg")
    inputs = paths[:20] + [bad] + paths[20:]
    r = _bounded(embed_paths, bundle, inputs, str(tmp_path / "pq"), backend="ort-cpu", batch_size=8)
    assert r.ids == [str(p) for p in inputs]
    assert [e[0] for e in r.errors] == [str(bad)]
    with load_bundle(bundle).embedder("ort-cpu") as emb:
        single = emb.embed(paths)
    ok = [i for i, p in enumerate(inputs) if p != bad]
    np.testing.assert_allclose(r.vectors[ok], single.vectors, atol=1e-6)


def test_ray_local_starts_its_own_cluster_and_writes_parquet_to_a_uri(tmp_path, bundle, orl_split):
    """``--ray local`` (no running cluster named) in folder mode, with ``--ray-parquet`` given as
    a URI (``file://``: pyarrow resolves it as it does ``s3://`` or ``gs://``)."""
    args = ["--model", bundle, "--query", orl_split / "query", "--gallery", orl_split / "gallery", "--backend", "ort-cpu", "--quiet"]
    cli("reid-infer", *args, "-o", tmp_path / "plain.csv")
    res = cli("reid-infer", *args, "--ray", "local", "--ray-parquet", f"file://{tmp_path}/emb", "-o", tmp_path / "ray.csv",
              timeout=TIMEOUT_S)
    assert "on ray" in res.stdout and "local" in res.stdout
    plain, dist = _read(tmp_path / "plain.csv"), _read(tmp_path / "ray.csv")
    assert plain.keys() == dist.keys() and len(plain) == 10
    for q in plain:
        assert [g for g, _ in dist[q]] == [g for g, _ in plain[q]]
        np.testing.assert_allclose([s for _, s in dist[q]], [s for _, s in plain[q]], atol=1e-6)
    import pyarrow.dataset as pads

    assert pads.dataset(str(tmp_path / "emb"), format="parquet").to_table().num_rows == 100


def test_boxes_on_camera_frames_embed_on_ray_as_in_one_process(tmp_path, bundle, cluster):
    """Boxes reach the Ray tasks, which crop and decode at the members' DCT scale exactly as the
    single-process runtime does: the same vectors, the same content keys, the same submission."""
    from reidkit.data.items import read_items
    from reidkit.distributed.ray_embed import embed_paths
    from reidkit.imaging import ImageRef
    from reidkit.runtime.bundle import load_bundle

    cam = tmp_path / "cam"
    cli("reid", "synth", cam, "--camera", "--camera-size", "1600x1200", "--images", "24", "--identities", "6", "--scenarios", "1")
    items = read_items(cam / "metadata.csv").items
    refs = [ImageRef(it.path, it.bbox) for it in items]
    whole = items[0].path  # the same photo unboxed: another item, keyed apart
    r = _bounded(embed_paths, bundle, [*refs, whole], str(tmp_path / "pq"), backend="ort-cpu", batch_size=8)
    assert r.ids[0] == f"{items[0].path} bbox [{', '.join(f'{v:g}' for v in items[0].bbox)}]" and r.ids[-1] == str(whole)
    assert not r.errors
    with load_bundle(bundle).embedder("ort-cpu") as emb:
        single = emb.embed([*refs, whole])
    np.testing.assert_allclose(r.vectors, single.vectors, atol=1e-6)
    assert r.content_hashes == single.keys and r.content_hashes[0] != r.content_hashes[-1]
    args = ["--model", bundle, "--scenarios", cam / "query_scenarios.csv", "--metadata", cam / "metadata.csv",
            "--backend", "ort-cpu", "--quiet"]
    cli("reid-infer", *args, "-o", tmp_path / "plain.csv")
    cli("reid-infer", *args, "--ray", cluster, "-o", tmp_path / "ray.csv", timeout=TIMEOUT_S)
    plain, dist = _read(tmp_path / "plain.csv"), _read(tmp_path / "ray.csv")
    assert plain.keys() == dist.keys() and plain
    for q in plain:
        assert [g for g, _ in dist[q]] == [g for g, _ in plain[q]]
        np.testing.assert_allclose([s for _, s in dist[q]], [s for _, s in plain[q]], atol=1e-6)
