"""Layer normalization with a hand-written backward pass (fewer passes over the activations).

    y = xhat * scale + bias,  xhat = (x - mean(x)) / sqrt(var(x) + eps)   (over the last axis)

Backward, with g = dy * scale (means over the last axis, sums over every other axis):
    dx = (g - mean(g) - xhat * mean(g * xhat)) / sqrt(var + eps),
    dscale = sum(dy * xhat),  dbias = sum(dy).
Parameters are named as `flax.linen.LayerNorm`'s (`scale`, `bias`), epsilon 1e-6 as its default.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

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


class LayerNorm(nn.Module):
    """`flax.linen.LayerNorm` (same parameters) computed by `layer_norm`."""

    @nn.compact
    def __call__(self, x: jax.Array) -> jax.Array:
        """x [..., D] normalized over its last axis, with learned `scale` [D] (init 1) and `bias` [D] (init 0)."""
        D = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (D,))
        bias = self.param("bias", nn.initializers.zeros, (D,))
        return layer_norm(x, scale, bias)
