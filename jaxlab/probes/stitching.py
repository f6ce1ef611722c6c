"""Model stitching: how well model A's residual stream at a hook can stand in for model B's.

For frozen models A and B with the same block layout and a hook h of the residual stream
(`blocks.{i}.hook_resid_pre | hook_resid_mid | hook_resid_post`), the stitched model runs A up to
h, maps A's stream a [B, T, d_A] through an affine layer a W + b (W [d_A, d_B]) and runs B from h
on (the stream at h is replaced at every position, via `jaxlab.models.replace_at`). Only W and b
are trained, on B's task loss, with fresh task batches (Lenc & Vedaldi 2015; Bansal, Nakkiran &
Barak 2021). The stitching penalty is

  penalty(A -> B, h) = L(stitched) - L(B)      (B's task loss, both on the same evaluation batch)

in the task's loss units (nats for xent, 0.5 * squared error for mse); ~0 when B's computation
can use A's representation at h as well as its own, and 0 can always be reached when A = B
(W = I). It can be negative when A's representation is better than B's own (Bansal et al.'s
"more is better"), and the trained layer can exploit directions B never uses ("task loss
matching" can leave the distribution of B's stream; Csiszárik et al. 2021, Hernandez et al. 2024).

Recipe (Csiszárik, Kőrösi-Szabó, Matszangosz, Papp & Varga 2021, "Similarity and Matching of
Neural Network Representations", NeurIPS: task-loss matching initialized from the least-squares
"direct matching" solution): W, b start at the ridge least-squares map from A's to B's stream on
`fit_batch_size` task sequences (all positions pooled; ridge lam = `ridge` * mean eigenvalue of
A's centered covariance, via `jaxlab.probes.linear_probe.ridge_fit`), then `steps` Adam steps
(optax.adam, `lr`) on B's loss over batches of `batch_size`. Both penalties are reported: after
the least-squares init (`init_penalty`) and after training (`penalty`).

Stopping rule (`tol` > 0): training runs in windows of `window` steps and stops after window k >= 2
once the mean training loss of window k improves on window k - 1's by less than a fraction `tol`,

  stop when  m_{k-1} - m_k < tol * m_{k-1}        (m_k: mean stitched training loss of window k)

or after ceil(steps / window) windows (the maximum budget); `steps_used` is the budget each pair
and hook used. A fixed budget (`tol` = 0) trains exactly `steps` steps. Budget check (`double`):
every stitch then trains as many steps again (Adam state kept, fresh batches), and
`penalty_double` is the penalty at twice the budget it used: penalty_double - penalty says how
much the budget still moves the penalty (NaN without the check). Pairs and hooks that stop early
keep their values while the others train (a vmapped while loop).

Everything is vmapped: over model pairs (params with a leading pair axis) and over hooks (a traced
hook index gates one `replace_at` per hook, so all hooks share one compiled program). Every pair
and hook sees the same training batches. `stitch_runs` builds "every run of group A into every
run of group B at every residual hook" from two `Train`s in one call. The program is one jitted
function whose models, hooks, loss, sampler and settings are static arguments: stitching the same
pair of model shapes again reuses its executable (JAX's jit cache, keyed by those arguments); no
array is kept between calls.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import struct

from jaxlab.errors import ConfigError
from jaxlab.models import Transformer, hook_names, replace_at, residual_hooks, run_with_cache
from jaxlab.probes.linear_probe import ridge_fit
from jaxlab.rng import rng_scope
from jaxlab.tasks import Batch
from jaxlab.train.losses import batch_loss

STREAM_HOOKS = ("hook_resid_pre", "hook_resid_mid", "hook_resid_post")
INITS = ("lstsq", "identity")


@dataclass(frozen=True)
class StitchConfig:
    """Training of the stitching layer (see the module docstring)."""

    steps: int = 200
    lr: float = 3e-3
    batch_size: int = 128
    fit_batch_size: int = 512
    ridge: float = 1e-6
    init: str = "lstsq"
    tol: float = 0.0
    window: int = 50
    double: bool = False

    @property
    def n_windows(self) -> int:
        """The most windows the stopping rule trains: ceil(steps / window)."""
        return -(-self.steps // self.window)

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "fit_batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < (0 if name == "steps" else 1):
                raise ConfigError(
                    f"stitch.{name}", f"must be an integer >= {0 if name == 'steps' else 1}, got {value!r}"
                )
        if not self.lr > 0:
            raise ConfigError("stitch.lr", f"must be > 0, got {self.lr!r}")
        if not self.ridge >= 0:
            raise ConfigError("stitch.ridge", f"must be >= 0, got {self.ridge!r}")
        if self.init not in INITS:
            raise ConfigError("stitch.init", f"unknown value {self.init!r}", INITS)
        if not 0.0 <= self.tol < 1.0:
            raise ConfigError("stitch.tol", f"is a fraction, must be in [0, 1), got {self.tol!r}")
        if not isinstance(self.window, int) or isinstance(self.window, bool) or self.window < 1:
            raise ConfigError("stitch.window", f"must be an integer >= 1, got {self.window!r}")
        if not isinstance(self.double, bool):
            raise ConfigError("stitch.double", f"must be true or false, got {self.double!r}")


@struct.dataclass
class StitchResult:
    """Per pair P and hook H (leading axes as given; `stitch_runs` with pairs="all" gives [Ra, Rb, H])."""

    penalty: jax.Array  # [..., H] stitched loss - B's loss after training
    init_penalty: jax.Array  # [..., H] the same right after the least-squares (or identity) init
    stitched_loss: jax.Array  # [..., H]
    base_loss: jax.Array  # [...] B's own loss on the evaluation batch
    train_loss: jax.Array  # [..., H, steps] stitched training loss at every step (tol > 0: n_windows * window
    # steps, NaN after the stop)
    weight: jax.Array  # [..., H, d_A, d_B]
    bias: jax.Array  # [..., H, d_B]
    steps_used: jax.Array  # [..., H] the training steps before the stop (tol = 0: steps)
    penalty_double: jax.Array  # [..., H] the penalty after 2 * steps_used steps (NaN unless cfg.double)
    hooks: tuple[str, ...] = struct.field(pytree_node=False, default=())


def check_hooks(model_a: Transformer, model_b: Transformer, hooks: Sequence[str]) -> None:
    """ConfigError unless `hooks` is non-empty and each is a residual-stream hook (`STREAM_HOOKS`) of both models."""
    allowed = [h for h in hook_names(model_b.cfg) if h.rsplit(".", 1)[-1] in STREAM_HOOKS]
    in_a = set(hook_names(model_a.cfg))
    if not hooks:
        raise ConfigError("stitch.hooks", "needs at least one hook", allowed)
    for h in hooks:
        if h not in allowed or h not in in_a:
            raise ConfigError("stitch.hooks", f"{h!r} is not a residual-stream hook of both models", allowed)


def _streams(model: Transformer, params: Any, inputs: jax.Array, hooks: Sequence[str]) -> jax.Array:
    """[H, B, T, D]: the residual stream at every hook."""
    _, cache = run_with_cache(model, params, inputs, names=list(hooks))
    return jnp.stack([cache[h] for h in hooks])


def _stitched_apply(model_b, params_b, inputs, hooks, h_index, value_BTD):
    """B's outputs with its stream at hooks[h_index] replaced by `value` (h_index may be traced)."""
    shape = inputs.shape[:2]
    ivs = tuple(replace_at(hook, value_BTD, jnp.broadcast_to(h_index == k, shape)) for k, hook in enumerate(hooks))
    return model_b.apply({"params": params_b}, inputs, ivs)


def _init_map(a_NA: jax.Array, b_NB: jax.Array, cfg: StitchConfig) -> tuple[jax.Array, jax.Array]:
    d_a, d_b = a_NA.shape[1], b_NB.shape[1]
    if cfg.init == "identity":
        return jnp.eye(d_a, d_b), jnp.zeros(d_b)
    ac = a_NA - a_NA.mean(0)
    lam = cfg.ridge * jnp.sum(ac * ac) / d_a + 1e-12
    return ridge_fit(a_NA, b_NB, lam)


def stitch(
    model_a: Transformer,
    params_a: Any,
    model_b: Transformer,
    params_b: Any,
    hooks: Sequence[str],
    *,
    loss: str,
    sample: Callable[[jax.Array, int], Batch],
    eval_batch: Batch,
    key: jax.Array,
    cfg: StitchConfig = StitchConfig(),
) -> StitchResult:
    """Stitch A into B at every hook, for every pair: params_a, params_b have a leading pair axis [P].

    loss: B's task loss kind ("mse" | "xent", `TaskSpec.loss`); sample(key, batch_size) -> Batch:
    a pure sampler of B's task (used for the least-squares fit and every training step); eval_batch:
    the fixed batch the penalties are measured on; key: the data key (shared by all pairs and hooks).
    Returns a `StitchResult` with leading axes [P, H].
    """
    hooks = tuple(hooks)
    check_hooks(model_a, model_b, hooks)
    n_pairs = {x.shape[0] for x in jax.tree_util.tree_leaves((params_a, params_b))}
    if len(n_pairs) != 1:
        raise ConfigError("stitch: params_a, params_b", f"need the same leading pair axis, got sizes {sorted(n_pairs)}")
    static = dict(model_a=model_a, model_b=model_b, hooks=hooks, loss_kind=loss, sample=sample, cfg=cfg)
    return _stitch_program(params_a, params_b, eval_batch, key, **static)


@functools.partial(jax.jit, static_argnames=("model_a", "model_b", "hooks", "loss_kind", "sample", "cfg"))
def _stitch_program(params_a, params_b, eval_batch, key, *, model_a, model_b, hooks, loss_kind, sample, cfg):
    """`stitch` as one compiled program (the static arguments choose it)."""
    with rng_scope():  # the sampler's draws are traced here
        return _make(model_a, model_b, hooks, loss_kind, sample, cfg)(params_a, params_b, eval_batch, key)


def _make(model_a, model_b, hooks, loss_kind, sample, cfg):
    n_hooks = len(hooks)

    def one_hook(pa, pb, h, fit_a, fit_b, eval_batch, eval_a, base, key):
        a_fit = fit_a[h].reshape(-1, fit_a.shape[-1])
        b_fit = fit_b[h].reshape(-1, fit_b.shape[-1])
        w, b = _init_map(a_fit, b_fit, cfg)

        def stitched_loss(wb, batch, a_stream):
            value = a_stream @ wb[0] + wb[1]
            return batch_loss(loss_kind, _stitched_apply(model_b, pb, batch.inputs, hooks, h, value), batch)

        init_loss = stitched_loss((w, b), eval_batch, eval_a[h])
        opt = optax.adam(cfg.lr)

        def step(carry, i):
            wb, state = carry
            batch = sample(jax.random.fold_in(key, i), cfg.batch_size)
            a_stream = jax.lax.stop_gradient(_streams(model_a, pa, batch.inputs, hooks)[h])
            value, grads = jax.value_and_grad(stitched_loss)(wb, batch, a_stream)
            updates, state = opt.update(grads, state, wb)
            return (optax.apply_updates(wb, updates), state), value

        def train_steps(carry, start, n):
            """n steps from step index `start` (traced): the batches are fold_in(key, step)."""
            return jax.lax.scan(step, carry, start + jnp.arange(n))

        carry0 = ((w, b), opt.init((w, b)))
        if cfg.tol > 0 and cfg.steps > 0:
            wb, wb_double, history, used = _train_until_stopped(train_steps, carry0, cfg)
        else:
            wb, wb_double, history = _train_fixed(step, carry0, cfg)
            used = jnp.asarray(cfg.steps, jnp.int32)
        final = stitched_loss(wb, eval_batch, eval_a[h])
        double = jnp.asarray(jnp.nan, final.dtype)
        if cfg.double:
            double = stitched_loss(wb_double, eval_batch, eval_a[h]) - base
        return final - base, init_loss - base, final, history, wb[0], wb[1], used, double

    def one_pair(pa, pb, eval_batch, key):
        k_fit, k_train = jax.random.split(key)
        fit = sample(k_fit, cfg.fit_batch_size)
        fit_a = _streams(model_a, pa, fit.inputs, hooks)
        fit_b = _streams(model_b, pb, fit.inputs, hooks)
        eval_a = _streams(model_a, pa, eval_batch.inputs, hooks)
        base = batch_loss(loss_kind, model_b.apply({"params": pb}, eval_batch.inputs), eval_batch)
        per_hook = jax.vmap(one_hook, in_axes=(None, None, 0, None, None, None, None, None, None))
        out = per_hook(pa, pb, jnp.arange(n_hooks), fit_a, fit_b, eval_batch, eval_a, base, k_train)
        return (*out, base)

    def run(params_a, params_b, eval_batch, key):
        pen, init_pen, final, history, w, b, used, double, base = jax.vmap(one_pair, in_axes=(0, 0, None, None))(
            params_a, params_b, eval_batch, key
        )
        return StitchResult(
            penalty=pen,
            init_penalty=init_pen,
            stitched_loss=final,
            base_loss=base,
            train_loss=history,
            weight=w,
            bias=b,
            steps_used=used,
            penalty_double=double,
            hooks=hooks,
        )

    return run


def _train_fixed(step, carry0, cfg: StitchConfig):
    """`cfg.steps` steps (and as many again with `cfg.double`, in the same scan): (the map after `steps`, the map
    after twice that (the same map without the check), the training losses of the first `steps`)."""
    n = cfg.steps * (2 if cfg.double else 1)

    def body(state, i):
        carry, snap = state
        carry, loss = step(carry, i)
        snap = jax.tree_util.tree_map(lambda new, old: jnp.where(i == cfg.steps - 1, new, old), carry[0], snap)
        return (carry, snap), loss

    (carry, snap), losses = jax.lax.scan(body, (carry0, carry0[0]), jnp.arange(n))
    return snap, carry[0], losses[: cfg.steps]


def _train_until_stopped(train_steps, carry0, cfg: StitchConfig):
    """Windows of `cfg.window` steps until the stopping rule (module docstring) or `cfg.n_windows`, then, with
    `cfg.double`, as many windows again (one loop, so its body compiles once): (the map at the stop, the map
    after twice its steps, history [n_windows * window] NaN after the stop, steps used)."""
    n_win, width = cfg.n_windows, cfg.window

    def cond(state):
        k, stop = state[1], state[4]
        return (stop < 0) | (cfg.double & (k < 2 * stop))

    def body(state):
        carry, k, prev, history, stop, snap = state
        carry, losses = train_steps(carry, k * width, width)
        running = stop < 0
        written = jax.lax.dynamic_update_slice(
            history, losses.astype(history.dtype), (jnp.minimum(k, n_win - 1) * width,)
        )
        history = jnp.where(running, written, history)
        mean = jnp.mean(losses)
        ends = running & (((k >= 1) & (prev - mean < cfg.tol * prev)) | (k + 1 >= n_win))
        snap = jax.tree_util.tree_map(lambda new, old: jnp.where(ends, new, old), carry[0], snap)
        stop = jnp.where(ends, k + 1, stop)
        return carry, k + 1, jnp.where(running, mean, prev), history, stop, snap

    history0 = jnp.full((n_win * width,), jnp.nan, jnp.float32)
    k0, inf = jnp.asarray(0, jnp.int32), jnp.asarray(jnp.inf, jnp.float32)
    state0 = (carry0, k0, inf, history0, jnp.asarray(-1, jnp.int32), carry0[0])
    carry, _, _, history, stop, snap = jax.lax.while_loop(cond, body, state0)
    return snap, carry[0], history, stop * width


def stitch_runs(
    train_a: Any,
    params_a: Any,
    train_b: Any,
    params_b: Any,
    hooks: Sequence[str] | None = None,
    *,
    key: jax.Array | None = None,
    cfg: StitchConfig = StitchConfig(),
    pairs: str = "all",
) -> StitchResult:
    """Stitch runs of `train_a` (params [Ra]) into runs of `train_b` (params [Rb]) on B's task.

    pairs="all": every (a, b) pair, result axes [Ra, Rb, H]; pairs="zip": a_i into b_i, [R, H].
    hooks default to every residual hook: before each block and after the last
    (`jaxlab.models.residual_hooks(L, embeddings=True, name="pre")`). The penalties are measured on B's
    evaluation batch (`train_b.make_eval_batch()`); training batches come from B's task sampler.
    Typical use (GeLU group into SoLU group): `stitch_runs(train_gelu, states_gelu.params,
    train_solu, states_solu.params)`.
    """
    if pairs not in ("all", "zip"):
        raise ConfigError("stitch.pairs", f"unknown value {pairs!r}", ["all", "zip"])
    hooks = residual_hooks(train_b.cfg.model.n_layers, embeddings=True, name="pre") if hooks is None else list(hooks)
    ra = jax.tree_util.tree_leaves(params_a)[0].shape[0]
    rb = jax.tree_util.tree_leaves(params_b)[0].shape[0]
    if pairs == "all":
        ia, ib = (g.ravel() for g in np.meshgrid(np.arange(ra), np.arange(rb), indexing="ij"))
        params_a = jax.tree_util.tree_map(lambda x: x[ia], params_a)
        params_b = jax.tree_util.tree_map(lambda x: x[ib], params_b)
    elif ra != rb:
        raise ConfigError("stitch.pairs", f"'zip' needs as many runs in A as in B, got {ra} and {rb}", ["all"])
    eval_batch = train_b.make_eval_batch()
    if not isinstance(eval_batch, Batch):
        eval_batch = train_b.sample(train_b.eval_key(), train_b.cfg.train.eval_batch_size)
    key = jax.random.key(train_b.cfg.train.eval_seed + 1) if key is None else key
    result = stitch(
        train_a.model,
        params_a,
        train_b.model,
        params_b,
        hooks,
        loss=train_b.spec.loss,
        sample=_Sampler(train_b),
        eval_batch=eval_batch,
        key=key,
        cfg=cfg,
    )
    if pairs == "all":
        result = jax.tree_util.tree_map(lambda x: x.reshape(ra, rb, *x.shape[1:]), result)
    return result


@dataclass(frozen=True, eq=False)
class _Sampler:
    """B's task sampler as a static argument of the stitching program, equal for equal draws: a
    `Train`'s samples depend only on its task config and key implementation."""

    train: Any

    def __call__(self, key: jax.Array, batch_size: int) -> Batch:
        return self.train.sample(key, batch_size)

    def _draws(self) -> tuple[Any, str]:
        return self.train.cfg.task, self.train.cfg.train.prng_impl

    def __hash__(self) -> int:
        return hash(self._draws())

    def __eq__(self, other: object) -> bool:
        return isinstance(other, _Sampler) and self._draws() == other._draws()
