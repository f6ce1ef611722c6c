"""Matrix decompositions that cannot deadlock XLA:CPU: one matrix per LAPACK call on a CPU.

jaxlib 0.10's CPU LAPACK kernels (eigh, svd, qr, LU, Cholesky, triangular solves) split a batch of
matrices into chunks, schedule them on XLA's intra-op thread pool and block the calling thread
until they finish (`ParallelBatchMap` in jaxlib/cpu/lapack_kernels.cc) whenever the pool has
more than one thread and the batch's estimated work exceeds 2e5 flops. The calling thread is a
thread of that same pool. When as many such calls run at once as the pool has threads (one per
device with one XLA device per core, or independent calls run concurrently by the thunk executor
of a single program), every thread waits for chunks that no free thread can run: a deadlock.
`jaxlab run steerability --preset quick --seeds 8` hung that way in a batched `eigh`,
`instruction-clustering` in a batched QR.

A call on a single matrix never waits: its chunk size is at least its batch of one, so the kernel
runs inline on the calling thread. Every function here is therefore a function of ONE matrix
(leading axes are mapped over), with a vmap rule (`jax.custom_batching.custom_vmap`) that, in a
program lowered for a CPU, loops over the batch (`lax.map`: one unbatched LAPACK call per
iteration) and on other platforms calls the batched kernel (cuSOLVER and TPU kernels batch on
their own). The choice is made when the program is lowered (`lax.platform_dependent`), so one
traced program exports for CPU, CUDA and TPU alike. The loop costs a few microseconds per matrix
over the batched kernel (benchmarks/results/lapack.md).

jaxlab calls decompositions only through this module (a test greps for others) and checks the
compiled programs of every experiment for batched LAPACK calls (`batched_lapack_calls`).
The functions are forward-only: `custom_vmap` has no reverse-mode rule, and no jaxlab probe
differentiates through a decomposition.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax
from jax.custom_batching import custom_vmap


def _one_matrix_per_call(fn: Callable[..., Any]) -> Callable[..., Any]:
    """`fn` (of unbatched arrays, returning a tuple of arrays) with a vmap rule that maps over the
    batch one call at a time on CPUs and calls `vmap(fn)` elsewhere."""

    @custom_vmap
    def one(*args: jax.Array) -> tuple[jax.Array, ...]:
        return tuple(fn(*args))

    @one.def_vmap
    def _rule(axis_size: int, in_batched: list[bool], *args: jax.Array) -> tuple[Any, Any]:
        full = [a if b else jnp.broadcast_to(a, (axis_size, *a.shape)) for b, a in zip(in_batched, args)]
        out = lax.platform_dependent(
            *full,
            cpu=lambda *xs: lax.map(lambda t: one(*t), xs),
            default=lambda *xs: jax.vmap(lambda *t: tuple(fn(*t)))(*xs),
        )
        return out, tuple(True for _ in out)

    return one


def _over_leading(fn: Callable[..., Any], core_ranks: tuple[int, ...], *args: jax.Array) -> Any:
    """Apply `fn` (core arrays of ranks `core_ranks`) over the common leading axes of `args`."""
    lead = args[0].ndim - core_ranks[0]
    if lead < 0:
        raise ValueError(f"expected an array of rank >= {core_ranks[0]}, got shape {args[0].shape}")
    for a, r in zip(args[1:], core_ranks[1:]):
        if a.ndim - r != lead or a.shape[:lead] != args[0].shape[:lead]:
            raise ValueError(f"leading axes differ: {args[0].shape} and {a.shape}")
    for _ in range(lead):
        fn = jax.vmap(fn)
    return fn(*args)


_eigh = _one_matrix_per_call(lambda a: jnp.linalg.eigh(a))
_svd = _one_matrix_per_call(lambda a: jnp.linalg.svd(a, full_matrices=False))
_svdvals = _one_matrix_per_call(lambda a: (jnp.linalg.svd(a, compute_uv=False),))
_qr = _one_matrix_per_call(lambda a: jnp.linalg.qr(a, mode="reduced"))
_pinv = _one_matrix_per_call(lambda a: (jnp.linalg.pinv(a),))
_solve = _one_matrix_per_call(lambda a, b: (jnp.linalg.solve(a, b),))
_solve_pos = _one_matrix_per_call(lambda a, b: (jax.scipy.linalg.solve(a, b, assume_a="pos"),))


def eigh(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(eigenvalues [..., n] ascending, eigenvectors [..., n, n] as columns) of symmetric a [..., n, n]."""
    return _over_leading(_eigh, (2,), a)


def svd(a: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """Thin SVD a = U diag(s) V^T of a [..., m, n]: (U [..., m, k], s [..., k] descending, V^T [..., k, n]),
    k = min(m, n)."""
    return _over_leading(_svd, (2,), a)


def svdvals(a: jax.Array) -> jax.Array:
    """Singular values [..., min(m, n)] of a [..., m, n], descending."""
    return _over_leading(_svdvals, (2,), a)[0]


def qr(a: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Reduced QR a = Q R of a [..., m, n]: (Q [..., m, k] orthonormal columns, R [..., k, n] upper), k = min(m, n)."""
    return _over_leading(_qr, (2,), a)


def pinv(a: jax.Array) -> jax.Array:
    """Moore-Penrose pseudo-inverse [..., n, m] of a [..., m, n] (through the SVD, as `jnp.linalg.pinv`)."""
    return _over_leading(_pinv, (2,), a)[0]


def solve(a: jax.Array, b: jax.Array, assume_a: str = "gen") -> jax.Array:
    """x with a x = b for a [..., n, n] and b [..., n, k] (or b [n] with a [n, n]).

    `assume_a="pos"`: a is symmetric positive definite (Cholesky); `"gen"`: any non-singular a (LU).
    """
    fns = {"gen": _solve, "pos": _solve_pos}
    if assume_a not in fns:
        raise ValueError(f"assume_a: unknown value {assume_a!r} (allowed: gen, pos)")
    if b.ndim == 1:
        return solve(a, b[:, None], assume_a)[:, 0]
    return _over_leading(fns[assume_a], (2, 2), a, b)[0]


# -- checking compiled programs --------------------------------------------------------------------
_LAPACK_CALL = re.compile(r"=\s*(\([^=]*?\)|\S+)\s+custom-call\(([^)]*)\).*?custom_call_target=\"(lapack_\w+)\"")
_SHAPE = re.compile(r"\w+\[([\d,]*)\]")


def batched_lapack_calls(hlo_text: str) -> list[str]:
    """The LAPACK custom calls of an HLO module (text) whose matrices come in a batch (more than one
    matrix per call): the calls that can deadlock XLA:CPU's thread pool (module docstring).

    A call's batch is read from its first result's shape: every LAPACK kernel returns the factored
    matrix (or the solution) first, as [batch..., m, n].
    """
    found = []
    for line in hlo_text.splitlines():
        m = _LAPACK_CALL.search(line)
        if m is None:
            continue
        first = _SHAPE.search(m.group(1))
        dims = [int(d) for d in first.group(1).split(",") if d] if first else []
        batch = 1
        for d in dims[:-2]:
            batch *= d
        if batch > 1:
            found.append(f"{m.group(3)} on {m.group(1)[:80]}")
    return found


__all__ = ["batched_lapack_calls", "eigh", "pinv", "qr", "solve", "svd", "svdvals"]
