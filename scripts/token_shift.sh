#!/usr/bin/env bash
# Does a token shift close the SpikeDecoder's gap to its ANN twin? Each block's q/k/v
# and/or feed-forward neurons also receive the spikes of the previous K tokens (same step
# t), through per-channel gains (diag: W diag(mu_j), 64 parameters per lag and target)
# or whole matrices (full); models/config.py: SHIFT_MODES. Shipped size, concurrently
# on one GPU; evaluate with `python -m snn_compile.benchmarks.variants OUT/*.pt ...`.
# Usage: scripts/token_shift.sh OUT_DIR [STEPS] [DEVICE] [GROUP]
#   GROUP ablation: K, diag/full, targets, at lr 1e-3 (+ lr 2e-3)
#   GROUP lr:       K = 2 diag into both at lr 2e-3..6e-3, T = 8, a second seed, and the SpikeDecoder without shift at lr 6e-3
#                   (the shipped default:spikedecoder is lr6)
# TRAIN_TIMEOUT=S stops each run after S seconds (scripts/_train_runs.sh).
set -euo pipefail
out=${1:?usage: scripts/token_shift.sh OUT_DIR [STEPS] [DEVICE] [GROUP]}
steps=${2:-3000}
device=${3:-cuda}
group=${4:-lr}
mkdir -p "$out"
common=(--model spikedecoder --steps "$steps" --batch-size 64 --d-model 64
        --layers 2 --heads 4 --context 128 --eval-interval 250 --device "$device")
# --seed and --timesteps (default 4) are per run: `run` puts the common arguments last
source "$(dirname "$0")/_train_runs.sh"
k2=(--token-shift 2 --shift-mode diag --shift-into both)
case "$group" in
ablation)
    run shift1_diag_both      --seed 0 --lr 1e-3 --token-shift 1 --shift-mode diag --shift-into both
    run shift2_diag_both      --seed 0 --lr 1e-3 "${k2[@]}"
    run shift1_diag_qkv       --seed 0 --lr 1e-3 --token-shift 1 --shift-mode diag --shift-into qkv
    run shift1_diag_ff        --seed 0 --lr 1e-3 --token-shift 1 --shift-mode diag --shift-into ff
    run shift2_full_both      --seed 0 --lr 1e-3 --token-shift 2 --shift-mode full --shift-into both
    run shift2_diag_both_lr2  --seed 0 --lr 2e-3 "${k2[@]}"
    ;;
lr)
    run shift2_lr2        --seed 0 --lr 2e-3 "${k2[@]}"
    run shift2_lr2_T8     --seed 0 --lr 2e-3 "${k2[@]}" --timesteps 8
    run shift2_lr3        --seed 0 --lr 3e-3 "${k2[@]}"
    run shift2_lr4        --seed 0 --lr 4e-3 "${k2[@]}"
    run shift2_lr4_seed1  --seed 1 --lr 4e-3 "${k2[@]}"
    run shift2_lr6        --seed 0 --lr 6e-3 "${k2[@]}"
    run noshift_lr6       --seed 0 --lr 6e-3
    ;;
*)
    echo "unknown group $group (ablation or lr)" >&2
    exit 2
    ;;
esac
finish
