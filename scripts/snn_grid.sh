#!/usr/bin/env bash
# A grid over the deployable SpikeDecoder's steps per token (T), learning rate and
# training length at the shipped size, concurrently on one GPU; evaluate with
# `snn-compile eval OUT/NAME.pt --json`. Usage: scripts/snn_grid.sh OUT_DIR [STEPS] [DEVICE]
# TRAIN_TIMEOUT=S stops each run after S seconds (scripts/_train_runs.sh).
set -euo pipefail
out=${1:?usage: scripts/snn_grid.sh OUT_DIR [STEPS] [DEVICE]}
steps=${2:-3000}
device=${3:-cuda}
mkdir -p "$out"
common=(--model spikedecoder --batch-size 64 --d-model 64 --layers 2 --heads 4 --context 128
        --eval-interval 250 --device "$device" --seed 0)
source "$(dirname "$0")/_train_runs.sh"
run T2_lr1e-3        --timesteps 2 --lr 1e-3 --steps "$steps"
run T8_lr1e-3        --timesteps 8 --lr 1e-3 --steps "$steps"
run T4_lr2e-3        --timesteps 4 --lr 2e-3 --steps "$steps"
run T4_lr1e-3_long   --timesteps 4 --lr 1e-3 --steps $((2 * steps))
finish
