import json
import math

import numpy as np
import pytest
import torch

from conftest import cli
from reidkit.checkpoint_meta import read_member_metadata
from reidkit.train.heads import HeadConfig, MarginHead, dynamic_margins
from reidkit.train.losses import margin_loss


def test_dynamic_margins_follow_the_formula():
    m = dynamic_margins([1, 10, 100], a=0.5, lam=-0.125, b=0.05)
    assert torch.allclose(m, torch.tensor([0.5 * n ** -0.125 + 0.05 for n in (1, 10, 100)]))
    assert m[0] > m[1] > m[2]  # rare identities get larger margins


def test_subcenter_arcface_applies_the_margin_to_the_target_only():
    torch.manual_seed(0)
    head = MarginHead(HeadConfig(kind="subcenter_arcface", s=10.0, k=3), 8, [4, 4, 4, 4])
    emb, y = torch.randn(5, 8), torch.tensor([0, 1, 2, 3, 0])
    logits = head(emb, y)
    cos = head.cosine(emb)
    plain = cos * 10.0
    mask = torch.zeros_like(logits, dtype=torch.bool)
    mask[torch.arange(5), y] = True
    assert torch.allclose(logits[~mask], plain[~mask], atol=1e-5)
    theta = torch.acos(cos[mask].clamp(-1, 1))
    m = head.margins[y]
    expected = torch.where(theta + m < math.pi, torch.cos(theta + m), cos[mask] - torch.sin(math.pi - m) * m) * 10
    assert torch.allclose(logits[mask], expected, atol=1e-4)
    # sub-centres: the class cosine is the best of its K centres
    w = torch.nn.functional.normalize(head.weight, dim=1).view(4, 3, 8)
    e = torch.nn.functional.normalize(emb, dim=1)
    assert torch.allclose(cos, torch.einsum("bd,ckd->bck", e, w).amax(2), atol=1e-6)


def test_margin_head_stays_float32_under_autocast():
    """Mixed precision (CUDA trains under autocast) must not reach the margin arithmetic: on an
    H100 the fp16 cosines broke the scatter of the float32 margins. CPU autocast (bfloat16)
    takes the same path here."""
    torch.manual_seed(0)
    head = MarginHead(HeadConfig(kind="subcenter_arcface", s=10.0, k=2), 8, [3, 3, 3])
    emb, y = torch.randn(4, 8), torch.tensor([0, 1, 2, 0])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        mixed = head(emb.bfloat16(), y)
    assert mixed.dtype == torch.float32
    assert torch.allclose(mixed, head(emb.bfloat16().float(), y), atol=1e-6)


def test_cosface_and_focal():
    head = MarginHead(HeadConfig(kind="cosface", s=5.0, margin=0.3), 4, [2, 2])
    emb, y = torch.randn(3, 4), torch.tensor([0, 1, 0])
    logits = head(emb, y)
    cos = head.cosine(emb)
    assert torch.allclose(logits.gather(1, y[:, None]).squeeze(1), (cos.gather(1, y[:, None]).squeeze(1) - 0.3) * 5, atol=1e-5)
    ce = margin_loss(logits, y, "ce")
    focal = margin_loss(logits, y, "focal", gamma=2.0)
    assert 0 < focal < ce  # focal down-weights every example by (1-p)^gamma < 1


def test_reid_train_learns_on_orl_and_resumes(tmp_path):
    out = tmp_path / "m.safetensors"
    args = ["--data", "orl:1-12", "--val-identities", "s10,s11,s12", "--backbone", "resnet10t", "--image-size", "48x40",
            "--embedding-dim", "32", "--batch-size", "24", "--out", out, "--seed", "3"]
    cli("reid-train", *args, "--epochs", "2")
    meta = read_member_metadata(out)
    hist = meta["training"]["history"]
    assert len(hist) == 2 and meta["member"]["input_size"] == [48, 40] and meta["member"]["backbone"] == "resnet10t"
    assert meta["training"]["val_identities"] == ["s10", "s11", "s12"] and "mAP@20" in meta["metrics"]
    assert 0.0 < meta["training"]["untrained"]["mAP@20"] <= 1.0  # the same net before training, for comparison
    assert hist[1]["loss"] < hist[0]["loss"] * 1.05
    assert (tmp_path / "m.last.safetensors").exists()
    cli("reid-train", *args, "--epochs", "3", "--resume")
    meta2 = read_member_metadata(tmp_path / "m.last.safetensors")
    assert [h["epoch"] for h in meta2["resume"]["history"]] == [1, 2, 3]
    assert meta2["resume"]["history"][:2] == hist  # the first two epochs were not redone
    assert meta2["resume"]["untrained"] == meta["training"]["untrained"]  # carried over, not recomputed on a trained net


def test_checkpoint_loads_without_pickle(tmp_path, members):
    from reidkit.train.checkpoint import load_member

    model, doc = load_member(members[0])
    x = torch.randint(0, 256, (2, 112, 96, 3), dtype=torch.uint8)
    e = model(x)
    assert e.shape == (2, 32) and torch.allclose(e.norm(dim=1), torch.ones(2), atol=1e-5)
    # a pickle disguised as a checkpoint is refused before anything is deserialised
    evil = tmp_path / "evil.safetensors"
    evil.write_bytes(b"\x80\x04\x95" + b"\x00" * 64)
    from reidkit.errors import ReidkitError

    with pytest.raises(ReidkitError):
        load_member(evil)


def test_train_config_writes_ensemble(tmp_path):
    cfg = tmp_path / "ens.toml"
    cfg.write_text('''
data = "orl:1-6"
val_identities = "0"
epochs = 1
batch_size = 30
backbone = "resnet10t"
embedding_dim = 16
[[members]]
image_size = "32x32"
out = "a.safetensors"
[[members]]
image_size = "40x32"
seed = 5
weight = 0.5
out = "b.safetensors"
''')
    cli("reid-train", "--config", cfg)
    from reidkit.ensemble import read_ensemble

    ens = read_ensemble(tmp_path / "ensemble.toml")
    assert [e.checkpoint.name for e in ens] == ["a.safetensors", "b.safetensors"] and [e.weight for e in ens] == [1.0, 0.5]
    assert read_member_metadata(tmp_path / "b.safetensors")["member"]["input_size"] == [40, 32]


def test_trains_on_synth_without_changes(tmp_path, synth):
    cli("reid-train", "--data", synth / "metadata.csv", "--backbone", "resnet10t", "--image-size", "64x32", "--epochs", "1",
        "--embedding-dim", "16", "--batch-size", "32", "--out", tmp_path / "w.safetensors")
    assert read_member_metadata(tmp_path / "w.safetensors")["training"]["n_train_images"] > 50


def test_training_resize_is_the_runtime_resize():
    """One place for the host resize: training's dataset calls reidkit.imaging.resize_to."""
    from PIL import Image

    from reidkit.imaging import ResizePolicy, resize_to
    from reidkit.train.dataset import ReidDataset

    img = Image.fromarray(np.random.default_rng(0).integers(0, 255, (70, 50, 3), dtype=np.uint8))
    pol = ResizePolicy(interpolation="bicubic")
    ds = ReidDataset([img], [0], (40, 32), pol, augment=None)
    assert np.array_equal(ds[0][0].numpy(), resize_to(img, 40, 32, pol))


def test_select_last_keeps_the_last_epoch_and_best_the_top_validation_epoch(tmp_path):
    from safetensors.torch import load_file

    args = ["--data", "orl:1-8", "--val-identities", "0.25", "--backbone", "resnet10t", "--image-size", "40x32",
            "--embedding-dim", "16", "--batch-size", "20", "--epochs", "3", "--seed", "1"]
    last, best = tmp_path / "last.safetensors", tmp_path / "best.safetensors"
    cli("reid-train", *args, "--out", last)  # --select last is the default
    meta = read_member_metadata(last)
    assert meta["metrics"]["kept_epoch"] == 3 and meta["training"]["select"] == "last"
    # the validation people are two of the eight training people, drawn with the seed
    assert len(meta["training"]["val_identities"]) == 2 and set(meta["training"]["val_identities"]) <= {f"s{k}" for k in range(1, 9)}
    kept, resume = load_file(str(last)), load_file(str(tmp_path / "last.last.safetensors"))
    assert all(torch.equal(v, resume[k]) for k, v in kept.items() if k.startswith("net."))  # the final weights
    cli("reid-train", *args, "--out", best, "--select", "best")
    meta = read_member_metadata(best)
    scores = [h["mAP@20"] for h in meta["training"]["history"]]
    assert meta["metrics"]["kept_epoch"] == scores.index(max(scores)) + 1 and meta["metrics"]["mAP@20"] == max(scores)


def test_ema_saves_the_weight_average_leaves_training_alone_and_resumes(tmp_path, monkeypatch):
    from safetensors.torch import load_file

    args = ["--data", "orl:1-8", "--val-identities", "0.25", "--backbone", "resnet10t", "--image-size", "40x32",
            "--embedding-dim", "16", "--batch-size", "20", "--seed", "2"]
    plain, ema, resumed = tmp_path / "plain.safetensors", tmp_path / "ema.safetensors", tmp_path / "resumed.safetensors"
    cli("reid-train", *args, "--epochs", "3", "--out", plain)
    cli("reid-train", *args, "--epochs", "3", "--out", ema, "--ema", "0.9")
    p_last, e_kept, e_last = (load_file(str(f)) for f in (tmp_path / "plain.last.safetensors", ema, tmp_path / "ema.last.safetensors"))
    net = [k for k in e_kept if k.startswith("net.")]
    # the average does not steer training: the raw weights end where they end without it
    assert all(torch.equal(e_last[k], p_last[k]) for k in net)
    # what is saved is the average, not the last step
    assert all(torch.equal(e_kept[k], e_last[f"ema.{k}"]) for k in net)
    assert any(not torch.allclose(e_kept[k], e_last[k]) for k in net if e_kept[k].is_floating_point())
    assert read_member_metadata(ema)["training"]["config"]["ema"] == 0.9
    # resuming carries the average on: a run stopped after epoch 2 and resumed ends where the run in one go did
    import reidkit.train.loop as loop
    from reidkit.train.config import train_one

    kw = {"backbone": "resnet10t", "image_size": "40x32", "embedding_dim": 16, "batch_size": 20, "seed": 2, "epochs": 3,
          "val_identities": "0.25", "ema": 0.9, "progress": False}
    saves, real_save = [], loop.save_member

    def stop_in_epoch_3(path, *a, **k):
        saves.append(path)
        if len(saves) == 5:  # epoch 3's kept checkpoint: the process dies before it is written
            raise KeyboardInterrupt
        real_save(path, *a, **k)

    monkeypatch.setattr(loop, "save_member", stop_in_epoch_3)
    with pytest.raises(KeyboardInterrupt):
        train_one("orl:1-8", resumed, kw)
    monkeypatch.undo()
    assert read_member_metadata(tmp_path / "resumed.last.safetensors")["resume"]["epoch"] == 2
    train_one("orl:1-8", resumed, {**kw, "resume": True})
    r_kept = load_file(str(resumed))
    r_last = load_file(str(tmp_path / "resumed.last.safetensors"))
    assert all(torch.allclose(r_last[k], e_last[k], atol=1e-6) for k in net)  # the same run (augmentation draws included)
    assert all(torch.allclose(r_kept[k], e_kept[k], atol=1e-6) for k in net)  # and the same average
    # a resume state without an average cannot silently start one from the trained weights
    res = cli("reid-train", *args, "--epochs", "4", "--out", plain, "--ema", "0.9", "--resume", check=False)
    assert res.returncode == 2 and "without --ema" in res.stderr
    res = cli("reid-train", *args, "--epochs", "1", "--out", plain, "--ema", "1.0", check=False)
    assert res.returncode == 2 and "--ema" in res.stderr
