"""reid-infer's test-time options (--qe, --dba, --rerank) scored on finished ORL members.

Re-ranks the people each member of an ``orl_pretrained.py --work`` folder was scored on, once per
option set, through reid-infer (scenario mode) and reid-eval, as a user would: no member is retrained,
and every bundle's embeddings are cached once (``--cache``), so an option costs only its ranking.
Meant for the development folds (``orl_pretrained.py --dev``): an option chosen here must not be
chosen on the people it is reported on.

    python benchmarks/orl_options.py --work f21-30=/scratch/w224 --work f1-10=/scratch/f1_224 \\
        --options plain "qe 2" "dba 2" rerank --tag 224x192

Writes orl-options-<tag>-<date>.{md,json}: mAP@20 (scenario "all") per fold, seed and option set.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import statistics
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.orl_pretrained import sh  # noqa: E402
from benchmarks.run_bench import write_report  # noqa: E402


def score(seed_dir: Path, options: str) -> float:
    """mAP@20 on scenario "all" of the people this member was scored on, ranked with ``options``."""
    tag = options.replace(" ", "").replace("--", "_") or "_none"
    out = seed_dir / "options" / tag
    out.mkdir(parents=True, exist_ok=True)
    if not (out / "eval.json").exists():
        wd = seed_dir / "data" / "whaledo"
        sh("reid-infer", "--model", seed_dir / "bundle", "--scenarios", wd / "query_scenarios.csv", "--metadata",
           wd / "metadata.csv", "--cache", seed_dir / "options" / "embeddings.sqlite", "-o", out / "submission.csv",
           "--quiet", *shlex.split(options))
        sh("reid-eval", "--submission", out / "submission.csv", "--metadata", wd / "metadata.csv", "--scenarios",
           wd / "query_scenarios.csv", "--json", out / "eval.json")
    return float(json.loads((out / "eval.json").read_text())["per_scenario"]["all"]["mAP@20"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", action="append", required=True, metavar="FOLD=DIR",
                    help="An orl_pretrained.py --work folder (seed0/, seed1/, ... each with bundle/ and data/), named by its fold.")
    ap.add_argument("--options", nargs="+", required=True,
                    help='reid-infer option sets without their dashes ("qe 2 dba 2" is --qe 2 --dba 2); plain: none. The first is the baseline.')
    ap.add_argument("--tag", required=True, help="Names the report (e.g. the members' input size).")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "orl-dev")
    args = ap.parse_args()
    folds = dict(w.split("=", 1) for w in args.work)
    args.options = [" ".join(t if t.replace(".", "").isdigit() else f"--{t}" for t in o.split()) if o != "plain" else ""
                    for o in args.options]
    table: dict[str, dict[str, list[float]]] = {o: {} for o in args.options}
    for fold, d in folds.items():
        seeds = sorted(p for p in Path(d).glob("seed*") if (p / "bundle").is_dir())
        if not seeds:
            ap.error(f"--work {fold}={d}: no seed*/bundle in it (run orl_pretrained.py --work {d} first)")
        for o in args.options:
            table[o][fold] = [score(s, o) for s in seeds]
            print(f"{fold} {o or '(plain)'}: {' '.join(f'{v:.4f}' for v in table[o][fold])}", flush=True)
    plain = args.options[0]
    summary = {}
    for o in args.options:
        every = [v for vs in table[o].values() for v in vs]
        summary[o] = {"mean": statistics.mean(every), "fold_means": {f: statistics.mean(v) for f, v in table[o].items()}}
    date = dt.date.today().isoformat()
    lines = [f"# reid-infer options on finished ORL members ({args.tag}, {date})", "",
             "mAP@20, scenario \"all\" (every image queries the other 99), of the people each member was scored on; "
             "the members are those of the folders below, unchanged; only the ranking differs.", "",
             "Folders: " + ", ".join(f"{f} = `{Path(d).name}`" for f, d in folds.items()), "",
             "| options | " + " | ".join(f"{f} (seeds)" for f in folds) + " | " + " | ".join(f"{f} mean" for f in folds)
             + f" | mean of all | vs `{plain or 'plain'}` | splits where it is higher |",
             "|---|" + "---|" * (2 * len(folds) + 3)]
    for o in args.options:
        s = summary[o]
        better = sum(s["fold_means"][f] > summary[plain]["fold_means"][f] for f in folds)
        lines.append(f"| `{o or 'plain'}` | " + " | ".join(" / ".join(f"{v:.3f}" for v in table[o][f]) for f in folds) + " | "
                     + " | ".join(f"{s['fold_means'][f]:.4f}" for f in folds)
                     + f" | {s['mean']:.4f} | {s['mean'] - summary[plain]['mean']:+.4f} | {better} of {len(folds)} |")
    lines += ["", "Each folder's members were trained by benchmarks/orl_pretrained.py; its people scored here are the ones "
              "its members never trained on (a development fold, or s31-s40)."]
    report = {"created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "tag": args.tag,
              "folds": folds, "options": args.options, "scores": table, "summary": summary}
    write_report(args.out, f"orl-options-{args.tag}-{date}", report, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
