"""In-context linear regression (von Oswald et al. 2023; Garg et al. 2022).

Each sequence has its own weights W ~ N(0, weight_scale^2 I) of shape [d_out, d]; inputs x_i are
i.i.d. U(-s/2, s/2)^d (`input_dist="uniform"`, s = input_scale; von Oswald et al. use s = 1) or
N(0, s^2 I)^d (`"normal"`), and y_i = W x_i + noise_std * eps_i.

Token layouts:
  paired       (von Oswald et al.): T = N + 1 tokens e_i = (x_i, y_i), query e_q = (x_q, 0); the
               loss is on the query only. A model reads its prediction from the query token.
  interleaved  (Garg et al.): T = 2N tokens x_1, y_1, ..., x_N, y_N with x-tokens (x_i, 0) and
               y-tokens (0, y_i); the prediction of y_i is read at x_i, so every prefix length
               counts in the loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp

from jaxlab import rng
from jaxlab.config import TaskSection, _choice, _positive
from jaxlab.tasks.batch import Batch, TaskSpec

INPUT_DISTS = ("uniform", "normal")
LAYOUTS = ("paired", "interleaved")


@dataclass(frozen=True)
class Config(TaskSection):
    """The `task` section of in-context linear regression (`kind = "regression"`; the module docstring has the
    distribution and the token layouts)."""

    kind: ClassVar[str] = "regression"
    n_dims: int = 10
    n_context: int = 10
    d_out: int = 1
    input_dist: str = "uniform"
    input_scale: float = 1.0
    weight_scale: float = 1.0
    noise_std: float = 0.0
    layout: str = "paired"

    FIELD_DOCS: ClassVar[dict[str, str]] = {
        "n_dims": "dimension d of the inputs x_i",
        "n_context": "in-context examples (x_i, y_i) per sequence",
        "d_out": "outputs per example: y_i = W x_i with W of shape [d_out, d]",
        "input_dist": "x_i ~ U(-s/2, s/2)^d (uniform) or N(0, s^2 I) (normal), s = input_scale",
        "input_scale": "s, the scale of the inputs",
        "weight_scale": "each sequence's W ~ N(0, weight_scale^2 I)",
        "noise_std": "standard deviation of the Gaussian noise added to every y_i",
        "layout": "tokens: paired (x_i, y_i) then a query (x_q, 0), or interleaved x_1, y_1, ..., x_N, y_N",
    }
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"input_dist": INPUT_DISTS, "layout": LAYOUTS}

    def validate(self) -> None:
        n = self._name
        _positive(n("n_dims"), self.n_dims)
        _positive(n("n_context"), self.n_context)
        _positive(n("d_out"), self.d_out)
        _choice(n("input_dist"), self.input_dist, INPUT_DISTS)
        _positive(n("input_scale"), self.input_scale)
        _positive(n("weight_scale"), self.weight_scale, allow_zero=True)
        _positive(n("noise_std"), self.noise_std, allow_zero=True)
        _choice(n("layout"), self.layout, LAYOUTS)


RegressionConfig = Config


def spec(cfg: Config) -> TaskSpec:
    """The `TaskSpec`: N + 1 tokens (paired) or 2N (interleaved) of width n_dims + d_out, d_out outputs, mse loss."""
    seq_len = cfg.n_context + 1 if cfg.layout == "paired" else 2 * cfg.n_context
    return TaskSpec(kind=cfg.kind, seq_len=seq_len, output_dim=cfg.d_out, loss="mse", token_dim=cfg.n_dims + cfg.d_out)


def loss_positions(cfg: Config) -> tuple[int, ...]:
    """The positions where `sample`'s loss mask can be 1: the query token (paired) or the x-tokens
    (interleaved). The engine computes the training loss's outputs at these positions only."""
    if cfg.layout == "paired":
        return (cfg.n_context,)
    return tuple(range(0, 2 * cfg.n_context, 2))


def sample_inputs(key: jax.Array, cfg: Config, shape: tuple[int, ...]) -> jax.Array:
    """x of `shape` + (n_dims,) from the configured input distribution."""
    full = (*shape, cfg.n_dims)
    if cfg.input_dist == "uniform":
        return cfg.input_scale * (rng.uniform(key, full) - 0.5)
    return cfg.input_scale * rng.normal(key, full)


def sample(key: jax.Array, cfg: Config, batch_size: int = 1) -> Batch:
    """`batch_size` regression tasks. aux["w"]: [B, d_out, d]."""
    k_w, k_x, k_eps = rng.split(key, 3)
    B, N, d, d_out = batch_size, cfg.n_context, cfg.n_dims, cfg.d_out
    n_points = N + 1 if cfg.layout == "paired" else N
    w_BOD = cfg.weight_scale * rng.normal(k_w, (B, d_out, d))
    x_BND = sample_inputs(k_x, cfg, (B, n_points))
    y_BNO = jnp.einsum("bod,bnd->bno", w_BOD, x_BND)
    if cfg.noise_std > 0:
        y_BNO = y_BNO + cfg.noise_std * rng.normal(k_eps, y_BNO.shape)
    return assemble(cfg, w_BOD, x_BND, y_BNO)


def assemble(cfg: Config, w_BOD: jax.Array, x_BND: jax.Array, y_BNO: jax.Array) -> Batch:
    """The token layout of `cfg.layout` from the task weights, the inputs and their targets."""
    B, N, d, d_out = x_BND.shape[0], cfg.n_context, cfg.n_dims, cfg.d_out
    if cfg.layout == "paired":
        y_in = y_BNO.at[:, -1].set(0.0)
        inputs = jnp.concatenate([x_BND, y_in], axis=-1)
        targets = jnp.zeros((B, N + 1, d_out)).at[:, -1].set(y_BNO[:, -1])
        loss_mask = jnp.zeros((B, N + 1)).at[:, -1].set(1.0)
    else:
        x_tok = jnp.concatenate([x_BND, jnp.zeros((B, N, d_out))], axis=-1)
        y_tok = jnp.concatenate([jnp.zeros((B, N, d)), y_BNO], axis=-1)
        inputs = jnp.stack([x_tok, y_tok], axis=2).reshape(B, 2 * N, d + d_out)
        targets = jnp.stack([y_BNO, jnp.zeros_like(y_BNO)], axis=2).reshape(B, 2 * N, d_out)
        loss_mask = jnp.tile(jnp.array([1.0, 0.0]), N)[None, :].repeat(B, axis=0)
    return Batch(inputs=inputs, targets=targets, loss_mask=loss_mask, aux={"w": w_BOD})


def split_paired(batch: Batch, cfg: Config) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(x_ctx [B, N, d], y_ctx [B, N, d_out], x_query [B, d], y_query [B, d_out]) of a paired batch."""
    if cfg.layout != "paired":
        raise ValueError("split_paired needs task.layout='paired'")
    d = cfg.n_dims
    x_ctx = batch.inputs[:, :-1, :d]
    y_ctx = batch.inputs[:, :-1, d:]
    return x_ctx, y_ctx, batch.inputs[:, -1, :d], batch.targets[:, -1]
