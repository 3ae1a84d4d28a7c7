#!/usr/bin/env bash
# The scaling study: SpikeDecoders on the residual stream with the decaying attention
# memory against ANN twins of the same size (blocks x d_model 2x64, 4x128, 6x256; 16-wide
# heads), concurrently on one GPU, equal steps, batch 64, context 128 and seed.
# Usage: scripts/scaling.sh OUT_DIR [STEPS] [DEVICE] [GROUP]
#   GROUP table:   the scaling table's six runs (README), the shipped recipe at each size
#   GROUP explore: design ablations at 4x128 (shift, memory, lr) plus the table's sizes
#   GROUP floor:   the attention spike-rate floor at 4x128 (weight, lr, heads, T) and the
#                  twin at two learning rates
# Then, on any machine: python -m snn_compile.benchmarks.scaling OUT --out docs/results/scaling
# CUDA_GRAPHS=1 replays each training step as one CUDA graph (snn-compile train --cuda-graphs).
# TRAIN_TIMEOUT=S stops each run after S seconds (scripts/_train_runs.sh). DATA=FILE trains on
# FILE (on a machine whose Python is not 3.10, pass the 3.10 embedded corpus written to a file:
# snn_compile/assets/MANIFEST.md).
set -euo pipefail
out=${1:?usage: scripts/scaling.sh OUT_DIR [STEPS] [DEVICE] [table|explore|floor]}
steps=${2:-1000}
device=${3:-cuda}
group=${4:-table}
mkdir -p "$out"
common=(--steps "$steps" --batch-size 64 --context 128 --eval-interval ${EVAL_INTERVAL:-250} --device "$device" ${DATA:+--data "$DATA"} ${CUDA_GRAPHS:+--cuda-graphs}
        --seed 0)
source "$(dirname "$0")/_train_runs.sh"
sd=(--model spikedecoder --residual stream --attention-memory decay --timesteps 4)
s64=(--layers 2 --d-model 64 --heads 4)
s128=(--layers 4 --d-model 128 --heads 8)
s256=(--layers 6 --d-model 256 --heads 16)
case "$group" in
table)
    run sd_2x64   "${sd[@]}" "${s64[@]}"  --token-shift 2 --lr 6e-3 --attention-floor 0.02
    run ann_2x64  --model ann "${s64[@]}"  --lr 3e-3
    run sd_4x128  "${sd[@]}" "${s128[@]}" --token-shift 1 --lr 1e-2 --attention-floor 0.02
    run ann_4x128 --model ann "${s128[@]}" --lr 3e-3
    run sd_6x256  "${sd[@]}" "${s256[@]}" --token-shift 1 --lr 4e-3 --attention-floor 0.02
    run ann_6x256 --model ann "${s256[@]}" --lr 3e-3
    ;;
explore)
    run sd_4x128_s1_lr3   "${sd[@]}" "${s128[@]}" --token-shift 1 --lr 3e-3
    run sd_4x128_s1_lr6   "${sd[@]}" "${s128[@]}" --token-shift 1 --lr 6e-3
    run sd_4x128_noshift  "${sd[@]}" "${s128[@]}" --lr 3e-3
    run sd_4x128_sum_s1   --model spikedecoder --residual stream "${s128[@]}" --token-shift 1 --lr 3e-3
    run ann_4x128         --model ann "${s128[@]}" --lr 3e-3
    run sd_6x256_s1       "${sd[@]}" "${s256[@]}" --token-shift 1 --lr 2e-3
    run ann_6x256         --model ann "${s256[@]}" --lr 2e-3
    run sd_2x64_s2        "${sd[@]}" "${s64[@]}" --token-shift 2 --lr 6e-3
    run ann_2x64          --model ann "${s64[@]}" --lr 3e-3
    ;;
floor)
    run sd_4x128_base     "${sd[@]}" "${s128[@]}" --token-shift 1 --lr 6e-3
    run sd_4x128_f02      "${sd[@]}" "${s128[@]}" --token-shift 1 --lr 6e-3 --attention-floor 0.02
    run sd_4x128_f02_w1   "${sd[@]}" "${s128[@]}" --token-shift 1 --lr 6e-3 --attention-floor 0.02 --attention-floor-weight 1
    run sd_4x128_f02_lr10 "${sd[@]}" "${s128[@]}" --token-shift 1 --lr 1e-2 --attention-floor 0.02
    run sd_4x128_f02_h4   "${sd[@]}" --layers 4 --d-model 128 --heads 4 --token-shift 1 --lr 6e-3 --attention-floor 0.02
    run sd_4x128_f02_t6   "${sd[@]}" "${s128[@]}" --token-shift 1 --lr 6e-3 --attention-floor 0.02 --timesteps 6
    run sd_4x128_f03_lr10 "${sd[@]}" "${s128[@]}" --token-shift 1 --lr 1e-2 --attention-floor 0.03
    run sd_4x128_f02_lr14 "${sd[@]}" "${s128[@]}" --token-shift 1 --lr 1.4e-2 --attention-floor 0.02
    run ann_4x128_lr3     --model ann "${s128[@]}" --lr 3e-3
    run ann_4x128_lr6     --model ann "${s128[@]}" --lr 6e-3
    ;;
*) echo "unknown group $group (table|explore|floor)" >&2; exit 2 ;;
esac
finish
