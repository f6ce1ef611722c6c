"""TransformerLens hook points, interventions and the activation cache against a NumPy forward pass."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.config import ModelConfig
from jaxlab.models import (
    ActivationCache,
    Transformer,
    ablate_at,
    add_at,
    hook_names,
    init_params,
    logit_lens,
    param_path,
    params_at,
    patch_from,
    replace_at,
    run_with_cache,
)

B, T = 3, 6
BASE = dict(d_model=8, d_input=5, d_output=3, max_len=T, n_heads=2)
# (b)-(d): a 2-layer softmax model with a gelu MLP, LayerNorms, biases and learned positions
FULL = dict(attention="softmax", mask="causal", n_layers=2, d_mlp=16, layernorm=True, use_bias=True,
            pos_encoding="learned")  # fmt: skip


def make(seed=0, **kw):
    cfg = ModelConfig(**{**BASE, **kw})
    m = Transformer(cfg)
    x = jax.random.normal(jax.random.key(100 + seed), (B, T, cfg.d_input))
    return cfg, m, init_params(m, jax.random.key(seed), x), x


def perturbed(params, seed):
    """Non-zero biases and norms, so every term of the forward pass is exercised."""
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(seed), len(leaves))
    return jax.tree_util.tree_unflatten(tree, [a + 0.2 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)])


# -- (a) names and shapes ---------------------------------------------------------------------------
def block(i, ln, mlp, solu=False):
    b = f"blocks.{i}"
    out = [f"{b}.hook_resid_pre"] + ([f"{b}.ln1.hook_scale"] if ln else [])
    out += [f"{b}.attn.hook_{n}" for n in ("q", "k", "v", "attn_scores", "pattern", "z")] + [f"{b}.hook_attn_out"]
    if mlp:
        out += [f"{b}.hook_resid_mid"] + ([f"{b}.ln2.hook_scale"] if ln else [])
        out += (
            [f"{b}.mlp.hook_pre"]
            + ([f"{b}.mlp.hook_mid"] if solu else [])
            + [f"{b}.mlp.hook_post", f"{b}.hook_mlp_out"]
        )
    return [*out, f"{b}.hook_resid_post"]


NAME_CASES = [
    (dict(attention="linear", mask="context_keys", n_layers=1, layernorm=False), ["hook_embed", *block(0, False, False)]),
    (FULL, ["hook_embed", "hook_pos_embed", *block(0, True, True), *block(1, True, True), "ln_final.hook_scale"]),
    (dict(attention="linear", mask="causal", n_layers=3, tie_layers=True, layernorm=False, d_mlp=4, activation="solu",
          pos_encoding="sinusoidal"),
     ["hook_embed", "hook_pos_embed", *(n for i in range(3) for n in block(i, False, True, solu=True))]),
]  # fmt: skip


def expected_shape(name, cfg):
    D, H, Dh, F = cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.d_mlp
    leaf = name.rsplit(".", 1)[-1]
    if leaf == "hook_scale":
        return (B, T, 1)
    if leaf in ("hook_q", "hook_k", "hook_v", "hook_z"):
        return (B, T, H, Dh)
    if leaf in ("hook_attn_scores", "hook_pattern"):
        return (B, H, T, T)
    if ".mlp." in name:
        return (B, T, F)
    return (B, T, D)


@pytest.mark.parametrize("kw, names", NAME_CASES)
def test_hook_names_and_cached_shapes(kw, names):
    cfg, m, params, x = make(**kw)
    assert hook_names(cfg) == names
    out, cache = run_with_cache(m, params, x)
    assert isinstance(cache, ActivationCache) and list(cache) == names
    for name in names:
        assert cache[name].shape == expected_shape(name, cfg), name
    np.testing.assert_allclose(out, m.apply({"params": params}, x), rtol=1e-5, atol=1e-6)


def test_tied_blocks_have_their_own_points():
    cfg, m, params, x = make(**NAME_CASES[2][0])
    _, clean = run_with_cache(m, params, x)
    _, hit = run_with_cache(m, params, x, interventions=[ablate_at("blocks.1.attn.hook_z")])
    np.testing.assert_array_equal(hit["blocks.1.hook_resid_pre"], clean["blocks.1.hook_resid_pre"])
    np.testing.assert_array_equal(hit["blocks.1.attn.hook_z"], 0.0)
    np.testing.assert_array_equal(hit["blocks.1.hook_attn_out"], 0.0)  # z = 0, and b_O starts at 0
    assert not np.allclose(hit["blocks.2.hook_resid_pre"], clean["blocks.2.hook_resid_pre"])


# -- (b) a NumPy forward pass -----------------------------------------------------------------------
def np_forward(p, x, cfg, hooks=None):
    """The FULL model in float64 NumPy from its params: (outputs, {hook: activation}); `hooks` maps a
    hook name to a function of its activation (the intervention), applied before recording."""
    hooks, cache = hooks or {}, {}
    f = lambda a: np.asarray(a, np.float64)

    def hook(name, a):
        a = hooks[name](a.copy()) if name in hooks else a
        cache[name] = a
        return a

    def ln(a, q, prefix):
        c = a - a.mean(-1, keepdims=True)
        s = hook(f"{prefix}.hook_scale", np.sqrt((c * c).mean(-1, keepdims=True) + 1e-6))
        return c / s * f(q["scale"]) + f(q["bias"])

    e = hook("hook_embed", f(x) @ f(p["read_in"]["kernel"]) + f(p["read_in"]["bias"]))
    r = e + hook("hook_pos_embed", np.broadcast_to(f(p["pos_embed"])[: x.shape[1]], e.shape))
    causal = np.tril(np.ones((x.shape[1],) * 2, bool))
    for i in range(cfg.n_layers):
        b, pb = f"blocks.{i}", p[f"blocks_{i}"]
        r = hook(f"{b}.hook_resid_pre", r)
        h = ln(r, pb["ln1"], f"{b}.ln1")
        w, bias = f(pb["attn"]["w_qkv"]), f(pb["attn"]["b_qkv"])
        q, k, v = (
            hook(f"{b}.attn.hook_{n}", np.einsum("btd,dhk->bthk", h, w[:, j]) + bias[j]) for j, n in enumerate("qkv")
        )
        s = hook(
            f"{b}.attn.hook_attn_scores",
            np.where(causal, np.einsum("bqhk,bthk->bhqt", q, k) / np.sqrt(cfg.head_dim), -np.inf),
        )
        a = np.exp(s - s.max(-1, keepdims=True))
        pattern = hook(f"{b}.attn.hook_pattern", a / a.sum(-1, keepdims=True))
        z = hook(f"{b}.attn.hook_z", np.einsum("bhqt,bthk->bqhk", pattern, v))
        r = r + hook(
            f"{b}.hook_attn_out", np.einsum("bqhk,hkd->bqd", z, f(pb["attn"]["w_out"])) + f(pb["attn"]["b_out"])
        )
        r = hook(f"{b}.hook_resid_mid", r)
        pre = hook(f"{b}.mlp.hook_pre", ln(r, pb["ln2"], f"{b}.ln2") @ f(pb["mlp"]["w_in"]) + f(pb["mlp"]["b_in"]))
        post = hook(f"{b}.mlp.hook_post", 0.5 * pre * (1 + np.tanh(np.sqrt(2 / np.pi) * (pre + 0.044715 * pre**3))))
        r = r + hook(f"{b}.hook_mlp_out", post @ f(pb["mlp"]["w_out"]) + f(pb["mlp"]["b_out"]))
        r = hook(f"{b}.hook_resid_post", r)
    out = ln(r, p["ln_final"], "ln_final") @ f(p["unembed"]["kernel"]) + f(p["unembed"]["bias"])
    return out, cache


def assert_matches(cache, ref, names=None, rtol=1e-4, atol=1e-5):
    for name in names or ref:
        got, want = np.asarray(cache[name]), ref[name]
        if name.endswith("hook_attn_scores"):  # masked entries: the float32 minimum here, -inf in NumPy
            keep = np.isfinite(want)
            got, want = got[keep], want[keep]
        np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=name)


def test_every_point_matches_numpy():
    cfg, m, params, x = make(**FULL)
    params = perturbed(params, 1)
    out, cache = run_with_cache(m, params, x)
    ref_out, ref = np_forward(params, x, cfg)
    assert set(ref) == set(hook_names(cfg))
    assert_matches(cache, ref)
    np.testing.assert_allclose(out, ref_out, rtol=1e-4, atol=1e-5)
    masked = ~np.tril(np.ones((T, T), bool))
    assert np.all(np.asarray(cache["blocks.0.attn.hook_attn_scores"])[..., masked] == np.finfo(np.float32).min)


# -- (c) ablation and patching, vmapped over runs ---------------------------------------------------
def stacked_runs(m, x, n=8):
    runs = [init_params(m, jax.random.key(10 + r), x) for r in range(n)]
    return runs, jax.tree_util.tree_map(lambda *a: jnp.stack(a), *runs)


def test_head_ablation_and_patching_vmapped_over_runs_match_numpy():
    cfg, m, _, xa = make(**FULL)
    xb = jax.random.normal(jax.random.key(7), xa.shape)
    runs, stacked = stacked_runs(m, xa)
    H, last = cfg.n_heads, jnp.arange(T) == T - 1
    z0, mid1 = "blocks.0.attn.hook_z", "blocks.1.hook_resid_mid"

    caches_b = jax.jit(jax.vmap(lambda p: run_with_cache(m, p, xb)[1]))(stacked)  # a cache out of jit and vmap
    assert isinstance(caches_b, ActivationCache) and caches_b[z0].shape == (8, B, T, H, cfg.head_dim)
    # interventions are data: a batch of them, one per run, vmaps with the runs' parameters
    patches = jax.vmap(lambda c: (patch_from(c, mid1, positions=last), patch_from(c, z0, heads=jnp.arange(H) == 0)))(
        caches_b
    )
    ablate = ablate_at(z0, heads=jnp.arange(H) == 1)

    @jax.jit
    @jax.vmap
    def three(p, ivs):
        run = lambda iv: m.apply({"params": p}, xa, (iv,))
        return run(ablate), run(ivs[0]), run(ivs[1])

    ablated, patched_mid, patched_head = three(stacked, patches)
    for r, p in enumerate(runs):
        _, cache_b = np_forward(p, xb, cfg)

        def set_at(index, source):
            def f(a):
                a[index] = 0.0 if source is None else source[index]
                return a

            return f

        want_ablated, _ = np_forward(p, xa, cfg, {z0: set_at((slice(None), slice(None), 1), None)})
        want_mid, _ = np_forward(p, xa, cfg, {mid1: set_at((slice(None), -1), cache_b[mid1])})
        want_head, _ = np_forward(p, xa, cfg, {z0: set_at((slice(None), slice(None), 0), cache_b[z0])})
        np.testing.assert_allclose(ablated[r], want_ablated, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(patched_mid[r], want_mid, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(patched_head[r], want_head, rtol=1e-4, atol=1e-5)
    # patching the last position only leaves the earlier positions alone (causal mask)
    clean = jax.vmap(lambda p: m.apply({"params": p}, xa))(stacked)
    np.testing.assert_allclose(patched_mid[:, :, :-1], clean[:, :, :-1], rtol=1e-5, atol=1e-6)


# -- (d) mean ablation ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "hook, positions, heads, index",
    [
        ("blocks.0.hook_attn_out", np.arange(T) >= 3, None, (slice(None), slice(3, None))),
        ("blocks.1.attn.hook_z", None, np.arange(2) == 1, (slice(None), slice(None), 1)),
        ("blocks.0.attn.hook_pattern", np.arange(T) == 4, np.arange(2) == 0, (slice(None), 0, 4)),
        ("blocks.1.mlp.hook_post", None, None, (slice(None),)),
    ],
)
def test_mean_ablation_is_the_batch_mean(hook, positions, heads, index):
    cfg, m, params, x = make(**FULL)
    params = perturbed(params, 2)
    _, clean = np_forward(params, x, cfg)
    mean = clean[hook].mean(axis=0, keepdims=True)

    def f(a):
        a[index] = np.broadcast_to(mean, a.shape)[index]
        return a

    want, ref = np_forward(params, x, cfg, {hook: f})
    out, cache = run_with_cache(m, params, x, interventions=[ablate_at(hook, positions, heads, mode="mean")])
    np.testing.assert_allclose(cache[hook], ref[hook], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out, want, rtol=1e-4, atol=1e-5)
    # the same as replacing by the batch mean computed outside
    iv = replace_at(hook, jnp.asarray(mean, jnp.float32), positions, heads)
    np.testing.assert_allclose(m.apply({"params": params}, x, (iv,)), out, rtol=1e-4, atol=1e-5)


def test_interventions_at_norm_and_embedding_points():
    cfg, m, params, x = make(**FULL)
    params = perturbed(params, 3)
    base, cache = run_with_cache(m, params, x)
    same = m.apply(
        {"params": params}, x, (replace_at("blocks.1.ln2.hook_scale", cache["blocks.1.ln2.hook_scale"], None),)
    )
    np.testing.assert_allclose(same, base, rtol=1e-5, atol=1e-6)  # the explicit LayerNorm path
    doubled = m.apply(
        {"params": params}, x, (replace_at("ln_final.hook_scale", 2 * cache["ln_final.hook_scale"], None),)
    )
    assert not np.allclose(doubled, base, atol=1e-3)
    _, hit = run_with_cache(m, params, x, interventions=[ablate_at("hook_pos_embed")])
    np.testing.assert_array_equal(hit["blocks.0.hook_resid_pre"], cache["hook_embed"])
    steer = add_at("blocks.0.attn.hook_v", jnp.ones(cfg.head_dim), jnp.arange(T) == 2, heads=jnp.arange(2) == 1)
    _, hit = run_with_cache(m, params, x, interventions=[steer])
    delta = np.asarray(hit["blocks.0.attn.hook_v"] - cache["blocks.0.attn.hook_v"])
    expect = np.zeros_like(delta)
    expect[:, 2, 1] = 1.0
    np.testing.assert_allclose(delta, expect, atol=1e-6)


# -- (e) the fast paths without hooks -------------------------------------------------------------
def calls(m, params, x, *args, **kw):
    """(custom-VJP calls by name, jaxpr text) of `m.apply({"params": params}, x, *args, **kw)`."""
    text = str(jax.make_jaxpr(lambda p: m.apply({"params": p}, x, *args, **kw))(params))
    return {k: len(re.findall(rf"name={k}\b", text)) for k in ("softmax_attention", "layer_norm")}, text


def test_without_hooks_the_fast_paths_are_taken():
    cfg, m, params, x = make(**FULL)
    # the engine's training call: block 0 in `softmax_attention`, the last block's one query on the query side
    train, _ = calls(m, params, x, (), (T - 1,))
    assert train == {"softmax_attention": 1, "layer_norm": 5}
    plain, _ = calls(m, params, x)
    assert plain == {"softmax_attention": 2, "layer_norm": 5}
    steered, _ = calls(m, params, x, (add_at("blocks.0.hook_resid_post", jnp.ones(8), jnp.ones(T)),))
    assert steered == plain  # residual interventions keep every fast path
    inner, _ = calls(m, params, x, (ablate_at("blocks.0.attn.hook_z"), ablate_at("blocks.1.ln1.hook_scale")))
    assert inner == {"softmax_attention": 1, "layer_norm": 4}  # only the targeted modules go explicit
    recorded, _ = calls(m, params, x, mutable=["intermediates"])
    assert recorded == {"softmax_attention": 0, "layer_norm": 5}  # recording: explicit attention, same LayerNorm

    # the q (K^T V) linear path builds no T x T matrix unless a point of its attention is recorded or targeted
    cfg, m, params, x = make(attention="linear", mask="context_keys", n_heads=2, use_bias=False, layernorm=False)
    square = f"f32[{B},2,{T},{T}]"
    assert square not in calls(m, params, x)[1]
    assert square not in calls(m, params, x, (), (T - 1,))[1]
    assert square not in calls(m, params, x, (add_at("blocks.0.hook_resid_pre", jnp.ones(8), jnp.ones(T)),))[1]
    assert square in calls(m, params, x, mutable=["intermediates"])[1]
    assert square in calls(m, params, x, (ablate_at("blocks.0.attn.hook_q"),))[1]


@pytest.mark.parametrize(
    "kw",
    [
        dict(attention="linear", mask="causal", layernorm=True, d_mlp=8, n_layers=2),  # explicit path = fast path
        dict(attention="positional", mask="causal", layernorm=False, pos_encoding="sinusoidal"),
    ],
)
def test_recording_changes_no_number_where_the_paths_coincide(kw):
    cfg, m, params, x = make(**kw)
    params = perturbed(params, 4)
    out, _ = m.apply({"params": params}, x, mutable=["intermediates"])
    np.testing.assert_array_equal(out, m.apply({"params": params}, x))


def test_recording_agrees_with_the_training_path():
    cfg, m, params, x = make(**FULL)
    params = perturbed(params, 5)
    pos = (1, 3, 5)
    fast = m.apply({"params": params}, x, (), pos)
    recorded, _ = m.apply({"params": params}, x, (), pos, mutable=["intermediates"])
    np.testing.assert_allclose(recorded, fast, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(fast, m.apply({"params": params}, x)[:, list(pos)], rtol=1e-5, atol=1e-6)


# -- (f) the cache's helpers ------------------------------------------------------------------------
@pytest.mark.parametrize("kw", [FULL, dict(attention="linear", mask="causal", n_layers=3, layernorm=False)])
def test_decompose_accumulate_and_logit_lens(kw):
    cfg, m, params, x = make(**kw)
    params = perturbed(params, 6)
    out, cache = jax.jit(lambda p: run_with_cache(m, p, x))(params)
    L, D = cfg.n_layers, cfg.d_model
    for layer in range(L + 1):
        parts, labels = cache.decompose_resid(layer, return_labels=True)
        stream = cache[f"blocks.{layer}.hook_resid_pre"] if layer < L else cache[f"blocks.{L - 1}.hook_resid_post"]
        np.testing.assert_allclose(parts.sum(0), stream, rtol=1e-5, atol=1e-5)
        per_block = 2 if cfg.d_mlp else 1
        assert parts.shape == (1 + (cfg.pos_encoding != "none") + per_block * layer, B, T, D)
        assert labels[0] == "embed" and (
            layer == 0 or labels[-1] == f"{layer - 1}_{'mlp' if cfg.d_mlp else 'attn'}_out"
        )
    if cfg.d_mlp:
        np.testing.assert_allclose(
            cache.decompose_resid(1, mlp_input=True).sum(0), cache["blocks.1.hook_resid_mid"], rtol=1e-5, atol=1e-5
        )
        resid, labels = cache.accumulated_resid(incl_mid=True, return_labels=True)
        assert resid.shape == (2 * L + 1, B, T, D) and labels[:3] == ["0_pre", "0_mid", "1_pre"]
    assert cache.accumulated_resid().shape == (L + 1, B, T, D)
    assert cache.accumulated_resid(1).shape == (2, B, T, D)
    np.testing.assert_array_equal(cache.accumulated_resid(0)[0], cache["blocks.0.hook_resid_pre"])
    np.testing.assert_array_equal(cache.stack("hook_resid_post")[-1], cache[f"blocks.{L - 1}.hook_resid_post"])
    assert cache.stack("attn.hook_pattern").shape == (L, B, cfg.n_heads, T, T)
    lens = logit_lens(m, params, cache)
    assert lens.shape == (L + 1, *out.shape)
    np.testing.assert_allclose(lens[-1], out, rtol=1e-5, atol=1e-5)
    assert isinstance(dict(cache), dict) and len(cache) == len(hook_names(cfg))


# -- (g) parameter paths ----------------------------------------------------------------------------
def test_params_at_resolves_transformerlens_paths():
    cfg, m, params, x = make(**FULL)
    assert params_at(params, "blocks.1.attn") is params["blocks_1"]["attn"]
    assert params_at(params, "blocks.0.attn.w_qkv") is params["blocks_0"]["attn"]["w_qkv"]
    assert params_at(params, "blocks.1.ln2", cfg) is params["blocks_1"]["ln2"]
    assert params_at(params, "embed", cfg) is params["read_in"]  # continuous tokens: the read-in
    assert params_at(params, "pos_embed") is params["pos_embed"]
    assert param_path("blocks.1.mlp.w_in") == ("blocks_1", "mlp", "w_in")
    with pytest.raises(ValueError, match="block 2 of a model with 2 blocks"):
        param_path("blocks.2.attn", cfg)
    cfg, m, tied, x = make(attention="linear", n_layers=3, tie_layers=True, d_mlp=4)
    assert params_at(tied, "blocks.2.mlp", cfg) is tied["blocks_0"]["mlp"]
    assert param_path("blocks.1.attn", cfg) == ("blocks_0", "attn")
    with pytest.raises(KeyError, match="pass cfg"):
        params_at(tied, "blocks.1.attn")
    with pytest.raises(KeyError, match="there: b_out, b_qkv, w_out, w_qkv"):
        params_at(tied, "blocks.0.attn.w_nope", cfg)


# -- (h) bad names ----------------------------------------------------------------------------------
def test_bad_hook_names_list_the_allowed_ones():
    cfg, m, params, x = make(**FULL)
    allowed = re.escape(", ".join(hook_names(cfg)))
    with pytest.raises(ValueError, match=rf"unknown hook 'blocks\.0\.attn\.hook_result' \(allowed: {allowed}\)"):
        m.apply({"params": params}, x, (ablate_at("blocks.0.attn.hook_result"),))
    with pytest.raises(ValueError, match=r"unknown hooks \['blocks\.2\.hook_resid_pre'\] \(allowed: hook_embed, "):
        run_with_cache(m, params, x, names=["blocks.2.hook_resid_pre"])
    with pytest.raises(ValueError, match="has no head axis"):
        m.apply({"params": params}, x, (ablate_at("blocks.0.hook_attn_out", heads=jnp.ones(2)),))
    with pytest.raises(ValueError, match="mode must be one of zero, mean"):
        ablate_at("blocks.0.attn.hook_z", mode="add")
    _, cache = run_with_cache(m, params, x, names=["blocks.0.hook_resid_pre"])
    with pytest.raises(ValueError, match="not in the cache"):
        patch_from(cache, "blocks.0.attn.hook_z")
    with pytest.raises(KeyError, match="names=None caches every point"):
        cache.decompose_resid()
