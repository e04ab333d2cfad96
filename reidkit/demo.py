"""``make demo``: the whole chain on the bundled real data (the ORL faces).

Trains a two-member ensemble on people s1-s30 (validation on the unseen s31-s40), exports
it, runs ``reid-infer`` in folder mode and in Whale-do scenario mode on the unseen
people, and scores both. Every step is the real CLI, printed before it runs, so the
output doubles as a tour of the commands.

Usage: python -m reidkit.demo OUT_DIR [--epochs N]
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from reidkit.data.csvio import write_rows
from reidkit.data.orl import orl_root

UNSEEN = range(31, 41)
VAL = ",".join(f"s{k}" for k in UNSEEN)


def _bin(name: str) -> str:
    exe = Path(sys.executable).with_name(name)
    return str(exe) if exe.exists() else name


def run(*args: str) -> None:
    print(f"\n$ {' '.join(shlex.quote(a) for a in args)}", flush=True)
    t = time.perf_counter()
    subprocess.run([_bin(args[0]), *args[1:]], check=True)
    print(f"  ({time.perf_counter() - t:.1f}s)", flush=True)


def prepare(data: Path) -> None:
    """Folder-mode and Whale-do-style copies of the unseen people (s31-s40)."""
    root = orl_root()
    shutil.rmtree(data, ignore_errors=True)
    meta, queries, database = [], [], []
    for k in UNSEEN:
        for i in range(1, 11):
            src = root / f"s{k}" / f"{i}.pgm"
            dst = data / ("query" if i == 1 else "gallery") / f"s{k}" / f"{i}.pgm"
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, dst)
            img = data / "whaledo" / "images" / f"s{k}_{i}.pgm"
            img.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(src, img)
            iid = f"s{k}_{i}"
            meta.append((iid, f"images/{iid}.pgm", "top", f"s{k}"))
            queries.append((f"all-{iid}", iid))
            database.append((iid,))
    wd = data / "whaledo"
    write_rows(wd / "metadata.csv", ["image_id", "path", "viewpoint", "whale_id"], meta)
    # scenario "all": every image queries all the others (itself excluded);
    # scenario "first": each person's first image queries the other nine of everyone
    write_rows(wd / "queries" / "all.csv", ["query_id", "query_image_id"], queries)
    write_rows(wd / "databases" / "all.csv", ["database_image_id"], database)
    write_rows(wd / "queries" / "first.csv", ["query_id", "query_image_id"], [(f"first-s{k}_1", f"s{k}_1") for k in UNSEEN])
    write_rows(wd / "databases" / "first.csv", ["database_image_id"], [(f"s{k}_{i}",) for k in UNSEEN for i in range(2, 11)])
    write_rows(wd / "query_scenarios.csv", ["scenario_id", "queries_path", "database_path"],
               [("all", "queries/all.csv", "databases/all.csv"), ("first", "queries/first.csv", "databases/first.csv")])


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    out = Path(argv[0])
    epochs = int(argv[argv.index("--epochs") + 1]) if "--epochs" in argv else 20
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    prepare(out / "data")
    cfg = out / "ensemble_train.toml"
    cfg.write_text(f'''# two members: different input sizes and seeds. Small nets at low resolution generalise
# best from 300 training faces (resnet10t at 56x48 beats resnet18 at 112x96 on the unseen
# people), and faces are mirror-symmetric, so horizontal flips are a fair augmentation here.
data = "orl"
val_identities = "{VAL}"
epochs = {epochs}
batch_size = 32
embedding_dim = 128
concat_stages = true
hflip = true
ensemble = "ensemble.toml"

[[members]]
backbone = "resnet10t"
image_size = "56x48"
seed = 0
out = "models/orl_r10t_56x48.safetensors"

[[members]]
backbone = "resnet10t"
image_size = "64x56"
seed = 1
out = "models/orl_r10t_64x56.safetensors"
''')
    run("reid-train", "--config", str(cfg))
    import importlib.util

    has_mnn = importlib.util.find_spec("MNN") is not None  # the optional [mnn] extra, which `make demo` installs
    run("reid-export", str(out / "ensemble.toml"), "-o", str(out / "bundle"), "--fp16", "--int8", *(["--mnn"] if has_mnn else []), "--overwrite")
    run("reid-infer", "--model", str(out / "bundle"), "--query", str(out / "data/query"), "--gallery", str(out / "data/gallery"),
        "-o", str(out / "folder_matches.csv"), "--embeddings-out", str(out / "folder_embeddings.npz"))
    wd = out / "data" / "whaledo"
    run("reid-infer", "--model", str(out / "bundle"), "--scenarios", str(wd / "query_scenarios.csv"), "--metadata", str(wd / "metadata.csv"),
        "-o", str(out / "submission.csv"), "--embeddings-out", str(out / "embeddings.npz"), "--cache", str(out / "cache.sqlite"))
    run("reid-eval", "--submission", str(out / "submission.csv"), "--metadata", str(wd / "metadata.csv"), "--scenarios",
        str(wd / "query_scenarios.csv"), "--json", str(out / "eval.json"))
    run("reid-eval", "--embeddings", str(out / "embeddings.npz"), "--labels-from", str(wd / "metadata.csv"))
    # the INT8 graphs, the fastest on CPUs: same submission format, scored the same way
    run("reid-infer", "--model", str(out / "bundle"), "--scenarios", str(wd / "query_scenarios.csv"), "--metadata", str(wd / "metadata.csv"),
        "-o", str(out / "submission_int8.csv"), "--precision", "int8")
    run("reid-eval", "--submission", str(out / "submission_int8.csv"), "--metadata", str(wd / "metadata.csv"), "--scenarios",
        str(wd / "query_scenarios.csv"))
    if has_mnn:  # MNN, the fastest fp32 CPU engine: the fp32 rankings, faster
        run("reid-infer", "--model", str(out / "bundle"), "--scenarios", str(wd / "query_scenarios.csv"), "--metadata", str(wd / "metadata.csv"),
            "-o", str(out / "submission_mnn.csv"), "--backend", "mnn")
        run("reid-eval", "--submission", str(out / "submission_mnn.csv"), "--metadata", str(wd / "metadata.csv"), "--scenarios",
            str(wd / "query_scenarios.csv"))
    # outputs for people: individuals ranked per query with the review page, and the evaluation figures
    run("reid-infer", "--model", str(out / "bundle"), "--query", str(out / "data/query"), "--gallery", str(out / "data/gallery"),
        "-o", str(out / "identity_matches.csv"), "--by", "identity", "--top-k", "5", "--review", str(out / "review"))
    run("reid-eval", "--submission", str(out / "submission.csv"), "--metadata", str(wd / "metadata.csv"), "--scenarios",
        str(wd / "query_scenarios.csv"), "--plots", str(out / "plots"))
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f}s. Outputs in {out}/:")
    for name in ("models/", "ensemble.toml", "bundle/", "folder_matches.csv", "submission.csv", "submission_int8.csv", "submission_mnn.csv", "embeddings.npz", "eval.json"):
        if (out / name).exists():
            print(f"  {out / name}")
    print(f"review page (open in a browser): {(out / 'review' / 'index.html').resolve().as_uri()}")
    print(f"evaluation plots: {', '.join(str(p) for p in sorted((out / 'plots').glob('*.png')))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
