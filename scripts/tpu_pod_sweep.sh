#!/bin/bash
# A jaxlab sweep on a Cloud TPU pod slice (TPU VMs), e.g. a v5litepod-32: 8 workers x 4 chips.
#
#   TPU_NAME=my-slice ZONE=us-west4-a OUT=/mnt/sweeps/icl-lr bash scripts/tpu_pod_sweep.sh
#
# How it works: `gcloud ... ssh --worker=all` runs the same command on every worker of the slice at
# once. On a TPU VM, jax.distributed.initialize() finds the slice's workers and its own rank from the
# TPU metadata, so `--distributed` needs no address or rank. The runs are sharded over all 32 chips;
# each worker writes its result parts and checkpoints, worker 0 merges them.
#
# Requirements on every worker: jaxlab installed with TPU JAX (`pip install -e . 'jax[tpu]'`) in
# ~/jaxlab/.venv (install it the same way, e.g. with this script's INSTALL=1), and OUT on a file system
# every worker sees: a Filestore NFS share or a Cloud Storage bucket mounted with gcsfuse at the same
# path on all workers.
# (jax.make_mesh does not span several slices (multislice); run one sweep per slice.)

set -euo pipefail
: "${TPU_NAME:?set TPU_NAME}" "${ZONE:?set ZONE}" "${OUT:?set OUT (a path shared by all workers)}"

if [[ "${INSTALL:-0}" == 1 ]]; then
  gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="
    set -e; cd ~/jaxlab && python3 -m venv .venv && . .venv/bin/activate && pip install -q -e . 'jax[tpu]'"
fi

# --resume when the run directory already holds this sweep (a restarted or preempted slice).
gcloud compute tpus tpu-vm ssh "$TPU_NAME" --zone="$ZONE" --worker=all --command="
  set -e; cd ~/jaxlab && . .venv/bin/activate
  RESUME=''; if [ -f '$OUT/config.json' ]; then RESUME=--resume; fi
  jaxlab run icl-regression --preset paper --seeds 0:256 --sweep optim.lr=3e-4,1e-3,3e-3 \
      --set train.checkpoint_every=4 --out '$OUT' --distributed --quiet \$RESUME 2>&1 | tee -a ~/jaxlab-sweep.log"

# Worker 0's log has the progress; the merged results are in $OUT (summary.json, metrics.parquet, report.md).
