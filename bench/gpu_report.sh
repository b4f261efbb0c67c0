#!/usr/bin/env bash
# The GPU checks and benchmarks in one run: each step under its own time limit, every log kept.
#
#   bash bench/gpu_report.sh                       # every step, in this order
#   bash bench/gpu_report.sh tests speed song      # some steps
#
# Steps (most telling first):
#   env            python, torch, and the doctor's view of the device (its memory, the memory decision)
#   tests          tests/test_on_device.py (the goldens in float32 and bfloat16 on the device, the compiled
#                  LM step against the eager one) and the offload peak test
#   speed          bench/bench_speed.py: float32 against bfloat16 for each stage, max_memory_allocated
#   song           bench/bench_song.py: a 240 s song, 1.7B LM thinking, end to end
#   speed-compile  bench_speed.py --compile (the DiT and the VAE decoder under torch.compile)
#   song-compile   bench_song.py --compile (+ the LM's fixed-shape step under CUDA graphs)
#   lm-compile     bench/bench_lm.py --compile: our compiled codes loop against transformers' generate
#
# DEVICE (default cuda), PYTHON (default python3), OUT (where the logs go, default ./gpu-report),
# QUICK=1 (2-layer models and short inputs: checks the script on any machine, DEVICE=cpu included).
# Limits per step in seconds: LIMIT_<STEP> with the step's name upper-cased, '-' as '_' (LIMIT_SONG=400).
set -u
cd "$(dirname "$0")/.."
DEVICE=${DEVICE:-cuda}
PYTHON=${PYTHON:-python3}
OUT=${OUT:-gpu-report}
QUICK=${QUICK:-0}
mkdir -p "$OUT"
summary="$OUT/summary.txt"
quick=()
[ "$QUICK" = 1 ] && quick=(--quick)
export PYTHONUNBUFFERED=1

default_limit() {
    case $1 in
        env) echo 60 ;; tests) echo 240 ;; speed) echo 180 ;; song) echo 240 ;;
        speed-compile) echo 300 ;; song-compile) echo 360 ;; lm-compile) echo 240 ;; *) echo 0 ;;
    esac
}

command_for() {
    case $1 in
        env) echo "$PYTHON -c 'import sys, torch; print(sys.version.split()[0], torch.__version__)' && $PYTHON -m acestep_core doctor --device ${DEVICE%%:*}" ;;
        tests) echo "ACESTEP_TEST_DEVICE=$DEVICE $PYTHON -m pytest -q -p no:cacheprovider tests/test_on_device.py tests/test_memory_offload.py" ;;
        speed) echo "$PYTHON bench/bench_speed.py --device $DEVICE ${quick[*]:-}" ;;
        song) echo "$PYTHON bench/bench_song.py --device $DEVICE ${quick[*]:-}" ;;
        speed-compile) echo "$PYTHON bench/bench_speed.py --device $DEVICE --compile ${quick[*]:-}" ;;
        song-compile) echo "$PYTHON bench/bench_song.py --device $DEVICE --compile ${quick[*]:-}" ;;
        lm-compile) echo "$PYTHON bench/bench_lm.py --device $DEVICE --compile --max-wait 0 $([ "$QUICK" = 1 ] && echo --sizes 0.6B --tokens 4)" ;;
    esac
}

steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(env tests speed song speed-compile song-compile lm-compile)
for step in "${steps[@]}"; do
    if [ "$(default_limit "$step")" = 0 ]; then
        echo "unknown step '$step': use env tests speed song speed-compile song-compile lm-compile" >&2
        exit 2
    fi
done

echo "gpu_report on $DEVICE, $(date -u +%FT%TZ), steps: ${steps[*]}" | tee -a "$summary"
failed=0
for step in "${steps[@]}"; do
    var="LIMIT_$(echo "$step" | tr 'a-z-' 'A-Z_')"
    limit=${!var:-$(default_limit "$step")}
    log="$OUT/$step.log"
    echo "== $step (limit ${limit} s): $(command_for "$step")" | tee "$log"
    start=$(date +%s)
    timeout --kill-after=10 "$limit" bash -c "$(command_for "$step")" 2>&1 | tee -a "$log"
    rc=${PIPESTATUS[0]}
    seconds=$(( $(date +%s) - start ))
    case $rc in
        0) verdict=ok ;; 124|137) verdict="stopped at its ${limit} s limit" ;; *) verdict="failed (exit $rc)" ;;
    esac
    [ "$rc" = 0 ] || failed=1
    echo "== $step: $verdict after ${seconds} s" | tee -a "$log" "$summary"
done
exit $failed
