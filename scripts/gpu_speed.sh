#!/usr/bin/env bash
# The GPU rows of the README's speed tables, one JSON file each, in the order of their
# importance, each written as soon as it exists (so a run cut short keeps what it has):
#   token_b65536.json                       token-time engine at large batch, readout sums
#                                           of 8 sequences checked against the int reference
#   token_b65536_torch_memories.json        the same with the memories' torch loop instead
#                                           of their Triton kernel (SNN_KERNELS_TRITON=0)
#   token_b131072.json                      as token_b65536, at 131 072 sequences
#   memory_forms_b16384.json                a decaying memory's token update in each of its
#                                           forms, checked and timed (benchmarks.memory_forms)
#   token_profile_b16384.json               where one token window's kernel time goes
#   train_4x128[_graphs][_tf32|_int8_tf32|_int8_bf16|_torch_lif].json
#                                           training step of the shipped pair, --profile
#                                           (_torch_lif: the LIF loops in torch, not Triton)
#   torch_b1_b1024.json                     global-time torch engine, batch 1 and 1024
# Usage: scripts/gpu_speed.sh OUT_DIR [GROUP]
#   GROUP all (default), emulator or train; OUT_DIR/default.qgraph is compiled unless
#   there. Needs a CUDA GPU; 131 072 sequences need about 115 GB of GPU memory (an
#   H200; an 80 GB H100 runs out of memory there).
set -uo pipefail
out=${1:?usage: scripts/gpu_speed.sh OUT_DIR [all|emulator|train]}
group=${2:-all}
mkdir -p "$out"
py=${PYTHON:-python3}
qgraph="$out/default.qgraph"
bench=("$py" -m snn_compile.benchmarks.bench_emulator --device cuda --json)
train=("$py" -m snn_compile.benchmarks.train_speed --device cuda --steps 10 --rounds 2
       --profile --json)
failed=0

step() {   # step NAME COMMAND...: stdout to OUT/NAME.json, stderr to OUT/NAME.log
    local name=$1; shift
    echo "[$name] $*" >&2
    local t0=$SECONDS
    if "$@" > "$out/$name.json" 2> "$out/$name.log"; then
        echo "[$name] done in $((SECONDS - t0)) s" >&2
    else
        echo "[$name] failed (exit $?): see $out/$name.log" >&2
        rm -f "$out/$name.json"          # no half-written result
        failed=1
    fi
}

if ! "$py" -c "import sys, torch; sys.exit(not torch.cuda.is_available())" 2>/dev/null; then
    echo "error: torch sees no CUDA GPU here; this script times the GPU rows (the CPU rows:" \
         "python -m snn_compile.benchmarks.bench_emulator --help)" >&2
    exit 2
fi

if [[ $group == all || $group == emulator ]]; then
    if [[ ! -f $qgraph ]]; then
        "$py" -m snn_compile.cli.main compile default:spikedecoder -o "$qgraph" \
            > "$out/compile.log" 2>&1 || { echo "compile failed: see $out/compile.log" >&2; exit 1; }
    fi
    step token_b65536 "${bench[@]}" --qgraph "$qgraph" --engine token --tokens 0 \
        --batch 65536 --batch-tokens 6 --check 8
    SNN_KERNELS_TRITON=0 step token_b65536_torch_memories "${bench[@]}" --qgraph "$qgraph" \
        --engine token --tokens 0 --batch 65536 --batch-tokens 6 --check 8
    step token_b131072 "${bench[@]}" --qgraph "$qgraph" --engine token --tokens 0 \
        --batch 131072 --batch-tokens 4 --check 8
    step memory_forms_b16384 "$py" -m snn_compile.benchmarks.memory_forms --batch 16384 --json
    step token_profile_b16384 "${bench[@]}" --qgraph "$qgraph" --engine token --tokens 0 \
        --batch 16384 --batch-tokens 2 --check 0 --profile 16384
fi
if [[ $group == all || $group == train ]]; then
    step train_4x128 "${train[@]}"
    step train_4x128_graphs "${train[@]}" --cuda-graphs
    SNN_KERNELS_TRITON=0 step train_4x128_graphs_torch_lif "${train[@]}" --cuda-graphs
    step train_4x128_graphs_tf32 "${train[@]}" --cuda-graphs --tf32
    step train_4x128_graphs_int8_tf32 "${train[@]}" --cuda-graphs --int8 --tf32
    step train_4x128_graphs_int8_bf16 "${train[@]}" --cuda-graphs --int8 --bf16-grads
fi
if [[ $group == all || $group == emulator ]]; then
    step torch_b1_b1024 "${bench[@]}" --qgraph "$qgraph" --engine torch --tokens 256 \
        --repeat 3 --batch 1024 --batch-tokens 32
fi
exit $failed
