#!/usr/bin/env bash
# Every `jaxlab bench` measurement on whatever accelerator is present, in one call of at most
# 8 minutes, written to benchmarks/results/gpu-<device>.md (device name lower-cased, [a-z0-9-]).
#
#   benchmarks/gpu.sh                 # the real sizes; on a GPU machine, from the repository root
#   benchmarks/gpu.sh --dry-run       # tiny sizes, any machine (the CPU too); writes to a temporary
#                                     # directory unless --out is given
#   benchmarks/gpu.sh --print         # only print the commands it would run (no JAX)
#   options: --out DIR (where gpu-<device>.md goes), --budget SECONDS (total, default 480)
#
# Steps, in this order, each under `timeout` (cut to the time left; skipped under 15 s): the device
# (nvidia-smi and JAX), the bf16 / tf32 / f32 matmul peaks in one process
# (`jaxlab.bench._train_timing.matmul_peaks`), `jaxlab bench train` for every workload in float32,
# `jaxlab bench scaling` over runs, sequence length and depth (PNG figures next to the markdown),
# `jaxlab bench fit` (the largest run chunk that fits the device's memory), then `jaxlab bench
# train` for every workload in bfloat16 (`model.dtype`: bfloat16 matmul inputs, float32
# accumulation; every workload allows it).
# The dry run takes ~7.5 min on the shared 2-core CPU (load 9): too slow for the test suite, whose
# tests/test_bench_scaling.py checks instead that every command below parses (`--print`).
# A failed or timed-out step is recorded in the markdown with its exit status (124: timeout) and
# the tail of its log; the other steps still run. The JSON of every step stays in the work
# directory printed at the end. PYTHON (default: python) is the interpreter with jaxlab installed.
set -u -o pipefail

DRY=0
PRINT=0
OUT=""
BUDGET=480
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --print) PRINT=1 ;;
    --out) OUT="$2"; shift ;;
    --budget) BUDGET="$2"; shift ;;
    -h|--help) sed -n '2,22p' "$0"; exit 0 ;;
    *) echo "gpu.sh: unknown option $1 (allowed: --dry-run, --print, --out DIR, --budget SECONDS)" >&2; exit 2 ;;
  esac
  shift
done

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(dirname "$HERE")"
PY="${PYTHON:-python}"
export PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
WORK="$(mktemp -d "${TMPDIR:-/tmp}/jaxlab-gpu-bench.XXXXXX")"
if [ -z "$OUT" ]; then
  if [ "$DRY" = 1 ]; then OUT="$WORK/results"; else OUT="$ROOT/benchmarks/results"; fi
fi
mkdir -p "$OUT"

# sizes: real / dry run
if [ "$DRY" = 1 ]; then
  MATMUL=256
  TRAIN="--runs 2 --steps 1 --batch-size 8 --repeats 1 --baseline-runs 1 --matmul-size 128"
  TRAIN_WORKLOADS="lsa-regression"
  SCALE_RUNS="--values 2,4,8 --steps 1 --batch-size 8 --repeats 1 --min-time 0"
  SCALE_T="--values 10,20 --batch-size 4 --repeats 1 --min-time 0"
  SCALE_D="--values 1,2 --batch-size 4 --repeats 1 --min-time 0"
  FIT="--batch-size 8 --max-runs 16"
  T_TRAIN=120; T_SCALE=120; T_FIT=90
else
  MATMUL=8192
  TRAIN="--runs 64 --repeats 3"
  # every workload of `jaxlab bench train`
  TRAIN_WORKLOADS="$("$PY" -c 'from jaxlab.bench._train_workloads import WORKLOADS; print(" ".join(WORKLOADS))' 2>/dev/null \
    || echo lsa-regression softmax-regression clustering)"
  SCALE_RUNS="--values 1,8,64,512,4096 --repeats 3 --min-time 0.5"
  SCALE_T="--runs 16 --repeats 3 --min-time 0.5"
  SCALE_D="--runs 16 --repeats 3 --min-time 0.5"
  FIT=""
  T_TRAIN=40; T_SCALE=60; T_FIT=45
fi

STEPS=()  # name|timeout|command
STEPS+=("device|30|$PY -c 'import jax, json; d = jax.devices()[0]; print(json.dumps({\"platform\": d.platform, \"device_kind\": getattr(d, \"device_kind\", \"\"), \"n_devices\": jax.device_count(), \"jax\": jax.__version__, \"memory_stats\": d.memory_stats() if d.platform != \"cpu\" else None}))'")
STEPS+=("peaks|45|$PY -c 'import json; from jaxlab.hostdevices import use_cpu_cores; use_cpu_cores(); from jaxlab.bench._train_timing import matmul_peaks; print(json.dumps(matmul_peaks($MATMUL)))'")
for w in $TRAIN_WORKLOADS; do
  STEPS+=("train-$w-float32|$T_TRAIN|$PY -m jaxlab bench train --workload $w $TRAIN --json")
done
STEPS+=("scaling-runs|$T_SCALE|$PY -m jaxlab bench scaling --axis runs $SCALE_RUNS --json --overwrite --plot @OUT@/@DEV@-scaling-runs.png")
STEPS+=("scaling-seq_len|$T_SCALE|$PY -m jaxlab bench scaling --axis seq_len $SCALE_T --json --overwrite --plot @OUT@/@DEV@-scaling-seq_len.png")
STEPS+=("scaling-depth|$T_SCALE|$PY -m jaxlab bench scaling --axis depth $SCALE_D --json --overwrite --plot @OUT@/@DEV@-scaling-depth.png")
STEPS+=("fit|$T_FIT|$PY -m jaxlab bench fit $FIT --json")
for w in $TRAIN_WORKLOADS; do  # last: what the budget cuts first
  STEPS+=("train-$w-bfloat16|$T_TRAIN|$PY -m jaxlab bench train --workload $w $TRAIN --dtype bfloat16 --baselines none --json")
done

if [ "$PRINT" = 1 ]; then
  for s in "${STEPS[@]}"; do echo "${s#*|*|}"; done
  rm -rf "$WORK"
  exit 0
fi

if command -v nvidia-smi >/dev/null 2>&1; then
  timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$WORK/nvidia-smi.txt" 2>&1
  cat "$WORK/nvidia-smi.txt"
fi

DEV=""
START=$SECONDS
for s in "${STEPS[@]}"; do
  name="${s%%|*}"; rest="${s#*|}"; limit="${rest%%|*}"; cmd="${rest#*|}"
  left=$((BUDGET - (SECONDS - START) - 10))  # 10 s kept for the report
  if [ "$left" -lt 15 ]; then
    echo "skipped: no time left (budget ${BUDGET} s)" > "$WORK/$name.err"; echo 125 > "$WORK/$name.rc"
    echo "[gpu.sh] $name: skipped (no time left)" >&2
    continue
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  cmd="${cmd//@OUT@/$OUT}"; cmd="${cmd//@DEV@/${DEV:-device}}"
  echo "[gpu.sh] $name (timeout ${limit} s): $cmd" >&2
  t0=$SECONDS
  timeout -k 5 "$limit" bash -c "$cmd" > "$WORK/$name.json" 2> "$WORK/$name.err"
  rc=$?
  echo "$rc" > "$WORK/$name.rc"; echo "$cmd" > "$WORK/$name.cmd"; echo $((SECONDS - t0)) > "$WORK/$name.s"
  echo "[gpu.sh] $name: exit $rc after $((SECONDS - t0)) s" >&2
  if [ "$name" = device ] && [ "$rc" = 0 ]; then
    DEV="$("$PY" -c 'import json, re, sys; d = json.load(open(sys.argv[1])); print(re.sub(r"[^a-z0-9]+", "-", (d["device_kind"] or d["platform"]).lower()).strip("-") or "unknown")' "$WORK/device.json")"
    echo "[gpu.sh] device: $DEV" >&2
  fi
done

DEV="${DEV:-unknown}"
for f in "$OUT"/device-scaling-*.png; do [ -e "$f" ] && mv "$f" "${f/device-scaling/$DEV-scaling}"; done
timeout 60 "$PY" "$HERE/gpu_report.py" "$WORK" "$OUT/gpu-$DEV.md" "$DEV" "$DRY" "$((SECONDS - START))"
rc=$?
echo "[gpu.sh] wrote $OUT/gpu-$DEV.md (work directory $WORK), total $((SECONDS - START)) s" >&2
exit $rc
