"""One XLA device per CPU core, so that a sweep's runs are split over the cores.

XLA:CPU exposes a single device by default and splits every kernel over the cores. The kernels of
the small models jaxlab trains are too small for that to pay (a [2048, 11] x [11, 11] product, an
80 x 80 attention pattern), so on CPUs jaxlab gives each core its own device and its own runs:
the `scan` run layout (`jaxlab.train.runmap`) splits the run axis over the devices with
`jax.shard_map` and each device trains its runs one after another. Measured on the 2-core CPU
(benchmarks/results/train.md): the paper LSA sweep of 64 runs trains ~1.5x faster, the softmax
workload ~1.3x.

The device count is an XLA flag, read once when JAX starts its CPU backend: `use_cpu_cores()`
must run before anything asks JAX for devices. The `jaxlab` command calls it first thing; scripts
that `import jaxlab` call it themselves. `JAXLAB_CPU_DEVICES=N` chooses N (1: one device, XLA's
default; at most the number of cores); an `XLA_FLAGS` that already sets
`--xla_force_host_platform_device_count` wins.
"""

from __future__ import annotations

import os
import re
import sys

from jaxlab.errors import ConfigError

FLAG = "--xla_force_host_platform_device_count"
ENV = "JAXLAB_CPU_DEVICES"


def cpu_cores() -> int:
    """Cores this process may run on (its CPU affinity), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def requested_devices() -> int:
    """`JAXLAB_CPU_DEVICES` when set (1 .. the number of cores), else the number of cores.

    More devices than cores is refused: the devices' programs run on XLA's pool of one thread per
    core, so extra devices only wait for threads (`JAXLAB_CPU_DEVICES=1000` stalled for a minute,
    then aborted). Tests that want more host devices than cores set
    `--xla_force_host_platform_device_count` in `XLA_FLAGS` themselves.
    """
    text = os.environ.get(ENV, "").strip()
    cores = cpu_cores()
    if not text:
        return cores
    allowed = f"1..{cores}, the CPU cores this process may use"
    if not re.fullmatch(r"[0-9]+", text) or int(text) < 1:  # ASCII digits (str.isdigit takes '²')
        raise ConfigError(ENV, f"must be a positive integer, got {text!r}", allowed)
    if int(text) > cores:
        raise ConfigError(ENV, f"{text} devices is more than the {cores} CPU cores", allowed)
    return int(text)


_PROBE = "jax_num_cpu_devices"


def _backend_started() -> bool:
    """Whether JAX's backends have started (after which `XLA_FLAGS` no longer changes the devices).

    jax 0.10 has no public query for this (`jax.extend.backend` starts the backends it reports
    on), so the public config answers: `jax_num_cpu_devices` must be set before the backends
    start, and JAX raises a RuntimeError when it is changed afterwards. The probe changes it and
    sets it back; nothing reads it before the start (this runs first thing, in one thread), and
    jaxlab itself sets the count through `XLA_FLAGS`. Without `jax` in `sys.modules` nothing has
    started, and nothing is imported here.
    """
    jax = sys.modules.get("jax")
    if jax is None:
        return False
    current = getattr(jax.config, _PROBE)
    try:
        jax.config.update(_PROBE, current + 1)
    except RuntimeError:
        return True
    jax.config.update(_PROBE, current)
    return False


def use_cpu_cores(n: int | None = None) -> int | None:
    """Ask XLA for `n` CPU devices (default: `requested_devices()`) by adding the flag to
    `XLA_FLAGS`. Returns the count set, or None when nothing changed: the flag is already there,
    JAX's backends have started (too late to change), or one device is asked for."""
    flags = os.environ.get("XLA_FLAGS", "")
    if FLAG in flags or _backend_started():
        return None
    n = requested_devices() if n is None else n
    if n < 1:
        raise ConfigError("n", f"must be >= 1, got {n}")
    if n == 1:
        return None
    os.environ["XLA_FLAGS"] = f"{flags} {FLAG}={n}".strip()
    return n
