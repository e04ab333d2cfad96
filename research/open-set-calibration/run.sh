#!/usr/bin/env bash
# Calibration error and open-set figures on unseen ORL people (see README.md here).
# Usage: research/open-set-calibration/run.sh OUT_DIR     (a few minutes on a laptop CPU)
set -euo pipefail
OUT=${1:?usage: run.sh OUT_DIR}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT"
# the bundle: ImageNet Lite0 from the [weights] extra, not fine-tuned (--lr 0); 64x56 input, 64-d
W=$(python -m reidkit.train.pretrained tf_efficientnet_lite0)
reid train --data orl:1-4 --val-identities s4 --image-size 64x56 --embedding-dim 64 --batch-size 16 --epochs 1 \
  --backbone tf_efficientnet_lite0 --weights "$W" --lr 0 --out "$OUT/m.safetensors"
reid export "$OUT/m.safetensors" -o "$OUT/bundle" --overwrite
python - "$OUT" <<'PY'
import shutil, sys
from pathlib import Path
from reidkit.demo import prepare
from reidkit.data.orl import orl_root
out = Path(sys.argv[1])
prepare(out / "dev", range(5, 31))       # calibration people (s1-s4 touched the BatchNorm statistics)
prepare(out / "heldout", range(31, 41))  # judged on these
root = orl_root()
for k in range(31, 41):                  # open set: gallery s31-s35 photos 1-5, queries photos 6-8 of s31-s40
    for i in range(1, 9):
        if i <= 5 and k > 35:
            continue
        dst = out / ("gallery" if i <= 5 else "query") / f"s{k}" / f"{i}.pgm"
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(root / f"s{k}" / f"{i}.pgm", dst)
PY
for S in dev heldout; do
  reid infer --model "$OUT/bundle" --backend ort-cpu --scenarios "$OUT/$S/whaledo/query_scenarios.csv" \
    --metadata "$OUT/$S/whaledo/metadata.csv" -o "$OUT/$S/sub.csv" --embeddings-out "$OUT/$S/emb.npz" --quiet
done
reid eval --embeddings "$OUT/dev/emb.npz" --labels-from "$OUT/dev/whaledo/metadata.csv" --calibrate "$OUT/calibration.json" \
  --json "$OUT/fit.json"
reid eval --embeddings "$OUT/heldout/emb.npz" --labels-from "$OUT/heldout/whaledo/metadata.csv" --calibration "$OUT/calibration.json" \
  --plots "$OUT/plots" --json "$OUT/heldout.json"
for P in 0.3 0.5 0.7; do
  reid infer --model "$OUT/bundle" --backend ort-cpu --query "$OUT/query" --gallery "$OUT/gallery" --by identity \
    --calibration "$OUT/calibration.json" --new-individual $P -o "$OUT/ids_$P.csv" --quiet > /dev/null
  reid eval --submission "$OUT/ids_$P.csv" --query "$OUT/query" --gallery "$OUT/gallery" --json "$OUT/open_set_$P.json"
done
