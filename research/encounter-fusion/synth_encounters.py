"""Encounter ranking against per-photo ranking on synthetic whales, by mAP@20 and top-1.

The ORL study (`encounter_fusion.py`) had tidy encounters of three photos and top-1 only. Here the
encounters are the ones `reid synth` draws (one whale, one 30-day window, so many are single
photos), the gallery is each whale's earliest encounter, and every later photo is a query. Each
photo is ranked alone (`reid catalogue match --group-by image`) and each encounter once
(`--group-by encounter --fusion max|mean`). Rankings are scored by `reid eval`: top-1 on the
identity ranking as written, and mAP@20 with the Whale-do scorer on the same rows read as a
submission whose "images" are identities (score mapped from cosine [-1, 1] to [0, 1], order kept),
against the photo's or the encounter's individual. With one true individual per ranking, mAP@20
is the reciprocal rank of that individual (0 beyond 20). Per-photo rows count photos, encounter
rows count encounters, so each encounter's first photo ranked alone is also scored against the
encounter: the same units, without fusion. The same figures are also given on multi-photo
encounters only, the only ones where fusion can change a ranking.

The bundle is the ImageNet Lite0 of the [weights] extra, not fine-tuned (--lr 0 on ORL s1-s4,
as in `research/open-set-calibration/run.sh`), at 224x96 (HxW, whale top views are tall).

Usage: python research/encounter-fusion/synth_encounters.py OUT_DIR [BUNDLE [SEED]]
  Without BUNDLE (or with '') it is built in OUT_DIR/bundle; SEED is `reid synth --seed` (5);
  OUT_DIR/synth is reused when present. Writes OUT_DIR/result.json (synth-result.json here).
"""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

from reidkit.data.csvio import write_rows

SYNTH = ("--images", "600", "--identities", "60")


def reid(*args: object) -> str:
    exe = str(Path(sys.executable).with_name("reid"))
    return subprocess.run([exe, *map(str, args)], check=True, capture_output=True, text=True).stdout


def build_bundle(out: Path) -> Path:
    weights = subprocess.run([sys.executable, "-m", "reidkit.train.pretrained", "tf_efficientnet_lite0"], check=True,
                             capture_output=True, text=True).stdout.strip()
    reid("train", "--data", "orl:1-4", "--val-identities", "s4", "--image-size", "224x96", "--embedding-dim", "64",
         "--batch-size", "16", "--epochs", "1", "--backbone", "tf_efficientnet_lite0", "--weights", weights, "--lr", "0",
         "--out", out / "m.safetensors")
    reid("export", out / "m.safetensors", "-o", out / "bundle", "--overwrite")
    return out / "bundle"


def read(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def split(synth: Path) -> tuple[dict[str, str], dict[str, str], dict[str, int]]:
    """Gallery = each whale's earliest encounter; queries = the rest. Writes gallery.csv, queries.csv,
    encounters.csv (one row per query encounter, for the encounter truth) next to metadata.csv."""
    meta = read(synth / "metadata.csv")
    first: dict[str, tuple[str, str]] = {}
    for r in meta:
        key = (r["date"], r["encounter_id"])
        if r["whale_id"] not in first or key < first[r["whale_id"]]:
            first[r["whale_id"]] = key
    gallery_enc = {enc for _, enc in first.values()}
    cols = ["image_id", "path", "whale_id", "encounter_id"]
    gal = [[r[c] for c in cols] for r in meta if r["encounter_id"] in gallery_enc]
    qry = [[r[c] for c in cols] for r in meta if r["encounter_id"] not in gallery_enc]
    write_rows(synth / "gallery.csv", cols, gal)
    write_rows(synth / "queries.csv", cols, qry)
    encs: dict[str, list[str]] = {}
    for i, p, w, e in qry:
        encs.setdefault(e, [e, p, w, e])
    write_rows(synth / "encounters.csv", cols, list(encs.values()))
    size: dict[str, int] = defaultdict(int)
    for _, _, _, e in qry:
        size[e] += 1
    return {i: w for i, _, w, _ in qry}, {e: r[2] for e, r in encs.items()}, dict(size)


def score(ranking: Path, truth: dict[str, str], truth_csv: Path, gallery: Path, keep: set[str], tag: str) -> dict[str, float]:
    """top-1 and mAP@20 of the rankings of ``keep`` through `reid eval`."""
    rows = [r for r in read(ranking) if r["query_id"] in keep]
    sub = ranking.with_name(f"{tag}.ids.csv")
    write_rows(sub, list(rows[0]), [list(r.values()) for r in rows])
    reid("eval", "--submission", sub, "--query", truth_csv, "--gallery", gallery, "--json", sub.with_suffix(".json"))
    top1 = json.loads(sub.with_suffix(".json").read_text())
    as_sub = ranking.with_name(f"{tag}.sub.csv")
    write_rows(as_sub, ["query_id", "database_image_id", "score"],
               [[r["query_id"], r["identity"], f"{(float(r['score']) + 1) / 2:.6f}"] for r in rows])
    labels = ranking.with_name(f"{tag}.labels.csv")
    write_rows(labels, ["query_id", "database_image_id"], [[q, truth[q]] for q in sorted(keep)])
    reid("eval", "--submission", as_sub, "--labels", labels, "--json", as_sub.with_suffix(".json"))
    m = json.loads(as_sub.with_suffix(".json").read_text())
    assert top1["known_queries"] == m["queries_scored"] == len(keep), (top1, m, len(keep))
    return {"mAP@20": round(m["mAP@20"], 4), "top1": round(top1["top1_known"], 4), "queries": len(keep)}


def group(ranking: Path) -> dict[str, list[dict[str, str]]]:
    out: dict[str, list[dict[str, str]]] = defaultdict(list)
    for r in read(ranking):
        out[r["query_id"]].append(r)
    return out


def main(out: Path, bundle: Path | None, seed: int = 5) -> dict[str, object]:
    out.mkdir(parents=True, exist_ok=True)
    synth = out / "synth"
    if not (synth / "metadata.csv").exists():
        reid("synth", synth, *SYNTH, "--seed", seed, "--overwrite")
    bundle = bundle or build_bundle(out)
    photo_truth, enc_truth, size = split(synth)
    photo_enc = {r["image_id"]: r["encounter_id"] for r in read(synth / "queries.csv")}
    cat = out / "cat"
    shutil.rmtree(cat, ignore_errors=True)
    reid("catalogue", "init", cat, "--model", bundle, "--gallery", synth / "gallery.csv", "--backend", "ort-cpu", "--quiet")
    runs = {"per_photo": out / "image.csv", "encounter_max": out / "max.csv", "encounter_mean": out / "mean.csv"}
    reid("catalogue", "match", cat, "--query", synth / "queries.csv", "-o", runs["per_photo"], "--quiet")
    for fusion in ("max", "mean"):
        reid("catalogue", "match", cat, "--query", synth / "queries.csv", "-o", runs[f"encounter_{fusion}"], "--quiet",
             "--group-by", "encounter", "--fusion", fusion)
    first_photo: dict[str, str] = {}  # each encounter's first photo, ranked alone: the same units as an encounter ranking
    for i, e in photo_enc.items():
        first_photo.setdefault(e, i)
    by_photo = group(runs["per_photo"])
    runs["first_photo"] = out / "first.csv"
    write_rows(runs["first_photo"], ["query_id", "identity", "score", "database_image_id"],
               [[e, r["identity"], r["score"], r["database_image_id"]] for e, i in first_photo.items() for r in by_photo[i]])
    multi = {e for e, n in size.items() if n > 1}
    result: dict[str, object] = {
        "data": f"reid synth {' '.join(SYNTH)} --seed {seed}; gallery: each whale's earliest encounter",
        "gallery_images": len(read(synth / "gallery.csv")), "identities_queried": len(set(enc_truth.values())),
        "query_photos": len(photo_truth), "query_encounters": len(enc_truth),
        "encounter_sizes": {str(k): sum(1 for n in size.values() if n == k) for k in sorted(set(size.values()))},
        "all": {}, "multi_photo_encounters": {},
    }
    for subset, encs in (("all", set(enc_truth)), ("multi_photo_encounters", multi)):
        photos = {i for i, e in photo_enc.items() if e in encs}
        block: dict[str, object] = {}
        block["per_photo"] = score(runs["per_photo"], photo_truth, synth / "queries.csv", synth / "gallery.csv", photos, f"{subset}.image")
        for run in ("first_photo", "encounter_max", "encounter_mean"):
            block[run] = score(runs[run], enc_truth, synth / "encounters.csv", synth / "gallery.csv", encs, f"{subset}.{run}")
        top = {run: {q: rows[0]["identity"] for q, rows in group(runs[run]).items()} for run in ("encounter_max", "encounter_mean")}
        right = {run: {e for e in encs if top[run].get(e) == enc_truth[e]} for run in top}
        block["top1_only_max_right"] = len(right["encounter_max"] - right["encounter_mean"])
        block["top1_only_mean_right"] = len(right["encounter_mean"] - right["encounter_max"])
        result[subset] = block
    (out / "result.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    if len(sys.argv) not in (2, 3, 4):
        sys.exit(__doc__)
    res = main(Path(sys.argv[1]), Path(sys.argv[2]) if len(sys.argv) > 2 and sys.argv[2] else None,
               int(sys.argv[3]) if len(sys.argv) == 4 else 5)
    print(json.dumps(res, indent=2))
