#!/bin/bash
# Two jaxlab processes on one machine, talking over 127.0.0.1: what a cluster launcher does, by hand.
# Useful to try --distributed without a cluster (CPU: each process has one CPU device, set below;
# jaxlab would otherwise give each process one device per core).
#
#   bash scripts/local_two_processes.sh /tmp/two-proc-sweep
set -euo pipefail
OUT="${1:-/tmp/jaxlab-two-processes}"
PORT="${PORT:-12355}"
for i in 0 1; do
  JAX_PLATFORMS=cpu JAXLAB_CPU_DEVICES=1 jaxlab run icl-regression --preset smoke --seeds 0:8 --out "$OUT" --overwrite --quiet \
      --coordinator "127.0.0.1:$PORT" --num-processes 2 --process-id "$i" &
done
wait
echo "merged results: $OUT/summary.json"
