#!/usr/bin/env bash
# Wall time of one sweep command with the code of two commits, alternately (CPU; e.g. the worker pool:
# benchmarks/results/cpu-sweep-pool-2026-11-28.md).
#   bash benchmarks/sweep_before_after.sh BEFORE_COMMIT REPEATS SWEEP OPTIONS…
#   bash benchmarks/sweep_before_after.sh d927623 2 --dataset digits --labels 50 --methods supervised,entmin,pimodel,dninv \
#        --seeds 0,1,2,3,4 --steps 100 --eval-every 50 --workers 2
# "before" runs BEFORE_COMMIT's ssl_bench and plugins (a git worktree put first on PYTHONPATH, with the
# venv of this checkout), "after" this checkout. Prints each wall time and whether the two gave the same
# test accuracy for every run.
set -euo pipefail
before=$1 repeats=$2; shift 2
PY=${PY:-$(pwd)/.venv/bin/python}
tmp=$(mktemp -d)
git worktree add -q "$tmp/tree" "$before"
plugins=ssl_bench_plugins; [ -d "$tmp/tree/$plugins" ] || plugins=plugins  # the folder's name before 2026-12-04
mkdir "$tmp/shim" && ln -s "$tmp/tree/ssl_bench" "$tmp/shim/ssl_bench" \
  && ln -s "$tmp/tree/$plugins" "$tmp/shim/ssl_bench_plugins"
trap 'git worktree remove --force "$tmp/tree"; rm -rf "$tmp"' EXIT
run() {  # run LABEL PYTHONPATH REPEAT SWEEP OPTIONS…
  local label=$1 path=$2 out="$tmp/runs-$1-$3" start end
  shift 3
  start=$(date +%s.%N)
  (cd "$tmp" && PYTHONPATH=$path "$PY" -m ssl_bench.cli sweep "$@" --quiet --out "$out" >"$out.log" 2>&1) || { tail -3 "$out.log"; exit 1; }
  end=$(date +%s.%N)
  printf '%s %.1f s\n' "$label" "$(echo "$end - $start" | bc)"
}
for i in $(seq "$repeats"); do
  run before "$tmp/shim" "$i" "$@"
  run after "" "$i" "$@"
done
"$PY" - "$tmp" <<'PY'
import glob, json, sys
acc = lambda d: sorted((p.split("/")[-2], json.load(open(p))["test_acc"]) for p in glob.glob(d + "/*/result.json"))
runs = sorted(glob.glob(sys.argv[1] + "/runs-*-*[0-9]"))
print("same test accuracy for every run:", all(acc(r) == acc(runs[0]) for r in runs), f"({len(acc(runs[0]))} runs)")
PY
