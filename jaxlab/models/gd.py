"""Constructed weights: linear self-attention that implements gradient descent (von Oswald et al. 2023).

Tokens e_i = (x_i, y_i) for the N context points and e_q = (x_q, 0) for the query; every token
attends to the context tokens only (`mask="context_keys"`). With W0 the initial weights,

  W_K = W_Q = [[I_x, 0], [0, 0]],   W_V = [[0, 0], [W0, -I_y]],   P = (eta / N) [[0, 0], [0, I_y]]

one layer adds to every token's y entry  -Delta W x_j, where
Delta W = -eta grad L(W0) = (eta / N) sum_i (y_i - W0 x_i) x_i^T  is one GD step on
L(W) = 1/(2N) sum_i ||W x_i - y_i||^2. From W0 = 0 the query's y entry becomes -W1 x_q, and the
`neg_y_block` readout returns the GD prediction W1 x_q. Stacking the same layer K times (tied or
not) gives K GD steps: the context tokens' y entries carry the residuals y_i - W_k x_i.

GD++ adds an x-block to the same layer: W_V x-block I_x and P x-block -gamma I_x, so every token
(the query included) is also transformed as x_j <- (I - gamma sum_i x_i x_i^T) x_j, a curvature
correction that matters from the second layer on.

jaxlab's attention computes, per head h, q = e W_qkv[:, 0, h], k = e W_qkv[:, 1, h],
v = e W_qkv[:, 2, h] (row vectors) and out = z W_out[h], so W_qkv[:, 0, h] = W_Q^T,
W_qkv[:, 2, h] = W_V^T and W_out[h] = P^T. In that row convention the score and the value path of
a head are the products  A = W_qkv[:, 0] W_qkv[:, 1]^T  (score e_t^T A e_t') and
B = W_qkv[:, 2] W_out  (contribution e_t'^T B); `lsa_products` returns them and
`interpolate_products` averages a trained model's with GD's (von Oswald et al., Appendix A.3).
"""

from __future__ import annotations

import dataclasses

import chex
import jax
import jax.numpy as jnp

from jaxlab.config import ModelConfig
from jaxlab.errors import ConfigError


def check_lsa(cfg: ModelConfig, *, need_head_dim: bool = True) -> None:
    """Refuse a model config whose parameters cannot hold the GD construction."""
    rules = [
        ("attention", cfg.attention == "linear", ["linear"]),
        ("mask", cfg.mask == "context_keys", ["context_keys"]),
        ("layernorm", not cfg.layernorm, [False]),
        ("d_mlp", cfg.d_mlp == 0, [0]),
        ("read_in", cfg.read_in == "identity", ["identity"]),
        ("readout", cfg.readout == "neg_y_block", ["neg_y_block"]),
        ("pos_encoding", cfg.pos_encoding == "none", ["none"]),
        ("input", cfg.input == "continuous", ["continuous"]),
    ]
    for name, ok, allowed in rules:
        if not ok:
            raise ConfigError(f"model.{name}", f"the GD construction needs {allowed[0]!r}", allowed)
    if cfg.d_model is None or cfg.d_output is None:
        raise ConfigError("model.d_model", "resolve the config first (ExperimentConfig.resolve)")
    if need_head_dim and cfg.head_dim < cfg.d_model:
        raise ConfigError(
            "model.d_head", f"the GD construction needs d_head >= d_model = {cfg.d_model}, got {cfg.head_dim}"
        )


def _p_scale(cfg: ModelConfig, n_context: int) -> float:
    # With attn_norm="n_keys" the attention already divides by the N context keys.
    return 1.0 if cfg.attn_norm == "n_keys" else 1.0 / n_context


def gd_matrices(
    d: int,
    d_out: int,
    n_context: int,
    eta: jax.Array | float,
    gamma: jax.Array | float | None = None,
    w0: jax.Array | None = None,
    p_scale: float | None = None,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(W_KQ, W_V, P) of the construction in the column convention of the paper, each [D, D].

    W_KQ = W_K = W_Q = diag(I_x, 0); W_V = [[0, 0], [W0, -I_y]]; P = diag(0, eta * p_scale I_y),
    p_scale = 1/N by default. GD++ (`gamma` given): W_V's x-block is I_x and P's is -gamma I_x.
    """
    D = d + d_out
    scale = 1.0 / n_context if p_scale is None else p_scale
    eta = jnp.asarray(eta, jnp.float32)
    x_mask = (jnp.arange(D) < d).astype(jnp.float32)
    wkq = jnp.diag(x_mask)
    w0 = jnp.zeros((d_out, d)) if w0 is None else jnp.asarray(w0, jnp.float32).reshape(d_out, d)
    x_copy = 0.0 if gamma is None else 1.0
    g = jnp.asarray(0.0 if gamma is None else gamma, jnp.float32)
    wv = jnp.diag(jnp.concatenate([x_copy * jnp.ones(d), -jnp.ones(d_out)]))
    wv = wv.at[d:, :d].set(w0)
    p = jnp.diag(jnp.concatenate([-g * jnp.ones(d), eta * scale * jnp.ones(d_out)]))
    return wkq, wv, p


def gd_params(
    cfg: ModelConfig,
    n_context: int,
    eta: jax.Array | float,
    gamma: jax.Array | float | None = None,
    w0: jax.Array | None = None,
) -> dict:
    """Parameters of the `Transformer` for `cfg` that implement n_layers steps of GD (GD++ if `gamma`).

    Head 0 holds the construction, the other heads are zero; every layer gets the same weights
    (one block when `tie_layers`). `eta` and `gamma` may be traced (vmap over a grid of them).
    """
    check_lsa(cfg)
    D, H, Dh, d_out = cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.d_output
    wkq, wv, p = gd_matrices(D - d_out, d_out, n_context, eta, gamma, w0, _p_scale(cfg, n_context))
    w_qkv = jnp.zeros((D, 3, H, Dh))
    w_qkv = w_qkv.at[:, 0, 0, :D].set(wkq.T).at[:, 1, 0, :D].set(wkq.T).at[:, 2, 0, :D].set(wv.T)
    w_out = jnp.zeros((H, Dh, D)).at[0, :D, :].set(p.T)
    attn = {"w_qkv": w_qkv, "w_out": w_out}
    if cfg.use_bias:
        attn["b_qkv"] = jnp.zeros((3, H, Dh))
        attn["b_out"] = jnp.zeros((D,))
    n_blocks = 1 if cfg.tie_layers else cfg.n_layers
    return {f"blocks_{i}": {"attn": dict(attn)} for i in range(n_blocks)}


def lsa_products(params: dict, cfg: ModelConfig) -> tuple[jax.Array, jax.Array]:
    """Per block and head, A = W_q W_k^T and B = W_v W_out (row convention), each [L, H, D, D].

    L is the number of parameter blocks (1 when `tie_layers`). For linear attention without biases
    the head's output at token t is sum_{t'} (e_t^T A e_t') e_t'^T B.
    """
    n_blocks = 1 if cfg.tie_layers else cfg.n_layers
    a, b = [], []
    for i in range(n_blocks):
        attn = params[f"blocks_{i}"]["attn"]
        w_qkv, w_out = attn["w_qkv"], attn["w_out"]
        a.append(jnp.einsum("dhk,ehk->hde", w_qkv[:, 0], w_qkv[:, 1]))
        b.append(jnp.einsum("dhk,hke->hde", w_qkv[:, 2], w_out))
    return jnp.stack(a), jnp.stack(b)


def gd_products(
    cfg: ModelConfig, n_context: int, eta: jax.Array | float, gamma: jax.Array | float | None = None
) -> tuple[jax.Array, jax.Array]:
    """A and B ([D, D], row convention) of the GD / GD++ layer for `cfg`."""
    D, d_out = cfg.d_model, cfg.d_output
    wkq, wv, p = gd_matrices(D - d_out, d_out, n_context, eta, gamma, None, _p_scale(cfg, n_context))
    return wkq.T @ wkq, wv.T @ p.T


def product_config(cfg: ModelConfig) -> ModelConfig:
    """The one-head config (d_head = d_model) whose parameters hold any pair of products (A, B)."""
    return dataclasses.replace(cfg, n_heads=1, d_head=cfg.d_model)


def params_from_products(a_LDD: jax.Array, b_LDD: jax.Array, cfg: ModelConfig) -> dict:
    """Parameters for `product_config(cfg)` with W_q = A, W_k = I, W_v = I, W_out = B per block."""
    chex.assert_rank([a_LDD, b_LDD], 3)
    pcfg = product_config(cfg)
    D = pcfg.d_model
    eye = jnp.eye(D)
    out = {}
    for i in range(a_LDD.shape[0]):
        w_qkv = jnp.stack([a_LDD[i], eye, eye], axis=1)[:, :, None, :]  # [D, 3, 1, D]
        attn = {"w_qkv": w_qkv, "w_out": b_LDD[i][None]}
        if pcfg.use_bias:
            attn["b_qkv"] = jnp.zeros((3, 1, D))
            attn["b_out"] = jnp.zeros((D,))
        out[f"blocks_{i}"] = {"attn": attn}
    return out


def check_interpolable(cfg: ModelConfig) -> None:
    """von Oswald et al.'s interpolation needs one linear head whose weights are shared by all layers."""
    check_lsa(cfg, need_head_dim=False)
    if cfg.n_heads != 1:
        raise ConfigError("model.n_heads", "weight interpolation needs a single head", [1])
    if cfg.n_layers > 1 and not cfg.tie_layers:
        raise ConfigError("model.tie_layers", "weight interpolation of several layers needs tied layers", [True])
    if cfg.use_bias:
        raise ConfigError("model.use_bias", "weight interpolation needs a bias-free model", [False])


def interpolate_products(
    a_DD: jax.Array, b_DD: jax.Array, a_gd_DD: jax.Array, b_gd_DD: jax.Array, d: int
) -> tuple[jax.Array, jax.Array]:
    """von Oswald et al. (Appendix A.3): average the trained products with GD's after rescaling.

    beta = mean of the x-block diagonal of the trained A; A_int = (A / beta + A_gd) / 2,
    B_int = (B beta + B_gd) / 2. The rescaling leaves the trained model's function unchanged.
    """
    beta = jnp.mean(jnp.diagonal(a_DD)[:d])
    return (a_DD / beta + a_gd_DD) / 2.0, (b_DD * beta + b_gd_DD) / 2.0


__all__ = [
    "check_interpolable",
    "check_lsa",
    "gd_matrices",
    "gd_params",
    "gd_products",
    "interpolate_products",
    "lsa_products",
    "params_from_products",
    "product_config",
]
