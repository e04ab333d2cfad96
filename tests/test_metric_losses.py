"""Pair losses from pytorch-metric-learning (reid train --metric-loss): the factory builds the
library's classes with the asked-for parameters, batches hold P people x K images, each loss
trains through the CLI (and an ensemble TOML) and the checkpoint says which loss and how."""

import pytest
import torch

from conftest import cli
from reidkit.checkpoint_meta import read_member_metadata
from reidkit.errors import ReidkitError
from reidkit.train.metric_losses import create_metric_loss, identity_batches

TINY = ["--backbone", "resnet10t", "--image-size", "32x32", "--embedding-dim", "16", "--epochs", "1", "--batch-size", "8",
        "--val-identities", "0", "--device", "cpu"]


def test_factory_returns_the_library_classes_with_the_given_parameters():
    from pytorch_metric_learning import losses, miners

    circle = create_metric_loss("circle", {"m": 0.25, "gamma": 64})
    assert type(circle.loss) is losses.CircleLoss and circle.miner is None
    assert (circle.loss.m, circle.loss.gamma) == (0.25, 64)
    triplet = create_metric_loss("triplet", {"margin": 0.1, "miner_type_of_triplets": "hard"})
    assert type(triplet.loss) is losses.TripletMarginLoss and type(triplet.miner) is miners.TripletMarginMiner
    assert triplet.loss.margin == 0.1 and triplet.miner.type_of_triplets == "hard" and triplet.miner.margin == 0.2
    ms = create_metric_loss("multisimilarity", {"alpha": 3, "miner_epsilon": 0.05})
    assert type(ms.loss) is losses.MultiSimilarityLoss and type(ms.miner) is miners.MultiSimilarityMiner
    assert (ms.loss.alpha, ms.loss.beta, ms.miner.epsilon) == (3, 50.0, 0.05)
    with pytest.raises(ReidkitError, match="gamma, m"):
        create_metric_loss("circle", {"margin": 0.1})


def test_metric_loss_separates_identities_under_a_gradient_step():
    torch.manual_seed(0)
    emb = torch.randn(12, 8, requires_grad=True)
    y = torch.arange(4).repeat_interleave(3)
    loss_fn = create_metric_loss("multisimilarity")
    opt = torch.optim.SGD([emb], lr=0.5)
    first = float(loss_fn(emb, y).detach())
    for _ in range(20):
        opt.zero_grad()
        loss_fn(emb, y).backward()
        opt.step()
    assert float(loss_fn(emb, y).detach()) < first


def test_batches_hold_k_images_of_each_of_p_people():
    labels = [i // 10 for i in range(60)]  # 6 people x 10 images
    sampler = identity_batches(labels, batch_size=8, k=4, n_images=60)
    order = list(sampler)
    assert len(order) == 56  # one epoch ~ the data, in whole batches
    for b in range(0, len(order), 8):
        people = [labels[i] for i in order[b:b + 8]]
        assert sorted(people.count(p) for p in set(people)) == [4, 4]
    with pytest.raises(ReidkitError, match="multiple of K"):
        identity_batches(labels, batch_size=10, k=4, n_images=60)


@pytest.mark.parametrize("args, needle", [(["--metric-loss", "arcfacey"], "metric loss 'arcfacey' is not known"),
                                          (["--metric-loss", "circle", "--metric-param", "gama=3"], "not a parameter of the circle"),
                                          (["--head", "none"], "--head none trains on a metric loss alone")])
def test_bad_metric_loss_options_are_one_line_exit_2(tmp_path, args, needle):
    res = cli("reid-train", "--data", "orl:1-3", "--out", tmp_path / "m.safetensors", *TINY, *args, check=False)
    assert res.returncode == 2 and needle in res.stderr and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert not (tmp_path / "m.safetensors").exists()


@pytest.mark.slow
@pytest.mark.parametrize("loss, extra, loss_class, params", [
    ("triplet", ["--metric-weight", "0.5"], "TripletMarginLoss", {"margin": 0.2}),
    ("multisimilarity", ["--metric-param", "miner_epsilon=0.2"], "MultiSimilarityLoss", {"alpha": 2.0}),
])
def test_metric_loss_beside_the_head_trains_through_the_cli(tmp_path, loss, extra, loss_class, params):
    out = tmp_path / "m.safetensors"
    cli("reid-train", "--data", "orl:1-5", "--out", out, *TINY, "--metric-loss", loss, *extra)
    meta = read_member_metadata(out)
    rec = meta["metric_loss"]
    assert rec["name"] == loss and rec["loss"]["class"] == f"pytorch_metric_learning.losses.{loss_class}"
    assert params.items() <= rec["loss"]["params"].items()
    assert meta["head"]["kind"] == "subcenter_arcface"
    assert rec["weight"] == (0.5 if "0.5" in extra else 1.0)
    if loss == "multisimilarity":
        assert rec["miner"]["params"] == {"epsilon": 0.2}
    hist = meta["training"]["history"]
    assert len(hist) == 1 and hist[0]["loss"] > 0


@pytest.mark.slow
def test_ensemble_toml_takes_the_metric_loss(tmp_path):
    (tmp_path / "ens.toml").write_text(
        'data = "orl:1-4"\nbackbone = "resnet10t"\nimage_size = "32x32"\nembedding_dim = 16\nepochs = 1\nbatch_size = 8\n'
        'val_identities = "0"\ndevice = "cpu"\nmetric_loss = "triplet"\nmetric_params = {miner_type_of_triplets = "hard"}\n'
        '\n[[members]]\nseed = 1\nout = "a.safetensors"\n')
    cli("reid-train", "--config", tmp_path / "ens.toml")
    rec = read_member_metadata(tmp_path / "a.safetensors")["metric_loss"]
    assert rec["name"] == "triplet" and rec["miner"]["params"] == {"margin": 0.2, "type_of_triplets": "hard"}
    assert (tmp_path / "ensemble.toml").exists()


@pytest.mark.slow
def test_circle_loss_alone_trains_and_resumes(tmp_path):
    """No head: the resume state has no head tensors, and the sampler's draws carry on per epoch."""
    out = tmp_path / "m.safetensors"
    args = ["--data", "orl:1-4", "--out", out, *TINY, "--head", "none", "--metric-loss", "circle", "--metric-param", "m=0.3"]
    cli("reid-train", *args)
    meta = read_member_metadata(out)
    assert meta["head"]["kind"] == "none" and meta["metric_loss"]["loss"] == {
        "class": "pytorch_metric_learning.losses.CircleLoss", "params": {"m": 0.3, "gamma": 80}}
    first = meta["training"]["history"]
    cli("reid-train", *args, "--epochs", "2", "--resume")  # the last --epochs wins
    hist = read_member_metadata(out)["training"]["history"]
    assert [h["epoch"] for h in hist] == [1, 2] and hist[0] == first[0]
