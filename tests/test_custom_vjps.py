"""Hand-written backward passes (softmax attention, layer norm) against NumPy forward passes and the
automatic derivatives of the plain formulas."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.models.attention import make_mask
from jaxlab.models.layernorm import LayerNorm, layer_norm
from jaxlab.models.softmax_attention import softmax_attention


def plain_attention(q, k, v, mask):
    s = jnp.einsum("bqhk,bthk->bhqt", q, k)
    p = jax.nn.softmax(jnp.where(mask, s, jnp.finfo(s.dtype).min), axis=-1)
    return jnp.einsum("bhqt,bthk->bqhk", p, v)


def np_attention(q, k, v, mask):
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    s = np.einsum("bqhk,bthk->bhqt", q, k)
    s = np.where(mask, s, -np.inf)
    p = np.exp(s - s.max(-1, keepdims=True))
    p /= p.sum(-1, keepdims=True)
    return np.einsum("bhqt,bthk->bqhk", p, v)


@pytest.mark.parametrize("mask_kind", ["causal", "context_keys", "none"])
def test_softmax_attention_matches_numpy_and_autodiff(mask_kind):
    B, T, H, K = 3, 9, 2, 4
    kq, kk, kv, kc = jax.random.split(jax.random.key(0), 4)
    q, k, v = (jax.random.normal(key, (B, T, H, K)) for key in (kq, kk, kv))
    mask = make_mask(mask_kind, T)
    np.testing.assert_allclose(softmax_attention(q, k, v, mask), np_attention(q, k, v, mask), rtol=1e-5, atol=1e-6)
    c = jax.random.normal(kc, (B, T, H, K))  # a fixed linear functional of z
    ours = jax.grad(lambda *a: jnp.sum(c * softmax_attention(*a, mask)), argnums=(0, 1, 2))(q, k, v)
    ref = jax.grad(lambda *a: jnp.sum(c * plain_attention(*a, mask)), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_softmax_attention_at_a_subset_of_queries():
    """Queries at positions 4..8 of 9 against every key (the model's last block reads a few positions)."""
    B, T, H, K = 2, 9, 3, 4
    keys = jax.random.split(jax.random.key(1), 4)
    q = jax.random.normal(keys[0], (B, 5, H, K))
    k, v = (jax.random.normal(key, (B, T, H, K)) for key in keys[1:3])
    mask = make_mask("causal", T)[4:]
    np.testing.assert_allclose(softmax_attention(q, k, v, mask), np_attention(q, k, v, mask), rtol=1e-5, atol=1e-6)
    c = jax.random.normal(keys[3], q.shape)
    ours = jax.grad(lambda *a: jnp.sum(c * softmax_attention(*a, mask)), argnums=(0, 1, 2))(q, k, v)
    ref = jax.grad(lambda *a: jnp.sum(c * plain_attention(*a, mask)), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(ours, ref):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_layer_norm_matches_numpy_flax_and_autodiff():
    x = 3.0 + 2.0 * jax.random.normal(jax.random.key(2), (4, 7, 6))
    scale = 1.0 + 0.3 * jax.random.normal(jax.random.key(3), (6,))
    bias = 0.1 * jax.random.normal(jax.random.key(4), (6,))
    xn = np.asarray(x, np.float64)
    ref = (xn - xn.mean(-1, keepdims=True)) / np.sqrt(xn.var(-1, keepdims=True) + 1e-6)
    ref = ref * np.asarray(scale) + np.asarray(bias)
    np.testing.assert_allclose(layer_norm(x, scale, bias), ref, rtol=1e-5, atol=1e-5)

    params = {"params": {"scale": scale, "bias": bias}}
    assert jax.tree_util.tree_structure(LayerNorm().init(jax.random.key(0), x)) == jax.tree_util.tree_structure(params)
    flax_ln = lambda x, s, b: nn.LayerNorm().apply({"params": {"scale": s, "bias": b}}, x)
    np.testing.assert_allclose(LayerNorm().apply(params, x), flax_ln(x, scale, bias), rtol=1e-5, atol=1e-5)

    def plain(x, s, b):
        mu = jnp.mean(x, -1, keepdims=True)
        return (x - mu) / jnp.sqrt(jnp.mean((x - mu) ** 2, -1, keepdims=True) + 1e-6) * s + b

    c = jax.random.normal(jax.random.key(5), x.shape)
    ours = jax.grad(lambda *a: jnp.sum(c * layer_norm(*a)), argnums=(0, 1, 2))(x, scale, bias)
    for reference in (plain, flax_ln):
        want = jax.grad(lambda *a, f=reference: jnp.sum(c * f(*a)), argnums=(0, 1, 2))(x, scale, bias)
        for a, b in zip(ours, want):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
