"""Blocks run as one `lax.scan` (`jaxlab.models.layer_scan`) compute what the unrolled blocks compute:
outputs, gradients and every recorded point, with the parameter tree, hook names and per-layer
interventions of the unrolled model. With `train.scan_layers` a training state holds the blocks
stacked ([L, ...] per weight): its steps are the unrolled steps, and checkpoints, outcomes and
resumes see the per-block layout (`jaxlab.train.param_layout`)."""

import functools
import json
import re
import signal

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _runs import run_cfg
from jax.flatten_util import ravel_pytree

from jaxlab import interrupt
from jaxlab.cli import main
from jaxlab.config import ModelConfig
from jaxlab.models import Transformer, ablate_at, add_at, hook_names, init_params, params_at, run_with_cache
from jaxlab.models import transformer as transformer_module
from jaxlab.models.layer_scan import STACKED, stack_blocks, unstack_blocks
from jaxlab.registry import get_experiment, load_run_group
from jaxlab.train import make_train, with_seeds
from jaxlab.train.checkpoint import GroupCheckpointer
from jaxlab.train.hparams import default_hparams
from jaxlab.train.param_layout import per_block_order, state_per_block, state_stacked
from jaxlab.train.progress import Progress

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


# -- the stacked parameter layout of a training state (`train.scan_layers`) --------------------------------------
def test_stack_and_unstack_blocks_round_trip_and_the_model_reads_both():
    """`stack_blocks` puts block i's leaves at index i of one [L, ...] leaf per weight (after any run axes),
    `unstack_blocks` gives the per-block tree back bit for bit, and the model computes the same numbers from
    either layout, reading the stacked one without stacking anything."""
    cfg, scanned, unrolled, params, x = make(n_layers=3, d_mlp=16, pos_encoding="learned")
    params = jax.tree_util.tree_map(np.asarray, dict(params))
    stacked = stack_blocks(params)
    assert sorted(stacked) == sorted([STACKED, *(k for k in params if not k.startswith("blocks_"))])
    for path, leaf in jax.tree_util.tree_leaves_with_path(stacked[STACKED]):
        for i in range(3):  # written out: block i's own leaf at that path
            own = functools.reduce(lambda node, key: node[key.key], path, params[f"blocks_{i}"])
            np.testing.assert_array_equal(leaf[i], own)
    assert all(isinstance(v, np.ndarray) for v in jax.tree_util.tree_leaves(stacked))  # host trees stay host trees
    for tree in (unstack_blocks(stacked, 3), unstack_blocks(params, 3)):  # the inverse; per-block trees pass
        assert jax.tree_util.tree_structure(tree) == jax.tree_util.tree_structure(params)
        jax.tree_util.tree_map(np.testing.assert_array_equal, tree, params)
    with pytest.raises(ValueError, match="n_layers=4"):
        unstack_blocks(stacked, 4)
    # a run axis in front: the layer axis after it, and back
    runs = jax.tree_util.tree_map(lambda a: np.stack([a, 2 * a]), params)
    stacked_runs = stack_blocks(runs, axis=1)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_array_equal(a[1], 2 * b), stacked_runs, stacked)
    jax.tree_util.tree_map(np.testing.assert_array_equal, unstack_blocks(stacked_runs, 3, axis=1), runs)
    # the raveled vectors of the two layouts are one permutation of each other
    flat_blocks, flat_stacked = ravel_pytree(params)[0], ravel_pytree(stacked)[0]
    np.testing.assert_array_equal(flat_blocks, flat_stacked[per_block_order(stacked, 3)])

    @jax.jit
    def outputs(p):  # every path of the model: the loop, a partial last block outside it, recording
        return [(m.apply({"params": p}, x), m.apply({"params": p}, x, (), (1, 5)), dict(run_with_cache(m, p, x)[1]))
                for m in (scanned, unrolled)]  # fmt: skip

    jax.tree_util.tree_map(np.testing.assert_array_equal, outputs(stacked), outputs(params))
    text = lambda p: str(jax.make_jaxpr(lambda q: scanned.apply({"params": q}, x))(p))
    assert "stack[" in text(params) and "stack[" not in text(stacked)  # no stacking per call
    np.testing.assert_array_equal(params_at(stacked, "blocks.2.attn")["w_qkv"], params["blocks_2"]["attn"]["w_qkv"])


def _trained(cfg, steps):
    """(train, its state after `steps` steps from key 0, and the losses) of `cfg`: one compiled `advance`."""
    train = make_train(cfg)
    hp = default_hparams(cfg)
    run = jax.jit(lambda key: jax.lax.scan(lambda st, _: train.advance(st, hp, 1), train.init(key), length=steps))
    state, losses = run(jax.random.key(0))
    return train, state, losses


@pytest.fixture(scope="module")
def trained():
    """A 3-block model trained 3 steps unrolled (per-block parameters) and with `train.scan_layers` (stacked):
    adamw with clipping, gradients summed over 4 micro-batches."""
    settings = {"model.n_layers": 3, "optim.name": "adamw", "optim.weight_decay": 0.01, "optim.clip_norm": 1e-4,
                "train.batch_size": 16, "train.micro_batch": 4}  # fmt: skip
    cfg = get_experiment("icl-regression").preset("smoke").with_overrides(settings)
    return _trained(cfg, 3), _trained(cfg.set("train.scan_layers", True), 3)


def test_training_on_stacked_blocks_equals_unrolled_training(trained):
    """Steps on the stacked layout are the unrolled steps: same losses, and after unstacking the same parameters and
    optimizer state, bit for bit (this model's forward and backward are the same float operations in the loop;
    the clipping norm (1e-4: every step clips) sums the same squares in another order, which happens to round
    alike here)."""
    (plain, a, loss_a), (scan, b, loss_b) = trained
    assert not plain.stacked and scan.stacked and STACKED in b.params and "blocks_0" not in b.params
    n = sum(np.size(v) for v in jax.tree_util.tree_leaves(a.params))
    assert {np.shape(v)[0] for v in jax.tree_util.tree_leaves(b.params[STACKED])} == {3}
    np.testing.assert_array_equal(loss_a, loss_b)
    assert len(set(np.asarray(loss_a).tolist())) == 3  # the steps changed the model
    per_block = state_per_block(scan, b, batch_dims=0)
    vectors = [v for v in jax.tree_util.tree_leaves(a.opt_state) if np.shape(v) == (n,)]
    assert len(vectors) == 2  # adam's two moments, permuted to the per-block order
    for (path, u), v in zip(jax.tree_util.tree_leaves_with_path(a), jax.tree_util.tree_leaves(per_block), strict=True):
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v), err_msg=jax.tree_util.keystr(path))
    back = state_stacked(scan, per_block, batch_dims=0)
    jax.tree_util.tree_map(np.testing.assert_array_equal, back, b)


def test_a_checkpoint_loads_with_and_without_the_stacked_layout(trained, tmp_path):
    """On disk a state is per block whatever the layout it trained in: saved from the stacked state it restores
    into an unrolled run's state, and saved from an unrolled state into a stacked run's (chunk states: a run
    axis in front)."""
    (plain, a, _), (scan, b, _) = trained
    chunk = lambda st: jax.tree_util.tree_map(lambda v: np.asarray(v)[None], st)
    a, b = chunk(a), chunk(b)
    history = {"eval_loss": np.zeros((2, 1), np.float32)}
    zeros = lambda st: jax.tree_util.tree_map(np.zeros_like, st)
    for saved_by, state, loaded_by, like, expect in (
        (scan, b, plain, a, a),
        (plain, a, scan, b, b),
    ):
        ckpt = GroupCheckpointer(tmp_path / f"from-{saved_by.stacked}", keep=0, async_save=False)
        ckpt.save(1, state_per_block(saved_by, state), history)
        ckpt.wait()
        got, _ = ckpt.restore(1, state_per_block(loaded_by, zeros(like)), history)
        ckpt.close()
        got = state_stacked(loaded_by, got)
        assert jax.tree_util.tree_structure(got) == jax.tree_util.tree_structure(expect)
        jax.tree_util.tree_map(np.testing.assert_array_equal, got, expect)


def test_a_scanned_sweep_stopped_and_resumed_equals_the_uninterrupted_one(tmp_path):
    """A sweep with `train.scan_layers` records the field (config.json), checkpoints per block, and resumed from a
    checkpoint ends bit-identical to the sweep that never stopped; its outcomes are per block."""
    settings = {"model.n_layers": 2, "train.scan_layers": True, "train.steps": 40, "train.eval_every": 20,
                "train.checkpoint_every": 1, "train.checkpoint_minutes": 0, "train.keep_checkpoints": 0}  # fmt: skip
    args = ["--preset", "smoke", "--seeds", "0:2", *(a for k, v in settings.items() for a in ("--set", f"{k}={v}"))]
    out = tmp_path / "run"
    original = Progress.update

    def update(self, **kw):  # stop after the evaluation at step 20, as SIGTERM would
        original(self, **kw)
        if kw["step"] >= 20:
            interrupt.request(signal.SIGTERM)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(Progress, "update", update)
        assert main(["run", "icl-regression", "--out", str(out), "--quiet", *args]) == 128 + signal.SIGTERM
    assert json.loads((out / "config.json").read_text())["train"]["scan_layers"] is True
    saved = load_run_group(out, 0, checkpoint=1)  # the checkpoint at step 20, as on disk
    assert sorted(k for k in saved.state.params if k.startswith("blocks")) == ["blocks_0", "blocks_1"]
    assert main(["run", "icl-regression", "--out", str(out), "--resume", "--quiet"]) == 0
    cfg = with_seeds(get_experiment("icl-regression").preset("smoke"), (0, 1)).with_overrides(settings)
    whole = run_cfg(cfg, progress=False).groups[0]
    again = load_run_group(out, 0)
    assert jax.tree_util.tree_structure(again.state) == jax.tree_util.tree_structure(whole.state)
    assert "blocks_1" in whole.state.params
    jax.tree_util.tree_map(np.testing.assert_array_equal, again.state, whole.state)
    for name in ("eval_loss", "train_loss"):
        np.testing.assert_array_equal(again.history[name], whole.history[name])
