"""`jaxlab bench cka`: linear CKA over all pairs of runs x layers, against the machine's matmul rate and NumPy.

Workload (deterministic; default sizes): R = runs x layers = 64 x 6 = 384 representations of
n = 1024 examples x d = 64 features, drawn from a fixed key: each layer has a shared signal, each
run adds its own mixing and noise. The measured call is `jaxlab.metrics.pairwise(linear_cka, reps)`
(the [64, 6, 64, 6] matrix), which takes the Gram-of-Grams path (see jaxlab.metrics.pairwise).

FLOPs are counted analytically for the work that path must do, excluding its padding and the
lower halves of diagonal tiles:
  F = R n^2 d                      (the half Gram matrix X X^T of every representation)
    + R (R + 1) / 2 * n (n + 1)    (<K_i, K_j> over the n (n + 1) / 2 distinct entries, i <= j)
(1.03e11 for the default sizes; the feature-space route, 2 n d^2 per pair, would need 6.2e11).

Reference rates, measured in the same process and interleaved with the CKA timing (the machine may
be shared): the FLOP/s of a jitted N x N float32 matmul (2 N^3 FLOPs), and a straightforward NumPy
loop calling Kornblith et al.'s feature_space_linear_cka (center both, three d x d products of
2 n d^2 FLOPs each) on float32 arrays, timed on a fixed random sample of pairs and extrapolated:
`numpy_loop_seconds` to the R x R entries a double loop fills, `numpy_loop_seconds_unique_pairs`
to the R (R + 1) / 2 pairs i <= j of a loop that uses symmetry (half of it). Each repeat times
[matmul, CKA, NumPy sample] back to back; utilization and speedups are medians over repeats of the
ratios within a repeat; times are medians.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

from jaxlab.errors import ConfigError

NAME = "cka"
HELP = "linear CKA over all pairs of runs x layers: FLOP/s vs the same-process matmul rate, speedup vs NumPy"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `jaxlab bench cka`: workload sizes, repeats, the reference matmul, `--json`."""
    p.add_argument("--runs", type=int, default=64, help="runs (default 64)")
    p.add_argument("--layers", type=int, default=6, help="layers per run (default 6)")
    p.add_argument("--examples", type=int, default=1024, help="examples per representation (default 1024)")
    p.add_argument("--features", type=int, default=64, help="features per representation (default 64)")
    p.add_argument("--repeats", type=int, default=5, help="timed repeats (medians are reported; default 5)")
    p.add_argument("--numpy-pairs", type=int, default=16, help="pairs timed in the NumPy loop per repeat")
    p.add_argument("--matmul-size", type=int, default=2048, help="N of the reference N x N matmul (default 2048)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _check(args: argparse.Namespace) -> None:
    for name in ("runs", "layers", "examples", "features", "repeats", "numpy_pairs", "matmul_size"):
        if getattr(args, name) < 1:
            raise ConfigError(f"--{name.replace('_', '-')}", f"must be >= 1, got {getattr(args, name)}")
    if args.examples < 2:
        raise ConfigError("--examples", f"must be >= 2, got {args.examples}")


def flop_count(n_reps: int, n: int, d: int) -> float:
    """FLOPs of all-pairs linear CKA by the Gram-of-Grams path (module docstring)."""
    return float(n_reps) * n * n * d + n_reps * (n_reps + 1) / 2 * n * (n + 1.0)


def workload(runs: int, layers: int, n: int, d: int):
    """reps [runs, layers, n, d] float32, the same on every call: layer signal x run mixing + run noise."""
    import jax
    import jax.numpy as jnp

    @jax.jit
    def make():
        k_sig, k_mix, k_noise, k_scale = jax.random.split(jax.random.key(0), 4)
        signal = jax.random.normal(k_sig, (1, layers, n, d))
        mix = jax.random.normal(k_mix, (runs, layers, d, d)) / jnp.sqrt(d)
        noise = jax.random.normal(k_noise, (runs, layers, n, d))
        scale = jax.random.uniform(k_scale, (runs, layers, 1, 1), minval=0.2, maxval=2.0)
        return jnp.tanh(signal @ mix) + scale * noise

    return make()


def numpy_linear_cka(x: np.ndarray, y: np.ndarray) -> float:
    """Kornblith et al.'s feature_space_linear_cka, as users run it pair by pair."""
    x = x - x.mean(0, keepdims=True)
    y = y - y.mean(0, keepdims=True)
    dot = np.linalg.norm(x.T @ y) ** 2
    return float(dot / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y)))


def device_name() -> str:
    """The first JAX device, as reported: `cpu (N cores)` or `platform: device kind`."""
    import jax

    dev = jax.devices()[0]
    if dev.platform == "cpu":
        return f"cpu ({os.cpu_count()} cores)"
    return f"{dev.platform}: {dev.device_kind}"


def _log(args: argparse.Namespace, text: str) -> None:
    print(f"[bench cka] {text}", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> dict:
    """The measurement (see the module docstring): a dict of medians, rates, speedups and the raw times.

    Checks the arguments first (ConfigError); logs progress to stderr.
    """
    import jax
    import jax.numpy as jnp

    from jaxlab.metrics import linear_cka, pairwise

    _check(args)
    R, n, d = args.runs * args.layers, args.examples, args.features
    flops = flop_count(R, n, d)
    reps = workload(args.runs, args.layers, n, d).block_until_ready()
    flat = np.asarray(reps).reshape(R, n, d)

    N = args.matmul_size
    a = jax.random.normal(jax.random.key(1), (N, N), jnp.float32)
    matmul = jax.jit(lambda u, v: u @ v)

    rng = np.random.default_rng(0)
    ii, jj = np.triu_indices(R)
    pick = rng.choice(len(ii), size=min(args.numpy_pairs, len(ii)), replace=False)
    sample = list(zip(ii[pick], jj[pick]))
    n_pairs = R * (R + 1) // 2

    _log(args, f"{R} representations of {n} x {d}; {n_pairs} pairs; compiling")
    t0 = time.perf_counter()
    matrix = np.asarray(pairwise(linear_cka, reps)).reshape(R, R)
    compile_s = time.perf_counter() - t0
    matmul(a, a).block_until_ready()
    numpy_values = [numpy_linear_cka(flat[i], flat[j]) for i, j in sample]
    max_diff = max(abs(v - matrix[i, j]) for v, (i, j) in zip(numpy_values, sample))

    peak_t, cka_t, np_t = [], [], []
    for rep in range(args.repeats):
        t0 = time.perf_counter()
        matmul(a, a).block_until_ready()
        peak_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        pairwise(linear_cka, reps).block_until_ready()
        cka_t.append(time.perf_counter() - t0)
        t0 = time.perf_counter()
        for i, j in sample:
            numpy_linear_cka(flat[i], flat[j])
        np_t.append((time.perf_counter() - t0) / len(sample))
        times = f"matmul {peak_t[-1]:.3f}s, cka {cka_t[-1]:.3f}s, numpy {np_t[-1] * 1e3:.2f} ms/pair"
        _log(args, f"repeat {rep + 1}/{args.repeats}: {times}")
    peak = 2.0 * N**3 / np.asarray(peak_t)
    cka = np.asarray(cka_t)
    loop_all = np.asarray(np_t) * R * R  # the straightforward double loop fills every entry of [R, R]
    loop_unique = np.asarray(np_t) * n_pairs  # a loop that uses symmetry: i <= j only
    return {
        "seconds": float(np.median(cka)),
        "flops_per_s": float(flops / np.median(cka)),
        "peak_flops_per_s": float(np.median(peak)),
        "utilization": float(np.median(flops / cka / peak)),
        "numpy_loop_seconds": float(np.median(loop_all)),
        "speedup_vs_numpy_loop": float(np.median(loop_all / cka)),
        "numpy_loop_seconds_unique_pairs": float(np.median(loop_unique)),
        "speedup_vs_numpy_loop_unique_pairs": float(np.median(loop_unique / cka)),
        "device": device_name(),
        "flops": flops,
        "n_representations": R,
        "n_pairs": n_pairs,
        "shape": [args.runs, args.layers, n, d],
        "repeats": args.repeats,
        "compile_seconds": float(compile_s - np.median(cka)),
        "seconds_all": [float(t) for t in cka],
        "peak_flops_per_s_all": [float(p) for p in peak],
        "numpy_seconds_per_pair_all": [float(t) for t in np_t],
        "numpy_pairs_timed": len(sample),
        "max_abs_diff_vs_numpy": float(max_diff),
        "matmul_size": N,
        "jax_version": jax.__version__,
    }


def main(args: argparse.Namespace) -> int:
    """`jaxlab bench cka`: run the benchmark and print the result (one JSON object with `--json`); 0."""
    result = run(args)
    if args.json:
        print(json.dumps(result))
        return 0
    print(f"device: {result['device']}")
    print(f"workload: {result['shape']} (runs, layers, examples, features) -> {result['n_pairs']} pairs")
    print(f"all-pairs linear CKA: {result['seconds']:.3f} s, {result['flops_per_s'] / 1e9:.1f} GFLOP/s")
    print(f"matmul {result['matmul_size']}^3: {result['peak_flops_per_s'] / 1e9:.1f} GFLOP/s")
    print(f"utilization: {result['utilization']:.2f}")
    print(f"NumPy loop over all R x R entries (extrapolated): {result['numpy_loop_seconds']:.1f} s")
    print(f"speedup vs NumPy loop: {result['speedup_vs_numpy_loop']:.1f}x")
    print(f"NumPy loop over pairs i <= j: {result['numpy_loop_seconds_unique_pairs']:.1f} s", end=" ")
    print(f"(speedup {result['speedup_vs_numpy_loop_unique_pairs']:.1f}x)")
    print(f"max |CKA - NumPy| on the timed pairs: {result['max_abs_diff_vs_numpy']:.2e}")
    return 0
