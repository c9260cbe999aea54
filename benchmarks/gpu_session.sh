#!/usr/bin/env bash
# Every device measurement of issue 13, in one device call of under 10 minutes (a session has 15 minutes of
# device time, the machine's start included). Results with the card's name (device.txt, and in every
# table) go to $RES and are packed into $OUT/gpu-results.tgz after each phase (the device tool returns at
# most 8 files), so a call cut short keeps what it did. Each phase runs under its own time limit (T_*)
# and PHASES runs a subset. In the order they run:
#   eager    step time per paper model × {supervised, entmin, dninv, dninv_jvp} × {fp32, bf16} × batch
#            {80+80, 512+512} (pytest-benchmark), then again for entmin, dninv, dninv_jvp under each of
#            EAGER_VARIANTS (cudnn.benchmark; channels-last tensors)  -> bench-eager{,-VARIANT}.{json,md};
#            and LargeCNN at 3×32×32, its datasets' shape        -> bench-eager-largecnn-3x32x32.{json,md}
#            (dninv_jvp: dninv's gradient by a JVP instead of the double backward, docs/dninv.md)
#   grid     MNIST-50-shaped grid (digits at 1×28×28, smallcnn, 4 methods × GRID_SEEDS, GRID_STEPS steps) end
#            to end: one run at a time in eager fp32 (the sweep as it was) against --runs-per-gpu
#            RUNS_PER_GPU (a pool of long-lived workers) with eager fp32, eager bf16, compiled bf16 and
#            eager bf16 with dninv's JVP form; accuracies per method, GPU utilization sampled by nvidia-smi, peak memory per run
#                                                                                -> grid.md, gpu-util-*.csv
#   compiled entmin, dninv and dninv_jvp steps compiled (ssl_bench.run.compiled, CUDA graphs) per COMPILE_MODELS at
#            COMPILE_BATCH and COMPILE_PRECISION; compile time in the table     -> bench-compiled.{json,md}
#   profile  torch.profiler top kernels of the dninv step (PROFILE_MODEL, PROFILE_BATCH; PROFILES)
#                                                                                -> profile-*.txt
#   inductor tests/test_compile.py's inductor check (compiled = eager) on this device -> inductor-test.log
# On the device machine (its own python3 has torch, torchvision, torchaudio and timm), in two calls
# (a call may run 10 minutes, a session has 15 minutes of device time, the machine's start included):
#   PHASES="eager grid" bash benchmarks/gpu_session.sh                # ≤ 9 min (4 × T_EAGER + T_GRID): results in $OUT/gpu-results.tgz
#   PHASES="compiled profile inductor" bash benchmarks/gpu_session.sh # ≤ 3.7 min (T_COMPILED + 2 × T_PROFILE + T_INDUCTOR), warm
# (the bounds are the phases' limits; on the H200 the eager phase took 35 s for 48 configurations)
# Dry run on CPU first (tiny settings, a few minutes on 2 shared cores):
#   DEVICE=cpu PY=.venv/bin/python OUT=/tmp/gpu-dry MODELS=tinycnn,smallcnn COMPILE_MODELS=tinycnn T_COMPILED=400 \
#     BATCHES="8,8;16,16" COMPILE_BATCH="8,8" PROFILE_MODEL=tinycnn PROFILE_BATCH=8,8 GRID_STEPS=20 \
#     GRID_SEEDS=0 PARALLEL="--workers 2" bash benchmarks/gpu_session.sh
set -euo pipefail
DEVICE=${DEVICE:-cuda}
OUT=${OUT:-benchmarks/results/gpu-session}
RES=${RES:-$OUT/gpu-results}  # every result file; packed into $OUT/gpu-results.tgz after each phase
PY=${PY:-python3}
PHASES=${PHASES:-eager grid compiled profile inductor}
MODELS=${MODELS:-smallcnn,largecnn,resnet2_32,resnet3_16}
METHODS=${METHODS:-supervised,entmin,dninv,dninv_jvp}
EAGER_VARIANTS=${EAGER_VARIANTS:-cudnn-benchmark:BENCH_CUDNN_BENCHMARK=1 channels-last:BENCH_CUDNN_BENCHMARK=1,BENCH_CHANNELS_LAST=1}  # NAME:VAR=VALUE,…
VARIANT_METHODS=${VARIANT_METHODS:-entmin,dninv,dninv_jvp}
BATCHES=${BATCHES:-80,80;512,512}
COMPILE_MODELS=${COMPILE_MODELS:-smallcnn,largecnn}
COMPILE_BATCH=${COMPILE_BATCH:-512,512}
COMPILE_PRECISION=${COMPILE_PRECISION:-bf16}
PROFILE_MODEL=${PROFILE_MODEL:-largecnn}
PROFILE_BATCH=${PROFILE_BATCH:-512,512}
PROFILES=${PROFILES:-dninv_jvp:fp32:eager dninv_jvp:bf16:compiled}  # dninv fp32 eager and bf16 compiled: H200, 2026-11-27
GRID_STEPS=${GRID_STEPS:-2500}  # at 500 steps process start-up, not training, dominated (H200, 2026-11-27)
GRID_SEEDS=${GRID_SEEDS:-0,1}
RUNS_PER_GPU=${RUNS_PER_GPU:-8}
PARALLEL=${PARALLEL:---runs-per-gpu $RUNS_PER_GPU}
GRID_CONFIGS=${GRID_CONFIGS:-eager-fp32-1:--workers 1;eager-fp32-k:$PARALLEL;eager-bf16-k:--precision bf16 $PARALLEL;compiled-bf16-k:--compile --precision bf16 $PARALLEL;eager-bf16-jvp-k:--precision bf16 -p dninv.formulation=jvp $PARALLEL}
# seconds per phase (a phase cut short keeps the rows it printed)
T_EAGER=${T_EAGER:-60} T_GRID=${T_GRID:-300} T_COMPILED=${T_COMPILED:-100} T_PROFILE=${T_PROFILE:-40} T_INDUCTOR=${T_INDUCTOR:-40}
mkdir -p "$OUT" "$RES"
OUT=$(cd "$OUT" && pwd) RES=$(cd "$RES" && pwd)
pack() { tar czf "$OUT/gpu-results.tgz.part" -C "$RES" . && mv "$OUT/gpu-results.tgz.part" "$OUT/gpu-results.tgz"; }
$PY -m pip install --quiet --no-deps --no-build-isolation -e . >/dev/null 2>&1 || $PY -m pip install --quiet --no-deps -e . >/dev/null
$PY - <<'PY' > "$RES/device.txt"
import torch, platform
print("torch", torch.__version__)
print("device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else f"cpu (no CUDA): {platform.processor() or 'cpu'}")
print("gpus", torch.cuda.device_count())
PY
cat "$RES/device.txt"
has() { [[ " $PHASES " == *" $1 "* ]]; }
bench() {  # bench NAME SECONDS: pytest-benchmark of benchmarks/bench_step.py with the BENCH_* variables set by the caller
  BENCH_DEVICE=$DEVICE timeout -s INT -k 15 "$2" $PY -m pytest benchmarks/bench_step.py --benchmark-enable -q -p no:cacheprovider \
    --benchmark-max-time=0.3 --benchmark-min-rounds=5 --benchmark-warmup=off \
    --benchmark-json="$RES/bench-$1.json" > "$RES/bench-$1.log" 2>&1 || tail -5 "$RES/bench-$1.log"  # SIGINT at the limit: pytest still writes the json
  $PY benchmarks/bench_step.py summarize "$RES/bench-$1.json" | tee "$RES/bench-$1.md" || true
}
SECONDS=0
if has eager; then
  BENCH_MODELS=$MODELS BENCH_METHODS=$METHODS BENCH_BATCH="$BATCHES" BENCH_PRECISION=fp32,bf16 BENCH_MODE=eager bench eager "$T_EAGER"
  echo "eager: ${SECONDS} s"; pack
  for variant in $EAGER_VARIANTS; do  # the same steps with cuDNN's algorithms timed, and in channels-last layout
    IFS=: read -r name settings <<< "$variant"
    (IFS=,; for kv in $settings; do export "${kv?}"; done
     BENCH_MODELS=$MODELS BENCH_METHODS=$VARIANT_METHODS BENCH_BATCH="$BATCHES" BENCH_PRECISION=fp32,bf16 BENCH_MODE=eager bench "eager-$name" "$T_EAGER")
    echo "eager $name: ${SECONDS} s"; pack
  done
  # LargeCNN at its datasets' shape (SVHN, CIFAR-10); the tables above use 1×28×28 for every model, as the H200 did
  BENCH_SHAPE=3,32,32 BENCH_MODELS=largecnn BENCH_METHODS=$VARIANT_METHODS BENCH_BATCH="$BATCHES" BENCH_PRECISION=fp32,bf16 BENCH_MODE=eager bench eager-largecnn-3x32x32 "$T_EAGER"
  echo "eager largecnn 3×32×32: ${SECONDS} s"; pack
fi
if has grid; then  # one run at a time in eager fp32 (the sweep as it was) against full GPUs, bf16 and compiled steps
  configs=(); IFS=';' read -ra names <<< "$GRID_CONFIGS"
  for c in "${names[@]}"; do configs+=(--config "$c"); done
  timeout "$T_GRID" $PY benchmarks/grid_wall.py --out "$RES" --steps "$GRID_STEPS" --seeds "$GRID_SEEDS" --device "$DEVICE" --parallel "" "${configs[@]}" | tee "$RES/grid.md" || true
  rm -rf "$RES"/grid-*/*/*.pt "$RES"/grid-*/*/events.* # checkpoints: not results
  echo "grid: ${SECONDS} s"; pack
fi
if has compiled; then
  BENCH_MODELS=$COMPILE_MODELS BENCH_METHODS=entmin,dninv,dninv_jvp BENCH_BATCH="$COMPILE_BATCH" BENCH_PRECISION=$COMPILE_PRECISION BENCH_MODE=compiled bench compiled "$T_COMPILED"
  echo "compiled: ${SECONDS} s"; pack
fi
if has profile; then
  for spec in $PROFILES; do
    IFS=: read -r method precision mode <<< "$spec"
    name=profile-$PROFILE_MODEL-$method-$precision-$mode
    BENCH_DEVICE=$DEVICE timeout "$T_PROFILE" $PY benchmarks/profile_step.py --model "$PROFILE_MODEL" --method "$method" --batch "$PROFILE_BATCH" \
      --precision "$precision" --mode "$mode" --top 25 > "$RES/$name.txt" 2> "$RES/$name.log" || tail -20 "$RES/$name.log"
    head -32 "$RES/$name.txt" | cut -c1-160
  done
  echo "profile: ${SECONDS} s"; pack
fi
if has inductor; then  # compiled = eager with inductor, on this device
  SSL_BENCH_INDUCTOR=1 timeout "$T_INDUCTOR" $PY -m pytest -q -p no:cacheprovider tests/test_compile.py -k inductor > "$RES/inductor-test.log" 2>&1 || true
  tail -3 "$RES/inductor-test.log"
  echo "inductor: ${SECONDS} s"; pack
fi
echo "$(sed -n 2p "$RES/device.txt"); phases $PHASES: ${SECONDS} s" | tee "$RES/done.txt"
pack
