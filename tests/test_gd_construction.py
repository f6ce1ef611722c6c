"""Constructed GD / K-step GD / GD++ weights against direct NumPy computations (von Oswald et al. 2023)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.config import ModelConfig
from jaxlab.errors import ConfigError
from jaxlab.models import Transformer
from jaxlab.models.gd import (
    check_interpolable,
    gd_params,
    gd_products,
    interpolate_products,
    lsa_products,
    params_from_products,
    product_config,
)
from jaxlab.probes.icl_algorithms import gd_predict

D_X, D_Y, N = 5, 2, 7


def lsa_cfg(**kw) -> ModelConfig:
    base = dict(
        n_layers=1, n_heads=1, d_model=D_X + D_Y, attention="linear", mask="context_keys", d_mlp=0,
        layernorm=False, use_bias=False, read_in="identity", readout="neg_y_block", d_input=D_X + D_Y,
        d_output=D_Y, max_len=N + 1,
    )  # fmt: skip
    return ModelConfig(**{**base, **kw})


def tasks(seed: int, b: int = 32, d_y: int = D_Y):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-0.5, 0.5, size=(b, N, D_X))
    xq = rng.uniform(-0.5, 0.5, size=(b, D_X))
    w = rng.normal(size=(b, d_y, D_X))
    y = np.einsum("bod,bnd->bno", w, x)
    return x, y, xq


def tokens(x, y, xq, yq_entry=None):
    b = x.shape[0]
    q_y = np.zeros((b, y.shape[-1])) if yq_entry is None else yq_entry
    ctx = np.concatenate([x, y], -1)
    query = np.concatenate([xq, q_y], -1)[:, None]
    return jnp.asarray(np.concatenate([ctx, query], 1), jnp.float32)


gd_params_jit = jax.jit(gd_params, static_argnums=(0, 1))  # one program per config, not one per operation


@functools.cache
def _apply(cfg):
    return jax.jit(lambda p, x: Transformer(cfg).apply({"params": p}, x)[:, -1])


def predict(cfg, params, inputs):
    return np.asarray(_apply(cfg)(params, inputs), np.float64)


def numpy_gd(x, y, xq, eta, steps, w0=None):
    """K explicit GD steps on L(W) = 1/(2N) sum_i ||W x_i - y_i||^2, then W_K x_q."""
    b, n, d = x.shape
    w = np.zeros((b, y.shape[-1], d)) if w0 is None else np.array(w0, np.float64)
    for _ in range(steps):
        resid = y - np.einsum("bod,bnd->bno", w, x)
        w = w + eta / n * np.einsum("bno,bnd->bod", resid, x)
    return np.einsum("bod,bd->bo", w, xq)


def numpy_gd_plus_plus(x, y, xq, eta, gamma, steps):
    """The GD++ token recursion written out per token with loops (independent of the matrix form)."""
    b, n, _ = x.shape
    out = np.zeros((b, y.shape[-1]))
    for t in range(b):
        xs, rs, q, rq = [v.copy() for v in x[t]], [v.copy() for v in y[t]], xq[t].copy(), np.zeros(y.shape[-1])
        for _ in range(steps):
            dot = [[float(xs[i] @ xs[j]) for j in range(n)] for i in range(n)]
            dq = [float(xs[i] @ q) for i in range(n)]
            new_r = [rs[j] - eta / n * sum(dot[i][j] * rs[i] for i in range(n)) for j in range(n)]
            new_x = [xs[j] - gamma * sum(dot[i][j] * xs[i] for i in range(n)) for j in range(n)]
            rq = rq - eta / n * sum(dq[i] * rs[i] for i in range(n))
            q = q - gamma * sum(dq[i] * xs[i] for i in range(n))
            xs, rs = new_x, new_r
        out[t] = -rq
    return out


def test_constructed_gd_is_one_numpy_gd_step():
    x, y, xq = tasks(0)
    cfg = lsa_cfg()
    for eta in (0.3, 2.5):
        got = predict(cfg, gd_params_jit(cfg, N, eta), tokens(x, y, xq))
        np.testing.assert_allclose(got, numpy_gd(x, y, xq, eta, 1), rtol=1e-5, atol=1e-5)
    # From W0 != 0 the query token carries -W0 x_q (von Oswald et al., Prop. 1): prediction W1 x_q.
    w0 = np.random.default_rng(1).normal(size=(D_Y, D_X))
    w0_b = np.broadcast_to(w0, (x.shape[0], D_Y, D_X))
    inputs = tokens(x, y, xq, yq_entry=-np.einsum("od,bd->bo", w0, xq))
    got = predict(cfg, gd_params_jit(cfg, N, 0.8, w0=w0), inputs)
    np.testing.assert_allclose(got, numpy_gd(x, y, xq, 0.8, 1, w0=w0_b), rtol=1e-5, atol=1e-5)
    # extra heads and a wider head do not change it (they are zero / padding)
    wide = lsa_cfg(n_heads=2, d_head=D_X + D_Y + 3, use_bias=True)
    np.testing.assert_allclose(
        predict(wide, gd_params_jit(wide, N, 2.5), tokens(x, y, xq)), numpy_gd(x, y, xq, 2.5, 1), rtol=1e-5, atol=1e-5
    )


@pytest.mark.parametrize("tie", [True, False])
def test_k_layers_are_k_gd_steps(tie):
    x, y, xq = tasks(2)
    cfg = lsa_cfg(n_layers=3, tie_layers=tie)
    params = gd_params_jit(cfg, N, 1.7)
    assert len(params) == (1 if tie else 3)
    got = predict(cfg, params, tokens(x, y, xq))
    np.testing.assert_allclose(got, numpy_gd(x, y, xq, 1.7, 3), rtol=1e-5, atol=1e-5)
    # the probes' GD predictor in its NumPy form (batched over tasks; its JAX form: the GD++ test)
    np.testing.assert_allclose(gd_predict(x, y, xq[:, None], 1.7, 3)[:, 0], numpy_gd(x, y, xq, 1.7, 3), rtol=1e-10)


def test_gd_plus_plus_construction_and_predictor_match_the_token_recursion():
    x, y, xq = tasks(3, b=6, d_y=1)
    cfg = lsa_cfg(n_layers=3, tie_layers=True, d_output=1, d_model=D_X + 1, d_input=D_X + 1)
    want = numpy_gd_plus_plus(x, y, xq, 1.3, 0.4, 3)
    got = predict(cfg, gd_params_jit(cfg, N, 1.3, gamma=0.4), tokens(x, y, xq))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    as_jax = [jnp.asarray(v, jnp.float32) for v in (x, y, xq[:, None])]
    pred = jax.jit(lambda a, b, c: gd_predict(a, b, c, 1.3, 3, 0.4))(*as_jax)[:, 0]
    np.testing.assert_allclose(pred, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(gd_predict(x, y, xq[:, None], 1.3, 3, 0.4)[:, 0], want, rtol=1e-10)
    # GD++ differs from GD from the second step on, and not before
    assert np.abs(want - numpy_gd(x, y, xq, 1.3, 3)).max() > 1e-3
    np.testing.assert_allclose(numpy_gd_plus_plus(x, y, xq, 1.3, 0.4, 1), numpy_gd(x, y, xq, 1.3, 1), atol=1e-12)


def test_attn_norm_n_keys_absorbs_the_one_over_n():
    x, y, xq = tasks(4)
    cfg = lsa_cfg(attn_norm="n_keys")
    got = predict(cfg, gd_params_jit(cfg, N, 0.9), tokens(x, y, xq))
    np.testing.assert_allclose(got, numpy_gd(x, y, xq, 0.9, 1), rtol=1e-5, atol=1e-5)


def random_lsa(cfg, seed):
    init = jax.jit(lambda k: Transformer(cfg).init(k, jnp.zeros((1, N + 1, cfg.d_model)))["params"])
    return init(jax.random.key(seed))


def test_products_reproduce_the_model_and_rescaling_is_invisible():
    x, y, xq = tasks(5)
    inputs = tokens(x, y, xq)
    # two tied layers (one parameter block): the one-layer products are checked against NumPy in
    # test_gd_probes (numpy_lsa) and through the GD construction below
    for cfg in (lsa_cfg(n_layers=2, tie_layers=True),):
        params = random_lsa(cfg, 0)
        a, b = jax.jit(lambda p, cfg=cfg: lsa_products(p, cfg))(params)
        assert a.shape == (1, 1, D_X + D_Y, D_X + D_Y)
        pcfg = product_config(cfg)
        want = predict(cfg, params, inputs)
        np.testing.assert_allclose(
            predict(pcfg, params_from_products(a[:, 0], b[:, 0], cfg), inputs), want, rtol=1e-4, atol=1e-6
        )
        np.testing.assert_allclose(
            predict(pcfg, params_from_products(3.0 * a[:, 0], b[:, 0] / 3.0, cfg), inputs), want, rtol=1e-4, atol=1e-6
        )


def test_interpolation_of_gd_with_itself_and_with_a_rescaled_copy_is_gd():
    cfg = lsa_cfg()
    a = jnp.asarray(np.random.default_rng(0).normal(size=(D_X + D_Y,) * 2), jnp.float32)
    b = jnp.asarray(np.random.default_rng(1).normal(size=(D_X + D_Y,) * 2), jnp.float32)

    @jax.jit  # one program instead of one per operation
    def products(a, b):
        a_gd, b_gd = gd_products(cfg, N, 1.1)
        return (
            (a_gd, b_gd),
            lsa_products(gd_params(cfg, N, 1.1), cfg),
            interpolate_products(4.0 * a_gd, b_gd / 4.0, a_gd, b_gd, D_X),
            interpolate_products(a, b, a_gd, b_gd, D_X),
        )

    (a_gd, b_gd), (a_p, b_p), (a_s, b_s), (a_i, b_i) = jax.device_get(products(a, b))
    # A = W_Q^T W_K = diag(I_x, 0), B = W_V^T P^T = diag(0, -eta/N I_y) in the row convention
    np.testing.assert_allclose(a_gd, np.diag([1.0] * D_X + [0.0] * D_Y), atol=1e-7)
    np.testing.assert_allclose(b_gd, np.diag([0.0] * D_X + [-1.1 / N] * D_Y), atol=1e-7)
    np.testing.assert_allclose(a_p[0, 0], a_gd, atol=1e-7)
    np.testing.assert_allclose(b_p[0, 0], b_gd, atol=1e-7)
    np.testing.assert_allclose(a_s, a_gd, atol=1e-6)
    np.testing.assert_allclose(b_s, b_gd, atol=1e-6)
    # a generic pair is averaged after rescaling by the mean x-diagonal of A
    beta = float(np.mean(np.diag(np.asarray(a))[:D_X]))
    np.testing.assert_allclose(a_i, (np.asarray(a) / beta + a_gd) / 2, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b_i, (np.asarray(b) * beta + b_gd) / 2, rtol=1e-5, atol=1e-6)


def test_incompatible_models_are_refused_by_name():
    with pytest.raises(ConfigError, match="model.attention"):
        gd_params(lsa_cfg(attention="softmax"), N, 1.0)
    with pytest.raises(ConfigError, match="model.d_head"):
        gd_params(lsa_cfg(n_heads=2, d_head=3), N, 1.0)
    with pytest.raises(ConfigError, match="model.n_heads"):
        check_interpolable(lsa_cfg(n_heads=2))
    with pytest.raises(ConfigError, match="model.tie_layers"):
        check_interpolable(dataclasses.replace(lsa_cfg(), n_layers=2))
