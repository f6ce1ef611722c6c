"""The probes' one cosine (`jaxlab.probes.cosine`) against NumPy, both zero-vector guards."""

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.probes.cosine import VON_OSWALD_EPS, cosine


def np_clamped(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.sum(a * b, -1) / np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1), 1e-30)


def np_eps_added(a, b, eps):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    na = np.linalg.norm(a, axis=-1, keepdims=True) + eps
    nb = np.linalg.norm(b, axis=-1, keepdims=True) + eps
    return np.sum((a / na) * (b / nb), -1)


def test_both_guards_match_numpy_and_broadcast():
    rng = np.random.default_rng(0)
    a = rng.normal(size=(4, 1, 3, 7)).astype(np.float32)
    b = rng.normal(size=(1, 5, 3, 7)).astype(np.float32)
    got = cosine(jnp.asarray(a), jnp.asarray(b))
    assert got.shape == (4, 5, 3)
    np.testing.assert_allclose(got, np_clamped(a, b), rtol=1e-5, atol=1e-6)
    got = cosine(jnp.asarray(a), jnp.asarray(b), eps=VON_OSWALD_EPS)
    np.testing.assert_allclose(got, np_eps_added(a, b, 1e-8), rtol=1e-5, atol=1e-6)
    # jit gives the same numbers as eager
    np.testing.assert_allclose(jax.jit(lambda x, y: cosine(x, y, eps=1e-8))(a, b), got, rtol=1e-6)


def test_invariances_and_sign():
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(6, 5)), rng.normal(size=(6, 5))
    for eps in (None, VON_OSWALD_EPS):
        c = np.asarray(cosine(jnp.asarray(a), jnp.asarray(b), eps=eps))
        np.testing.assert_allclose(cosine(jnp.asarray(3.0 * a), jnp.asarray(0.5 * b), eps=eps), c, rtol=1e-5)
        np.testing.assert_allclose(cosine(jnp.asarray(a), jnp.asarray(-b), eps=eps), -c, rtol=1e-6)
        np.testing.assert_allclose(cosine(jnp.asarray(a), jnp.asarray(-b), eps=eps, sign_invariant=True), np.abs(c))
        np.testing.assert_allclose(cosine(jnp.asarray(a), jnp.asarray(a), eps=eps), 1.0, atol=1e-6)
        assert np.all(np.abs(c) <= 1.0 + 1e-6)


def test_zero_and_tiny_vectors():
    z, v = jnp.zeros((2, 4)), jnp.ones((2, 4))
    for eps in (None, VON_OSWALD_EPS):
        out = cosine(z, v, eps=eps)
        assert np.all(np.isfinite(out)) and np.all(np.asarray(out) == 0.0)
    # the eps-added form shrinks the cosine of vectors of norm ~eps; the clamped one does not
    tiny = jnp.full((1, 4), 0.5e-8)  # norm 1e-8 = eps
    np.testing.assert_allclose(cosine(tiny, tiny, eps=1e-8), np_eps_added(tiny, tiny, 1e-8), rtol=1e-5)
    assert float(cosine(tiny, tiny, eps=1e-8)[0]) < 0.3
    np.testing.assert_allclose(cosine(tiny, tiny)[0], 1.0, rtol=1e-5)
