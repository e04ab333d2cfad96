"""The one home of the training defaults: ``reid train``'s options, the ensemble TOML and
:func:`reidkit.train.config.build_config` all read them from here. Light on purpose (no torch),
so ``reid train --help`` can show them instantly.
"""

from __future__ import annotations

from typing import Any

DEFAULTS: dict[str, Any] = {
    "backbone": "resnet18", "image_size": "112x96", "embedding_dim": 256, "epochs": 20, "batch_size": 32, "seed": 0,
    "device": "auto", "val_identities": "0.2", "select": "last", "head_kind": "subcenter_arcface", "subcenters": 2, "scale": 21.0, "margin": 0.3,
    "margin_a": 0.5, "margin_lambda": -0.125, "margin_b": 0.05, "loss": "ce", "focal_gamma": 2.0, "label_smoothing": 0.1,
    "lr": 1e-3, "head_lr": 1e-2, "warmup_epochs": 1.0, "ema": 0.0, "concat_stages": False, "resize": "stretch", "interpolation": "bilinear",
    "hflip": False, "pretrained": False, "weights": None, "workers": 0, "resume": False, "mean": None, "std": None,
}
