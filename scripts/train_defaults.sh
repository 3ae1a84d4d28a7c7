#!/usr/bin/env bash
# Trains the two shipped checkpoints (snn_compile/assets/) on one GPU, concurrently:
# the deployable SpikeDecoder and its ANN twin, same size, same steps, batch and seed.
# Usage: scripts/train_defaults.sh OUT_DIR [STEPS]
set -euo pipefail
out=${1:?usage: scripts/train_defaults.sh OUT_DIR [STEPS]}
steps=${2:-3000}
mkdir -p "$out"
common=(--steps "$steps" --batch-size 64 --lr 3e-3 --d-model 64 --layers 2 --heads 4
        --context 128 --eval-interval 500 --device cuda --seed 0)
python3 -m snn_compile.cli.main train --model spikedecoder --timesteps 4 "${common[@]}" \
    -o "$out/spikedecoder.pt" > "$out/spikedecoder.log" 2>&1 &
python3 -m snn_compile.cli.main train --model ann "${common[@]}" \
    -o "$out/ann.pt" > "$out/ann.log" 2>&1 &
wait
