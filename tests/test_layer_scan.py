"""Blocks run as one `lax.scan` (`jaxlab.models.layer_scan`) compute what the unrolled blocks compute:
outputs, gradients and every recorded point, with the parameter tree, hook names and per-layer
interventions of the unrolled model."""

import functools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.config import ModelConfig
from jaxlab.models import Transformer, ablate_at, add_at, hook_names, init_params, run_with_cache
from jaxlab.models import transformer as transformer_module

B, T = 3, 6
BASE = dict(d_model=8, d_input=5, d_output=3, max_len=T, n_heads=2)
CASES = {
    "softmax-ln-gelu-3": dict(n_layers=3, d_mlp=16, pos_encoding="learned"),
    "discrete-linear-no-ln-no-mlp-1": dict(n_layers=1, attention="linear", mask="context_keys", layernorm=False,
                                           input="discrete", vocab_size=7, d_input=None),
    "tied-positional-solu-2": dict(n_layers=2, tie_layers=True, attention="positional", layernorm=False, d_mlp=4,
                                   activation="solu", use_bias=False, pos_encoding="sinusoidal"),
}  # fmt: skip


@pytest.fixture
def scan_every_depth(monkeypatch):
    """Scan from one block on, so that depths 1 and 2 go through the loop too."""
    monkeypatch.setattr(transformer_module, "MIN_SCAN_BLOCKS", 1)


def make(abstract=False, **kw):
    """(cfg, the model scanning its blocks, the default unrolled one, perturbed parameters (`abstract`: their
    shapes only), inputs)."""
    return _make(abstract, tuple(sorted(kw.items())))


@functools.cache
def _make(abstract, items):
    cfg = ModelConfig(**{**BASE, **dict(items)})
    if cfg.input == "discrete":
        x = jax.random.randint(jax.random.key(1), (B, T), 0, cfg.vocab_size)
    else:
        x = jax.random.normal(jax.random.key(1), (B, T, cfg.d_input))

    @jax.jit
    def draw(key):  # non-zero biases and norms: every term counts
        params = init_params(Transformer(cfg), key, x)
        leaves, tree = jax.tree_util.tree_flatten(params)
        keys = jax.random.split(jax.random.key(2), len(leaves))
        return jax.tree_util.tree_unflatten(
            tree, [a + 0.2 * jax.random.normal(k, a.shape) for a, k in zip(leaves, keys)]
        )

    params = (jax.eval_shape if abstract else lambda f, k: f(k))(draw, jax.random.key(0))
    return cfg, Transformer(cfg, scan_layers=True), Transformer(cfg), params, x


def scan_lengths(fn, *args) -> list[int]:
    """The lengths of the top-level scans of fn's jaxpr."""
    return [int(e.params["length"]) for e in jax.make_jaxpr(fn)(*args).jaxpr.eqns if e.primitive.name == "scan"]


def both(model, params, x, outputs_at=None):
    """(outputs, gradients of a fixed functional of them, the cache of every point) of one model."""
    n_out = len(outputs_at) if outputs_at else T
    c = jax.random.normal(jax.random.key(3), (B, n_out, model.cfg.d_output or model.cfg.vocab_size))

    def loss(p):
        out = model.apply({"params": p}, x, (), outputs_at)
        return jnp.sum(c * out), out

    (_, out), grads = jax.value_and_grad(loss, has_aux=True)(params)
    return out, grads, run_with_cache(model, params, x)[1]


def assert_grads_close(g_scan, g_unrolled):
    # Forward values agree bit for bit; the weight gradients are reductions over batch and positions
    # that XLA schedules differently inside a loop body than across unrolled blocks (and the tied
    # block's gradient is accumulated over the loop's iterations instead of summed at once): float32
    # rounding, a few ulps of the gradient's scale.
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(g_scan), jax.tree_util.tree_leaves(g_unrolled)):
        scale = float(np.max(np.abs(b))) + 1e-30
        np.testing.assert_allclose(a, b, rtol=0, atol=2e-6 * scale, err_msg=jax.tree_util.keystr(path))


@pytest.mark.parametrize("name", CASES)
def test_scanned_blocks_equal_unrolled_blocks(name, scan_every_depth):
    cfg, scanned, unrolled, params, x = make(**CASES[name])
    assert scan_lengths(lambda p: scanned.apply({"params": p}, x), params) == [cfg.n_layers]
    assert scan_lengths(lambda p: unrolled.apply({"params": p}, x), params) == []
    (out_s, g_s, cache_s), (out_u, g_u, cache_u) = jax.jit(lambda p: (both(scanned, p, x), both(unrolled, p, x)))(
        params
    )
    np.testing.assert_array_equal(out_s, out_u)
    assert list(cache_s) == list(cache_u) == hook_names(cfg)  # the per-layer names, in forward order
    for hook in cache_u:
        np.testing.assert_array_equal(cache_s[hook], cache_u[hook], err_msg=hook)
    assert jax.tree_util.tree_structure(g_s) == jax.tree_util.tree_structure(params)
    assert_grads_close(g_s, g_u)


def test_a_partial_last_block_follows_the_loop(scan_every_depth):
    """`outputs_at` without hooks: blocks 0 .. L-2 in the loop, the last one at the query positions only
    (here also on the y-block's coordinates only)."""
    cfg, scanned, unrolled, params, x = make(n_layers=3, readout="y_block", layernorm=False)
    pos = (1, 3, 5)
    assert scan_lengths(lambda p: scanned.apply({"params": p}, x, (), pos), params) == [cfg.n_layers - 1]
    partial = lambda m, p: jax.value_and_grad(lambda q: jnp.sum(jnp.sin(m.apply({"params": q}, x, (), pos))))(p)
    (out_s, g_s), (out_u, g_u) = jax.jit(lambda p: (partial(scanned, p), partial(unrolled, p)))(params)
    np.testing.assert_array_equal(out_s, out_u)
    assert_grads_close(g_s, g_u)


def checkpoint_tree(cfg: ModelConfig) -> dict:
    """The parameters as a checkpoint holds them (plain dicts of NumPy arrays, written out here from
    the documented layout, `blocks_{i}` per block), drawn at random."""
    D, H, Dh, F, d_in, d_out = cfg.d_model, cfg.n_heads, cfg.head_dim, cfg.d_mlp, cfg.d_input, cfg.d_output
    rng = np.random.default_rng(0)
    draw = lambda *shape: rng.normal(size=shape).astype(np.float32) * 0.3
    block = lambda: {
        "attn": {"w_qkv": draw(D, 3, H, Dh), "w_out": draw(H, Dh, D), "b_qkv": draw(3, H, Dh), "b_out": draw(D)},
        "ln1": {"scale": 1 + draw(D), "bias": draw(D)},
        "ln2": {"scale": 1 + draw(D), "bias": draw(D)},
        "mlp": {"w_in": draw(D, F), "b_in": draw(F), "w_out": draw(F, D), "b_out": draw(D)},
    }
    tree = {f"blocks_{i}": block() for i in range(cfg.n_layers)}
    tree |= {"read_in": {"kernel": draw(d_in, D), "bias": draw(D)}, "ln_final": {"scale": 1 + draw(D), "bias": draw(D)}}
    return tree | {"unembed": {"kernel": draw(D, d_out), "bias": draw(d_out)}, "pos_embed": draw(T, D)}


def test_parameter_tree_and_checkpoints_are_unchanged():
    """The model's parameters have the documented paths and shapes, and such a tree (as a checkpoint
    restores it) runs through the loop with the unrolled model's outputs."""
    cfg, scanned, unrolled, params, x = make(abstract=True, n_layers=4, d_mlp=16, pos_encoding="learned")
    stored = checkpoint_tree(cfg)
    assert jax.tree_util.tree_map(np.shape, dict(params)) == jax.tree_util.tree_map(np.shape, stored)
    assert scan_lengths(lambda p: scanned.apply({"params": p}, x), stored) == [4]
    assert scan_lengths(lambda p: unrolled.apply({"params": p}, x), stored) == []  # the default unrolls
    out_s, out_u = jax.jit(lambda p: (scanned.apply({"params": p}, x), unrolled.apply({"params": p}, x)))(stored)
    np.testing.assert_array_equal(out_s, out_u)


def test_interventions_act_at_the_layer_they_name(scan_every_depth):
    cfg, scanned, unrolled, params, x = make(**CASES["softmax-ln-gelu-3"])
    v = jax.random.normal(jax.random.key(4), (cfg.d_model,))
    at_1 = (add_at("blocks.1.hook_resid_mid", v, jnp.arange(T) == 2),)

    @jax.jit
    def run(p):
        return [
            run_with_cache(m, p, x, interventions=ivs) for m, ivs in ((scanned, ()), (scanned, at_1), (unrolled, at_1))
        ]

    (_, clean), (out, steered), (out_u, steered_u) = run(params)
    np.testing.assert_array_equal(out, out_u)
    names = hook_names(cfg)
    for k, hook in enumerate(names):
        np.testing.assert_array_equal(steered[hook], steered_u[hook], err_msg=hook)
        if k < names.index("blocks.1.hook_resid_mid"):
            np.testing.assert_array_equal(steered[hook], clean[hook], err_msg=hook)  # before the point: untouched
    delta = steered["blocks.1.hook_resid_mid"] - clean["blocks.1.hook_resid_mid"]
    np.testing.assert_allclose(delta, np.zeros((B, T, 1)) + (np.arange(T) == 2)[:, None] * np.asarray(v), atol=1e-6)
    assert not np.allclose(steered["blocks.2.hook_resid_post"], clean["blocks.2.hook_resid_post"])


def test_a_traced_layer_selects_the_intervention(scan_every_depth):
    """One intervention per residual point, switched on by a traced layer index (the clustering probes'
    pattern, `probes.clustering.at_layer`): one compiled loop serves every layer."""
    cfg, scanned, unrolled, params, x = make(**CASES["softmax-ln-gelu-3"])
    v = jax.random.normal(jax.random.key(5), (cfg.d_model,))
    hooks = [f"blocks.{i}.hook_resid_post" for i in range(cfg.n_layers)]

    def at(m, layer):
        ivs = tuple(add_at(h, v, jnp.ones(T) * (i == layer)) for i, h in enumerate(hooks))
        return m.apply({"params": params}, x, ivs)

    layers = jnp.arange(cfg.n_layers)
    out_s, out_u = jax.jit(lambda: [jax.lax.map(lambda l, m=m: at(m, l), layers) for m in (scanned, unrolled)])()
    # Not bit for bit: the two programs differ beyond the loop (a select in its body, a multiply by 0 or
    # 1 unrolled), and XLA fuses the elementwise work around them differently: float32 rounding.
    np.testing.assert_allclose(out_s, out_u, rtol=1e-5, atol=1e-5)
    assert len({float(jnp.sum(o)) for o in out_u}) == 3  # each layer's intervention changes the outputs differently


def test_interventions_inside_a_block_keep_the_unrolled_loop():
    """An intervention inside one block's attention switches that block alone to the explicit path (the
    other two keep `softmax_attention`): no loop. One at a residual point keeps the loop."""
    cfg, scanned, unrolled, params, x = make(abstract=True, n_layers=3, d_mlp=16)
    ivs = (ablate_at("blocks.1.attn.hook_z", heads=jnp.arange(2) == 0),)
    assert scan_lengths(lambda p: scanned.apply({"params": p}, x, ivs), params) == []
    text = str(jax.make_jaxpr(lambda p: scanned.apply({"params": p}, x, ivs))(params))
    assert len(re.findall(r"name=softmax_attention\b", text)) == 2
    residual = (add_at("blocks.1.hook_resid_post", jnp.ones(8), None),)
    assert scan_lengths(lambda p: scanned.apply({"params": p}, x, residual), params) == [3]


def test_the_loop_body_does_not_grow_with_depth():
    """The program compiled for 6 blocks holds one block, as the one for 3 does."""
    sizes = []
    for L in (3, 6):
        cfg, scanned, _, params, x = make(abstract=True, n_layers=L, d_mlp=16)
        (eqn,) = [e for e in jax.make_jaxpr(lambda p: scanned.apply({"params": p}, x))(params).jaxpr.eqns
                  if e.primitive.name == "scan"]  # fmt: skip
        sizes.append(len(eqn.params["jaxpr"].jaxpr.eqns))
    assert sizes[0] == sizes[1]
