"""The training loop for one ensemble member.

AdamW with separate backbone/head learning rates, linear warm-up then cosine decay, AMP
and channels_last on CUDA, seeded determinism, open-set validation on held-out
identities every epoch (Whale-do mAP@20 and P@1), ``--resume``.

Which epoch is kept (``--select``): ``last`` by default. The validation identities are a
handful of the training people (6 of ORL's 30 at the default 0.2), so their mAP@20 moves by
chance from epoch to epoch, and the epoch that maximises it is partly chosen for that chance:
on ORL, the best epoch on 6 held-out people was epoch 5 of 20 and scored 0.78 on the unseen
people, the last epoch 0.87. The cosine schedule ends at a small learning rate, so the last
epoch is the converged network; ``best`` suits validation sets large enough to trust.

``--ema DECAY`` validates and saves an exponential moving average of the weights (timm's
ModelEmaV3, whose decay warms up from 0 so a short fine-tune is not dominated by the
pretrained start) instead of the last step's weights.
"""

from __future__ import annotations

import logging
import math
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from reidkit.data.samples import Sample
from reidkit.errors import ReidkitError
from reidkit.imaging import ResizePolicy
from reidkit.metrics import embedding_metrics, leave_one_out_whaledo_map
from reidkit.progress import progress_bar
from reidkit.vectors import l2_normalise
from reidkit.train.checkpoint import load_tensors, save_member
from reidkit.train.dataset import AugmentConfig, ReidDataset, decode_all
from reidkit.train.heads import HeadConfig, MarginHead
from reidkit.train.losses import margin_loss
from reidkit.train.metric_losses import MetricLossConfig, create_metric_loss, identity_batches
from reidkit.train.model import EmbeddingModel, MemberConfig, ReidNet

log = logging.getLogger("reidkit")


@dataclass
class TrainConfig:
    member: MemberConfig = field(default_factory=MemberConfig)
    head: HeadConfig = field(default_factory=HeadConfig)  # kind "none": no classification head (a metric loss alone)
    metric: MetricLossConfig = field(default_factory=MetricLossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    epochs: int = 20
    batch_size: int = 32
    lr_backbone: float = 1e-3
    lr_head: float = 1e-2
    weight_decay: float = 1e-4
    warmup_epochs: float = 1.0
    ema: float = 0.0  # weight-average decay; 0: off
    loss: str = "ce"  # ce | focal
    focal_gamma: float = 2.0
    label_smoothing: float = 0.1
    seed: int = 0
    device: str = "auto"
    val_identities: str = "0.2"  # fraction, or comma-separated identity names
    select: str = "last"  # last | best (by validation mAP@20): which epoch the checkpoint keeps
    workers: int = 0
    pretrained: bool = False
    weights: str | None = None
    progress: bool = True


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise ReidkitError("--device cuda was asked for but torch sees no CUDA GPU; use --device cpu or auto")
    if device not in ("cpu", "cuda"):
        raise ReidkitError(f"--device {device!r}: use auto, cpu or cuda")
    return torch.device(device)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True, warn_only=True)


def split_identities(samples: Sequence[Sample], spec: str, seed: int) -> tuple[list[Sample], list[Sample]]:
    """Open-set split: whole identities are held out for validation."""
    ids = sorted({s.identity for s in samples})
    try:
        frac = float(spec)
    except ValueError:
        held = {x.strip() for x in spec.split(",") if x.strip()}
        unknown = held - set(ids)
        if unknown:
            raise ReidkitError(f"--val-identities names identities not in the data: {', '.join(sorted(unknown)[:5])}") from None
    else:
        if not 0.0 <= frac < 1.0:
            raise ReidkitError(f"--val-identities {spec}: a fraction must be in [0, 1)")
        rng = random.Random(seed)
        multi = [i for i in ids if sum(s.identity == i for s in samples) >= 2] if frac else []
        held = set(rng.sample(multi, k=min(len(multi), max(2, round(frac * len(ids)))))) if frac else set()
    train = [s for s in samples if s.identity not in held]
    val = [s for s in samples if s.identity in held]
    if len({s.identity for s in train}) < 2:
        raise ReidkitError("fewer than 2 training identities remain after the validation split; lower --val-identities")
    return train, val


@torch.no_grad()
def embed_arrays(model: EmbeddingModel, arrays: Sequence[np.ndarray], device: torch.device, batch: int = 64) -> np.ndarray:
    model.eval()
    out = []
    for i in range(0, len(arrays), batch):
        x = torch.from_numpy(np.stack(arrays[i:i + batch])).to(device)
        out.append(model(x).float().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, model.net.cfg.embedding_dim), np.float32)


def evaluate(model: EmbeddingModel, val_ds: ReidDataset, device: torch.device) -> dict[str, float]:
    """Open-set metrics with the runtime's default flip fusion (mean of image and mirror)."""
    arrays = [val_ds[i][0].numpy() for i in range(len(val_ds))]
    emb = l2_normalise(embed_arrays(model, arrays, device) + embed_arrays(model, [a[:, ::-1] for a in arrays], device))
    m = embedding_metrics(emb, val_ds.labels)
    return {"mAP@20": leave_one_out_whaledo_map(emb, val_ds.labels), "P@1": m["P@1"], "mAP@R": m["mAP@R"]}


def _lr_lambda(total: int, warmup: int):
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        t = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, t)))
    return f


def train_member(samples: Sequence[Sample], cfg: TrainConfig, out: str | Path, resume: bool = False) -> dict[str, Any]:
    """Train one member and write the kept epoch (``cfg.select``) to ``out``; returns the summary."""
    out = Path(out)
    if cfg.select not in ("last", "best"):
        raise ReidkitError(f"--select {cfg.select!r}: use last or best")
    if cfg.head.kind == "none" and cfg.metric.name == "none":
        raise ReidkitError("--head none trains on a metric loss alone: add --metric-loss circle, triplet or multisimilarity")
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    policy = ResizePolicy.from_dict(cfg.member.resize)
    train_s, val_s = split_identities(samples, cfg.val_identities, cfg.seed)
    # built before decoding the images, so a --weights file that does not fit fails at once
    net = ReidNet(cfg.member, pretrained=cfg.pretrained, weights=cfg.weights)
    floor = policy.decode_floor(*cfg.member.input_size)
    train_s, train_imgs = decode_all(train_s, floor)
    classes = sorted({s.identity for s in train_s})
    cls_index = {c: i for i, c in enumerate(classes)}
    labels = [cls_index[s.identity] for s in train_s]
    counts = np.bincount(labels, minlength=len(classes)).tolist()
    train_ds = ReidDataset(train_imgs, labels, cfg.member.input_size, policy, cfg.augment)
    val_ds = None
    if val_s:
        val_s, val_imgs = decode_all(val_s, floor)
        val_ds = ReidDataset(val_imgs, [s.identity for s in val_s], cfg.member.input_size, policy, None)  # type: ignore[arg-type, misc]

    model = EmbeddingModel(net).to(device)
    head = MarginHead(cfg.head, cfg.member.embedding_dim, counts).to(device) if cfg.head.kind != "none" else None
    metric = create_metric_loss(cfg.metric.name, cfg.metric.params).to(device) if cfg.metric.name != "none" else None
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    backbone_params = list(net.backbone.parameters())
    bb_ids = {id(p) for p in backbone_params}
    other = [p for p in model.parameters() if id(p) not in bb_ids] + (list(head.parameters()) if head is not None else [])
    opt = torch.optim.AdamW([{"params": backbone_params, "lr": cfg.lr_backbone}, {"params": other, "lr": cfg.lr_head}],
                            weight_decay=cfg.weight_decay)
    g = torch.Generator().manual_seed(cfg.seed)
    # a pair loss needs positives in each batch: P identities x K images instead of a shuffle
    pk = identity_batches(labels, cfg.batch_size, cfg.metric.samples_per_identity, len(train_ds)) if metric is not None else None
    loader = torch.utils.data.DataLoader(train_ds, batch_size=cfg.batch_size, shuffle=pk is None, sampler=pk,
                                         drop_last=len(train_ds) > cfg.batch_size or pk is not None,
                                         num_workers=cfg.workers, generator=g, persistent_workers=cfg.workers > 0)
    steps = cfg.epochs * len(loader)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(steps, int(cfg.warmup_epochs * len(loader))))
    scaler = torch.amp.GradScaler("cuda", enabled=device.type == "cuda")
    ema = _make_ema(model, cfg.ema)
    kept = ema.module if ema is not None else model  # what is validated and saved
    last_path = out.with_name(out.stem + ".last.safetensors")
    start_epoch, best, history = 0, -math.inf, []
    untrained: dict[str, float] | None = None
    if resume:
        if not last_path.exists():
            raise ReidkitError(f"--resume: no resume state at {last_path}; train without --resume first")
        from reidkit.checkpoint_meta import read_member_metadata

        st = read_member_metadata(last_path)["resume"]
        net.load_state_dict(load_tensors(last_path, "net."))
        if ema is not None:
            ema_state = load_tensors(last_path, "ema.")
            if not ema_state:
                raise ReidkitError(f"--resume: {last_path} was trained without --ema; resume without it, or start afresh")
            ema.module.load_state_dict(ema_state)
        if head is not None:
            head.load_state_dict(load_tensors(last_path, "head."))
        opt_state = opt.state_dict()
        moments = load_tensors(last_path, "opt.")
        for pid, keys in st["opt_keys"].items():
            opt_state["state"][int(pid)] = {k: moments[f"{pid}.{k}"] for k in keys}
        opt.load_state_dict(opt_state)
        sched.load_state_dict(st["sched"])
        for group, lr in zip(opt.param_groups, sched.get_last_lr()):  # else the first resumed step runs at warm-up's lr
            group["lr"] = lr
        rng = load_tensors(last_path, "rng.")
        g.set_state(rng["loader"])
        if "torch" in rng:  # the augmentations draw from it: without it a resumed run is a different run
            torch.set_rng_state(rng["torch"])
        start_epoch, best, history = st["epoch"], st["best"], st["history"]
        untrained = st.get("untrained")
        log.info("resumed %s at epoch %d (best validation score %.4f)", out, start_epoch, best)

    if start_epoch == 0 and val_ds is not None:
        # The same network before any step: the figure training has to beat to mean anything.
        untrained = evaluate(kept, val_ds, device)
        log.info("%s untrained %s", out.name, " ".join(f"{k}={v:.4f}" for k, v in untrained.items()))

    t0 = time.perf_counter()
    summary: dict[str, Any] = {}
    for epoch in range(start_epoch, cfg.epochs):
        model.train()
        if head is not None:
            head.train()
        if pk is not None:  # MPerClassSampler draws from numpy's global generator: seeded per epoch, so --resume repeats it
            np.random.seed([cfg.seed, epoch])
        bar = progress_bar(loader, enabled=cfg.progress, desc=f"epoch {epoch + 1}/{cfg.epochs}", unit="batch", leave=False)
        seen, tl, te = 0, 0.0, time.perf_counter()
        for x, y in bar:
            x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
            with torch.autocast(device.type, dtype=torch.float16, enabled=device.type == "cuda"):
                emb = net(model.preprocess(x))
                logits = head(emb.float(), y) if head is not None else None
            loss = margin_loss(logits, y, cfg.loss, cfg.focal_gamma, cfg.label_smoothing) if logits is not None else emb.new_zeros((), dtype=torch.float32)
            if metric is not None:
                loss = loss + cfg.metric.weight * metric(emb, y)
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(opt)
            scaler.update()
            sched.step()
            if ema is not None:
                ema.update(model, step=sched.last_epoch)
            seen += len(y)
            tl += float(loss.detach()) * len(y)
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", img_s=f"{seen / (time.perf_counter() - te):.0f}")
        rec: dict[str, Any] = {"epoch": epoch + 1, "loss": tl / max(1, seen), "img_s": seen / (time.perf_counter() - te)}
        if val_ds is not None:
            rec.update(evaluate(kept, val_ds, device))
        history.append(rec)
        score = rec.get("mAP@20", -rec["loss"])
        msg = " ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in rec.items())
        log.info("%s %s", out.name, msg)
        meta = {
            "head": cfg.head.to_dict(),
            "metric_loss": cfg.metric.to_dict(),
            "num_classes": len(classes),
            "class_counts": counts,
            "seed": cfg.seed,
            "pretrained_weights": net.weights_info,
            "training": {"config": _cfg_dict(cfg), "history": history, "n_train_images": len(train_s),
                         "n_val_images": len(val_s), "val_identities": sorted({s.identity for s in val_s}),
                         "select": cfg.select,
                         "untrained": untrained,
                         "seconds": time.perf_counter() - t0, "device": str(device)},
        }
        improved = score > best
        best = max(best, score)
        if cfg.select == "last" or improved:
            summary = {**rec, "kept_epoch": epoch + 1, "select": cfg.select}
            save_member(out, kept.net, {**meta, "metrics": summary})
        opt_sd = opt.state_dict()
        extra = {f"head.{k}": v for k, v in head.state_dict().items()} if head is not None else {}
        opt_keys = {}
        for pid, state in opt_sd["state"].items():
            opt_keys[str(pid)] = list(state.keys())
            extra.update({f"opt.{pid}.{k}": (v if torch.is_tensor(v) else torch.tensor(v)) for k, v in state.items()})
        extra["rng.loader"], extra["rng.torch"] = g.get_state(), torch.get_rng_state()
        if ema is not None:
            extra.update({f"ema.{k}": v for k, v in ema.module.state_dict().items()})
        save_member(last_path, net, {**meta, "resume": {"epoch": epoch + 1, "best": best, "history": history, "untrained": untrained,
                                                        "opt_keys": opt_keys, "sched": sched.state_dict()}}, extra)
    summary["seconds"] = time.perf_counter() - t0
    if untrained is not None:
        summary["untrained"] = untrained
    return summary


def _make_ema(model: EmbeddingModel, decay: float) -> Any:
    """timm's weight average, or None when off. The warm-up (power 3/4, timm's advice for short
    runs) keeps the decay low early: at a fixed 0.99 a 200-step fine-tune would still carry
    about 13% of the starting weights at the end."""
    if not decay:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=decay, use_warmup=True, warmup_power=3 / 4)


def _cfg_dict(cfg: TrainConfig) -> dict[str, Any]:
    d = asdict(cfg)
    d["member"] = cfg.member.to_dict()
    return d
