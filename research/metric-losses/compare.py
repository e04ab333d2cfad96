"""Pair losses from pytorch-metric-learning against the default margin head, on ORL development folds.

Question: does CircleLoss, a mined TripletMarginLoss or MultiSimilarityLoss (``reid train
--metric-loss``) give better embeddings for unseen people than the default sub-centre ArcFace
head with cross-entropy?

Every run fine-tunes the wheel-shipped ImageNet EfficientNet-Lite0 with the demo's recipe
(reidkit.demo RECIPE, shortened with --epochs) through the same Python entry point as
``reid train`` (reidkit.train.config.train_one), on twenty of s1-s30, then embeds the other ten
(flip-fused, as the runtime does) and scores them leave-one-out: mAP@R, P@1 and the Whale-do
mAP@20. People s31-s40 are never read. Finished runs are kept in --work and reused.

    python research/metric-losses/compare.py --epochs 10 3   # the recipe's 10 epochs and a short schedule
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
sys.path.insert(0, str(ROOT))

from reidkit.atomic import atomic_path  # noqa: E402
from reidkit.demo import RECIPE  # noqa: E402

# the development folds of s1-s30 (benchmarks/orl_pretrained.py DEV_FOLDS): trained people, scored people
FOLDS = {"21-30": ("orl:1-20", "orl:21-30"), "1-10": ("orl:11-30", "orl:1-10"), "11-20": ("orl:1-10,21-30", "orl:11-20")}
# slug -> (label, reid-train options changed from the recipe, whose head is the default: sub-centre ArcFace + CE)
VARIANTS: dict[str, tuple[str, dict[str, Any]]] = {
    "default": ("sub-centre ArcFace + CE (default)", {}),
    "circle": ("CircleLoss alone", {"head_kind": "none", "metric_loss": "circle"}),
    "triplet": ("TripletMarginLoss + semi-hard miner alone", {"head_kind": "none", "metric_loss": "triplet"}),
    "multisimilarity": ("MultiSimilarityLoss + miner alone", {"head_kind": "none", "metric_loss": "multisimilarity"}),
    "default+circle": ("sub-centre ArcFace + CE + CircleLoss", {"metric_loss": "circle"}),
    # reference: one epoch is all warm-up, so this is close to the ImageNet start
    "default-1epoch": ("reference: the default, 1 epoch", {"epochs": 1}),
}
METRICS = ("mAP@R", "P@1", "mAP@20")


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def score(model_path: Path, scored: str) -> dict[str, float]:
    """The scored people, embedded like the runtime does (image + mirror), every image a query."""
    import torch

    from reidkit.data.sources import read_labelled
    from reidkit.imaging import ResizePolicy
    from reidkit.train.checkpoint import load_member
    from reidkit.train.dataset import ReidDataset, decode_all
    from reidkit.train.loop import evaluate

    model, _ = load_member(model_path)
    samples, images = decode_all(read_labelled(scored))
    cfg = model.net.cfg
    ds = ReidDataset(images, [s.identity for s in samples], tuple(cfg.input_size), ResizePolicy.from_dict(cfg.resize), None)  # type: ignore[arg-type]
    return evaluate(model, ds, torch.device("cpu"))


def one_run(work: Path, variant: str, fold: str, seed: int, epochs: int, backbone: str, size: str) -> dict[str, Any]:
    epochs = int(VARIANTS[variant][1].get("epochs", epochs))
    d = work / f"{variant}-e{epochs}-{fold}-seed{seed}"
    if (d / "result.json").exists():
        return json.loads((d / "result.json").read_text())
    d.mkdir(parents=True, exist_ok=True)
    from reidkit.checkpoint_meta import read_member_metadata
    from reidkit.train.config import train_one
    from reidkit.train.pretrained import pretrained_weights

    train_data, scored = FOLDS[fold]
    kw = {**RECIPE, "epochs": epochs, "backbone": backbone, "image_size": size, "seed": seed, "device": "cpu",
          "weights": str(pretrained_weights(backbone)), "progress": False, **VARIANTS[variant][1]}
    kw.pop("data")
    t, c = time.perf_counter(), cpu_seconds()
    train_one(train_data, d / "m.safetensors", kw)
    train_wall, train_cpu = time.perf_counter() - t, cpu_seconds() - c
    scores = score(d / "m.safetensors", scored)
    meta = read_member_metadata(d / "m.safetensors")
    result = {"variant": variant, "label": VARIANTS[variant][0], "fold": fold, "seed": seed, "scores": scores, "train_wall_s": train_wall, "train_cpu_s": train_cpu,
              "changed_from_recipe": VARIANTS[variant][1], "epochs": meta["training"]["config"]["epochs"], "metric_loss": meta["metric_loss"], "head": meta["head"]["kind"],
              "val_identities": meta["training"]["val_identities"],
              "final_train_loss": meta["training"]["history"][-1]["loss"], "weights": meta["pretrained_weights"]}
    (d / "result.json").write_text(json.dumps(result, indent=2))
    (d / "m.safetensors").unlink()  # the scores are the product; 15 MB checkpoints are not
    (d / "m.last.safetensors").unlink(missing_ok=True)
    return result


def summarise(runs: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for v in dict.fromkeys(row_key(r) for r in runs):
        rs = [r for r in runs if row_key(r) == v]
        # per seed, the mean over folds; the spread is over seeds
        seeds = sorted({r["seed"] for r in rs})
        per_seed = {m: [statistics.mean(r["scores"][m] for r in rs if r["seed"] == s) for s in seeds] for m in METRICS}
        out[v] = {m: {"mean": statistics.mean(x), "min": min(x), "max": max(x), "per_seed": x} for m, x in per_seed.items()}
        folds = sorted({r["fold"] for r in rs})
        out[v]["per_fold_mean"] = {f: {m: statistics.mean(r["scores"][m] for r in rs if r["fold"] == f) for m in METRICS} for f in folds}
        out[v]["runs"] = len(rs)
        out[v]["train_cpu_s_mean"] = statistics.mean(r["train_cpu_s"] for r in rs)
    return out


def row_key(r: dict[str, Any]) -> str:
    return f"{r['variant']}@{r['epochs']}"


def table(summary: dict[str, Any]) -> list[str]:
    lines = ["| loss | epochs | " + " | ".join(f"{m} mean (min-max)" for m in METRICS) + " | runs | train CPU s/run |",
             "|---|" + "---|" * (len(METRICS) + 3)]
    for v, s in summary.items():
        cells = [f"{s[m]['mean']:.3f} ({s[m]['min']:.3f}-{s[m]['max']:.3f})" for m in METRICS]
        variant, epochs = v.rsplit("@", 1)
        lines.append(f"| {VARIANTS[variant][0]} | {epochs} | " + " | ".join(cells) + f" | {s['runs']} | {s['train_cpu_s_mean']:.0f} |")
    return lines


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="tf_efficientnet_lite0")
    ap.add_argument("--image-size", default="112x96")
    ap.add_argument("--epochs", type=int, nargs="+", default=[int(RECIPE["epochs"])],
                    help="One comparison per schedule length (a variant that sets its own epochs runs once).")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--folds", nargs="+", choices=sorted(FOLDS), default=sorted(FOLDS))
    ap.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    ap.add_argument("--work", type=Path, default=Path("/tmp/metric-losses-work"))
    ap.add_argument("--out", type=Path, default=HERE / "results.json")
    args = ap.parse_args()
    runs, done = [], set()
    for seed in args.seeds:  # seed-major: a cut-short comparison still has every loss on the same seeds
        for fold in args.folds:
            for epochs in args.epochs:
                for v in args.variants:
                    key = (v, int(VARIANTS[v][1].get("epochs", epochs)), fold, seed)
                    if key in done:
                        continue
                    done.add(key)
                    r = one_run(args.work, v, fold, seed, epochs, args.backbone, args.image_size)
                    print(f"{v:16s} {key[1]:2d} epochs, fold s{fold} seed {seed}: " + " ".join(f"{m}={r['scores'][m]:.3f}" for m in METRICS)
                          + f" ({r['train_cpu_s']:.0f} CPU s)", flush=True)
                    runs.append(r)
    summary = summarise(runs)
    report = {"created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
              "machine": platform.processor() or platform.machine(), "threads": os.environ.get("OMP_NUM_THREADS", "default"),
              "backbone": args.backbone, "image_size": args.image_size, "epochs": args.epochs, "seeds": args.seeds,
              "folds": {f: {"train": FOLDS[f][0], "scored": FOLDS[f][1]} for f in args.folds},
              "recipe": {**RECIPE, "epochs": args.epochs}, "variants": {v: {"label": VARIANTS[v][0], "changed_from_recipe": VARIANTS[v][1]} for v in args.variants},
              "summary": summary, "table": table(summary), "runs": runs}
    with atomic_path(args.out) as tmp:
        Path(tmp).write_text(json.dumps(report, indent=2) + "\n")
    print("\n".join(table(summary)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
