#!/usr/bin/env bash
# The occlusion and segmentation benchmarks on CUDA, fp32 and bf16, in under 5 minutes.
# Run from the repository root with the project's .venv:  bash benchmarks/gpu.sh
# Results: benchmarks/results/*-cuda-*.json (and the tables on stdout, also in
# benchmarks/results/gpu.log). Each run has its own time limit so that one slow contender
# cannot take the whole budget; a run that hits it is reported and the next one starts.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
OUT=benchmarks/results
mkdir -p "$OUT"
LOG="$OUT/gpu.log"
: > "$LOG"

if ! "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    echo "no CUDA device visible to torch ($("$PY" -c 'import torch; print(torch.__version__)')); nothing run." | tee -a "$LOG"
    exit 1
fi
"$PY" -c 'import torch; print("device:", torch.cuda.get_device_name(0), "torch", torch.__version__)' | tee -a "$LOG"

run() {  # run LIMIT_S NAME ARGS...: one benchmark, its table into the log
    local limit=$1 name=$2
    shift 2
    echo "== $name" | tee -a "$LOG"
    local start=$SECONDS
    timeout "$limit" "$PY" "$@" 2>&1 | tee -a "$LOG"
    local rc=${PIPESTATUS[0]}
    echo "-- $name: exit $rc after $((SECONDS - start)) s" | tee -a "$LOG"
}

# Occlusion of a classifier (MONAI ResNet-18, 96^3, 216 windows): xaimed plain and incremental,
# Captum, MONAI; the bf16 contender runs xaimed under bf16 autocast and compares to fp32.
run 90 occlusion "benchmarks/occlusion.py" --device cuda --model resnet18 --size 96 \
    --window 16 --stride 16 --sweep 1,32 --bf16-size 96 --threads 4 \
    --json "$OUT/occlusion-cuda.json"

# Tiled segmentation (MONAI UNet, 192x192x128, 64^3 patches, 16^3 windows): fp32 and bf16,
# batch norm and instance norm; whole-pass contenders (xaimed plain, Captum, MONAI) timed on 8
# random windows of the grid, xaimed's incremental engines (exact, frozen norm statistics with
# instance norm, patch-incremental) on 48 (a superset).
for norm in batch instance; do
    for precision in fp32 bf16; do
        run 50 "segmentation $norm $precision" benchmarks/segmentation.py --device cuda \
            --precision "$precision" --norm "$norm" --sample 8 --patch-sample 48 --batch 16 \
            --threads 4 \
            --json "$OUT/segmentation-$norm-cuda-$precision.json"
    done
done
echo "total: $SECONDS s" | tee -a "$LOG"
