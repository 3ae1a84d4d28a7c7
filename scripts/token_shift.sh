#!/usr/bin/env bash
# Does a token shift close the SpikeDecoder's gap to its ANN twin? Each block's q/k/v
# and/or feed-forward neurons also receive the spikes of the previous K tokens (same step
# t), through per-channel gains (diag) or whole matrices (full); models/config.py:
# SHIFT_MODES. Block-exchange settings, concurrently on one GPU; evaluate with
# `snn-compile eval OUT/NAME.pt --json`.
# Usage: scripts/token_shift.sh OUT_DIR [STEPS] [DEVICE]
# TRAIN_TIMEOUT=S stops each run after S seconds (scripts/_train_runs.sh).
set -euo pipefail
out=${1:?usage: scripts/token_shift.sh OUT_DIR [STEPS] [DEVICE]}
steps=${2:-3000}
device=${3:-cuda}
mkdir -p "$out"
common=(--model spikedecoder --steps "$steps" --batch-size 64 --d-model 64
        --layers 2 --heads 4 --context 128 --timesteps 4 --eval-interval 250
        --device "$device" --seed 0)
source "$(dirname "$0")/_train_runs.sh"
run shift1_diag_both      --lr 1e-3 --token-shift 1 --shift-mode diag --shift-into both
run shift2_diag_both      --lr 1e-3 --token-shift 2 --shift-mode diag --shift-into both
run shift1_diag_qkv       --lr 1e-3 --token-shift 1 --shift-mode diag --shift-into qkv
run shift1_diag_ff        --lr 1e-3 --token-shift 1 --shift-mode diag --shift-into ff
run shift2_full_both      --lr 1e-3 --token-shift 2 --shift-mode full --shift-into both
run shift2_diag_both_lr2  --lr 2e-3 --token-shift 2 --shift-mode diag --shift-into both
run shift2_diag_both_dec5 --lr 1e-3 --token-shift 2 --shift-mode diag --shift-into both \
    --attention-memory decay --attention-decay-shift 5
finish
