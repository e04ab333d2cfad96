"""Which fusion ranks an encounter best: the max or the mean of its photos' identity scores?

ORL faces s5-s40 (s1-s4 touched the bundle's BatchNorm statistics): one gallery photo per
person (photo g), the other nine as three encounters of three photos. Each encounter is
ranked through `reid catalogue match --group-by encounter` with each fusion, and single photos
(`--group-by image`) are the baseline. Top-1 accuracy per encounter, over g = 1..3.

Usage: python research/encounter-fusion/encounter_fusion.py BUNDLE OUT_DIR
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

from reidkit.data.orl import orl_root

PEOPLE = range(5, 41)


def reid(*args: object) -> None:
    subprocess.run([str(Path(sys.executable).with_name("reid")), *map(str, args)], check=True, stdout=subprocess.DEVNULL)


def first_rows(path: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            out.setdefault(r["query_id"], r["identity"])
    return out


def main(bundle: Path, out: Path) -> dict[str, float]:
    root = orl_root()
    totals: dict[str, list[bool]] = {"image": [], "max": [], "mean": []}
    for g in (1, 2, 3):
        d = out / f"g{g}"
        shutil.rmtree(d, ignore_errors=True)
        rows = []
        for k in PEOPLE:
            (d / "gallery" / f"s{k}").mkdir(parents=True)
            shutil.copyfile(root / f"s{k}" / f"{g}.pgm", d / "gallery" / f"s{k}" / f"{g}.pgm")
            others = [i for i in range(1, 11) if i != g]
            for e in range(3):
                for i in others[3 * e:3 * e + 3]:
                    rows.append((f"s{k}_{i}", str(root / f"s{k}" / f"{i}.pgm"), f"s{k}", f"s{k}-enc{e}"))
        d.mkdir(exist_ok=True)
        with open(d / "queries.csv", "w", newline="") as fh:
            w = csv.writer(fh)
            w.writerow(["image_id", "path", "whale_id", "encounter_id"])
            w.writerows((i, Path(p).relative_to(root), ident, enc) for i, p, ident, enc in rows)
        shutil.copytree(root, d / "orl")  # paths in a metadata CSV are relative to its folder
        (d / "queries.csv").rename(d / "orl" / "queries.csv")
        reid("catalogue", "init", d / "cat", "--model", bundle, "--gallery", d / "gallery", "--quiet", "--backend", "ort-cpu")
        truth_photo = {i: ident for i, _, ident, _ in rows}
        truth_enc = {enc: ident for _, _, ident, enc in rows}
        reid("catalogue", "match", d / "cat", "--query", d / "orl" / "queries.csv", "-o", d / "image.csv", "--quiet")
        totals["image"] += [v == truth_photo[q] for q, v in first_rows(d / "image.csv").items()]
        for fusion in ("max", "mean"):
            reid("catalogue", "match", d / "cat", "--query", d / "orl" / "queries.csv", "-o", d / f"{fusion}.csv", "--quiet",
                 "--group-by", "encounter", "--fusion", fusion)
            totals[fusion] += [v == truth_enc[q] for q, v in first_rows(d / f"{fusion}.csv").items()]
    result = {f"top1_{k}": sum(v) / len(v) for k, v in totals.items()} | {f"n_{k}": len(v) for k, v in totals.items()}
    (out / "result.json").write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2])), indent=2))
