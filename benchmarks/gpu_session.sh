#!/usr/bin/env bash
# Every device measurement of issue 13, in one go, results under $OUT with the card's name (device.txt,
# and in every table). Planned for about 10 minutes on one H100 (estimates, not yet measured: no session
# so far had a GPU); each phase writes its files when it ends, so a cut-short call keeps what it did, and
# PHASES runs a subset (e.g. two device calls: PHASES="eager profile" then PHASES="compiled grid").
#   eager    step time per paper model × {supervised, entmin, dninv} × {fp32, bf16} × batch {80+80, 512+512}
#            (pytest-benchmark; ~2 min)                                          -> bench-eager.{json,md}
#   compiled the same, compiled (ssl_bench.compiled, CUDA graphs), for COMPILE_MODELS × {entmin, dninv} ×
#            {fp32, bf16} × COMPILE_BATCH; compile time per step in the table (~3–4 min)
#                                                                                -> bench-compiled.{json,md}
#   profile  torch.profiler top kernels of the dninv step (largecnn, 512+512, fp32 and bf16, eager and
#            compiled) and of entmin's, for comparison (~1 min)                  -> profile-*.txt
#   grid     MNIST-50-shaped grid (digits at 1×28×28, smallcnn, 4 methods × 5 seeds, GRID_STEPS steps,
#            --runs-per-gpu RUNS_PER_GPU) end to end: eager-fp32 against eager-bf16 and compiled-bf16,
#            accuracies per method, GPU utilization sampled by nvidia-smi during each sweep, peak
#            memory per run (~3–4 min)                                           -> grid.md, gpu-util-*.csv
# On the device machine (its own python3 has torch, torchvision, torchaudio and timm):
#   bash benchmarks/gpu_session.sh            # results under $OUT (the device tool's folder)
# Dry run on CPU first (tiny settings, about 4 minutes on 2 shared cores):
#   DEVICE=cpu PY=.venv/bin/python OUT=/tmp/gpu-dry MODELS=tinycnn,smallcnn COMPILE_MODELS=tinycnn \
#     BATCHES="8,8;16,16" COMPILE_BATCH="8,8" PROFILE_MODEL=tinycnn PROFILE_BATCH=8,8 GRID_STEPS=20 \
#     GRID_SEEDS=0 PARALLEL="--workers 2" bash benchmarks/gpu_session.sh
set -euo pipefail
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-benchmarks/results/gpu-session}
PY=${PY:-python3}
PHASES=${PHASES:-eager compiled profile grid}
MODELS=${MODELS:-smallcnn,largecnn,resnet2_32,resnet3_16,smallucnn,largeucnn,uresnet2_32,uresnet3_16}
BATCHES=${BATCHES:-80,80;512,512}
COMPILE_MODELS=${COMPILE_MODELS:-smallcnn,largecnn}
COMPILE_BATCH=${COMPILE_BATCH:-512,512}
PROFILE_MODEL=${PROFILE_MODEL:-largecnn}
PROFILE_BATCH=${PROFILE_BATCH:-512,512}
GRID_STEPS=${GRID_STEPS:-500}
GRID_SEEDS=${GRID_SEEDS:-0,1,2,3,4}
RUNS_PER_GPU=${RUNS_PER_GPU:-4}
PARALLEL=${PARALLEL:---runs-per-gpu $RUNS_PER_GPU}
OUT=$(mkdir -p "$OUT" && cd "$OUT" && pwd)
$PY -m pip install --quiet --no-deps --no-build-isolation -e . >/dev/null 2>&1 || $PY -m pip install --quiet --no-deps -e . >/dev/null
$PY - <<'PY' > "$OUT/device.txt"
import torch, platform
print("torch", torch.__version__)
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu (no CUDA): {platform.processor() or 'cpu'}")
print("gpus", torch.cuda.device_count())
PY
cat "$OUT/device.txt"
has() { [[ " $PHASES " == *" $1 "* ]]; }
bench() {  # bench NAME: pytest-benchmark of benchmarks/bench_step.py with the BENCH_* variables set by the caller
  BENCH_DEVICE=$DEVICE $PY -m pytest benchmarks/bench_step.py --benchmark-enable -q -p no:cacheprovider \
    --benchmark-max-time=0.5 --benchmark-min-rounds=5 --benchmark-warmup=off \
    --benchmark-json="$OUT/bench-$1.json" > "$OUT/bench-$1.log" 2>&1 || { tail -30 "$OUT/bench-$1.log"; return 1; }
  $PY benchmarks/bench_step.py summarize "$OUT/bench-$1.json" | tee "$OUT/bench-$1.md"
}
SECONDS=0
if has eager; then
  BENCH_MODELS=$MODELS BENCH_BATCH="$BATCHES" BENCH_PRECISION=fp32,bf16 BENCH_MODE=eager bench eager
  echo "eager: ${SECONDS} s"
fi
if has compiled; then
  SSL_BENCH_INDUCTOR=1 $PY -m pytest -q -p no:cacheprovider tests/test_compile.py -k inductor -s > "$OUT/inductor-test.log" 2>&1 || { tail -20 "$OUT/inductor-test.log"; exit 1; }  # compiled = eager with inductor, on this device
  BENCH_MODELS=$COMPILE_MODELS BENCH_METHODS=entmin,dninv BENCH_BATCH="$COMPILE_BATCH" BENCH_PRECISION=fp32,bf16 BENCH_MODE=compiled bench compiled
  echo "compiled: ${SECONDS} s"
fi
if has profile; then
  for spec in "dninv fp32 eager" "dninv bf16 eager" "dninv bf16 compiled" "entmin fp32 eager"; do
    set -- $spec
    BENCH_DEVICE=$DEVICE $PY benchmarks/profile_step.py --model "$PROFILE_MODEL" --method "$1" --batch "$PROFILE_BATCH" \
      --precision "$2" --mode "$3" --top 25 > "$OUT/profile-$PROFILE_MODEL-$1-$2-$3.txt" 2> "$OUT/profile-$PROFILE_MODEL-$1-$2-$3.log" \
      || tail -20 "$OUT/profile-$PROFILE_MODEL-$1-$2-$3.log"
    head -32 "$OUT/profile-$PROFILE_MODEL-$1-$2-$3.txt" | cut -c1-160
  done
  echo "profile: ${SECONDS} s"
fi
if has grid; then
  $PY benchmarks/grid_wall.py --out "$OUT" --steps "$GRID_STEPS" --seeds "$GRID_SEEDS" --device "$DEVICE" --parallel "$PARALLEL" \
    --config "eager-fp32:" --config "eager-bf16:--precision bf16" --config "compiled-bf16:--compile --precision bf16" | tee "$OUT/grid.md"
  rm -rf "$OUT"/grid-*/*/*.pt  # checkpoints: not results
  echo "grid: ${SECONDS} s"
fi
echo "$(sed -n 2p "$OUT/device.txt"); phases $PHASES: ${SECONDS} s" | tee "$OUT/done.txt"
