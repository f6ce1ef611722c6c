"""How one compiled program applies a run's function to its R runs: the run layout.

  vmap  `jax.vmap`: every operation of the step runs once for all R runs (a leading run axis in
        every array; per-run weights make every matmul a batched matmul over runs).
  scan  `jax.lax.map`: the runs one after another inside the program, in blocks of `block`
        runs vmapped together (block 1: each run with one run's kernels, plain GEMMs with shared
        weights, one run's activations in memory at a time).
  auto  `scan` on CPUs, `vmap` on GPUs and TPUs (which need the large batched kernels); the
        execution plan decides it once (`jaxlab.train.plan`) and the engine passes `vmap` or `scan`.

Over several devices (a `jax.sharding.Mesh` with a `runs` axis, `jaxlab.train.sharding`), `vmap`
leaves the sharded run axis to XLA's SPMD partitioner, and `scan` splits the runs over the devices
with `jax.shard_map`, each device scanning its own share. On a CPU host with one XLA device per
core (`jaxlab.hostdevices`), each core then trains whole runs: for small models this beats
splitting every small kernel over the cores (benchmarks/results/train.md).

The block (`train.run_block`, 0 = `auto_block`, decided by the plan): tiny models spend their step
in per-kernel costs that a few vmapped runs share, while large activations want one run at a time
in the caches. `auto_block` vmaps as many runs (at most 8) as keep a block's activations (each
run's gradient micro-batch, `jaxlab.train.microbatch`) within the same 2 MB work budget.

`map_runs` (one device) and `per_device` (a device's share under `jax.shard_map`) are the two
halves of `over_runs`; `jaxlab.train.streams` uses them to draw shared task batches between them.

All give every run the same numbers up to float reassociation (different kernels for the same
products): a run's function is untouched, only how XLA batches it changes. Measured on the
2-core CPU (benchmarks/results/train_profile.md): the paper LSA step of 64 runs is ~1.3x faster
per CPU-second and ~2x faster in wall time as `scan` than as `vmap`; XLA:CPU's batched
matmuls over (run, sequence) batch dimensions and the transposes around them cost more than
64 sequential sets of GEMMs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import jax
from jax.sharding import Mesh, PartitionSpec

from jaxlab.config import RUN_LAYOUTS
from jaxlab.errors import ConfigError
from jaxlab.train.plan import MAX_BLOCK, auto_block, resolve_layout
from jaxlab.train.sharding import RUN_AXIS

__all__ = [
    "MAX_BLOCK",
    "RUN_LAYOUTS",
    "auto_block",
    "block_size",
    "map_runs",
    "over_runs",
    "per_device",
    "resolve_layout",
]


def over_runs(
    fn: Callable[..., Any],
    in_axes: Sequence[int | None],
    layout: str = "auto",
    mesh: Mesh | None = None,
    block: int = 1,
) -> Callable[..., Any]:
    """`fn` of one run -> the same function of R runs.

    `layout`: `vmap` or `scan` (an execution plan's `run_layout`); `auto` is resolved for this
    process's backend (`jaxlab.train.plan.resolve_layout`).

    `in_axes[i]` is 0 when positional argument i has a leading run axis and None when it is
    shared by every run (as `jax.vmap`'s `in_axes`); every output gets a leading run axis.
    `mesh`: the devices holding the run axis (axis `runs`; R a multiple of their number).
    `block`: runs vmapped together in each step of the `scan` layout (the largest divisor of a
    device's run count that is at most `block`).
    """
    if resolve_layout(layout) == "vmap":
        return map_runs(fn, in_axes, "vmap", block)
    return per_device(map_runs(fn, in_axes, "scan", block), in_axes, mesh)


def map_runs(fn: Callable[..., Any], in_axes: Sequence[int | None], layout: str, block: int = 1) -> Callable[..., Any]:
    """`fn` of one run -> the same function of the R runs of one device: `jax.vmap` (`vmap`) or the
    runs in sequence in vmapped blocks of up to `block` (`scan`); `in_axes` as in `over_runs`."""
    if block < 1:
        raise ConfigError("train.run_block", f"must be >= 1, got {block}")
    in_axes = tuple(in_axes)
    if any(ax not in (0, None) for ax in in_axes):
        raise ValueError(f"in_axes must be 0 or None, got {in_axes}")
    if resolve_layout(layout) == "vmap":
        return jax.vmap(fn, in_axes=in_axes)
    return _scanned(fn, in_axes, block)


def per_device(fn: Callable[..., Any], in_axes: Sequence[int | None], mesh: Mesh | None) -> Callable[..., Any]:
    """`fn` of one device's share of the runs -> the same function of all runs of `mesh`: each device
    calls `fn` on its own rows of the arguments with a run axis (`in_axes[i] == 0`) and the whole
    of the others (`jax.shard_map`); `fn` itself on one device. Every output has a run axis."""
    if mesh is None or mesh.devices.size == 1:
        return fn
    specs = tuple(PartitionSpec(RUN_AXIS) if ax == 0 else PartitionSpec() for ax in in_axes)
    # A run's function has no collectives, so there is no replication to check: unchecked, its
    # carries may start from constants (a loss sum starting at 0.0) without casts to `varying`.
    return jax.shard_map(fn, mesh=mesh, in_specs=specs, out_specs=PartitionSpec(RUN_AXIS), check_vma=False)


def block_size(n_runs: int, block: int) -> int:
    """Runs vmapped together per step of the `scan` layout on a device with `n_runs` runs: the largest
    divisor of `n_runs` that is at most `block` (no remainder block, whose separate body would compile
    again); 1 for no runs."""
    return max(k for k in range(1, min(block, n_runs) + 1) if n_runs % k == 0) if n_runs else 1


def _scanned(fn: Callable[..., Any], in_axes: tuple[int | None, ...], block: int) -> Callable[..., Any]:
    """The `scan` layout on one device: `jax.lax.map` over the runs, in vmapped blocks."""

    def mapped(*args: Any) -> Any:
        if len(args) != len(in_axes):
            raise TypeError(f"expected {len(in_axes)} arguments, got {len(args)}")
        per_run = tuple(a for a, ax in zip(args, in_axes) if ax == 0)

        def one(xs: tuple) -> Any:
            it = iter(xs)
            return fn(*(next(it) if ax == 0 else a for a, ax in zip(args, in_axes)))

        size = block_size(jax.tree_util.tree_leaves(per_run)[0].shape[0], block)
        return jax.lax.map(one, per_run, batch_size=size if size > 1 else None)

    return mapped
