#!/usr/bin/env bash
# Everything a session with a lent GPU should run, in one go (about 5 minutes on an H100):
#   the CUDA step benchmark, a digits comparison on the GPU and its report, with the card's name.
# On the device machine (its own python3 has torch, torchvision, torchaudio and timm):
#   bash benchmarks/gpu_session.sh            # results under $OUT (the device tool's folder)
# Dry run on CPU first:  DEVICE=cpu STEPS=20 OUT=/tmp/gpu-dry bash benchmarks/gpu_session.sh
set -euo pipefail
DEVICE=${DEVICE:-cuda}
STEPS=${STEPS:-600}
OUT=${OUT:-benchmarks/results/gpu-session}
PY=${PY:-python3}
mkdir -p "$OUT"
$PY -m pip install --quiet --no-deps --no-build-isolation -e . || $PY -m pip install --quiet --no-deps -e .
$PY - <<'PY' > "$OUT/device.txt"
import torch
print("torch", torch.__version__)
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu (no CUDA)")
PY
cat "$OUT/device.txt"

# 1. Step time of dninv against supervised and entmin, per image model (pytest-benchmark).
BENCH_DEVICE=$DEVICE $PY -m pytest benchmarks/bench_step.py --benchmark-enable -q -p no:cacheprovider \
  --benchmark-json="$OUT/bench-$DEVICE.json" > "$OUT/bench-$DEVICE.log" 2>&1 || { tail -30 "$OUT/bench-$DEVICE.log"; exit 1; }
$PY benchmarks/bench_step.py summarize "$OUT/bench-$DEVICE.json" | tee "$OUT/bench-$DEVICE.md"

# 2. The digits comparison on this device, and its report.
$PY -m ssl_bench.cli sweep --dataset digits --labels 50 --seeds 0,1,2 --steps "$STEPS" --device "$DEVICE" \
  --out "$OUT/runs" --quiet
$PY -m ssl_bench.cli report "$OUT/runs" --out "$OUT/report-digits-50-$DEVICE"
