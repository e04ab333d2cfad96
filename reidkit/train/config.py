"""From CLI options or an ensemble TOML to training runs.

```toml
data = "orl"                      # defaults for every member; any reid-train option
epochs = 20
ensemble = "ensemble.toml"        # the ensemble file to write, relative to this file

[[members]]
backbone = "resnet18"
image_size = "112x96"
seed = 1
out = "m1.safetensors"
weight = 1.0
```
"""

from __future__ import annotations

import logging
import tomllib
from pathlib import Path
from typing import Any

from reidkit.data.sources import read_labelled
from reidkit.ensemble import EnsembleEntry, write_ensemble
from reidkit.errors import ReidkitError
from reidkit.train.dataset import AugmentConfig
from reidkit.train.defaults import DEFAULTS
from reidkit.train.heads import HeadConfig
from reidkit.train.loop import TrainConfig, train_member
from reidkit.train.metric_losses import MetricLossConfig, parse_params
from reidkit.train.backbone import check_input_size
from reidkit.train.model import MemberConfig, out_indices
from reidkit.train.preprocess import IMAGENET_MEAN, IMAGENET_STD

log = logging.getLogger("reidkit")



def _triple(value: Any, what: str) -> tuple[float, float, float]:
    """'0.5' or '0.485,0.456,0.406' (CLI) or a list (TOML) -> three floats."""
    parts = value if isinstance(value, (list, tuple)) else str(value).split(",")
    try:
        vals = [float(x) for x in parts]
    except ValueError:
        raise ReidkitError(f"--{what} {value!r}: write one number or three, comma-separated (R,G,B on the 0-1 scale)") from None
    if len(vals) not in (1, 3) or (what == "std" and min(vals) <= 0):
        raise ReidkitError(f"--{what} {value!r}: write one number or three, comma-separated (R,G,B on the 0-1 scale; std > 0)")
    return tuple((vals * 3)[:3])  # type: ignore[return-value]


def normalisation(o: dict[str, Any]) -> tuple[tuple[float, float, float], tuple[float, float, float]]:
    """The member's mean/std: the user's, else the pretrained backbone's (pretrained weights were
    trained with it: tf_efficientnet_lite0 uses 0.5/0.5), else ImageNet's."""
    mean, std = IMAGENET_MEAN, IMAGENET_STD
    if o["weights"] or o["pretrained"]:
        from reidkit.train.weights import pretrained_normalisation

        mean, std = pretrained_normalisation(o["backbone"]) or (mean, std)  # type: ignore[assignment]
    return (_triple(o["mean"], "mean") if o["mean"] is not None else mean,
            _triple(o["std"], "std") if o["std"] is not None else std)



def build_config(kw: dict[str, Any]) -> TrainConfig:
    o = {**DEFAULTS, **{k: v for k, v in kw.items() if v is not None}}
    unknown = set(o) - set(DEFAULTS) - {"out", "data", "weight", "progress", "coco_identity"}  # the last: how --data is read
    if unknown:
        raise ReidkitError(f"unknown training option(s): {', '.join(sorted(unknown))}")
    size = o["image_size"]
    if isinstance(size, str):
        try:
            size = tuple(int(x) for x in size.lower().split("x"))
        except ValueError:
            raise ReidkitError(f"image_size {size!r}: write HxW, e.g. 112x96") from None
    if len(size) != 2:
        raise ReidkitError(f"image_size {o['image_size']!r}: write HxW, e.g. 112x96")
    # a size the backbone's patches or windows cannot take fails here, before any image is read
    check_input_size(o["backbone"], size, out_indices(bool(o["concat_stages"])))
    mean, std = normalisation(o)
    if not 0.0 <= float(o["ema"]) < 1.0:
        raise ReidkitError(f"ema {o['ema']}: a decay in [0, 1) (e.g. 0.99; 0 turns the weight average off)")
    metric = MetricLossConfig(name=str(o["metric_loss"]).lower(), weight=float(o["metric_weight"]), params=parse_params(o["metric_params"]),
                              samples_per_identity=int(o["samples_per_identity"]))
    metric.to_dict()  # an unknown loss or parameter fails here, before any image is read
    return TrainConfig(
        member=MemberConfig(backbone=o["backbone"], input_size=tuple(size), embedding_dim=int(o["embedding_dim"]),  # type: ignore[arg-type]
                            concat_stages=bool(o["concat_stages"]), mean=mean, std=std,
                            resize={"method": o["resize"], "interpolation": o["interpolation"], "pad_value": 0,
                                    "decode_headroom": int(o["decode_headroom"])}),
        head=HeadConfig(kind=o["head_kind"], s=float(o["scale"]), k=int(o["subcenters"]), margin=float(o["margin"]),
                        dynamic_a=float(o["margin_a"]), dynamic_lambda=float(o["margin_lambda"]), dynamic_b=float(o["margin_b"])),
        metric=metric,
        augment=AugmentConfig(hflip=bool(o["hflip"])),
        epochs=int(o["epochs"]), batch_size=int(o["batch_size"]), lr_backbone=float(o["lr"]), lr_head=float(o["head_lr"]),
        warmup_epochs=float(o["warmup_epochs"]), ema=float(o["ema"]), loss=o["loss"], focal_gamma=float(o["focal_gamma"]),
        label_smoothing=float(o["label_smoothing"]), seed=int(o["seed"]), device=o["device"], val_identities=str(o["val_identities"]), select=str(o["select"]),
        workers=int(o["workers"]), pretrained=bool(o["pretrained"]), weights=o["weights"], progress=bool(o.get("progress", True)),
    )


def train_one(data: str, out: Path, kw: dict[str, Any]) -> dict[str, Any]:
    cfg = build_config(kw)
    if Path(out).suffix != ".safetensors":
        raise ReidkitError(f"--out {out}: checkpoints are .safetensors files")
    return train_member(read_labelled(data, kw.get("coco_identity")), cfg, out, resume=bool(kw.get("resume")))


def train_from_config(path: Path, data: str | None, cli_kw: dict[str, Any]) -> list[dict[str, Any]]:
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ReidkitError(f"--config {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ReidkitError(f"{path}: invalid TOML ({exc})") from None
    members = doc.pop("members", None)
    if not members:
        raise ReidkitError(f"{path}: no [[members]] to train")
    root = Path(path).parent
    ens_path = root / doc.pop("ensemble", "ensemble.toml")
    defaults = {k: v for k, v in doc.items()}
    if data:
        defaults["data"] = data
    if cli_kw.get("weights"):  # `reid-train --config X --weights FILE`: the file for members that name none
        defaults.setdefault("weights", str(Path(cli_kw["weights"]).resolve()))
    entries, jobs = [], []
    for i, m in enumerate(members, start=1):
        o = {**defaults, **m}
        if "data" not in o or "out" not in o:
            raise ReidkitError(f"{path}: member {i} needs data and out")
        d = str(o.pop("data"))
        if not d.startswith("orl") and not Path(d).is_absolute():
            d = str(root / d)
        out = root / o.pop("out")
        weight = float(o.pop("weight", 1.0))
        if o.get("weights") and not Path(str(o["weights"])).is_absolute():
            o["weights"] = str(root / str(o["weights"]))
        o.setdefault("resume", cli_kw.get("resume", False))
        try:  # every member's options (backbone, size, losses) are checked before the first one trains
            build_config(o)
        except ReidkitError as exc:
            raise ReidkitError(f"{path}: member {i}: {exc}") from None
        jobs.append((d, out, o))
        entries.append(EnsembleEntry(out, weight))
    summaries = []
    for i, (d, out, o) in enumerate(jobs, start=1):
        log.info("member %d/%d: %s %s -> %s", i, len(jobs), o.get("backbone", DEFAULTS["backbone"]), o.get("image_size", DEFAULTS["image_size"]), out)
        summaries.append(train_one(d, out, o))
    write_ensemble(ens_path, entries)
    log.info("wrote %s", ens_path)
    return summaries
