"""Layer normalization with a hand-written backward pass (fewer passes over the activations).

    y = xhat * scale + bias,  xhat = (x - mean(x)) / sqrt(var(x) + eps)   (over the last axis)

Backward, with g = dy * scale (means over the last axis, sums over every other axis):
    dx = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var + eps),
    dscale = sum(dy * xhat),  dbias = sum(dy).
Parameters are named as `flax.linen.LayerNorm`'s (`scale`, `bias`), epsilon 1e-6 as its default.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlab.models.hooks import COLLECTION, record
from jaxlab.models.interventions import Intervention

EPS = 1e-6


@jax.custom_vjp
def layer_norm(x: jax.Array, scale: jax.Array, bias: jax.Array) -> jax.Array:
    """xhat * scale + bias over the last axis, xhat = (x - mean) / sqrt(var + 1e-6), with the hand-written backward
    pass."""
    return _forward(x, scale, bias)[0]


def _forward(x, scale, bias):
    mu = jnp.mean(x, axis=-1, keepdims=True)
    xc = x - mu
    r = jax.lax.rsqrt(jnp.mean(xc * xc, axis=-1, keepdims=True) + EPS)
    xhat = xc * r
    return xhat * scale + bias, (xhat, r, scale)


def _bwd(res, dy):
    xhat, r, scale = res
    g = dy * scale
    mean_g = jnp.mean(g, axis=-1, keepdims=True)
    mean_gx = jnp.mean(g * xhat, axis=-1, keepdims=True)
    dx = (g - mean_g - xhat * mean_gx) * r
    axes = tuple(range(dy.ndim - 1))
    return dx, jnp.sum(dy * xhat, axis=axes), jnp.sum(dy, axis=axes)


layer_norm.defvjp(_forward, _bwd)


def scale_of(x: jax.Array) -> jax.Array:
    """The per-token scale sqrt(var(x) + eps) [..., 1] over the last axis (TransformerLens's `hook_scale`)."""
    xc = x - jnp.mean(x, axis=-1, keepdims=True)
    return jnp.sqrt(jnp.mean(xc * xc, axis=-1, keepdims=True) + EPS)


class LayerNorm(nn.Module):
    """`flax.linen.LayerNorm` (same parameters) computed by `layer_norm`, with the hook point
    `{prefix}.hook_scale` [..., 1] (`scale_of`).

    Recorded only, the output still comes from `layer_norm` (the same numbers); an intervention at
    the point takes the explicit path y = (x - mean) / hook_scale * scale + bias (plain autodiff).
    """

    @nn.compact
    def __call__(self, x: jax.Array, prefix: str = "ln", interventions: Sequence[Intervention] = ()) -> jax.Array:
        """x [..., D] normalized over its last axis, with learned `scale` [D] (init 1) and `bias` [D] (init 0);
        `prefix` names the hook point (`blocks.0.ln1`: `blocks.0.ln1.hook_scale`)."""
        D = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (D,))
        bias = self.param("bias", nn.initializers.zeros, (D,))
        name = f"{prefix}.hook_scale"
        if not any(iv.hook == name for iv in interventions):
            if self.is_mutable_collection(COLLECTION):
                record(self, name, scale_of(x), ())
            return layer_norm(x, scale, bias)
        xc = x - jnp.mean(x, axis=-1, keepdims=True)
        return xc / record(self, name, scale_of(x), interventions) * scale + bias
