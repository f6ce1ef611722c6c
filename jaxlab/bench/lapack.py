"""`jaxlab bench lapack`: the cost of one matrix per LAPACK call (`jaxlab.linalg`) against XLA's batched call.

`jaxlab.linalg` loops over a batch of matrices on CPUs (one unbatched LAPACK call per matrix) so
that no compiled program can deadlock XLA:CPU's thread pool (see its docstring). This benchmark
times, on ONE device (where a single batched call cannot deadlock), each decomposition at the
shapes jaxlab's probes and tasks use, both ways in the same process, interleaved: the batched
`jnp.linalg` call and the `jaxlab.linalg` loop. It reports medians over repeats and the ratio
loop / batched within each repeat (median), and checks that both give the same numbers.

Workloads (batch x matrix):
  qr-haar       256 x 5 x 5       Haar-orthogonal W of icl-autoregressive's `augmented-orthogonal`
                                  task: one QR per sequence in every training step (batch 256)
  eigh-steer    96 x 64 x 64      steering directions: one second-moment matrix per run, layer, concept
  svd-cca       64 x 256 x 32     CCA / Procrustes bases of representations (n = 256, d = 32)
  pinv-w-hat    64 x 10 x 5       icl-autoregressive's W_hat probe states (M = 2d probes, d = 5)
  solve-ridge   64 x 64 x 64      ridge probes (positive-definite Gram matrices, 8 right-hand sides)
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab import linalg
from jaxlab.errors import ConfigError

NAME = "lapack"
HELP = "one matrix per LAPACK call (jaxlab.linalg) vs XLA's batched call, on one device"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `jaxlab bench lapack`: `--repeats` and `--json`."""
    p.add_argument("--repeats", type=int, default=7, help="timed repeats (medians are reported; default 7)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _spd(key: jax.Array, b: int, n: int) -> jax.Array:
    a = jax.random.normal(key, (b, n, n))
    return a @ jnp.swapaxes(a, -1, -2) / n + jnp.eye(n)


def workloads(key: jax.Array) -> dict[str, tuple[Callable, Callable, tuple[jax.Array, ...]]]:
    """name -> (batched jnp.linalg function, jaxlab.linalg function, inputs)."""
    k1, k2, k3, k4, k5, k6 = jax.random.split(key, 6)
    return {
        "qr-haar": (lambda a: jnp.linalg.qr(a), linalg.qr, (jax.random.normal(k1, (256, 5, 5)),)),
        "eigh-steer": (lambda a: jnp.linalg.eigh(a), linalg.eigh, (_spd(k2, 96, 64),)),
        "svd-cca": (
            lambda a: jnp.linalg.svd(a, full_matrices=False),
            linalg.svd,
            (jax.random.normal(k3, (64, 256, 32)),),
        ),
        "pinv-w-hat": (jnp.linalg.pinv, linalg.pinv, (jax.random.normal(k4, (64, 10, 5)),)),
        "solve-ridge": (
            lambda a, b: jax.scipy.linalg.solve(a, b, assume_a="pos"),
            lambda a, b: linalg.solve(a, b, assume_a="pos"),
            (_spd(k5, 64, 64), jax.random.normal(k6, (64, 64, 8))),
        ),
    }


def _time(fn: Callable, args: tuple) -> float:
    t0 = time.perf_counter()
    jax.block_until_ready(fn(*args))
    return time.perf_counter() - t0


def measure(repeats: int) -> dict[str, dict[str, float]]:
    """Per workload: median seconds of each way, the median within-repeat ratio, the max difference."""
    out = {}
    for name, (batched, looped, args) in workloads(jax.random.key(0)).items():
        device = jax.devices()[0]
        args = tuple(jax.device_put(a, device) for a in args)
        b, m = jax.jit(batched), jax.jit(looped)
        rb, rm = jax.tree_util.tree_leaves(b(*args)), jax.tree_util.tree_leaves(m(*args))  # compile, warm up
        diff = max(float(jnp.max(jnp.abs(x - y))) for x, y in zip(rb, rm))
        tb, tm = [], []
        for _ in range(repeats):
            tb.append(_time(b, args))
            tm.append(_time(m, args))
        out[name] = {
            "batched_ms": 1e3 * float(np.median(tb)),
            "one_per_call_ms": 1e3 * float(np.median(tm)),
            "ratio": float(np.median(np.asarray(tm) / np.asarray(tb))),
            "max_abs_diff": diff,
        }
    return out


def main(args: argparse.Namespace) -> int:
    """`jaxlab bench lapack`: measure every workload and print the table (or one JSON object); 0."""
    if args.repeats < 1:
        raise ConfigError("--repeats", f"must be >= 1, got {args.repeats}")
    result = {
        "machine": f"{platform.machine()} {platform.processor() or ''}".strip(),
        "device": str(jax.devices()[0]),
        "n_devices": jax.device_count(),
        "jax": jax.__version__,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "workloads": measure(args.repeats),
    }
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"{result['device']} ({result['n_devices']} devices), jax {result['jax']}, {result['date']}")
    for name, r in result["workloads"].items():
        print(
            f"{name:12s} batched {r['batched_ms']:9.3f} ms   one per call {r['one_per_call_ms']:9.3f} ms   "
            f"ratio {r['ratio']:.2f}   max |diff| {r['max_abs_diff']:.1e}"
        )
    return 0
