"""The position-wise MLP block: W_out act(W_in x + b_in) + b_out.

Activations: `gelu`, `relu`, and `solu` = x * softmax(x) followed by LayerNorm (Elhage et al. 2022,
"Softmax Linear Units").
"""

from __future__ import annotations

import flax.linen as nn
import jax

from jaxlab.config import ModelConfig
from jaxlab.models.attention import dot, kernel_init


class MLP(nn.Module):
    """Two-layer MLP with the configured activation."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BTD: jax.Array) -> jax.Array:
        """x [B, T, D] -> W_out act(W_in x + b_in) + b_out [B, T, D], hidden width `d_mlp` (biases with `use_bias`)."""
        cfg = self.cfg
        D, F = x_BTD.shape[-1], cfg.d_mlp
        w_in = self.param("w_in", kernel_init(0, 1), (D, F))
        w_out = self.param("w_out", kernel_init(0, 1), (F, D))
        h = dot("btd,df->btf", x_BTD, w_in, cfg.dtype)
        if cfg.use_bias:
            h = h + self.param("b_in", nn.initializers.zeros, (F,))
        if cfg.activation == "gelu":
            h = jax.nn.gelu(h)
        elif cfg.activation == "relu":
            h = jax.nn.relu(h)
        elif cfg.activation == "solu":
            h = h * jax.nn.softmax(h, axis=-1)
            h = nn.LayerNorm(name="ln_solu")(h)
        else:
            raise ValueError(f"unknown activation {cfg.activation!r}")
        out = dot("btf,fd->btd", h, w_out, cfg.dtype)
        if cfg.use_bias:
            out = out + self.param("b_out", nn.initializers.zeros, (D,))
        return out
