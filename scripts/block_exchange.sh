#!/usr/bin/env bash
# Block exchange (SpikeDecoder paper, Beger, Walter & Knoll, arXiv:2606.12287): trains the
# SpikeDecoder, its ANN twin and the five single-block exchanges (models/partial.py) at equal
# size, steps, batch and seed, concurrently on one GPU; then evaluate them with
#   python -m snn_compile.benchmarks.variants OUT/*.pt --out docs/results/block_exchange
# Usage: scripts/block_exchange.sh OUT_DIR [STEPS] [DEVICE]
# EMBEDDINGS=1 also trains the SpikeDecoder with temporal and population spike embeddings.
# TRAIN_TIMEOUT=S stops each run after S seconds (scripts/_train_runs.sh).
set -euo pipefail
out=${1:?usage: scripts/block_exchange.sh OUT_DIR [STEPS] [DEVICE]}
steps=${2:-3000}
device=${3:-cuda}
mkdir -p "$out"
common=(--steps "$steps" --batch-size 64 --d-model 64 --layers 2 --heads 4 --context 128
        --timesteps 4 --eval-interval 250 --device "$device" --seed 0)
source "$(dirname "$0")/_train_runs.sh"
# learning rates of the shipped checkpoints (snn_compile/assets/MANIFEST.md): 1e-3 for every
# model with spiking parts, 3e-3 for the ANN twin
run spikedecoder       --model spikedecoder --lr 1e-3
run ann                --model ann --lr 3e-3
for kind in embedding attention feedforward norm residual; do
    run "ann_$kind" --model partial --ann-blocks "$kind" --lr 1e-3
done
# EMBEDDINGS=1 adds the SpikeDecoder with the temporal and the population spike embedding
if [[ -n "${EMBEDDINGS:-}" ]]; then
    for code in temporal population; do
        run "spikedecoder_$code" --model spikedecoder --embedding "$code" --lr 1e-3
    done
fi
finish
