# GPU side of the generalizable-INR benchmarks (issue 15), run by the device tool in the repository root:
#   bash benchmarks/gpu_ginr.sh PART...   (reference: ours beside the official IPC code; fashion, emoji: the
#                                          defaults sweep, benchmarks/ginr_defaults.py)
# Carry .whl (omegaconf, antlr4, tqdm, pypng), .carry/data (fashion-mnist, noto), .carry/ginr-ipc (a checkout of
# kakaobrain/ginr-ipc) and, for the reference's "ours-before" curve, .carry/before (another nfields checkout).
# Every part is timed alone first, one after another; then all parts train side by side. Results JSON (and the
# reference's plot) in $OUT; timings and logs in $OUT/logs.tgz.
# GINR_SECONDS (default 60) is the sweep's training time alone per setting; GINR_STEPS (10000) the reference's;
# GINR_DEADLINE (420) the seconds of the side-by-side phase; GINR_REFERENCE_ARGS, GINR_SWEEP_ARGS more flags.
# The H100 run of 2026-12-08 (about 6 minutes, results in benchmarks/results/ginr_reference_cuda.json):
#   GINR_DEADLINE=330 GINR_REFERENCE_ARGS='--before-steps 2000 --extra {"name":"official-fp32","impl":"official",\
#     "precision":"fp32","steps":1000}' bash benchmarks/gpu_ginr.sh reference
set -o pipefail
source benchmarks/gpu_env.sh
source benchmarks/gpu_data.sh
export PYTHONPATH=$PWD:$PYTHONPATH
# MPS lets the side-by-side processes share the GPU's SMs instead of taking turns (where the driver allows it).
if [ -z "$GINR_NO_MPS" ] && command -v nvidia-cuda-mps-control >/dev/null && nvidia-cuda-mps-control -d 2>/dev/null; then
  if python -c "import torch; torch.zeros(1, device='cuda')" 2>/dev/null; then
    echo "MPS on"; trap 'echo quit | nvidia-cuda-mps-control' EXIT
  else
    echo quit | nvidia-cuda-mps-control; echo "MPS refused; processes take turns"
  fi
fi
parts=${*:-reference fashion}
AUX=$(mktemp -d)  # timings, logs: one archive back (the device returns at most 8 files)
deadline=${GINR_DEADLINE:-420}  # seconds for the side-by-side phase
before=""; [ -d .carry/before/nfields ] && before="--before .carry/before"
for part in $parts; do
  case $part in
    reference) python benchmarks/ginr_reference.py --official .carry/ginr-ipc $before --steps ${GINR_STEPS:-10000} \
                 --eval-at 1000 2000 5000 --json "$AUX/ref_timing.json" --timing-only $GINR_REFERENCE_ARGS ;;
    fashion|emoji) python benchmarks/ginr_defaults.py --plan $part --seconds ${GINR_SECONDS:-60} \
                 --json "$AUX/sweep_${part}_timing.json" --timing-only $GINR_SWEEP_ARGS ;;
  esac > "$AUX/timing_$part.txt" 2>&1
  echo "== timing $part: exit $?"; tail -3 "$AUX/timing_$part.txt"
done
for part in $parts; do
  case $part in
    reference) timeout $deadline python benchmarks/ginr_reference.py --official .carry/ginr-ipc $before \
                 --steps ${GINR_STEPS:-10000} --eval-at 1000 2000 5000 --timings "$AUX/ref_timing.json" \
                 --timeout $((deadline - 20)) --json "$OUT/ginr_reference_cuda.json" $GINR_REFERENCE_ARGS ;;
    fashion|emoji) timeout $deadline python benchmarks/ginr_defaults.py --plan $part --seconds ${GINR_SECONDS:-60} \
                 --timings "$AUX/sweep_${part}_timing.json" --timeout $((deadline - 20)) \
                 --json "$OUT/ginr_defaults_${part}_cuda.json" $GINR_SWEEP_ARGS ;;
  esac > "$AUX/$part.txt" 2>&1 &
done
wait
for part in $parts; do echo "== $part"; tail -30 "$AUX/$part.txt"; done
cp runs/*/*/*.log runs/*/*.log "$AUX/" 2>/dev/null
tar czf "$OUT/logs.tgz" -C "$AUX" . ; true
