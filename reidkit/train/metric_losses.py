"""Pair-based metric-learning losses on the embeddings, from pytorch-metric-learning, chosen by name.

They complement (or replace, with ``--head none``) the margin heads: a margin head learns one
centre per training identity, while these losses compare the embeddings of a batch with each
other, which is how the network is used at inference (unseen identities, ranked by cosine).
A pair loss needs positives in every batch, so training with one switches the loader to
pytorch-metric-learning's MPerClassSampler (P identities x K images).

One factory, driven by a name (as timm's ``create_model``): ``create_metric_loss("circle",
{"m": 0.25})``. Parameters are the library's own keyword names; a ``miner_`` prefix sends one to
the miner. Defaults live in :data:`reidkit.train.defaults.METRIC_LOSS_PARAMS`.
"""

from __future__ import annotations

import ast
import inspect
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from reidkit.errors import ReidkitError
from reidkit.train.defaults import METRIC_LOSS_PARAMS

# name -> (pytorch_metric_learning.losses class, pytorch_metric_learning.miners class or None)
METRIC_LOSSES: dict[str, tuple[str, str | None]] = {
    "circle": ("CircleLoss", None),
    "triplet": ("TripletMarginLoss", "TripletMarginMiner"),
    "multisimilarity": ("MultiSimilarityLoss", "MultiSimilarityMiner"),
}
MINER_PREFIX = "miner_"


def metric_loss_names() -> list[str]:
    return ["none", *METRIC_LOSSES]


def _value(text: str) -> Any:
    """'0.25' -> 0.25, '256' -> 256, 'semihard' -> 'semihard', 'true' -> True."""
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text


def parse_params(value: Any) -> dict[str, Any]:
    """KEY=VALUE strings (CLI, repeated) or a table (TOML) -> a dict of keyword arguments."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    items = [value] if isinstance(value, str) else list(value)
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = str(item).partition("=")
        if not sep or not key.strip():
            raise ReidkitError(f"--metric-param {item!r}: write KEY=VALUE, e.g. m=0.25 or miner_epsilon=0.1")
        out[key.strip()] = _value(text.strip())
    return out


def _accepted(cls: type) -> dict[str, Any]:
    """The class's own keyword parameters and their defaults (not the **kwargs it passes on)."""
    sig = inspect.signature(cls.__init__)  # type: ignore[misc]
    return {n: p.default for n, p in sig.parameters.items()
            if n != "self" and p.kind not in (p.VAR_KEYWORD, p.VAR_POSITIONAL) and p.default is not p.empty}


@dataclass
class MetricLossConfig:
    name: str = "none"
    weight: float = 1.0
    params: dict[str, Any] = field(default_factory=dict)  # the user's overrides of METRIC_LOSS_PARAMS[name]
    samples_per_identity: int = 4  # K of the P x K batches

    def to_dict(self) -> dict[str, Any]:
        """What the checkpoint records: the library classes and every parameter they were built with."""
        if self.name == "none":
            return {"name": "none"}
        loss_cls, miner_cls = _classes(self.name)
        loss_kw, miner_kw = _split(self.name, self.params)
        doc: dict[str, Any] = {"name": self.name, "weight": self.weight, "samples_per_identity": self.samples_per_identity,
                               "loss": {"class": f"pytorch_metric_learning.losses.{loss_cls.__name__}",
                                        "params": {**_accepted(loss_cls), **loss_kw}}}
        if miner_cls is not None:
            doc["miner"] = {"class": f"pytorch_metric_learning.miners.{miner_cls.__name__}",
                            "params": {**_accepted(miner_cls), **miner_kw}}
        return doc


def _classes(name: str) -> tuple[type, type | None]:
    if name not in METRIC_LOSSES:
        raise ReidkitError(f"metric loss {name!r} is not known; use one of: {', '.join(metric_loss_names())}")
    from pytorch_metric_learning import losses, miners

    loss_name, miner_name = METRIC_LOSSES[name]
    return getattr(losses, loss_name), (getattr(miners, miner_name) if miner_name else None)


def _split(name: str, params: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Defaults + overrides, split into the loss's and the miner's keyword arguments, checked
    against the library's signatures so a misspelt key fails before any training."""
    loss_cls, miner_cls = _classes(name)
    merged = {**METRIC_LOSS_PARAMS.get(name, {}), **params}
    loss_kw = {k: v for k, v in merged.items() if not k.startswith(MINER_PREFIX)}
    miner_kw = {k[len(MINER_PREFIX):]: v for k, v in merged.items() if k.startswith(MINER_PREFIX)}
    allowed = set(_accepted(loss_cls)) | {MINER_PREFIX + k for k in (_accepted(miner_cls) if miner_cls else {})}
    unknown = sorted(set(loss_kw) - set(_accepted(loss_cls))) + sorted(
        MINER_PREFIX + k for k in set(miner_kw) - set(_accepted(miner_cls) if miner_cls else {}))
    if unknown:
        raise ReidkitError(f"--metric-param {', '.join(unknown)}: not a parameter of the {name} loss; "
                           f"it takes {', '.join(sorted(allowed))}")
    return loss_kw, miner_kw


class MetricLoss(nn.Module):
    """The library loss (and its miner, if any) on float32 embeddings, outside autocast: the
    losses exponentiate scaled similarities (CircleLoss: gamma=80), which overflow in fp16."""

    def __init__(self, loss: nn.Module, miner: nn.Module | None) -> None:
        super().__init__()
        self.loss, self.miner = loss, miner

    def forward(self, emb: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        with torch.autocast(emb.device.type, enabled=False):
            emb = emb.float()
            tuples = self.miner(emb, labels) if self.miner is not None else None
            out: torch.Tensor = self.loss(emb, labels, tuples)
            return out


def create_metric_loss(name: str, params: Mapping[str, Any] | None = None) -> MetricLoss:
    """The pytorch-metric-learning loss called ``name`` (circle, triplet, multisimilarity),
    built with :data:`METRIC_LOSS_PARAMS` updated by ``params``."""
    loss_cls, miner_cls = _classes(name)
    loss_kw, miner_kw = _split(name, params or {})
    try:
        loss = loss_cls(**loss_kw)
        miner = miner_cls(**miner_kw) if miner_cls is not None else None
    except (TypeError, ValueError, AssertionError) as exc:
        raise ReidkitError(f"--metric-loss {name}: the library refused the parameters ({exc})") from None
    return MetricLoss(loss, miner)


def identity_batches(labels: Iterable[int], batch_size: int, k: int, n_images: int) -> Any:
    """MPerClassSampler for P x K batches (P = batch_size // k identities, k images each; an
    identity with fewer images is drawn with replacement), one epoch as long as the data."""
    from pytorch_metric_learning.samplers import MPerClassSampler

    labels = list(labels)
    n_ids = len(set(labels))
    if k < 2:
        raise ReidkitError(f"--samples-per-identity {k}: a pair loss needs at least 2 images of a person per batch")
    if batch_size % k or batch_size // k < 2:
        raise ReidkitError(f"--batch-size {batch_size} with --samples-per-identity {k}: the batch must hold a whole "
                           "number (at least 2) of identities; make the batch size a multiple of K")
    if batch_size // k > n_ids:
        raise ReidkitError(f"--batch-size {batch_size} / --samples-per-identity {k} = {batch_size // k} identities per "
                           f"batch, but only {n_ids} train; lower the batch size or raise K")
    return MPerClassSampler(labels, m=k, batch_size=batch_size, length_before_new_iter=max(batch_size, n_images))
