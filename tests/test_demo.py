"""The demo's training protocol: pretrained members, nothing of s31-s40 before the final evaluation."""

import hashlib

import pytest

from conftest import cli
from reidkit.checkpoint_meta import read_member_metadata
from reidkit.demo import MEMBERS, UNSEEN, train_config
from reidkit.train.pretrained import pretrained_weights


@pytest.mark.slow
def test_demo_checkpoints_name_their_weights_and_never_see_the_unseen_people(tmp_path):
    cfg = tmp_path / "ensemble_train.toml"
    cfg.write_text(train_config(epochs=1))  # the demo's own config, one epoch
    cli("reid-train", "--config", cfg)
    unseen = {f"s{k}" for k in UNSEEN}
    for backbone, _size, _seed, out in MEMBERS:
        meta = read_member_metadata(tmp_path / out)
        weights = pretrained_weights(backbone)
        assert meta["pretrained_weights"]["file"] == weights.name
        assert meta["pretrained_weights"]["sha256"] == hashlib.sha256(weights.read_bytes()).hexdigest()
        val = set(meta["training"]["val_identities"])
        assert val and not val & unseen and val <= {f"s{k}" for k in range(1, 31)}
        # s31-s40 were not in the data at all: 30 people x 10 images between training and validation
        assert meta["training"]["n_train_images"] + meta["training"]["n_val_images"] == 300
        assert meta["training"]["select"] == "last"
    assert (tmp_path / "ensemble.toml").exists()
