"""The position-wise MLP block: W_out act(W_in x + b_in) + b_out.

Activations: `gelu`, `relu`, and `solu` = x * softmax(x) followed by LayerNorm (Elhage et al. 2022,
"Softmax Linear Units").

Hook points (`jaxlab.models.hooks`), [B, T, d_mlp]: `{prefix}.hook_pre` = W_in x + b_in,
`{prefix}.hook_post` = act(pre); for solu `{prefix}.hook_mid` = pre * softmax(pre) before the
LayerNorm and `hook_post` after it (TransformerLens's convention).
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax

from jaxlab.config import ModelConfig
from jaxlab.models.attention import dot, kernel_init
from jaxlab.models.hooks import record
from jaxlab.models.interventions import Intervention


class MLP(nn.Module):
    """Two-layer MLP with the configured activation."""

    cfg: ModelConfig

    @nn.compact
    def __call__(self, x_BTD: jax.Array, prefix: str = "mlp", interventions: Sequence[Intervention] = ()) -> jax.Array:
        """x [B, T, D] -> W_out act(W_in x + b_in) + b_out [B, T, D], hidden width `d_mlp` (biases with `use_bias`);
        `prefix` names the hook points (`blocks.0.mlp`: `blocks.0.mlp.hook_pre`, ...)."""
        cfg = self.cfg
        D, F = x_BTD.shape[-1], cfg.d_mlp
        hook = lambda name, a: record(self, f"{prefix}.{name}", a, interventions)
        w_in = self.param("w_in", kernel_init(0, 1), (D, F))
        w_out = self.param("w_out", kernel_init(0, 1), (F, D))
        h = dot("btd,df->btf", x_BTD, w_in, cfg.dtype)
        if cfg.use_bias:
            h = h + self.param("b_in", nn.initializers.zeros, (F,))
        h = hook("hook_pre", h)
        if cfg.activation == "gelu":
            h = jax.nn.gelu(h)
        elif cfg.activation == "relu":
            h = jax.nn.relu(h)
        elif cfg.activation == "solu":
            h = hook("hook_mid", h * jax.nn.softmax(h, axis=-1))
            h = nn.LayerNorm(name="ln_solu")(h)
        else:
            raise ValueError(f"unknown activation {cfg.activation!r}")
        out = dot("btf,fd->btd", hook("hook_post", h), w_out, cfg.dtype)
        if cfg.use_bias:
            out = out + self.param("b_out", nn.initializers.zeros, (D,))
        return out
