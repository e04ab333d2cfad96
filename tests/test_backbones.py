"""Every timm feature layout trains, exports and runs on every CPU engine, at sizes that are not square.

timm's tiny ``test_*`` models cover the layouts in seconds: plain CNNs, a ViT (position
embedding built for the input size), MaxViT (windows and grids that must divide the feature
maps), and a Swin (channels-last feature maps, shifted windows). Each goes through the CLI as
a user would: ``reid train --weights`` from a file saved at the model's default size (timm
resamples what depends on the size), ``reid export --fp16 --mnn`` (every artefact through the
parity gate) and ``reid infer`` on onnxruntime, OpenVINO and MNN.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from pathlib import Path

import pytest

from conftest import cli
from reidkit.checkpoint_meta import read_member_metadata

# (backbone, HxW, whether its weights depend on the input size): each at a size its windows and
# patches take, none of them square. Swin is timm's smallest (there is no test_* Swin), at a
# small size so that it trains in seconds.
BACKBONES = [
    ("test_vit", "96x64", True),  # position embedding
    ("test_convnext", "64x96", False),
    ("test_maxvit", "96x64", True),  # relative-position tables of its windows
    ("test_efficientnet", "80x48", False),
    ("test_byobnet", "64x96", False),
    ("swin_tiny_patch4_window7_224", "64x32", True),  # ditto; and NHWC feature maps
]
ENGINES = ("ort-cpu", "openvino", "mnn")
SMALL = ["--data", "orl:1-3", "--val-identities", "0", "--epochs", "1", "--embedding-dim", "16", "--batch-size", "8",
         "--device", "cpu"]


@pytest.fixture(scope="module")
def faces(tmp_path_factory) -> tuple[Path, Path]:
    """Two ORL people the training never sees: one photo each as queries, the rest as the gallery."""
    from reidkit.data.orl import read_orl

    root = tmp_path_factory.mktemp("faces")
    (root / "q").mkdir()
    (root / "g").mkdir()
    for i, s in enumerate(read_orl([39, 40])):
        shutil.copy(s.path, root / ("q" if i % 10 == 0 else "g") / f"{s.identity}_{i}.pgm")
    return root / "q", root / "g"


def _scores(path: Path) -> dict[tuple[str, str], float]:
    with open(path, newline="") as fh:
        return {(r["query_id"], r["database_image_id"]): float(r["score"]) for r in csv.DictReader(fh)}


@pytest.mark.slow
@pytest.mark.parametrize("backbone,size,sized_weights", BACKBONES, ids=[b[0] for b in BACKBONES])
def test_backbone_trains_exports_and_runs_on_every_cpu_engine(tmp_path, faces, backbone, size, sized_weights):
    import onnx
    import timm
    from safetensors.torch import save_file

    weights = tmp_path / "start.safetensors"  # the whole network at timm's default size, as pretrained files come
    save_file({k: v.contiguous() for k, v in timm.create_model(backbone).state_dict().items()}, str(weights))
    ckpt, bundle = tmp_path / "m.safetensors", tmp_path / "bundle"
    cli("reid-train", *SMALL, "--backbone", backbone, "--image-size", size, "--weights", weights, "--out", ckpt)
    h, w = map(int, size.split("x"))
    meta = read_member_metadata(ckpt)
    assert meta["member"]["input_size"] == [h, w] and meta["pretrained_weights"]["file"] == weights.name
    assert ("resampled" in meta["pretrained_weights"]["match"]) == sized_weights  # by timm, when loaded

    cli("reid-export", ckpt, "-o", bundle, "--fp16", "--mnn")
    (member,) = json.loads((bundle / "manifest.json").read_text())["members"]
    assert {p["variant"]: p["passed"] for p in member["parity"]} == {"onnx-fp32": True, "onnx-fp16": True, "mnn-fp32": True}
    ops = {n.op_type for n in onnx.load(str(bundle / member["onnx"])).graph.node}
    assert "Resize" not in ops  # built for its input size: nothing is resampled at run time

    q, g = faces
    scores = {}
    for engine in ENGINES:
        out = tmp_path / f"{engine}.csv"
        cli("reid-infer", "--model", bundle, "--query", q, "--gallery", g, "-o", out, "--backend", engine)
        scores[engine] = _scores(out)
    ref = scores["ort-cpu"]
    assert len(ref) == 2 * 18  # every query against every gallery image (fewer than --top-k)
    for engine in ENGINES[1:]:
        assert scores[engine].keys() == ref.keys()
        assert max(abs(scores[engine][k] - ref[k]) for k in ref) < 1e-4, engine


def test_a_size_the_backbone_cannot_take_is_refused_before_any_data_is_read(tmp_path):
    import torch

    from reidkit.train.model import MemberConfig, ReidNet

    missing = tmp_path / "no-such-folder"  # were the data read first, the error would be about this
    res = cli("reid-train", "--data", missing, "--backbone", "test_maxvit", "--image-size", "112x96", "--out",
              tmp_path / "m.safetensors", check=False)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and "112x96" in lines[0] and "no-such-folder" not in lines[0], res.stderr
    named = [(int(a), int(b)) for a, b in re.findall(r"(\d+)x(\d+)", lines[0].split("nearest sizes")[-1])]
    assert named, lines[0]
    for size in named:  # what it names does work
        net = ReidNet(MemberConfig(backbone="test_maxvit", input_size=size, embedding_dim=8)).eval()
        with torch.no_grad():
            assert net(torch.zeros(1, 3, *size)).shape == (1, 8)
    assert not (tmp_path / "m.safetensors").exists()


def test_an_ensemble_refuses_a_bad_member_size_before_training_the_first(tmp_path):
    (tmp_path / "ens.toml").write_text(
        'data = "orl:1-3"\nepochs = 1\n'
        '[[members]]\nbackbone = "test_convnext"\nimage_size = "64x48"\nout = "a.safetensors"\n'
        '[[members]]\nbackbone = "test_vit"\nimage_size = "100x70"\nout = "b.safetensors"\n')
    res = cli("reid-train", "--config", tmp_path / "ens.toml", check=False)
    assert res.returncode == 2, res.stderr
    assert "member 2" in res.stderr and "100x70" in res.stderr and "96x64" in res.stderr
    assert not (tmp_path / "a.safetensors").exists()  # nothing was trained


def test_mnn_runs_the_exact_gelu_not_its_tanh_approximation(tmp_path):
    """Transformers' MLPs use the exact (erf) GELU; MNN's converter would fuse it into its tanh
    approximation (up to 5e-4 off per value), which fails the fp32 gate on MaxViT."""
    pytest.importorskip("MNN", reason="MNN is the optional [mnn] extra; make test installs it")
    import numpy as np
    import torch

    from reidkit.export.mnn_convert import convert_mnn
    from reidkit.runtime.backends.mnn import MnnBackend

    class Gelu(torch.nn.Module):
        def forward(self, images: torch.Tensor) -> torch.Tensor:
            x = images.float() / 255 * 8 - 4  # GELU's whole curved range, [-4, 4]
            return torch.nn.functional.gelu(x).flatten(1)

    src, dst = tmp_path / "gelu.onnx", tmp_path / "gelu.mnn"
    batch = np.random.default_rng(0).integers(0, 256, (4, 8, 8, 3), dtype=np.uint8)
    torch.onnx.export(Gelu(), (torch.from_numpy(batch),), str(src), input_names=["images"], output_names=["embedding"],
                      dynamic_axes={"images": {0: "batch"}, "embedding": {0: "batch"}}, opset_version=17, dynamo=False)
    convert_mnn(src, dst)
    ref = Gelu()(torch.from_numpy(batch)).numpy()
    assert np.abs(MnnBackend(dst, threads=1).run(batch) - ref).max() < 1e-5
