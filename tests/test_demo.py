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


def test_a_refused_int8_gate_is_one_line_with_the_figures_and_the_fix_never_an_error(tmp_path, capsys):
    from reidkit.demo import int8_skipped

    fake = tmp_path / "fake-export"  # what `reid export --int8` prints when the gate refuses
    fake.write_text("#!/bin/sh\n"
                    "echo 'member           variant    images    min cos   mean cos  max |err|              needs  status'\n"
                    "echo 'orl_lite0_112x96 onnx       24  0.9999999  1.0000000   1.00e-06    cos>=0.9999,err<=0.0001  PASS'\n"
                    "echo 'orl_lite0_112x96 onnx-int8  24  0.8712345  0.9500000   5.00e-02           cos>=0.99  FAIL'\n"
                    "echo 'error: parity gate failed for orl_lite0_112x96 (onnx-int8); no bundle was written' >&2\n"
                    "exit 1\n")
    fake.chmod(0o755)
    why = int8_skipped(str(fake), "--int8")
    assert why is not None and "orl_lite0_112x96 0.871" in why and "needs 0.99" in why and "--int8-method distil" in why and "--int8-labels" in why
    printed = capsys.readouterr()
    assert "error:" not in printed.out + printed.err + why
    ok = tmp_path / "ok-export"
    ok.write_text("#!/bin/sh\necho 'bundle written to b (1 members, flip=mean)'\n")
    ok.chmod(0o755)
    assert int8_skipped(str(ok)) is None
