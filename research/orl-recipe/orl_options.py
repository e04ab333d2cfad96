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

HERE = Path(__file__).resolve().parent

from orl_pretrained import sh  # the sibling study script (python puts a script's own folder on the path)
from reidkit.bench.reports import write_report


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


def score_leave_query_out(seed_dir: Path, qe: int, dba: int) -> tuple[float, float]:
    """(mAP@20 "all" as reid-infer ranks with --qe/--dba, the same with each query's own image taken
    out of the database before the augmentation), both by brute force in numpy from the member's
    embeddings, not by reidkit's search. In scenario mode the query image is also a database image, so
    reid-infer's --dba lets it pull its neighbours towards itself; a catalogue that does not already
    hold the query photo has no such help. The first figure must equal reid-infer's (a check on this code)."""
    import csv

    import numpy as np

    from reidkit.data.whaledo import read_metadata, read_scenarios
    from reidkit.vectors import l2_normalise

    wd, out = seed_dir / "data" / "whaledo", seed_dir / "options"
    npz = out / "embeddings.npz"
    if not npz.exists():
        sh("reid-infer", "--model", seed_dir / "bundle", "--scenarios", wd / "query_scenarios.csv", "--metadata", wd / "metadata.csv",
           "--cache", out / "embeddings.sqlite", "-o", out / "plain-again.csv", "--quiet", "--embeddings-out", npz)
    z = np.load(npz)
    vec = dict(zip(z["ids"].tolist(), z["embeddings"].astype(np.float64)))
    meta = read_metadata(wd / "metadata.csv")

    def augment(db: np.ndarray) -> np.ndarray:
        near = np.argsort(-(db @ db.T), axis=1, kind="stable")[:, :dba + 1]  # itself first, then its dba nearest
        return l2_normalise(db[near].mean(axis=1)) if dba else db

    scores = []
    for leave_out in (False, True):
        rows = []
        for sc in read_scenarios(wd / "query_scenarios.csv", set(meta.image_ids)):
            full = np.stack([vec[d] for d in sc.database])
            full_aug = augment(full)
            for qid, img in sc.queries:
                keep = [j for j, d in enumerate(sc.database) if d != img]
                db = augment(full[keep]) if leave_out else full_aug[keep]
                q = vec[img]
                if qe:
                    q = q + db[np.argsort(-(db @ q), kind="stable")[:qe]].sum(axis=0)
                    q = q / np.linalg.norm(q)
                sims = db @ q
                for j in np.argsort(-sims, kind="stable")[:20]:
                    rows.append((qid, sc.database[keep[j]], f"{(sims[j] + 1) / 2:.6f}"))
        sub = out / f"lqo{int(leave_out)}-qe{qe}-dba{dba}.csv"
        with sub.open("w", newline="") as fh:
            csv.writer(fh).writerows([("query_id", "database_image_id", "score"), *rows])
        ev = out / f"{sub.stem}.eval.json"
        sh("reid-eval", "--submission", sub, "--metadata", wd / "metadata.csv", "--scenarios", wd / "query_scenarios.csv", "--json", ev)
        scores.append(float(json.loads(ev.read_text())["per_scenario"]["all"]["mAP@20"]))
    return scores[0], scores[1]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", action="append", required=True, metavar="FOLD=DIR",
                    help="An orl_pretrained.py --work folder (seed0/, seed1/, ... each with bundle/ and data/), named by its fold.")
    ap.add_argument("--options", nargs="+", required=True,
                    help='reid-infer option sets without their dashes ("qe 2 dba 2" is --qe 2 --dba 2); plain: none. The first is the baseline.')
    ap.add_argument("--tag", required=True, help="Names the report (e.g. the members' input size).")
    ap.add_argument("--out", type=Path, default=HERE / "results" / "dev-folds")
    ap.add_argument("--leave-query-out", metavar="QE,DBA",
                    help="Also score --qe QE --dba DBA with each query's own image out of the database (numpy, brute force).")
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
    lines += ["", "Each folder's members were trained by research/orl-recipe/orl_pretrained.py; its people scored here are the ones "
              "its members never trained on (a development fold, or s31-s40)."]
    lqo: dict[str, list[tuple[float, float]]] = {}
    if args.leave_query_out:
        qe, dba = (int(x) for x in args.leave_query_out.split(","))
        for fold, d in folds.items():
            lqo[fold] = [score_leave_query_out(s, qe, dba) for s in sorted(p for p in Path(d).glob("seed*") if (p / "bundle").is_dir())]
        every = [v for vs in lqo.values() for v in vs]
        lines += ["", f"Query image out of the database (`--qe {qe} --dba {dba}` recomputed in numpy; in scenario mode the query "
                  "image is also in its database, and reid-infer's DBA lets it pull its neighbours towards itself):", "",
                  "| split | as reid-infer (numpy) | query image out of the database |", "|---|---|---|"]
        lines += [f"| {f} | {' / '.join(f'{a:.3f}' for a, _ in v)} | {' / '.join(f'{b:.3f}' for _, b in v)} |" for f, v in lqo.items()]
        lines += [f"| mean | {statistics.mean(a for a, _ in every):.4f} | {statistics.mean(b for _, b in every):.4f} |"]
    report = {"created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"), "tag": args.tag,
              "folds": folds, "options": args.options, "scores": table, "summary": summary,
              "leave_query_out": {"qe_dba": args.leave_query_out, "scores": lqo}}
    write_report(args.out, f"orl-options-{args.tag}-{date}", report, lines)
    return 0


if __name__ == "__main__":
    sys.exit(main())
