#!/usr/bin/env bash
# Small grid over the SpikeDecoder's learning rate and surrogate on one GPU (concurrent runs),
# plus the ANN twin at the same size, steps, batch and seed. Usage: scripts/train_sweep.sh OUT [STEPS]
set -euo pipefail
out=${1:?usage: scripts/train_sweep.sh OUT_DIR [STEPS]}
steps=${2:-3000}
mkdir -p "$out"
common=(--steps "$steps" --batch-size 64 --d-model 64 --layers 2 --heads 4 --context 128
        --eval-interval 250 --device cuda --seed 0)
run() { name=$1; shift; python3 -m snn_compile.cli.main train "$@" "${common[@]}" -o "$out/$name.pt" > "$out/$name.log" 2>&1 & }
run snn_lr1e-3_atan  --model spikedecoder --lr 1e-3 --surrogate atan
run snn_lr1e-3_fs    --model spikedecoder --lr 1e-3 --surrogate fast_sigmoid
run snn_lr5e-4_atan  --model spikedecoder --lr 5e-4 --surrogate atan
run ann_lr3e-3       --model ann --lr 3e-3
wait
for f in "$out"/*.log; do echo "== $f"; grep '^step' "$f" | tail -13; done
