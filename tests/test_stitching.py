"""Model stitching between icl-regression smoke models (1 linear self-attention layer, 2 seeds) and an untrained one.

The smoke sweep is the one test_engine trains, so its compiled programs come from the cache.
"""

import jax
import numpy as np
import pytest
from _runs import run_cfg

from jaxlab.errors import ConfigError
from jaxlab.models import residual_hooks
from jaxlab.probes import stitching
from jaxlab.probes.stitching import StitchConfig, stitch, stitch_runs
from jaxlab.train import default_hparams, seed_keys

STITCH = StitchConfig(steps=60, lr=3e-3, batch_size=64, fit_batch_size=256)
# blocks.0.hook_resid_pre (the tokens), blocks.0.hook_resid_post (before the readout)
HOOKS = residual_hooks(1, embeddings=True, name="pre")
PRE, POST = 0, 1


@pytest.fixture(scope="module")
def stitched():
    from jaxlab.registry import get_experiment

    sweep = run_cfg(get_experiment("icl-regression").preset("smoke"), progress=False)  # seeds 0, 1
    train, trained = sweep.groups[0].train, sweep.groups[0].state.params
    untrained = jax.vmap(lambda k: train.init(k, default_hparams(train.cfg)).params)(seed_keys([7]))
    group_a = jax.tree_util.tree_map(lambda t, u: np.concatenate([t, u]), trained, untrained)
    result = stitch_runs(train, group_a, train, trained, HOOKS, cfg=STITCH)  # [A: 3, B: 2, hooks: 2]
    return train, group_a, trained, result


def test_self_stitching_and_shared_inputs_cost_nothing(stitched):
    _, _, _, r = stitched
    assert (
        r.penalty.shape == (3, 2, 2) and r.train_loss.shape == (3, 2, 2, STITCH.steps) and r.weight.shape[-2:] == (4, 4)
    )
    base = np.asarray(r.base_loss)
    np.testing.assert_allclose(base[0], base[1])  # B's loss does not depend on A
    init = np.asarray(r.init_penalty)
    for b in range(2):  # A = B: the identity is representable and least squares finds it
        np.testing.assert_allclose(init[b, b], 0.0, atol=1e-4 * base[0, b])
    # every model reads the same raw tokens at blocks.0.hook_resid_pre (identity read-in)
    np.testing.assert_allclose(init[:, :, PRE], 0.0, atol=1e-4 * base.max())
    # training never makes a stitch worse than its least-squares start (it may beat B: the layer adds capacity)
    assert np.all(np.asarray(r.penalty) <= init + 1e-4 * base.max())


def test_stitching_penalty_follows_representation_quality(stitched):
    _, _, _, r = stitched
    base = np.asarray(r.base_loss)[0]
    worse, better = (1, 0) if base[1] > base[0] else (0, 1)
    pen, init = np.asarray(r.penalty)[..., POST], np.asarray(r.init_penalty)[..., POST]
    # a worse model's stream costs B something; training the layer reduces, but does not remove, the cost
    assert init[worse, better] > 0.05 * base[better]
    assert 0 < pen[worse, better] < init[worse, better]
    # asymmetric: the better model's stream helps the worse B ("more is better", Bansal et al. 2021)
    assert pen[better, worse] < pen[worse, better]
    # an untrained model's stream is worse still, for either B
    for b in range(2):
        assert pen[2, b] > 0.3 * base[b] and pen[2, b] > pen[1 - b, b]


def test_vectorized_over_pairs_and_hooks_equals_one_pair_one_hook(stitched):
    train, group_a, trained, r = stitched
    one = lambda tree, i: jax.tree_util.tree_map(lambda x: x[i : i + 1], tree)
    single = stitch(
        train.model,
        one(group_a, 2),
        train.model,
        one(trained, 1),
        HOOKS[POST:],
        loss=train.spec.loss,
        sample=lambda k, n: train.sample(k, n),
        eval_batch=train.make_eval_batch(),
        key=jax.random.key(train.cfg.train.eval_seed + 1),
        cfg=STITCH,
    )
    assert single.penalty.shape == (1, 1)
    np.testing.assert_allclose(single.init_penalty[0, 0], r.init_penalty[2, 1, POST], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(single.penalty[0, 0], r.penalty[2, 1, POST], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(single.weight[0, 0], r.weight[2, 1, POST], rtol=1e-3, atol=1e-4)


def test_default_hooks_and_the_compiled_program_is_reused_with_the_same_numbers(stitched):
    """The default hooks are the stream before each block and after the last; stitching the same
    shapes again compiles nothing new (the program's static arguments are equal) and repeats the result."""
    train, group_a, trained, r = stitched
    compiled = stitching._stitch_program._cache_size()
    again = stitch_runs(train, group_a, train, trained, cfg=STITCH)
    assert again.hooks == tuple(HOOKS) == ("blocks.0.hook_resid_pre", "blocks.0.hook_resid_post")
    assert stitching._stitch_program._cache_size() == compiled
    np.testing.assert_array_equal(again.penalty, r.penalty)


def test_bad_hooks_and_settings_are_refused(stitched):
    train, group_a, trained, _ = stitched
    with pytest.raises(ConfigError, match="stitch.hooks.*allowed: blocks.0.hook_resid_pre"):
        stitch_runs(train, group_a, train, trained, ["blocks.0.attn.hook_pattern"], cfg=STITCH)
    with pytest.raises(ConfigError, match="stitch.init"):
        StitchConfig(init="random")
    with pytest.raises(ConfigError, match="stitch.pairs"):
        stitch_runs(train, group_a, train, trained, HOOKS, pairs="zip")


def test_stopping_rule_and_budget_check_against_fixed_budgets(stitched):
    """The stopping rule re-derived from the recorded training losses; the penalty where it stopped and at twice
    that budget equal a fixed-budget stitch of those step counts (the same batches: step i draws fold_in(key, i))."""
    train, group_a, trained, _ = stitched
    tol, width = 0.05, 10
    rule = StitchConfig(steps=60, lr=3e-3, batch_size=64, fit_batch_size=256, tol=tol, window=width, double=True)
    r = stitch_runs(train, group_a, train, trained, HOOKS, cfg=rule)
    history, used = np.asarray(r.train_loss), np.asarray(r.steps_used)
    assert history.shape == (3, 2, 2, 60) and used.shape == (3, 2, 2)
    for idx in np.ndindex(used.shape):
        h = history[idx]
        means = [h[k * width : (k + 1) * width].mean() for k in range(6)]
        stop = next((k for k in range(1, 6) if means[k - 1] - means[k] < tol * means[k - 1]), 5)
        assert used[idx] == width * (stop + 1), idx
        assert np.isfinite(h[: used[idx]]).all() and np.isnan(h[used[idx] :]).all()
    a, b, hook = 2, 1, POST  # the untrained model into a trained one: its loss still falls
    n = int(used[a, b, hook])
    fixed = StitchConfig(steps=n, lr=3e-3, batch_size=64, fit_batch_size=256, double=True)
    f = stitch_runs(train, group_a, train, trained, HOOKS, cfg=fixed)
    assert int(f.steps_used[a, b, hook]) == n
    np.testing.assert_allclose(f.penalty[a, b, hook], r.penalty[a, b, hook], rtol=1e-3, atol=1e-5)
    np.testing.assert_allclose(f.penalty_double[a, b, hook], r.penalty_double[a, b, hook], rtol=1e-3, atol=1e-5)
    # without the check there is no doubled penalty
    assert np.isnan(np.asarray(stitch_runs(train, group_a, train, trained, HOOKS, cfg=STITCH).penalty_double)).all()
    with pytest.raises(ConfigError, match="stitch.tol"):
        StitchConfig(tol=1.5)
    with pytest.raises(ConfigError, match="stitch.window"):
        StitchConfig(window=0)
