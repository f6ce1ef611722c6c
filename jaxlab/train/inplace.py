"""The training steps of a chunk's runs, written back into the state they read (the `scan` run layout).

`over_runs(train.advance, ...)` in the `scan` layout is `jax.lax.map` over a device's runs: a loop
that reads run r's rows of every state leaf and writes the advanced rows into new stacked output
buffers ([R, ...] per leaf, zero-filled before the loop). `advance_runs` loops over the same runs in
the same blocks (`jaxlab.train.runmap.block_size`) with the state itself as the loop's carry:

    for i in blocks:  state[rows_i] <- advance(state[rows_i], hparams[rows_i], n_steps)

so the program holds one copy of the chunk's state instead of two (the donated input and the
outputs), and compiles no zero-fill per leaf. Every block sees the rows, the hyperparameters and
the per-run function that `lax.map` gives it (a block of one run: `advance` itself; of k runs:
`jax.vmap(advance)`), so the states and losses are bitwise those of `over_runs`
(tests/test_inplace.py). Measured (benchmarks/results/compile-depth.md): the clustering interval
program for 4 runs needs 314 MiB of temporaries instead of 425 MiB (the state is 111 MiB) and 12
fewer kernels.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.sharding import Mesh

from jaxlab.train.engine import Train, TrainState
from jaxlab.train.hparams import Hparams
from jaxlab.train.runmap import block_size, over_runs, per_device, resolve_layout

__all__ = ["advance_runs", "in_place_runs"]

AdvanceFn = Callable[[TrainState, Hparams, jax.Array], tuple[TrainState, jax.Array]]


def in_place_runs(advance: AdvanceFn, block: int) -> AdvanceFn:
    """`advance` of one run (returning its state and a float32 loss []) -> the same function of one
    device's R runs, in blocks of `block_size(R, block)` runs, each block's rows of the state
    overwritten by its advanced rows (module docstring). Returns (state [R], loss [R])."""
    if block < 1:
        raise ValueError(f"in_place_runs: block must be >= 1, got {block}")

    def local(state: TrainState, hparams: Hparams, n_steps: jax.Array) -> tuple[TrainState, jax.Array]:
        n_runs = jax.tree_util.tree_leaves(state)[0].shape[0]
        size = block_size(n_runs, block)
        step = advance if size == 1 else jax.vmap(advance, in_axes=(0, 0, None))

        def rows(tree, i):
            if size == 1:
                return jax.tree_util.tree_map(lambda x: lax.dynamic_index_in_dim(x, i, keepdims=False), tree)
            return jax.tree_util.tree_map(lambda x: lax.dynamic_slice_in_dim(x, i * size, size), tree)

        def put(tree, new, i):
            grow = (lambda y: y[None]) if size == 1 else (lambda y: y)
            write = lambda x, y: lax.dynamic_update_slice_in_dim(x, grow(y), i * size, 0)
            return jax.tree_util.tree_map(write, tree, new)

        losses = jnp.zeros(n_runs, jnp.float32)  # `advance`'s loss: a float32 scalar per run

        def body(i: jax.Array, carry: tuple[TrainState, jax.Array]) -> tuple[TrainState, jax.Array]:
            st, loss = carry
            new, new_loss = step(rows(st, i), rows(hparams, i), n_steps)
            return put(st, new, i), put(loss, new_loss, i)

        return lax.fori_loop(0, n_runs // size, body, (state, losses))

    return local


def advance_runs(train: Train, layout: str, mesh: Mesh | None, block: int) -> AdvanceFn:
    """`(state [R], hparams [R], n_steps) -> (state [R], mean finite training loss [R])`: what
    `over_runs(train.advance, (0, 0, None), layout, mesh, block)` computes; in the `scan` layout with
    the state updated in place on each device (`in_place_runs`), in `vmap` as `over_runs`."""
    if resolve_layout(layout) == "vmap":
        return over_runs(train.advance, (0, 0, None), layout, mesh, block)
    return per_device(in_place_runs(train.advance, block), (0, 0, None), mesh)
