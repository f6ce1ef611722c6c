"""The transformer family against straightforward NumPy computations, masks, hooks, interventions."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.config import ModelConfig
from jaxlab.models import Transformer, add_at, count_params, hook_names, init_params, replace_at, run_with_cache
from jaxlab.models.attention import make_mask
from jaxlab.models.transformer import sinusoidal_table


def model_and_params(seed=0, T=6, **kw):
    base = dict(d_model=8, d_input=5, d_output=2, max_len=T, use_bias=False, layernorm=False)
    cfg = ModelConfig(**{**base, **kw})
    m = Transformer(cfg)
    x = jax.random.normal(jax.random.key(seed + 100), (3, T, cfg.d_input))
    return cfg, m, init_params(m, jax.random.key(seed), x), x


def np_attention(x, p, cfg, mask):
    """One attention layer in NumPy, head by head."""
    w_qkv, w_out = np.asarray(p["w_qkv"], np.float64), np.asarray(p["w_out"], np.float64)
    out = np.zeros_like(x)
    for h in range(cfg.n_heads):
        q, k, v = (x @ w_qkv[:, i, h] for i in range(3))
        s = q @ np.swapaxes(k, -1, -2)
        if cfg.attention == "softmax":
            s = s / np.sqrt(cfg.head_dim)
            s = np.where(mask, s, -np.inf)
            a = np.exp(s - s.max(-1, keepdims=True))
            a = a / a.sum(-1, keepdims=True)
        else:
            a = np.where(mask, s, 0.0)
            if cfg.attn_norm == "n_keys":
                a = a / mask.sum(-1, keepdims=True)
        out += (a @ v) @ w_out[h]
    return out


@pytest.mark.parametrize(
    "kw",
    [
        dict(attention="softmax", mask="causal", n_heads=2),
        dict(attention="linear", mask="causal", n_heads=1),
        dict(attention="linear", mask="context_keys", n_heads=2),
        dict(attention="linear", mask="context_keys", attn_norm="n_keys", n_heads=1),
        dict(attention="softmax", mask="none", n_heads=4),
    ],
)
def test_one_layer_matches_numpy(kw):
    cfg, m, params, x = model_and_params(read_in="linear", readout="linear", **kw)
    out = np.asarray(m.apply({"params": params}, x))
    xn = np.asarray(x, np.float64)
    h = xn @ np.asarray(params["read_in"]["kernel"], np.float64)
    h = h + np_attention(h, params["blocks_0"]["attn"], cfg, np.asarray(make_mask(cfg.mask, x.shape[1])))
    ref = h @ np.asarray(params["unembed"]["kernel"], np.float64)
    np.testing.assert_allclose(out, ref, rtol=2e-4, atol=2e-5)


def test_linear_context_keys_fast_path_equals_explicit():
    cfg, m, params, x = model_and_params(attention="linear", mask="context_keys", read_in="linear", n_heads=2)
    fast = m.apply({"params": params}, x)
    explicit, _ = run_with_cache(m, params, x)  # the pattern is requested: explicit T x T path
    np.testing.assert_allclose(fast, explicit, rtol=1e-5, atol=1e-6)


def test_causal_mask_blocks_the_future():
    cfg, m, params, x = model_and_params(attention="softmax", mask="causal", n_layers=2, d_mlp=16, layernorm=True)
    x2 = x.at[:, 4:].set(jax.random.normal(jax.random.key(9), x[:, 4:].shape))
    y1, y2 = m.apply({"params": params}, x), m.apply({"params": params}, x2)
    np.testing.assert_allclose(y1[:, :4], y2[:, :4], rtol=1e-6)
    assert np.abs(np.asarray(y1[:, 4:] - y2[:, 4:])).max() > 1e-3


def test_context_keys_mask_ignores_query_token_as_key():
    cfg, m, params, x = model_and_params(attention="linear", mask="context_keys", read_in="identity", d_model=5)
    x2 = x.at[:, -1].add(1.0)
    y1, y2 = m.apply({"params": params}, x), m.apply({"params": params}, x2)
    np.testing.assert_allclose(y1[:, :-1], y2[:, :-1], rtol=1e-6)  # nobody reads the query as a key


def test_tied_layers_share_parameters():
    _, _, p_tied, _ = model_and_params(n_layers=3, tie_layers=True, d_mlp=8)
    _, _, p_free, _ = model_and_params(n_layers=3, tie_layers=False, d_mlp=8)
    per_block = count_params(p_free["blocks_0"])
    assert count_params(p_free) - count_params(p_tied) == 2 * per_block
    assert "blocks_1" not in p_tied


def test_hooks_and_residual_bookkeeping():
    cfg, m, params, x = model_and_params(n_layers=2, d_mlp=16, n_heads=2, attention="softmax", mask="causal")
    out, cache = run_with_cache(m, params, x)
    assert set(cache) == set(hook_names(cfg))
    for i in range(2):
        b = f"blocks.{i}"
        np.testing.assert_allclose(
            cache[f"{b}.hook_resid_mid"], cache[f"{b}.hook_resid_pre"] + cache[f"{b}.hook_attn_out"], rtol=1e-6
        )
        np.testing.assert_allclose(
            cache[f"{b}.hook_resid_post"], cache[f"{b}.hook_resid_mid"] + cache[f"{b}.hook_mlp_out"], rtol=1e-6
        )
        pattern = np.asarray(cache[f"{b}.attn.hook_pattern"])
        assert pattern.shape == (3, 2, 6, 6)
        np.testing.assert_allclose(pattern.sum(-1), 1.0, rtol=1e-5)
        assert np.all(np.triu(pattern[0, 0], 1) == 0)
    # Without hooks, apply() takes `softmax_attention` (normalized after the weighted sum, not
    # before): the same values up to float32 rounding.
    np.testing.assert_allclose(out, m.apply({"params": params}, x), rtol=1e-5, atol=1e-6)


def test_interventions_add_and_replace():
    cfg, m, params, x = model_and_params(n_layers=2, attention="softmax", mask="causal", layernorm=False)
    base, cache = run_with_cache(m, params, x)
    pos = jnp.zeros(6).at[3].set(1.0)
    vec = jnp.arange(8.0)
    steered, cache2 = run_with_cache(m, params, x, interventions=[add_at("blocks.0.hook_resid_post", vec, pos)])
    np.testing.assert_allclose(steered[:, :3], base[:, :3], rtol=1e-6)  # causal: earlier positions untouched
    assert np.abs(np.asarray(steered[:, 3:] - base[:, 3:])).max() > 1e-4
    np.testing.assert_allclose(
        cache2["blocks.0.hook_resid_post"][:, 3], cache["blocks.0.hook_resid_post"][:, 3] + vec, rtol=1e-5
    )
    # replacing the stream by its own value changes nothing; replacing by another run's value transplants it
    same = m.apply(
        {"params": params}, x, (replace_at("blocks.1.hook_resid_pre", cache["blocks.1.hook_resid_pre"], jnp.ones(6)),)
    )
    np.testing.assert_allclose(same, base, rtol=1e-6)
    with pytest.raises(ValueError, match="unknown hook"):
        m.apply({"params": params}, x, (add_at("blocks.9.hook_resid_post", vec, pos),))


def test_solu_and_sinusoidal():
    cfg, m, params, x = model_and_params(d_mlp=6, activation="solu", attention="softmax", n_layers=1)
    _, cache = run_with_cache(m, params, x)
    mlp = params["blocks_0"]["mlp"]
    h = np.asarray(cache["blocks.0.hook_resid_mid"], np.float64) @ np.asarray(mlp["w_in"], np.float64)
    e = np.exp(h - h.max(-1, keepdims=True))
    s = h * e / e.sum(-1, keepdims=True)
    s = (s - s.mean(-1, keepdims=True)) / np.sqrt(s.var(-1, keepdims=True) + 1e-6)
    s = s * np.asarray(mlp["ln_solu"]["scale"]) + np.asarray(mlp["ln_solu"]["bias"])
    np.testing.assert_allclose(
        cache["blocks.0.hook_mlp_out"], s @ np.asarray(mlp["w_out"], np.float64), rtol=1e-3, atol=1e-4
    )
    table = np.asarray(sinusoidal_table(10, 6))
    t, i = 7, 2
    assert table[t, 2 * i] == pytest.approx(np.sin(t / 10000 ** (2 * i / 6)), rel=1e-5)
    assert table[t, 2 * i + 1] == pytest.approx(np.cos(t / 10000 ** (2 * i / 6)), rel=1e-5)


def test_discrete_tokens_and_init_scale():
    cfg = ModelConfig(
        input="discrete", vocab_size=11, d_model=16, n_heads=2, max_len=7, pos_encoding="learned", d_mlp=32
    )
    m = Transformer(cfg)
    tokens = jnp.zeros((2, 7), jnp.int32)
    p1 = init_params(m, jax.random.key(0), tokens, 1.0)
    p4 = init_params(m, jax.random.key(0), tokens, 4.0)
    assert m.apply({"params": p1}, tokens).shape == (2, 7, 11)
    np.testing.assert_allclose(p4["blocks_0"]["attn"]["w_qkv"], 2.0 * p1["blocks_0"]["attn"]["w_qkv"], rtol=1e-6)
    np.testing.assert_array_equal(p4["blocks_0"]["ln1"]["scale"], p1["blocks_0"]["ln1"]["scale"])
    w = np.asarray(init_params(m, jax.random.key(1), tokens, 1.0)["blocks_0"]["mlp"]["w_in"])
    assert w.var() == pytest.approx(1 / 16, rel=0.15)  # variance scaling: 1 / fan_in


def test_neg_y_block_readout():
    cfg, m, params, x = model_and_params(
        read_in="identity", d_model=5, readout="neg_y_block", attention="linear", mask="context_keys"
    )
    out, cache = run_with_cache(m, params, x)
    np.testing.assert_allclose(out, -cache["blocks.0.hook_resid_post"][..., -2:], rtol=1e-6)
