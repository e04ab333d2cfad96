"""Several subjects on one camera frame (a herd, a camera-trap burst): one decode per photo vs one per box.

Each 12 MP frame (seeded, textured as ``reidkit.data.synth.paste_subject`` makes them) holds
``--boxes`` unseen ORL faces (s31-s40) at non-overlapping random boxes, 10-20% of the frame's
height each; saved as JPEG quality 90. One bundle embeds the same boxes in one interleaved run,
twice per round:

- ``together``: the boxes of a photo listed one after another, as COCO annotations and metadata
  tables list them, so the embedder hands them to one decode thread together (the frame read,
  hashed and decoded once per DCT reduction its boxes need: ``reidkit.imaging.decode_crops``);
- ``apart``: the same items reordered so that no two boxes of a photo are neighbours, so each
  box decodes its frame on its own (what every box cost before).

Reported: end-to-end images/s (boxes/s) of ``Embedder.embed``, best of ``--rounds``, and that the
two orders give the same vectors (max abs difference). Run it on an otherwise idle machine.

Usage: python benchmarks/camera_herds.py [--bundle demo_out/bundle] [--frames 20] [--boxes 5] [--rounds 3]
       [--backend openvino] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import datetime
import platform
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _frames(work: Path, n_frames: int, n_boxes: int, seed: int = 0) -> list[list]:
    from PIL import Image

    from reidkit.data.orl import orl_root
    from reidkit.data.synth import paste_subject
    from reidkit.imaging import ImageRef

    rng = np.random.default_rng(seed)
    out = []
    for f in range(n_frames):
        face = Image.open(orl_root() / "s31" / "1.pgm")
        frame, _ = paste_subject(face, (4000, 3000), rng, fraction=(0.1, 0.1))  # the textured background
        boxes: list[tuple[int, int, int, int]] = []
        while len(boxes) < n_boxes:
            h = int(rng.integers(300, 600))
            w = h * 92 // 112
            x, y = int(rng.integers(0, 4000 - w)), int(rng.integers(0, 3000 - h))
            if any(x < bx + bw and bx < x + w and y < by + bh and by < y + h for bx, by, bw, bh in boxes):
                continue
            person = 31 + len(boxes) % 10
            subject = Image.open(orl_root() / f"s{person}" / f"{f % 10 + 1}.pgm").convert("RGB")
            frame.paste(subject.resize((w, h), Image.Resampling.BICUBIC), (x, y))
            boxes.append((x, y, w, h))
        path = work / f"frame{f:03d}.jpg"
        frame.save(path, quality=90)
        out.append([ImageRef(path, b) for b in boxes])
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--bundle", default=str(ROOT / "demo_out" / "bundle"), help="bundle directory (python -m reidkit.demo demo_out)")
    ap.add_argument("--frames", type=int, default=20)
    ap.add_argument("--boxes", type=int, default=5, help="subjects per frame")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backend", default="openvino")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    args = ap.parse_args()

    from reidkit.bench.reports import write_report
    from reidkit.cpus import cpu_model, usable_cpus
    from reidkit.runtime.bundle import load_bundle

    bundle = load_bundle(args.bundle)
    shown = Path(args.bundle).resolve()
    shown_bundle = str(shown.relative_to(ROOT)) if shown.is_relative_to(ROOT) else args.bundle
    with tempfile.TemporaryDirectory(prefix="camera-herds-") as tmp:
        photos = _frames(Path(tmp), args.frames, args.boxes)
        together = [r for p in photos for r in p]
        apart = [p[k] for k in range(args.boxes) for p in photos]
        back = np.argsort([together.index(r) for r in apart])  # apart's rows in together's order
        rate: dict[str, list[float]] = {"together": [], "apart": []}
        with bundle.embedder(args.backend, decode="threads") as emb:
            emb.embed(together[: args.boxes])  # the engines' first run out of the timings
            vec = {}
            for _ in range(args.rounds):
                for name, items in (("together", together), ("apart", apart)):
                    t = time.perf_counter()
                    e = emb.embed(items)
                    rate[name].append(len(items) / (time.perf_counter() - t))
                    vec[name] = e.vectors
            label = emb.label
    diff = float(np.abs(vec["together"] - vec["apart"][back]).max())
    best = {k: max(v) for k, v in rate.items()}
    doc = {"date": datetime.date.today().isoformat(), "machine": f"{platform.machine()}, {cpu_model()}", "cpus": usable_cpus(),
           "bundle": shown_bundle, "engine": str(label), "frames": args.frames, "boxes_per_frame": args.boxes,
           "rounds": args.rounds, "images_per_s": rate, "best": best, "speedup": best["together"] / best["apart"],
           "max_abs_difference": diff}
    md = ["# Several subjects on one camera frame: one decode per photo vs one per box", "",
          f"{doc['date']}, {doc['machine']}, {doc['cpus']} CPU(s), engine {doc['engine']}, bundle `{shown_bundle}`. "
          f"{args.frames} frames of 4000x3000 (JPEG quality 90), {args.boxes} ORL faces (s31-s40) each at non-overlapping "
          "boxes 300-600 px high. Re-run: `python benchmarks/camera_herds.py` (see its docstring).", "",
          "| order of the boxes | boxes/s (best of %d, interleaved) |" % args.rounds, "|---|---|",
          f"| a photo's boxes together (one decode per photo and DCT reduction) | {best['together']:.1f} |",
          f"| no two boxes of a photo adjacent (one decode per box) | {best['apart']:.1f} |", "",
          f"Together / apart: **{doc['speedup']:.2f}x**. The two orders give the same vectors (max abs difference "
          f"{diff:.1e}): a box's pixels do not depend on its neighbours."]
    write_report(Path(args.out), "camera-herds", doc, md)


if __name__ == "__main__":
    main()
