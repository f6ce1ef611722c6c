"""Several hosts: `jax.distributed.initialize()`, barriers, and agreeing on one value.

`jaxlab run ... --distributed` starts JAX's distributed runtime before anything touches a device.
With no other flag, JAX detects the cluster itself: on Cloud TPU VMs (every worker of a pod
slice), under Slurm (`srun`, one task per host or per GPU) and under Open MPI (`mpirun`).
Elsewhere give `--coordinator HOST:PORT --num-processes N --process-id I` to every process.

After that `jax.devices()` lists the devices of every process, the sweep's mesh spans all of
them, every process runs the same programs on its own shard of the runs and writes its own result
parts; process 0 merges them (see `jaxlab.train.sweep`). The run directory must be on a file
system every process sees (checkpoints and parts are written by all of them).

A process other than 0 given `--coordinator` first waits for the coordinator to accept a connection
(`wait_for_coordinator`, saying so once): JAX's own client would wait silently for its timeout and
then abort the process with a native stack trace.
"""

from __future__ import annotations

import re
import socket
import sys
import time
from collections.abc import Callable

import jax
import numpy as np

from jaxlab.errors import UserError

COORDINATOR_WAIT_S = 300  # as jax.distributed.initialize's own initialization_timeout


def wait_for_coordinator(
    coordinator: str, timeout_s: float = COORDINATOR_WAIT_S, notice: Callable[[str], None] | None = None
) -> None:
    """Return once something accepts TCP connections at `coordinator` (HOST:PORT); UserError, saying
    what to do, when nothing has for `timeout_s` seconds. `notice` (default: a line on stderr) is
    told once that the process is waiting."""
    host, port = coordinator.rsplit(":", 1)
    deadline = time.monotonic() + timeout_s
    told = False
    while True:
        try:
            with socket.create_connection((host.strip("[]"), int(port)), timeout=5):
                return
        except OSError as err:
            if time.monotonic() >= deadline:
                raise UserError(
                    f"--coordinator {coordinator}: nothing answered there for {timeout_s:g} s ({err.strerror or err}); "
                    "start process 0 (--process-id 0) with the same --coordinator, or check the address"
                ) from None
            if not told:
                message = f"jaxlab: waiting up to {timeout_s:g} s for the coordinator at {coordinator} (process 0's)"
                (notice or (lambda m: print(m, file=sys.stderr, flush=True)))(message)
                told = True
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None) -> None:
    """Start the distributed runtime (idempotent). Raises UserError with what to pass instead."""
    if num_processes is not None and num_processes < 1:
        raise UserError(f"--num-processes: must be >= 1, got {num_processes}")
    if process_id is not None and (process_id < 0 or (num_processes is not None and process_id >= num_processes)):
        bound = f"0..{num_processes - 1}" if num_processes is not None else ">= 0"
        raise UserError(f"--process-id: must be in {bound}, got {process_id}")
    port = coordinator.rsplit(":", 1)[1] if coordinator is not None and ":" in coordinator else ""
    if coordinator is not None and not re.fullmatch(r"[0-9]+", port):
        raise UserError(f"--coordinator: expected HOST:PORT (e.g. 10.0.0.1:1234), got {coordinator!r}")
    if jax.distributed.is_initialized():
        return
    if coordinator is not None and process_id not in (None, 0):
        wait_for_coordinator(coordinator)
    try:
        jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)
    except (ValueError, RuntimeError) as err:
        raise UserError(
            f"--distributed: could not start JAX's distributed runtime ({err}). On a Cloud TPU VM, under "
            "Slurm (srun) or Open MPI (mpirun) no other flag is needed; elsewhere pass --coordinator HOST:PORT "
            "--num-processes N --process-id I to every process"
        ) from None


def is_primary() -> bool:
    """Whether this is process 0 (`jax.process_index() == 0`), the process that merges the result parts."""
    return jax.process_index() == 0


def barrier(name: str) -> None:
    """Wait until every process reaches the barrier `name` (nothing to do in one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def agree_min(value: int) -> int:
    """The smallest of the processes' values (every process gets the same answer)."""
    if jax.process_count() == 1:
        return int(value)
    from jax.experimental import multihost_utils

    return int(np.min(multihost_utils.process_allgather(np.asarray([value], np.int32))))


def agree_decision(primary: int, anyone: int) -> tuple[int, int]:
    """(process 0's `primary`, the largest `anyone` of all processes), the same on every process.

    For decisions every process must take at the same point of the loop (orbax saves are
    collective): one made on process 0's clock (a checkpoint is due by time), and one any process
    may raise (it received a stop signal). One collective per call; none in one process.
    """
    if jax.process_count() == 1:
        return int(primary), int(anyone)
    from jax.experimental import multihost_utils

    rows = np.asarray(multihost_utils.process_allgather(np.asarray([primary, anyone], np.int32))).reshape(-1, 2)
    return int(rows[0, 0]), int(rows[:, 1].max())
