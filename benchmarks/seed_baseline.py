"""How the winning Where's Whale-do solutions ran inference, reproduced as the baseline.

PyTorch eager fp32 from the checkpoints; per member, a DataLoader with batch 32 that
decodes every image again; a separate forward pass for the flipped image; member
embeddings concatenated; then, per query, a cosine over its scenario's database sorted
with pandas and cut at 20. It shares reidkit's decode and resize (so both see the same
pixels) and nothing else.

Usage: python benchmarks/seed_baseline.py --scenarios S --metadata M --out sub.csv [--device cuda [--autocast]] CKPT...
Prints one JSON line with the stage timings.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path


def main() -> None:
    t_start = time.perf_counter()
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--scenarios", required=True, type=Path)
    ap.add_argument("--metadata", required=True, type=Path)
    ap.add_argument("--out", required=True, type=Path)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="cuda: the models and batches on the GPU, as the seeds ran")
    ap.add_argument("--autocast", action="store_true",
                    help="fp16 autocast around the forward passes, as the 2nd-place solution ran its GPU inference (its log: "
                         "autocast, batches of 32); the default is fp32 everywhere")
    args = ap.parse_args()

    import numpy as np
    import pandas as pd
    import torch

    from reidkit.data.whaledo import read_metadata, read_scenarios
    from reidkit.imaging import ResizePolicy, load_rgb, resize_to
    from reidkit.train.checkpoint import load_member

    t_import = time.perf_counter() - t_start
    meta = read_metadata(args.metadata)
    scenarios = read_scenarios(args.scenarios, set(meta.image_ids))
    ids = sorted({i for s in scenarios for i in s.database} | {img for s in scenarios for _, img in s.queries})

    class ImageSet(torch.utils.data.Dataset):
        def __init__(self, h: int, w: int, policy: ResizePolicy) -> None:
            self.h, self.w, self.policy = h, w, policy

        def __len__(self) -> int:
            return len(ids)

        def __getitem__(self, i: int):
            return torch.from_numpy(resize_to(load_rgb(meta.paths[ids[i]]), self.h, self.w, self.policy).copy())

    decode = embed = 0.0
    parts = []
    for ckpt in args.checkpoints:
        model, _ = load_member(ckpt, args.device)
        h, w = model.net.cfg.input_size
        loader = torch.utils.data.DataLoader(ImageSet(h, w, ResizePolicy.from_dict(model.net.cfg.resize)),
                                             batch_size=args.batch_size, num_workers=args.workers)
        out = []
        t = time.perf_counter()
        with torch.no_grad(), torch.autocast(args.device, dtype=torch.float16, enabled=args.autocast):
            for x in loader:
                t1 = time.perf_counter()
                decode += t1 - t
                x = x.to(args.device)
                e = model(x) + model(torch.flip(x, dims=[2]))  # second pass for the flipped image
                out.append(torch.nn.functional.normalize(e.float(), dim=1).cpu().numpy())
                t = time.perf_counter()
                embed += t - t1
        parts.append(np.concatenate(out))
    emb = np.concatenate(parts, axis=1)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    row = {i: k for k, i in enumerate(ids)}

    t = time.perf_counter()
    frames = []
    for s in scenarios:
        db = emb[[row[d] for d in s.database]]
        for qid, img in s.queries:
            sims = db @ emb[row[img]]
            df = pd.DataFrame({"query_id": qid, "database_image_id": s.database, "score": (sims + 1) / 2})
            df = df[df.database_image_id != img].sort_values("score", ascending=False).head(20)
            frames.append(df)
    sub = pd.concat(frames)
    sub["score"] = sub["score"].clip(0, 1)
    sub.to_csv(args.out, index=False, float_format="%.6f")
    rank = time.perf_counter() - t
    print(json.dumps({"images": len(ids), "import": t_import, "decode": decode, "embed": embed, "rank": rank,
                      "total": time.perf_counter() - t_start}))


if __name__ == "__main__":
    main()
