"""Shared fixtures: members made without training (random init, fast), bundles, data."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent


def _pin_xdist_worker() -> None:
    """Under pytest-xdist (`make test` runs two workers), each worker and every process it starts
    keep to their own share of the cores. Unpinned, each worker's torch, onnxruntime and console
    scripts start one thread per machine core, and two workers on two cores wait on each other;
    pinned, reidkit's defaults (reidkit/cpus.py) and torch's OpenMP see one core each."""
    worker, count = os.environ.get("PYTEST_XDIST_WORKER", ""), int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if not worker.startswith("gw") or not hasattr(os, "sched_setaffinity"):
        return
    cpus = sorted(os.sched_getaffinity(0))
    if count <= len(cpus):
        os.sched_setaffinity(0, cpus[int(worker[2:])::count])


_pin_xdist_worker()  # before anything imports torch: its OpenMP pool is sized from the mask at load


def cli(name: str, *args: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    """Run a console script the way a user does; returns the completed process."""
    res = subprocess.run([str(BIN / name), *map(str, args)], capture_output=True, text=True, **kw)
    if check and res.returncode != 0:
        raise AssertionError(f"{name} {' '.join(map(str, args))} exited {res.returncode}\nstdout:\n{res.stdout}\nstderr:\n{res.stderr}")
    return res


def embed_with(bundle: Path, backend: str, precision: str = "fp32"):
    """Fused embeddings of 12 synthetic images through one backend, in two batch sizes
    through the same loaded model (so a backend that caches one shape is caught)."""
    import numpy as np

    from reidkit.data.synth import sample_images
    from reidkit.imaging import resize_to
    from reidkit.runtime.backends.select import make_backends
    from reidkit.runtime.bundle import load_bundle
    from reidkit.runtime.embedder import fuse

    b = load_bundle(bundle)
    imgs = sample_images(12, seed=5)
    parts = []
    for m, be in zip(b.members, make_backends(b, backend, precision=precision)):
        batch = np.stack([resize_to(im, m.height, m.width, m.resize) for im in imgs])
        parts += [np.concatenate([be.run(batch[:5]), be.run(batch[5:])])]
    return fuse(parts, [m.weight for m in b.members])


# What makes a test slow: it trains or exports real models, or starts a cluster. Such tests are
# marked `slow` here, by what they use, so `pytest -m "not slow"` is the fast tier a developer runs
# (under two minutes on two cores); `make test` runs everything.
SLOW_FIXTURES = frozenset({"members", "bundle", "lite0", "member", "cluster", "synth600", "page"})
SLOW_FILES = frozenset({"test_train.py", "test_export.py", "test_export_fp16.py", "test_distil_int8.py", "test_mnn.py",
                        "test_demo.py", "test_weights.py", "test_gpu.py", "test_ray.py", "test_openvino.py"})


def pytest_collection_modifyitems(config, items):
    from reidkit.runtime.gpu import detect_gpus

    for item in items:
        if SLOW_FIXTURES.intersection(getattr(item, "fixturenames", ())) or item.path.name in SLOW_FILES:
            item.add_marker(pytest.mark.slow)
    if detect_gpus():
        return
    skip = pytest.mark.skip(reason="needs an NVIDIA GPU (none found by the CUDA driver on this machine)")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def make_member(path: Path, size=(112, 96), dim=32, backbone="resnet10t", seed=0) -> Path:
    import torch

    from reidkit.train.checkpoint import save_member
    from reidkit.train.model import MemberConfig, ReidNet

    torch.manual_seed(seed)
    net = ReidNet(MemberConfig(backbone=backbone, input_size=size, embedding_dim=dim))
    # give BatchNorm non-trivial statistics so the network is not near-constant
    net.train()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(8, 3, *size))
    net.eval()
    save_member(path, net, {"head": {}, "num_classes": 0, "class_counts": [], "seed": seed, "training": {}})
    return path


@pytest.fixture(scope="session")
def members(tmp_path_factory) -> list[Path]:
    d = tmp_path_factory.mktemp("members")
    return [make_member(d / "a.safetensors", (112, 96), seed=1), make_member(d / "b.safetensors", (128, 112), seed=2)]


@pytest.fixture(scope="session")
def bundle(tmp_path_factory, members) -> Path:
    out = tmp_path_factory.mktemp("bundles") / "mean"
    import importlib.util

    mnn = ["--mnn"] if importlib.util.find_spec("MNN") else []  # the optional [mnn] extra; make test installs it
    cli("reid-export", *members, "-o", out, "--fp16", "--int8", *mnn)
    return out


@pytest.fixture(scope="session")
def synth(tmp_path_factory) -> Path:
    from reidkit.data.synth import generate

    return generate(tmp_path_factory.mktemp("synth") / "ds", n_images=120, n_identities=20, seed=3, n_scenarios=3, progress=False)


@pytest.fixture(scope="session")
def orl_split(tmp_path_factory) -> Path:
    from reidkit.demo import prepare

    d = tmp_path_factory.mktemp("orl") / "data"
    prepare(d)
    return d
