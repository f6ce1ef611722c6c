"""Baseline (a) of `jaxlab bench train`: the published codes' style, one run at a time.

von Oswald et al.'s code (google-research/self-organising-systems, transformers_learn_icl) trains
one model per seed in a Python loop; every step, in Python, it splits the run's key, draws the
step's tasks with a jitted sampler vmapped over one key per sequence (`jax.random`, JAX's default
settings), and calls a jitted train step whose model computes every position with explicit
T x T attention. Garg et al. train one PyTorch model per run the same way. This module does that
with jaxlab's model (the same parameters and function: `Transformer` with its explicit-attention
path, outputs at every position, masked loss), jaxlab's optimizer, and the task's own
distribution and token layout (`regression.assemble`), so the baseline differs from the sweep only
in how the work is organised and computed. Tasks other than regression (the clustering workload's
instructions) are drawn by jaxlab's own sampler for the step's key, jitted; the loops, the
explicit attention and the per-step calls are the same.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import optax

from jaxlab.tasks import Batch, regression, sample
from jaxlab.train.engine import Train
from jaxlab.train.losses import batch_loss


def sample_one(key: jax.Array, cfg: regression.Config) -> Batch:
    """One regression task from `jax.random` (per-sequence keys, as in the reference code)."""
    k_w, k_x, k_eps = jax.random.split(key, 3)
    n_points = cfg.n_context + 1 if cfg.layout == "paired" else cfg.n_context
    w = cfg.weight_scale * jax.random.normal(k_w, (1, cfg.d_out, cfg.n_dims))
    if cfg.input_dist == "uniform":
        x = jax.random.uniform(k_x, (1, n_points, cfg.n_dims), minval=-0.5, maxval=0.5) * cfg.input_scale
    else:
        x = cfg.input_scale * jax.random.normal(k_x, (1, n_points, cfg.n_dims))
    y = jnp.einsum("bod,bnd->bno", w, x)
    if cfg.noise_std > 0:
        y = y + cfg.noise_std * jax.random.normal(k_eps, y.shape)
    return jax.tree_util.tree_map(lambda a: a[0], regression.assemble(cfg, w, x, y))


class ReferenceLoop:
    """Python loops over seeds and steps; one jitted sampler call and one jitted step per step."""

    def __init__(self, train: Train):
        self.train = train
        task, batch_size = train.cfg.task, train.cfg.train.batch_size
        if isinstance(task, regression.Config):
            per_sequence = jax.vmap(lambda k: sample_one(k, task))
            self.data = jax.jit(lambda key: per_sequence(jax.random.split(key, batch_size)))
        else:
            self.data = jax.jit(lambda key: sample(key, task, batch_size))
        self.update = jax.jit(self._update, donate_argnums=(0, 1))
        self.split = jax.jit(jax.random.split)
        self.init = jax.jit(train.init)

    def _update(self, params: Any, opt_state: Any, hparams: dict, batch: Batch) -> tuple[Any, Any, jax.Array]:
        def loss_fn(p):
            # Requesting the intermediates selects the explicit T x T attention path.
            out, _ = self.train.model.apply({"params": p}, batch.inputs, mutable=["intermediates"])
            return batch_loss(self.train.spec.loss, out, batch)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = self.train.optimizer(hparams).update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    def run(self, seeds: list[int], steps: int, hparams: dict) -> tuple[float, float]:
        """Train each seed for `steps` steps; returns (wall, CPU) seconds, initialization excluded."""
        impl = self.train.cfg.train.prng_impl  # the key `Train.init` takes (`Train.check_key`)
        states = [self.init(jax.random.key(s, impl=impl), hparams) for s in seeds]
        jax.block_until_ready(states)
        wall, cpu = time.perf_counter(), time.process_time()
        for seed, state in zip(seeds, states):
            params, opt_state, key = state.params, state.opt_state, jax.random.PRNGKey(seed)
            for _ in range(steps):
                key, k_data = self.split(key)
                params, opt_state, loss = self.update(params, opt_state, hparams, self.data(k_data))
            jax.block_until_ready(params)
        return time.perf_counter() - wall, time.process_time() - cpu
