# Shared by the training-grid scripts (sourced, not run). The sourcing script sets $out
# (an existing folder) and the array `common` (arguments of every run), then calls
#   run NAME ARGS...   one `snn-compile train` in the background, log in $out/NAME.log
#   finish             waits for every run, prints the last validation lines of each log,
#                      and fails if any run failed
# TRAIN_TIMEOUT=S stops each run after S seconds (the best checkpoint so far stays; its
# recorded step count says how far it got).
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} PYTHONUNBUFFERED=1
lim=()
if [[ -n "${TRAIN_TIMEOUT:-}" ]]; then lim=(timeout -s INT "$TRAIN_TIMEOUT"); fi

run() {
    local name=$1
    shift
    "${lim[@]}" python3 -m snn_compile.cli.main train "$@" "${common[@]}" -o "$out/$name.pt" \
        > "$out/$name.log" 2>&1 &
}

finish() {
    local status=0 job f
    for job in $(jobs -p); do wait "$job" || status=$?; done
    for f in "$out"/*.log; do echo "== $f"; grep -E '^(step|error)' "$f" | tail -3 || true; done
    return $status
}
