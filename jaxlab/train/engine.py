"""The training engine: `make_train(cfg) -> train(key, hparams) -> (final_state, history)`.

`train` is a pure function of one run (PureJaxRL style): vmap it over seeds and hyperparameters,
jit it once. Inside, each optimizer step draws a fresh batch from `fold_in(data_key, step)`, so a
run's data depend only on its key and the step, never on the chunking or on the other runs.
The data key comes from the run's seed alone (`init`), so the runs of one seed see the same batches
(the data seed of a run is its seed, `jaxlab.config.TaskSection`); with `task.shared_stream` the
sweep's programs draw each step's batch once per data seed (`stream_batch`) and hand it to every
run of that seed (`flat_step(..., batch)`, `jaxlab.train.streams`).

The step loop is split into chunks at the evaluation points (`TrainConfig.eval_steps`): a chunk
is `advance` (a `fori_loop` over its steps) followed by `evaluate` on a fixed evaluation batch.
`train` scans over the chunks; the sweep runner (`jaxlab.train.sweep`) instead calls the jitted
chunk from the host, which is where progress bars, checkpoints and metric transfers happen.

How the step executes (run layout, run block, gradient micro-batch, the attention path and its
padding) is the execution plan `Train.plan` (`jaxlab.train.plan`), decided once from the config
and the target backend and given to the model as data; this module checks no backend.

Parameter layout: with `plan.scan_layers` (and more than one untied block) the state holds the
blocks' parameters stacked, `blocks` with [L, ...] leaves (`Train.stacked`; `jaxlab.models.layer_scan`),
from `init` on: the model's loop reads them as they are, and the raveled parameter vector, its
gradient, the micro-batch sums, the clipping norm and the optimizer state are built from one leaf
per weight, so the step's program does not grow with the depth. Everything outside the compiled
programs sees the per-block layout (`blocks_{i}`): checkpoints, outcomes and `finalize`
(`jaxlab.train.param_layout` converts, exactly).

Divergence isolation: a step is not applied when its loss or its new parameters are not finite, or
when its loss exceeds the divergence threshold

    loss_t > train.diverge_above * max(first_loss, FIRST_LOSS_FLOOR)

where `first_loss` (`TrainState.first_loss`) is the training loss of step 0: the loss of the first
training batch at the initial parameters (the `train_loss` recorded at step 0, up to the order of
micro-batch sums). Learning rates far too large often drive the loss up by tens of orders of
magnitude while it stays finite (1e31 at lr 1000); the factor catches those runs the finiteness
test misses, and a factor relative to the run's own start keeps the rule free of loss units. The
floor (1e-3 nats or squared-error units) keeps a first loss of 0 or nearly 0 from making every
later rise a "divergence". `train.diverge_above = 0` turns the threshold off (non-finite only);
config validation allows 0 or a factor > 1, so step 0 never exceeds its own loss. The loss of step
t is that of the parameters after t steps, so a run that diverges at step t keeps the state after
exactly t steps from then on, and `diverged_at` records t. That is the last state the run reached
with finite parameters, not a good one: when the threshold trips, it is the state whose own loss
failed the check (keeping the state before it would cost a second copy of every run's parameters
and optimizer state). A diverged run's metrics are those of that frozen state; reports leave such
runs out of their aggregates.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct
from jax.flatten_util import ravel_pytree

from jaxlab.config import ExperimentConfig, require_config
from jaxlab.errors import ConfigError
from jaxlab.models import Intervention, Transformer, init_params, scale_weights
from jaxlab.models.attention import query_index
from jaxlab.models.layer_scan import stack_blocks
from jaxlab.rng import in_rng_scope
from jaxlab.tasks import Batch, sample, task_module, task_spec
from jaxlab.train.hparams import TRACED_KEYS, Hparams, default_hparams
from jaxlab.train.losses import batch_loss, masked_mean, per_position_loss
from jaxlab.train.microbatch import accumulate, sequence_bytes
from jaxlab.train.optim import make_optimizer
from jaxlab.train.plan import ExecutionPlan, make_plan

FIRST_LOSS_FLOOR = 1e-3  # the smallest first loss the divergence threshold scales (module docstring)

EvalFn = Callable[["Train", chex.ArrayTree, Any], dict[str, jax.Array]]
EvalDataFn = Callable[["Train"], Any]


def add_finite(total: jax.Array, count: jax.Array, loss: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The running (sum, count) of the finite training losses, with `loss` added where it is finite."""
    finite = jnp.isfinite(loss)
    return total + jnp.where(finite, loss, 0.0), count + finite


def finite_mean(total: jax.Array, count: jax.Array) -> jax.Array:
    """sum / count of `add_finite`'s running totals; NaN where no loss was finite."""
    return jnp.where(count > 0, total / jnp.maximum(count, 1), jnp.nan)


@struct.dataclass
class TrainState:
    """One run's training state (a pytree; with a leading run axis [R] inside a program): step, parameters, optimizer
    state, data key, divergence step and step-0 loss."""

    step: jax.Array  # int32 []
    params: Any
    opt_state: Any
    data_key: jax.Array  # raw key data (`jax.random.key_data`) of the run's data stream
    diverged_at: jax.Array  # int32 [], -1 while no step so far diverged (see the module docstring)
    first_loss: jax.Array  # float32 [], the training loss of step 0 (NaN before step 0 ran)


def seed_keys(seeds: Sequence[int], impl: str = "threefry2x32") -> jax.Array:
    """Typed PRNG keys [R] for the given seeds."""
    return jnp.stack([jax.random.key(int(s), impl=impl) for s in seeds])


def tree_all_finite(tree: chex.ArrayTree) -> jax.Array:
    """A boolean []: every element of every leaf of `tree` is finite (True for an empty tree)."""
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.bool_(True)


class Train:
    """The pure training functions of one experiment config (see the module docstring)."""

    def __init__(
        self,
        cfg: ExperimentConfig,
        evaluate: EvalFn | None = None,
        eval_data: EvalDataFn | None = None,
        plan: ExecutionPlan | None = None,
    ):
        require_config(cfg, "make_train(cfg)")
        for name, fn in (("evaluate", evaluate), ("eval_data", eval_data)):
            if fn is not None and not callable(fn):
                raise TypeError(f"make_train({name}=...): expected a function or None, got {type(fn).__name__}")
        if plan is not None and not isinstance(plan, ExecutionPlan):
            raise TypeError(f"make_train(plan=...): expected an ExecutionPlan or None, got {type(plan).__name__}")
        self.cfg = cfg.resolve()
        self.plan: ExecutionPlan = make_plan(self.cfg) if plan is None else plan
        if self.plan.batch_size != self.cfg.train.batch_size:
            raise ConfigError(
                "plan.batch_size",
                f"the plan was made for batch_size {self.plan.batch_size}, the config has "
                f"{self.cfg.train.batch_size} (make the plan from this config: make_plan(cfg))",
            )
        self.model = Transformer(self.cfg.model, self.plan.attention(), scan_layers=self.plan.scan_layers)
        m = self.cfg.model
        # The training state's parameter layout (module docstring): the blocks stacked [L, ...] when they
        # run as one loop (a tied model's one shared block, or a single block, has nothing to stack).
        self.stacked: bool = self.plan.scan_layers and not m.tie_layers and m.n_layers > 1
        self.spec = task_spec(self.cfg.task)
        self.eval_steps: tuple[int, ...] = self.cfg.train.eval_steps()
        self._extra_eval = evaluate
        self._eval_data = eval_data
        positions = getattr(task_module(self.cfg.task), "loss_positions", None)
        self.loss_positions: tuple[int, ...] | None = None if positions is None else positions(self.cfg.task)

    def run_block(self) -> int:
        """Runs vmapped together per step of the `scan` run layout (`plan.run_block`)."""
        return self.plan.run_block

    def micro_batch(self) -> int:
        """Sequences per gradient micro-batch (`plan.micro_batch`; `jaxlab.train.microbatch`)."""
        return self.plan.micro_batch

    def sequence_bytes(self) -> int:
        """Forward activations of one training sequence (`jaxlab.train.microbatch.sequence_bytes`)."""
        m = self.cfg.model
        return sequence_bytes(self.spec.seq_len, int(m.d_model), m.d_mlp, m.n_heads, m.n_layers)

    # -- model ---------------------------------------------------------------------------------
    def apply(self, params: chex.ArrayTree, inputs: jax.Array, interventions: Sequence[Intervention] = ()) -> jax.Array:
        """The model's outputs for `inputs` under `params`, with `interventions` applied at their hooks."""
        return self.model.apply({"params": params}, inputs, tuple(interventions))

    def loss(self, params: chex.ArrayTree, batch: Batch) -> jax.Array:
        """The task's loss (`spec.loss`) of the model's outputs on `batch`, over its loss mask."""
        return batch_loss(self.spec.loss, self.apply(params, batch.inputs), batch)

    def train_loss(self, params: chex.ArrayTree, batch: Batch) -> jax.Array:
        """`loss` on a batch sampled from the config's own task (`train_batch`).

        When the task declares the only positions its loss mask can cover (`loss_positions(cfg)`,
        e.g. the query token of the paired regression layout), the model computes its outputs
        there only (`Transformer(..., outputs_at=...)`), which gives the same loss. Batches from
        anywhere else (evaluation sets, other task configs) go through `loss`.
        """
        if self.loss_positions is None:
            return self.loss(params, batch)
        pos = self.loss_positions
        outputs = self.model.apply({"params": params}, batch.inputs, (), pos)
        index = query_index(pos, batch.seq_len)
        return masked_mean(per_position_loss(self.spec.loss, outputs, batch.targets[:, index]), self.train_mask(batch))

    def train_mask(self, batch: Batch) -> jax.Array:
        """The loss mask `train_loss` averages over ([B, P] at the loss positions, else [B, T])."""
        if self.loss_positions is None:
            return batch.loss_mask
        return batch.loss_mask[:, query_index(self.loss_positions, batch.seq_len)]

    @in_rng_scope
    def sample(self, key: jax.Array, batch_size: int, task: Any = None) -> Batch:
        """`batch_size` sequences from the config's task (or `task`), drawn with `key` (one draw per run for rbg
        keys)."""
        task = self.cfg.task if task is None else task
        return self._per_run(lambda k: sample(k, task, batch_size))(key)

    def _per_run(self, draw: Callable[..., Any]) -> Callable[..., Any]:
        """`draw` as is for threefry keys; for `rbg` / `unsafe_rbg` keys, a loop over vmapped runs.

        XLA's RngBitGenerator, which draws the bits of rbg keys, has a batching rule that reads
        the first key of the batch only (jax 0.10): under the sweep's vmap every run would draw its
        numbers from run 0's key, so a run's data would depend on the other runs of its program.
        `sequential_vmap` keeps one draw per run and key instead.
        """
        if self.cfg.train.prng_impl == "threefry2x32":
            return draw
        return jax.custom_batching.sequential_vmap(draw)

    def optimizer(self, hparams: Hparams) -> optax.GradientTransformation:
        """The configured optax chain, applied to the parameters raveled into one vector.

        `optax.flatten`: its state (TrainState.opt_state) is the chain's state on that vector;
        the step applies the chain to the vector directly (`_optimizer`).
        """
        return optax.flatten(self._optimizer(hparams))

    def _optimizer(self, hparams: Hparams) -> optax.GradientTransformation:
        return make_optimizer(self.cfg.optim, self.cfg.train.steps, hparams)

    def _key(self, data: jax.Array) -> jax.Array:
        return jax.random.wrap_key_data(data, impl=self.cfg.train.prng_impl)

    # -- one run -------------------------------------------------------------------------------
    def full_hparams(self, hparams: Mapping[str, Any] | None) -> Hparams:
        """`hparams` with every traced key (`jaxlab.train.hparams.TRACED_KEYS`): the config's value where one
        is missing (None: all of them); a key that is not traced (a typo, or a setting that changes the
        program) is refused, naming the allowed keys."""
        if hparams is None:
            return default_hparams(self.cfg)
        if not isinstance(hparams, Mapping):
            raise TypeError(f"hparams: expected a dict of {', '.join(TRACED_KEYS)}, got {type(hparams).__name__}")
        unknown = sorted(str(k) for k in hparams if k not in TRACED_KEYS)
        if unknown:
            raise ConfigError(
                "hparams",
                f"unknown key {', '.join(map(repr, unknown))}: only these may differ between the runs of one "
                "program (any other setting: a config of its own)",
                TRACED_KEYS,
            )
        return {**default_hparams(self.cfg), **hparams}

    def check_key(self, key: Any) -> None:
        """Refuse anything but a typed PRNG key of the config's `train.prng_impl` (a run's `key`)."""
        impl = self.cfg.train.prng_impl
        make = f"jax.random.key(seed, impl={impl!r}), or seed_keys(seeds, impl={impl!r}) under vmap"
        if not (isinstance(key, jax.Array) and jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key)):
            got = getattr(key, "dtype", type(key).__name__)
            raise TypeError(f"key: expected a typed PRNG key ({make}), got {got}")
        if str(jax.random.key_impl(key)) != impl:
            raise TypeError(
                f"key: a {jax.random.key_impl(key)} key, but train.prng_impl is {impl!r}: make it with {make}"
            )

    @in_rng_scope
    def init(self, key: jax.Array, hparams: Hparams | None = None) -> TrainState:
        """A run's initial state from `key` (a typed key of `train.prng_impl`): parameters (weights scaled by
        `model.init_scale` of `hparams`; missing keys take the config's values), optimizer state, and the
        key of its data stream."""
        self.check_key(key)
        hparams = self.full_hparams(hparams)
        k_init, k_data = jax.random.split(key)
        example = self.sample(k_data, 1).inputs
        params = self._per_run(lambda k, x: init_params(self.model, k, x))(k_init, example)
        params = scale_weights(params, hparams["model.init_scale"])
        if self.stacked:
            params = stack_blocks(params)
        return TrainState(
            step=jnp.int32(0),
            params=params,
            opt_state=self.optimizer(hparams).init(params),
            data_key=jax.random.key_data(k_data),
            diverged_at=jnp.int32(-1),
            first_loss=jnp.float32(jnp.nan),
        )

    @in_rng_scope
    def train_batch(self, state: TrainState) -> Batch:
        """The training batch of `state`'s step: drawn from the run's data key folded with the step."""
        return self.stream_batch(state.data_key, state.step)

    @in_rng_scope
    def stream_batch(self, data_key: jax.Array, step: jax.Array | int) -> Batch:
        """The training batch of step `step` of the data stream with raw key data `data_key`:
        `sample(fold_in(data_key, step), train.batch_size)`, a function of the two alone (the stream
        of a data seed, `TaskSection`; `jaxlab.train.streams` draws it once for the runs that share it)."""
        chex.assert_shape(data_key, (None,))
        return self.sample(jax.random.fold_in(self._key(data_key), step), self.cfg.train.batch_size)

    def step(self, state: TrainState, hparams: Hparams) -> tuple[TrainState, jax.Array]:
        """One optimizer step on a fresh batch; returns the new state and the batch loss."""
        hparams = self.full_hparams(hparams)
        flat, unravel = ravel_pytree(state.params)
        new, loss = self.flat_step(state.replace(params=flat), hparams, unravel)
        return new.replace(params=unravel(new.params)), loss

    def flat_step(
        self,
        state: TrainState,
        hparams: Hparams,
        unravel: Callable[[jax.Array], Any],
        batch: Batch | None = None,
    ) -> tuple[TrainState, jax.Array]:
        """`step` on a state whose `params` is the raveled parameter vector; `batch`: the step's
        training batch when it was drawn elsewhere (it must be `train_batch(state)`: a shared
        stream's batch, `jaxlab.train.streams`), else drawn here.

        The optimizer update, the divergence check and the keep-or-revert selection then run
        on one vector: a handful of kernels instead of a handful per parameter array, which is
        most of a small model's compile time and per-step overhead.
        """
        batch = self.train_batch(state) if batch is None else batch
        loss, grads = accumulate(
            lambda flat, b: self.train_loss(unravel(flat), b),
            state.params,
            batch,
            self.train_mask(batch),
            self.plan.micro_batch,
        )
        updates, opt_state = self._optimizer(hparams).update(grads, state.opt_state, state.params)
        params = state.params + updates
        first_loss = jnp.where(state.step == 0, loss.astype(jnp.float32), state.first_loss)
        healthy = (
            (state.diverged_at < 0)
            & jnp.isfinite(loss)
            & jnp.all(jnp.isfinite(params))
            & self.below_threshold(loss, first_loss)
        )
        keep = lambda new, old: jnp.where(healthy, new, old)
        newly_diverged = (state.diverged_at < 0) & ~healthy
        new_state = TrainState(
            step=state.step + 1,
            params=keep(params, state.params),
            opt_state=jax.tree_util.tree_map(keep, opt_state, state.opt_state),
            data_key=state.data_key,
            diverged_at=jnp.where(newly_diverged, state.step, state.diverged_at),
            first_loss=first_loss,
        )
        return new_state, loss

    def below_threshold(self, loss: jax.Array, first_loss: jax.Array) -> jax.Array:
        """`loss <= train.diverge_above * max(first_loss, FIRST_LOSS_FLOOR)` (True when the factor is 0).

        A NaN `first_loss` (step 0 itself was not finite) leaves the verdict to the finiteness test.
        """
        factor = self.cfg.train.diverge_above
        if not factor:
            return jnp.bool_(True)
        reference = jnp.maximum(jnp.nan_to_num(first_loss, nan=jnp.inf), FIRST_LOSS_FLOOR)
        factor = jnp.float32(min(factor, float(jnp.finfo(jnp.float32).max)))  # larger: never trips
        return loss.astype(jnp.float32) <= factor * reference

    def advance(self, state: TrainState, hparams: Hparams, n_steps: jax.Array | int) -> tuple[TrainState, jax.Array]:
        """`n_steps` optimizer steps; returns the state and the mean finite training loss over them."""
        hparams = self.full_hparams(hparams)
        flat, unravel = ravel_pytree(state.params)

        def body(_, carry):
            st, total, count = carry
            st, loss = self.flat_step(st, hparams, unravel)
            return st, *add_finite(total, count, loss)

        init = (state.replace(params=flat), jnp.float32(0.0), jnp.int32(0))
        state, total, count = jax.lax.fori_loop(0, n_steps, body, init)
        return state.replace(params=unravel(state.params)), finite_mean(total, count)

    def eval_key(self) -> jax.Array:
        """The key of the fixed evaluation data: `train.eval_seed` with `train.prng_impl`."""
        return jax.random.key(self.cfg.train.eval_seed, impl=self.cfg.train.prng_impl)

    def make_eval_batch(self) -> Any:
        """The fixed evaluation data, the same for every run (key `train.eval_seed`).

        By default a `Batch` of `train.eval_batch_size` task samples; an experiment may supply its
        own (any pytree, e.g. {"seen": Batch, "unseen": Batch}) through `eval_data`.
        """
        if self._eval_data is not None:
            return self._eval_data(self)
        return self.sample(self.eval_key(), self.cfg.train.eval_batch_size)

    def evaluate(self, params: chex.ArrayTree, eval_batch: Any) -> dict[str, jax.Array]:
        """`eval_loss` on the evaluation batch (when it is a `Batch`) plus the experiment's metrics."""
        metrics = {"eval_loss": self.loss(params, eval_batch)} if isinstance(eval_batch, Batch) else {}
        if self._extra_eval is not None:
            metrics.update(self._extra_eval(self, params, eval_batch))
        return metrics

    def initial_metrics(self, state: TrainState, eval_batch: Batch) -> dict[str, jax.Array]:
        """Metrics at step 0; `train_loss` is the loss of the first training batch."""
        return {
            **self.evaluate(state.params, eval_batch),
            "train_loss": self.train_loss(state.params, self.train_batch(state)),
        }

    def chunk(
        self, state: TrainState, hparams: Hparams, eval_batch: Batch, n_steps: jax.Array | int
    ) -> tuple[TrainState, dict[str, jax.Array]]:
        """Advance `n_steps`, then evaluate: the unit of work between two host visits."""
        state, train_loss = self.advance(state, hparams, n_steps)
        return state, {**self.evaluate(state.params, eval_batch), "train_loss": train_loss}

    def __call__(self, key: jax.Array, hparams: Hparams | None = None) -> tuple[TrainState, dict[str, jax.Array]]:
        """Train one run from `key` (a typed key of `train.prng_impl`); `hparams`: the traced hyperparameters
        (`full_hparams`: missing ones take the config's values); history[name] has one entry per step of
        `eval_steps`."""
        hparams = self.full_hparams(hparams)
        state = self.init(key, hparams)
        eval_batch = self.make_eval_batch()
        first = self.initial_metrics(state, eval_batch)
        gaps = jnp.asarray(np.diff(self.eval_steps), jnp.int32)
        state, rest = jax.lax.scan(lambda st, n: self.chunk(st, hparams, eval_batch, n), state, gaps)
        history = {k: jnp.concatenate([first[k][None], rest[k]]) for k in first}
        history["step"] = jnp.asarray(self.eval_steps, jnp.int32)
        return state, history


def make_train(
    cfg: ExperimentConfig,
    evaluate: EvalFn | None = None,
    eval_data: EvalDataFn | None = None,
    plan: ExecutionPlan | None = None,
) -> Train:
    """`train = make_train(cfg)`; `train(key, hparams) -> (final_state, history)` for one run.

    `evaluate(train, params, eval_batch) -> {metric: scalar}` adds experiment metrics to the
    evaluations; `eval_data(train) -> pytree` replaces the default evaluation batch. `plan`: how
    the programs execute (`jaxlab.train.plan`; default `make_plan(cfg)`, for this process's
    backend), kept as `train.plan`. Typical use,
    S seeds x H learning rates as one program:

        train = make_train(cfg)
        keys = seed_keys(range(S))                                  # [S]
        hp = {k: jnp.full((S, H), v) for k, v in default_hparams(cfg).items()}
        hp["optim.lr"] = jnp.broadcast_to(jnp.array(lrs), (S, H))
        run = jax.jit(jax.vmap(jax.vmap(train, in_axes=(None, 0)), in_axes=(0, 0)))
        states, history = run(keys, hp)                             # history[...]: [S, H, n_evals]
    """
    return Train(cfg, evaluate, eval_data, plan)


def stack_runs(tree: chex.ArrayTree, n: int) -> chex.ArrayTree:
    """Every leaf of `tree` repeated along a new leading run axis of length n."""
    return jax.tree_util.tree_map(lambda x: jnp.broadcast_to(x, (n, *jnp.shape(x))), tree)


def host(tree: Mapping[str, jax.Array]) -> dict[str, np.ndarray]:
    """The arrays of `tree` fetched to the host as NumPy arrays (one `device_get`)."""
    return {k: np.asarray(v) for k, v in jax.device_get(dict(tree)).items()}
