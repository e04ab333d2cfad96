"""The one home of the training defaults: ``reid train``'s options, the ensemble TOML and
:func:`reidkit.train.config.build_config` all read them from here. Light on purpose (no torch),
so ``reid train --help`` can show them instantly.
"""

from __future__ import annotations

from typing import Any

from reidkit.imaging import DECODE_HEADROOM

DEFAULTS: dict[str, Any] = {
    "backbone": "resnet18", "image_size": "112x96", "embedding_dim": 256, "epochs": 20, "batch_size": 32, "seed": 0,
    "device": "auto", "val_identities": "0.2", "select": "last", "head_kind": "subcenter_arcface", "subcenters": 2, "scale": 21.0, "margin": 0.3,
    "margin_a": 0.5, "margin_lambda": -0.125, "margin_b": 0.05, "loss": "ce", "focal_gamma": 2.0, "label_smoothing": 0.1,
    "lr": 1e-3, "head_lr": 1e-2, "warmup_epochs": 1.0, "ema": 0.0, "concat_stages": False, "resize": "stretch", "interpolation": "bilinear",
    "hflip": False, "pretrained": False, "weights": None, "workers": 0, "resume": False, "mean": None, "std": None,
    "metric_loss": "none", "metric_weight": 1.0, "metric_params": None, "samples_per_identity": 4,
    "decode_headroom": DECODE_HEADROOM,
}

# The pytorch-metric-learning losses of ``--metric-loss`` (reidkit.train.metric_losses), in the
# library's keyword names; ``miner_`` keys go to the miner. The library's defaults, except the
# triplet margin (its 0.05 is tiny next to the 0.2 of the FaceNet/re-ID recipes) and semi-hard mining.
METRIC_LOSS_PARAMS: dict[str, dict[str, Any]] = {
    "circle": {"m": 0.4, "gamma": 80},
    "triplet": {"margin": 0.2, "miner_margin": 0.2, "miner_type_of_triplets": "semihard"},
    "multisimilarity": {"alpha": 2.0, "beta": 50.0, "base": 0.5, "miner_epsilon": 0.1},
}
