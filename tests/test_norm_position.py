"""`model.norm_position`: the LayerNorm on the attention input (pre, the default) or on its output (attn_out,
Sander et al. 2024's augmented.py), against NumPy forward passes written here."""

import jax
import numpy as np
import pytest

from jaxlab.config import ModelConfig
from jaxlab.errors import ConfigError
from jaxlab.experiments import icl_autoregressive as iar
from jaxlab.models import Transformer, hook_names, init_params, run_with_cache

B, T, D, DOUT = 2, 5, 6, 2
# augmented.py's shape: one linear-attention head of width D on tokens read in as they are, biases, a linear read-out
BASE = dict(
    attention="linear", mask="causal", d_model=D, d_input=D, d_output=DOUT, max_len=T, n_heads=1, d_head=D,
    read_in="identity", readout="linear", use_bias=True, layernorm=True,
)  # fmt: skip


def make(seed=0, **kw):
    cfg = ModelConfig(**{**BASE, **kw})
    m = Transformer(cfg)
    x = jax.random.normal(jax.random.key(100 + seed), (B, T, D))
    params = init_params(m, jax.random.key(seed), x)
    # non-trivial LayerNorm scales and every bias, so each term of the forward pass is exercised
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed + 7), len(leaves))
    params = jax.tree_util.tree_unflatten(tree, [a + 0.3 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)])
    return cfg, m, params, x


def np_ln(x, p):
    """(x - mean) / sqrt(var + 1e-6) * scale + bias over the last axis."""
    x = np.asarray(x, np.float64)
    xc = x - x.mean(-1, keepdims=True)
    return xc / np.sqrt((xc**2).mean(-1, keepdims=True) + 1e-6) * np.asarray(p["scale"]) + np.asarray(p["bias"])


def np_attn(x, p):
    """Causal linear attention, one head: sum_{t' <= t} (q_t . k_t') v_t' W_O + b_O, q = x W_Q + b_Q (and k, v)."""
    w, b = np.asarray(p["w_qkv"], np.float64), np.asarray(p["b_qkv"], np.float64)
    q, k, v = (np.einsum("btd,dhe->bthe", x, w[:, i]) + b[i] for i in range(3))
    s = np.einsum("bqhe,bkhe->bhqk", q, k) * np.tril(np.ones((T, T)))
    z = np.einsum("bhqk,bkhe->bqhe", s, v)
    return np.einsum("bqhe,hed->bqd", z, np.asarray(p["w_out"], np.float64)) + np.asarray(p["b_out"])


def np_mlp(x, p):
    h = x @ np.asarray(p["w_in"], np.float64) + np.asarray(p["b_in"])
    h = 0.5 * h * (1 + np.tanh(np.sqrt(2 / np.pi) * (h + 0.044715 * h**3)))  # jax.nn.gelu's default (tanh) form
    return h @ np.asarray(p["w_out"], np.float64) + np.asarray(p["b_out"])


def np_readout(x, p):
    return x @ np.asarray(p["kernel"], np.float64) + np.asarray(p["bias"])


def test_default_is_pre_and_bad_value_is_refused():
    assert ModelConfig().norm_position == "pre"
    with pytest.raises(ConfigError) as err:
        ModelConfig(norm_position="post")
    msg = str(err.value)
    assert "model.norm_position" in msg and "pre" in msg and "attn_out" in msg
    assert ModelConfig(layernorm=False, norm_position="attn_out").inert_fields()["norm_position"]


def test_attn_out_block_is_x_plus_ln_of_attention():
    """augmented.py: y = W_r (x + LN(Attn(x))) + b_r, no final LayerNorm."""
    cfg, m, params, x = make(norm_position="attn_out")
    assert "ln_final" not in params and set(params["blocks_0"]) == {"attn", "ln1"}
    blk = params["blocks_0"]
    xn = np.asarray(x, np.float64)
    want = np_readout(xn + np_ln(np_attn(xn, blk["attn"]), blk["ln1"]), params["unembed"])
    got = np.asarray(m.apply({"params": params}, x))
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-4)
    # the same model through the few-query path the training loss may use
    got_last = np.asarray(m.apply({"params": params}, x, outputs_at=(T - 1,)))
    np.testing.assert_allclose(got_last[:, 0], want[:, -1], rtol=2e-4, atol=2e-4)


def test_pre_block_unchanged():
    """The default: y = W_r LN_f(x + Attn(LN1(x))) + b_r."""
    cfg, m, params, x = make(norm_position="pre")
    blk = params["blocks_0"]
    xn = np.asarray(x, np.float64)
    want = np_readout(np_ln(xn + np_attn(np_ln(xn, blk["ln1"]), blk["attn"]), params["ln_final"]), params["unembed"])
    np.testing.assert_allclose(np.asarray(m.apply({"params": params}, x)), want, rtol=2e-4, atol=2e-4)
    # bit for bit the model of a config that does not name the field
    cfg0 = ModelConfig(**BASE)
    np.testing.assert_array_equal(
        np.asarray(Transformer(cfg0).apply({"params": params}, x)), m.apply({"params": params}, x)
    )
    names = hook_names(cfg)
    assert (
        names.index("blocks.0.ln1.hook_scale") < names.index("blocks.0.attn.hook_q") and "ln_final.hook_scale" in names
    )


def test_attn_out_with_mlp_and_hooks():
    """x <- x + LN1(Attn(x)); x <- x + LN2(MLP(x)); hook_attn_out / hook_mlp_out are the terms added to the stream and
    ln1.hook_scale is the attention output's sqrt(var + eps)."""
    cfg, m, params, x = make(norm_position="attn_out", d_mlp=8)
    blk = params["blocks_0"]
    xn = np.asarray(x, np.float64)
    a = np_attn(xn, blk["attn"])
    mid = xn + np_ln(a, blk["ln1"])
    post = mid + np_ln(np_mlp(mid, blk["mlp"]), blk["ln2"])
    out, cache = run_with_cache(m, params, x)
    np.testing.assert_allclose(np.asarray(out), np_readout(post, params["unembed"]), rtol=2e-4, atol=2e-4)
    names = hook_names(cfg)
    assert "ln_final.hook_scale" not in names
    order = ["attn.hook_z", "ln1.hook_scale", "hook_attn_out", "mlp.hook_post", "ln2.hook_scale", "hook_mlp_out"]
    idx = [names.index(f"blocks.0.{n}") for n in order]
    assert idx == sorted(idx)
    np.testing.assert_allclose(np.asarray(cache["blocks.0.hook_resid_mid"]), mid, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(np.asarray(cache["blocks.0.hook_resid_post"]), post, rtol=2e-4, atol=2e-4)
    np.testing.assert_allclose(np.asarray(cache["blocks.0.hook_attn_out"]), mid - xn, rtol=2e-4, atol=2e-4)
    scale = np.sqrt(a.var(-1, keepdims=True) + 1e-6)
    np.testing.assert_allclose(np.asarray(cache["blocks.0.ln1.hook_scale"]), scale, rtol=2e-4)


def test_paper_fig5_uses_augmented_py_placement():
    cfg = iar.paper_fig5()
    assert cfg.model.layernorm and cfg.model.norm_position == "attn_out" and not cfg.model.final_norm
    assert not iar.is_plain(cfg)
    for key, value in (("model.attention", "constrained_gd"), ("probe.start", "gd")):
        with pytest.raises(ConfigError):
            iar.check_config(cfg.derive("x", {key: value}).resolve())


def test_attn_out_two_layers_scanned_equal_unrolled_and_numpy():
    """Two attn_out blocks, unrolled and as one lax.scan (`scan_layers`): x <- x + LN_i(Attn_i(x)) for i = 0, 1."""
    cfg, m, params, x = make(norm_position="attn_out", n_layers=2)
    xn = np.asarray(x, np.float64)
    for i in range(2):
        blk = params[f"blocks_{i}"]
        xn = xn + np_ln(np_attn(xn, blk["attn"]), blk["ln1"])
    want = np_readout(xn, params["unembed"])
    unrolled = np.asarray(m.apply({"params": params}, x))
    scanned = np.asarray(Transformer(cfg, scan_layers=True).apply({"params": params}, x))
    np.testing.assert_allclose(unrolled, want, rtol=5e-4, atol=5e-4)
    np.testing.assert_allclose(scanned, unrolled, rtol=1e-5, atol=1e-5)
