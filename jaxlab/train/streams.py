"""Shared task streams (`task.shared_stream`): each step's training batches drawn once per data seed.

A run's data stream is a function of its data key alone (`TaskSection`: the data seed of a run is
its seed; the batch of step t is `Train.stream_batch(data_key, t)`), so every run of one seed in a
program sees the same batches whether or not they are shared. Without sharing each run draws them
inside its own step (`Train.advance`, mapped over the runs by `jaxlab.train.runmap.over_runs`).
With sharing the step loop runs outside the per-run step, on each device over its own runs:

    streams = the distinct data keys of the device's runs         (`stream_table`, once per call)
    for t in steps:
        batch[u] = stream_batch(key[u], t)   for each stream u    (one draw per data seed)
        run r:  one optimizer step on batch[stream[r]]            (`Train.flat_step`, any run layout)

The batches are drawn one stream at a time (`lax.fori_loop`), with the same program whatever the
other runs are, so a run's batches, and so its numbers, do not depend on which runs share its
program. The per-run step is mapped in the plan's run layout (`vmap`, or `scan` in blocks of
`plan.run_block` runs), on several devices inside `jax.shard_map` (each device draws the streams
of its own runs: runs of one seed on two devices draw it twice). The batch buffer has one slot
per stream the device's runs can hold (`stream_slots`: the sweep's distinct seeds, at most its runs).
The gain is the sampler's share of a step times (1 - streams / runs): on a CPU the paper LSA
regression step spends about two thirds of its time drawing its 2048 tasks
(benchmarks/results/train.md, benchmarks/results/shared-stream.md).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import chex
import jax
import jax.numpy as jnp
from jax import lax
from jax.flatten_util import ravel_pytree
from jax.sharding import Mesh

from jaxlab.tasks import Batch
from jaxlab.train.engine import Train, TrainState, add_finite, finite_mean
from jaxlab.train.hparams import Hparams
from jaxlab.train.runmap import map_runs, per_device


def stream_table(data_key_RK: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """The distinct data keys among R runs, in order of first appearance.

    Returns (leader_U [R] int32: the first run of stream u for u < n_streams, 0 beyond;
    stream_R [R] int32: the stream of each run; n_streams [] int32). Run r is a stream's first
    run when no earlier run has its key: first[r] = min{j : key_j = key_r}, and
    stream[r] = #{first runs j <= first[r]} - 1.
    """
    chex.assert_rank(data_key_RK, 2)
    n = data_key_RK.shape[0]
    same_RR = jnp.all(data_key_RK[:, None, :] == data_key_RK[None, :, :], axis=-1)
    first_R = jnp.argmax(same_RR, axis=1).astype(jnp.int32)
    runs_R = jnp.arange(n, dtype=jnp.int32)
    is_first_R = first_R == runs_R
    rank_R = jnp.cumsum(is_first_R, dtype=jnp.int32) - 1
    stream_R = rank_R[first_R]
    leader_U = jnp.zeros(n, jnp.int32).at[jnp.where(is_first_R, rank_R, n)].set(runs_R, mode="drop")
    return leader_U, stream_R, jnp.sum(is_first_R, dtype=jnp.int32)


def training_part(batch: Batch) -> Batch:
    """The fields of a batch a training step reads (`Train.train_loss`, `Train.train_mask`): inputs,
    targets and the loss mask; the task's `aux` (its parameters and labels) is dropped."""
    return batch.replace(aux={})


def stream_slots(train: Train) -> int:
    """The most data streams the runs of one of `train`'s programs can hold: the distinct seeds of
    its sweep (`sweep.seeds`; every run of a sweep has one of them)."""
    return len(set(train.cfg.sweep.seeds))


def shared_advance(
    train: Train, layout: str, mesh: Mesh | None = None, block: int = 1, slots: int | None = None
) -> Callable[[TrainState, Hparams, jax.Array], tuple[TrainState, jax.Array]]:
    """`(state [R], hparams [R], n_steps) -> (state [R], mean finite training loss [R])`: what
    `over_runs(train.advance, (0, 0, None), layout, mesh, block)` computes, with each step's
    batches drawn once per distinct data key of a device's runs (module docstring).

    `slots` (default `stream_slots(train)`): the batch buffer's streams per device (at most the
    device's run count). A device whose runs hold more distinct streams than that (runs whose
    keys are not of the sweep's seeds), or whose runs all have streams of their own (a run alone),
    trains them with a batch drawn per run (`Train.advance`): the same batches.
    """
    slots = stream_slots(train) if slots is None else slots
    if slots < 1:
        raise ValueError(f"shared_advance: slots must be >= 1, got {slots}")
    independent = map_runs(train.advance, (0, 0, None), layout, block)

    def local(state: TrainState, hparams: Hparams, n_steps: jax.Array) -> tuple[TrainState, jax.Array]:
        n_runs = state.step.shape[0]
        n_slots = min(slots, n_runs)
        # runs share a stream when their data keys and steps agree (the steps of a chunk's runs always do)
        step_R1 = lax.bitcast_convert_type(state.step, jnp.uint32)[:, None]
        leader_U, stream_R, n_streams = stream_table(jnp.concatenate([state.data_key, step_R1], axis=1))
        _, unravel = ravel_pytree(jax.tree_util.tree_map(lambda x: x[0], state.params))
        flat_RP = jax.vmap(lambda p: ravel_pytree(p)[0])(state.params)
        shapes = jax.eval_shape(lambda: training_part(train.stream_batch(state.data_key[0], state.step[0])))
        # a buffer the size of the streams, not of the runs: a buffer per run, carried through the
        # step loop, cost the paper LSA step 0.2 of its time on a CPU
        empty = jax.tree_util.tree_map(lambda x: jnp.zeros((n_slots, *x.shape), x.dtype), shapes)

        def run_step(st: TrainState, hp: Hparams, u: jax.Array, buffer: Batch) -> tuple[TrainState, jax.Array]:
            batch = jax.tree_util.tree_map(lambda b: lax.dynamic_index_in_dim(b, u, keepdims=False), buffer)
            return train.flat_step(st, hp, unravel, batch)

        step_all = map_runs(run_step, (0, 0, 0, None), layout, block)

        def draw(u: jax.Array, buffer: Batch, st: TrainState) -> Batch:
            r = leader_U[u]  # in the runs' given order; `st` holds them in stream order
            batch = training_part(train.stream_batch(state.data_key[r], st.step[inverse_R[r]]))
            return jax.tree_util.tree_map(lambda b, x: lax.dynamic_update_index_in_dim(b, x, u, 0), buffer, batch)

        # the runs in order of their streams: the runs of one stream step one after another while
        # its batch is in the caches (a run's numbers do not depend on its place)
        order_R = jnp.argsort(stream_R, stable=True)
        inverse_R = jnp.argsort(order_R)
        take = lambda tree, rows: jax.tree_util.tree_map(lambda x: x[rows], tree)
        hparams_sorted, stream_sorted = take((hparams, stream_R), order_R)

        def body(_: Any, carry: tuple) -> tuple:
            st, buffer, total, count = carry
            buffer = lax.fori_loop(0, n_streams, lambda u, b: draw(u, b, st), buffer)
            st, loss = step_all(st, hparams_sorted, stream_sorted, buffer)
            return st, buffer, *add_finite(total, count, loss)

        def shared() -> tuple[TrainState, jax.Array]:
            zeros = jnp.zeros(n_runs, jnp.float32), jnp.zeros(n_runs, jnp.int32)
            init = (take(state.replace(params=flat_RP), order_R), empty, *zeros)
            st, _, total, count = lax.fori_loop(0, n_steps, body, init)
            st, mean = take((st, finite_mean(total, count)), inverse_R)
            return st.replace(params=jax.vmap(unravel)(st.params)), mean

        # nothing to share (every run its own stream; measured 0.68x the independent steps), or
        # more streams than slots: each run draws its own batches
        if n_runs == 1:
            return independent(state, hparams, n_steps)
        share = (n_streams <= n_slots) & (n_streams < n_runs)
        return lax.cond(share, shared, lambda: independent(state, hparams, n_steps))

    return per_device(local, (0, 0, None), mesh)
