#!/usr/bin/env bash
# Issue 30's dninv stability study on a lent GPU, in one device call (README "GPU"): the grid of
# benchmarks/dninv_stability.py (stand-ins × seeds × variants, in PLAN's priority order, JOBS processes
# sharing the GPU), nvidia-smi sampled every second, then the summary. No new run starts after DEADLINE
# seconds, so the call ends inside its limit with every finished run kept.
# Results go to $OUT: device.txt, gpu-util.csv, grid.log, summary.md, stability.tgz (the per-run JSONs).
# CHIRPS_SEEDS=0,1,2,3,4 also runs the chirps confirmation (issue 30: the Makefile's chirps report command at
# CHIRPS_STEPS, supervised and dninv) on the machine's CPU cores beside the grid, CHIRPS_WORKERS at a time:
# $OUT/chirps.log, $OUT/chirps-report/.
#   bash benchmarks/gpu_stability.sh                                   # on the device machine
#   DEVICE=cpu PY=.venv/bin/python JOBS=2 SEEDS=0 STEPS=4 PLAN="all:base;smallcnn:no_rec" OUT=/tmp/gpu-dry RUNS=/tmp/gpu-dry/runs bash benchmarks/gpu_stability.sh
set -uo pipefail
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-benchmarks/results/gpu-stability}
PY=${PY:-python3}
JOBS=${JOBS:-12}
SEEDS=${SEEDS:-0-4}
DEADLINE=${DEADLINE:-400}
PLAN=${PLAN:-"all:base;smallcnn,largecnn:no_ent,entmin,cosine,clip1,beta_ramp,supervised;resnet2_32,resnet3_16:no_ent,entmin,cosine,clip1,beta_ramp;smallcnn,largecnn:no_rec,lr_third,detach;resnet2_32,resnet3_16:supervised,no_rec,lr_third"}
DIAG_EVERY=${DIAG_EVERY:-50}
RUNS=${RUNS:-runs/stability-$DEVICE}
mkdir -p "$OUT" "$RUNS"
export PYTHONUNBUFFERED=1
if [ "$DEVICE" = cuda ]; then
  $PY -m pip install --quiet --no-deps -e . >/dev/null 2>&1 || $PY -m pip install --quiet --no-deps --no-build-isolation -e . >/dev/null
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
  nvidia-smi --query-gpu=timestamp,utilization.gpu,memory.used --format=csv -l 1 > "$OUT/gpu-util.csv" 2>/dev/null &
  SMI=$!
else
  echo "cpu ($(nproc) cores)" | tee "$OUT/device.txt"
fi
$PY -c "import torch, sys; print('torch', torch.__version__, 'python', sys.version.split()[0])" | tee -a "$OUT/device.txt"
if [ -n "${CHIRPS_SEEDS:-}" ]; then
  ( $PY -m ssl_bench.cli sweep --dataset chirps --labels 50 -d snr_db=10 --model bird10net --augment weak \
      --steps "${CHIRPS_STEPS:-4000}" --seeds "$CHIRPS_SEEDS" --methods supervised,dninv --device cpu \
      --out "$OUT/chirps-runs" --workers "${CHIRPS_WORKERS:-3}" --quiet \
    && $PY -m ssl_bench.cli report "$OUT/chirps-runs" --out "$OUT/chirps-report" ) > "$OUT/chirps.log" 2>&1 &
  CHIRPS=$!
fi
$PY benchmarks/dninv_stability.py grid --device "$DEVICE" --jobs "$JOBS" --seeds "$SEEDS" --deadline "$DEADLINE" --diag-every "$DIAG_EVERY" --plan "$PLAN" --out "$RUNS" ${STEPS:+--steps "$STEPS"} 2>&1 | tee "$OUT/grid.log"
[ -n "${CHIRPS:-}" ] && wait "$CHIRPS"
[ -n "${SMI:-}" ] && kill "$SMI" 2>/dev/null
$PY benchmarks/dninv_stability.py summary "$RUNS" > "$OUT/summary.md"
tar czf "$OUT/stability.tgz" -C "$(dirname "$RUNS")" "$(basename "$RUNS")"
awk -F', ' 'NR > 0 && $2+0 == $2+0 {s += $2; n++} END {if (n) printf "GPU busy: mean %.0f %% over %d samples\n", s / n, n}' "$OUT/gpu-util.csv" 2>/dev/null
sed -n '1,60p' "$OUT/summary.md"
