"""The two compiled programs of a run chunk: `start` and `interval`, sharded over the run mesh.

`start(key_data [C, k], hparams [C]) -> (state [C], eval_data, history)` initialises C runs,
builds the (replicated) evaluation data and the on-device metric history {metric: [n_evals, C]}
(NaN but the first training batch's loss); `first_row` then evaluates row 0 with `interval` and
zero steps, so the evaluation (for most experiments the larger part of the code) is compiled once.

`interval(state, history, hparams, eval_data, n_steps, row, valid) -> (state, history, (loss, n_div))`
advances every run `n_steps` optimizer steps (`Train.chunk` over the runs in the run layout of
`jaxlab.train.runmap`, in blocks of runs: both from the execution plan `Train.plan`; in the `scan`
layout each device's runs are advanced in place in the donated state, `jaxlab.train.inplace`; with
`task.shared_stream` each step's batches are drawn once per data seed, `jaxlab.train.streams`), writes the
evaluation into row `row` of the history, and returns two replicated scalars for the progress
bar: the median finite training loss and the number of diverged runs, both over the real
(`valid`) runs only. The state and the history are donated, so a chunk's memory does not grow
with the steps, and only the two scalars travel to the host between evaluations: the history is
the run's metrics subsampled on the device at the evaluation points (`train.eval_every` /
`train.n_evals`).

Both are compiled once per group for the chunk size C (`compile_start`, `compile_interval`)
from abstract shapes (`start_program` / `start_inputs`, `interval_program` / `interval_inputs`:
the jitted functions and their inputs, which `jax.export` takes as well), so the memory estimate
of `jaxlab.train.chunking` allocates nothing, and every chunk reuses the same executables. The
per-run code is the engine's, untouched: a run's numbers do not depend on the chunk size, the
padding or the device count beyond float reassociation of different batch shapes. `jaxlab bench
train` times these same programs.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.train.engine import Train, TrainState
from jaxlab.train.inplace import advance_runs
from jaxlab.train.runmap import over_runs
from jaxlab.train.sharding import Placement
from jaxlab.train.streams import shared_advance


class Programs:
    """The `start` and `interval` programs of one group's run chunks, traced and compiled once per chunk size (module
    docstring)."""

    def __init__(self, train: Train, placement: Placement, n_key_words: int):
        self.train = train
        self.placement = placement
        self.n_evals = len(train.eval_steps)
        self.n_key_words = n_key_words
        self._traced: dict[int, Any] = {}
        self._compiled_start: dict[tuple, Any] = {}
        self._compiled_interval: dict[tuple, Any] = {}

    # -- the traced functions -------------------------------------------------------------------
    def start(self, key_data: jax.Array, hparams: dict[str, jax.Array]) -> tuple[TrainState, Any, dict[str, jax.Array]]:
        """Initialise the chunk's runs from their key data and hyperparameters: (state [C], evaluation data, history
        with row 0 filled)."""
        train = self.train
        keys = jax.random.wrap_key_data(key_data, impl=train.cfg.train.prng_impl)
        state = jax.vmap(train.init)(keys, hparams)
        eval_data = train.make_eval_batch()
        # the metrics' shapes only: row 0 is evaluated by `interval` with zero steps (`first_row`),
        # so the evaluation, usually the larger part of a program, is compiled once per group
        shapes = jax.eval_shape(jax.vmap(train.evaluate, in_axes=(0, None)), state.params, eval_data)
        history = {k: jnp.full((self.n_evals, *v.shape), jnp.nan, v.dtype) for k, v in shapes.items()}
        # the first batch's loss in the plan's run layout, like a training step: vmapped over all runs
        # at once it held every run's activations together (XLA's estimate of `start` for 4096
        # lsa-regression runs: 5.04 GB per device, against 27.6 MB for the training step)
        first = lambda st: train.train_loss(st.params, train.train_batch(st))
        plan = train.plan
        first_loss = over_runs(first, (0,), plan.run_layout, self.placement.mesh, plan.run_block)(state)
        history["train_loss"] = jnp.full((self.n_evals, *first_loss.shape), jnp.nan).at[0].set(first_loss)
        return state, eval_data, history

    def interval(
        self,
        state: TrainState,
        history: dict[str, jax.Array],
        hparams: dict[str, jax.Array],
        eval_data: Any,
        n_steps: jax.Array,
        row: jax.Array,
        valid: jax.Array,
    ) -> tuple[TrainState, dict[str, jax.Array], tuple[jax.Array, jax.Array]]:
        """Advance every run `n_steps` steps, write the evaluation into history row `row`; also the median finite
        training loss and the number of diverged runs among the `valid` ones. With zero steps the row's training
        loss is kept (row 0: the first training batch's, from `start`)."""
        # `Train.chunk` in the plan's run layout (`jaxlab.train.runmap`): with `scan` (CPUs) each
        # device scans its runs, the training steps in blocks of `plan.run_block` runs and the
        # evaluation (large fixed evaluation sets, probes) one run at a time.
        # With `task.shared_stream`, each step's batches are drawn once per data seed of a device's
        # runs and fed to the runs of that seed (`jaxlab.train.streams`): the same batches.
        train, mesh = self.train, self.placement.mesh
        layout = train.plan.run_layout
        if train.cfg.task.shared_stream:
            advance = shared_advance(train, layout, mesh, train.plan.run_block)
        else:
            # `scan`: each device's runs advanced in place in the donated state (`jaxlab.train.inplace`)
            advance = advance_runs(train, layout, mesh, train.plan.run_block)
        evaluate = over_runs(train.evaluate, (0, None), layout, mesh)
        state, train_loss = advance(state, hparams, n_steps)
        train_loss = jnp.where(n_steps > 0, train_loss, history["train_loss"][row])
        metrics = {**evaluate(state.params, eval_data), "train_loss": train_loss}
        history = {k: h.at[row].set(metrics[k]) for k, h in history.items()}
        loss = metrics["train_loss"]
        loss = jnp.nanmedian(jnp.where(valid & jnp.isfinite(loss), loss, jnp.nan))
        n_diverged = jnp.sum(valid & (state.diverged_at >= 0))
        return state, history, (loss, n_diverged)

    # -- abstract inputs and compilation ---------------------------------------------------------
    def abstract_inputs(self, size: int, hparam_keys: list[str]) -> tuple[jax.ShapeDtypeStruct, dict]:
        """Abstract (shape, dtype, sharding) key data [size, n_key_words] and hyperparameters [size] of a chunk of
        `size` runs."""
        p = self.placement
        kd = jax.ShapeDtypeStruct((size, self.n_key_words), jnp.uint32, sharding=p.runs)
        hp = {k: jax.ShapeDtypeStruct((size,), jnp.float32, sharding=p.runs) for k in hparam_keys}
        return kd, hp

    def start_program(self) -> Any:
        """`start`, jitted with its shardings (the program `compile_start` compiles)."""
        p = self.placement
        return jax.jit(self.start, in_shardings=(p.runs, p.runs), out_shardings=(p.runs, p.replicated, p.runs_second))

    def start_inputs(self, size: int, hparam_keys: list[str]) -> tuple[jax.ShapeDtypeStruct, dict]:
        """Abstract inputs of `start_program` for `size` runs."""
        return self.abstract_inputs(size, hparam_keys)

    def trace_start(self, size: int, hparam_keys: list[str]) -> Any:
        """`start` traced for `size` runs (cached: its output shapes also shape `interval`)."""
        if size not in self._traced:
            self._traced[size] = self.start_program().trace(*self.start_inputs(size, hparam_keys))
        return self._traced[size]

    def compile_start(self, size: int, hparam_keys: list[str]) -> Any:
        """`start` compiled for `size` runs (cached: the chunker reads its memory analysis first)."""
        key = (size, tuple(hparam_keys))
        if key not in self._compiled_start:
            self._compiled_start[key] = self.trace_start(size, hparam_keys).lower().compile()
        return self._compiled_start[key]

    def compile_interval(self, size: int, hparam_keys: list[str]) -> Any:
        """`interval` compiled for `size` runs (cached, like `compile_start`)."""
        key = (size, tuple(hparam_keys))
        if key not in self._compiled_interval:
            self._compiled_interval[key] = self._compile_interval(size, hparam_keys)
        return self._compiled_interval[key]

    def _compile_interval(self, size: int, hparam_keys: list[str]) -> Any:
        return self.interval_program().lower(*self.interval_inputs(size, hparam_keys)).compile()

    def interval_program(self) -> Any:
        """`interval`, jitted with its shardings and donations (the program `compile_interval` compiles)."""
        p = self.placement
        return jax.jit(
            self.interval,
            in_shardings=(p.runs, p.runs_second, p.runs, p.replicated, p.replicated, p.replicated, p.runs),
            out_shardings=(p.runs, p.runs_second, p.replicated),
            donate_argnums=(0, 1),
        )

    def interval_inputs(self, size: int, hparam_keys: list[str]) -> tuple:
        """Abstract inputs of `interval_program` for `size` runs (shapes from the traced `start`)."""
        p = self.placement
        _, hp = self.abstract_inputs(size, hparam_keys)
        state, eval_data, history = self.trace_start(size, hparam_keys).out_info
        with_sharding = lambda tree, s: jax.tree_util.tree_map(
            lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), tree
        )
        scalar = jax.ShapeDtypeStruct((), jnp.int32, sharding=p.replicated)
        valid = jax.ShapeDtypeStruct((size,), jnp.bool_, sharding=p.runs)
        return (
            with_sharding(state, p.runs),
            with_sharding(history, p.runs_second),
            hp,
            with_sharding(eval_data, p.replicated),
            scalar,
            scalar,
            valid,
        )

    def eval_data_bytes(self, size: int, hparam_keys: list[str]) -> int:
        """Bytes of the evaluation data: memory every chunk needs whatever its size."""
        _, eval_data, _ = self.trace_start(size, hparam_keys).out_info
        return int(sum(np.prod(x.shape) * np.dtype(x.dtype).itemsize for x in jax.tree_util.tree_leaves(eval_data)))


def first_row(
    interval: Any, placement: Placement, state: TrainState, history: dict, hparams: dict, eval_data: Any, valid: Any
) -> tuple[TrainState, dict[str, jax.Array]]:
    """Row 0 of a fresh chunk's history: the compiled `interval` with zero steps (the state is unchanged)."""
    zero = placement.put(np.int32(0), placement.replicated)
    state, history, _ = interval(state, history, hparams, eval_data, zero, zero, valid)
    return state, history


def key_data(seeds: np.ndarray, impl: str) -> np.ndarray:
    """Raw key data [R, k] of `jax.random.key(seed, impl)` for every seed, computed in one program."""
    seeds = np.asarray(seeds)
    if seeds.size and (seeds.min() < 0 or seeds.max() >= 2**31):
        # beyond int32: the per-seed path handles Python ints of any size
        return np.stack([np.asarray(jax.random.key_data(jax.random.key(int(s), impl=impl))) for s in seeds])
    make = jax.jit(jax.vmap(lambda s: jax.random.key_data(jax.random.key(s, impl=impl))))
    return np.asarray(make(seeds.astype(np.int32)))
