#!/usr/bin/env bash
# SDSA (Spike-driven Transformer attention, q * SN(sum k*v) per channel) against the
# SpikeDecoder's SSA (per-head (q.k) v), both with the shipped token shift and learning
# rate, at a small budget that a 2-core CPU trains in about ten minutes (context 64,
# batch 16, 2400 steps). Evaluate with `python -m snn_compile.benchmarks.variants`.
# Usage: scripts/sdsa_compare.sh OUT_DIR [STEPS] [DEVICE]
# TRAIN_TIMEOUT=S stops each run after S seconds (scripts/_train_runs.sh).
set -euo pipefail
out=${1:?usage: scripts/sdsa_compare.sh OUT_DIR [STEPS] [DEVICE]}
steps=${2:-2400}
device=${3:-cpu}
mkdir -p "$out"
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
common=(--model spikedecoder --steps "$steps" --batch-size 16 --d-model 64 --layers 2
        --heads 4 --context 64 --eval-interval 200 --lr 6e-3 --token-shift 2 --seed 0
        --device "$device")
source "$(dirname "$0")/_train_runs.sh"
run ssa  --attention ssa
run sdsa --attention sdsa
finish
