#!/usr/bin/env bash
# How much accuracy does the spiking attention lose because its causal sum grows with the
# position? Trains the SpikeDecoder with the deployable memory (sum) and the training
# experiments mean and decay (models/config.py: ATTENTION_MEMORIES) at the block-exchange
# settings, concurrently on one GPU; evaluate with `snn-compile eval OUT/NAME.pt --json`.
# Usage: scripts/attention_memory.sh OUT_DIR [STEPS] [DEVICE]
# TRAIN_TIMEOUT=S stops each run after S seconds (scripts/_train_runs.sh).
set -euo pipefail
out=${1:?usage: scripts/attention_memory.sh OUT_DIR [STEPS] [DEVICE]}
steps=${2:-3000}
device=${3:-cuda}
mkdir -p "$out"
common=(--model spikedecoder --lr 1e-3 --steps "$steps" --batch-size 64 --d-model 64
        --layers 2 --heads 4 --context 128 --timesteps 4 --eval-interval 250
        --device "$device" --seed 0)
source "$(dirname "$0")/_train_runs.sh"
run memory_sum     --attention-memory sum
run memory_mean    --attention-memory mean
run memory_decay5  --attention-memory decay --attention-decay-shift 5
run memory_decay7  --attention-memory decay --attention-decay-shift 7
finish
