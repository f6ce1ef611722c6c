"""The training engine: one program for many runs, whose results do not depend on each other."""

import jax
import numpy as np
import pytest
from _runs import run_cfg

from jaxlab.config import apply_sweep_args
from jaxlab.errors import ConfigError
from jaxlab.train import default_hparams, make_train, plan_groups, seed_keys, with_seeds


def final_by_seed(result, metric="eval_loss"):
    return {r["seed"]: r["final"][metric] for r in result.summary["runs"]}


def test_seed_alone_equals_seed_in_batch_of_64(smoke_cfg):
    many = run_cfg(with_seeds(smoke_cfg, tuple(range(64))), progress=False)
    alone = run_cfg(with_seeds(smoke_cfg, (3,)), progress=False)
    assert final_by_seed(alone)[3] == pytest.approx(final_by_seed(many)[3], rel=1e-3)
    p_many = jax.tree_util.tree_map(lambda x: np.asarray(x)[3], many.groups[0].state.params)
    p_alone = jax.tree_util.tree_map(lambda x: np.asarray(x)[0], alone.groups[0].state.params)
    for a, b in zip(jax.tree_util.tree_leaves(p_many), jax.tree_util.tree_leaves(p_alone)):
        np.testing.assert_allclose(a, b, rtol=1e-3, atol=1e-6)
    # different seeds really are different runs
    assert len({round(v, 6) for v in final_by_seed(many).values()}) > 60


def test_determinism_and_training_progress(smoke_cfg):
    a = run_cfg(smoke_cfg, progress=False)
    b = run_cfg(smoke_cfg, progress=False)
    for ha, hb in zip(a.groups[0].history.values(), b.groups[0].history.values()):
        np.testing.assert_array_equal(ha, hb)
    eval_loss = a.groups[0].history["eval_loss"]
    assert eval_loss.shape == (2, 5)
    assert np.all(eval_loss[:, -1] < 0.8 * eval_loss[:, 0])  # it learns


def test_pure_train_function_matches_sweep(smoke_cfg):
    train = make_train(smoke_cfg)
    state, history = jax.jit(train)(seed_keys([1])[0], default_hparams(train.cfg))
    sweep = run_cfg(with_seeds(smoke_cfg, (1,)), progress=False)
    np.testing.assert_allclose(history["eval_loss"], sweep.groups[0].history["eval_loss"][0], rtol=1e-5)
    np.testing.assert_array_equal(history["step"], train.eval_steps)


def test_traced_hyperparameters_share_one_program_structural_ones_do_not(smoke_cfg):
    cfg = apply_sweep_args(with_seeds(smoke_cfg, (0, 1)), ["optim.lr=1e-3,3e-2", "model.n_layers=1,2"])
    groups = plan_groups(cfg)
    assert len(groups) == 2 and all(len(g.runs) == 4 for g in groups)
    res = run_cfg(cfg, progress=False)
    by = {
        (r["seed"], r["hparams"]["optim.lr"], r["hparams"]["model.n_layers"]): r["final"]["eval_loss"]
        for r in res.summary["runs"]
    }
    # the lr=3e-2 run inside the vmapped program equals a run configured with lr=3e-2 alone
    solo = run_cfg(with_seeds(smoke_cfg.set("optim.lr", 3e-2), (1,)), progress=False)
    assert by[(1, 3e-2, 1)] == pytest.approx(final_by_seed(solo)[1], rel=1e-3)
    assert by[(1, 3e-2, 1)] != pytest.approx(by[(1, 1e-3, 1)], rel=1e-2)


def test_chunked_advance_equals_stepwise(smoke_cfg):
    """Chunk boundaries do not change the run: the data of step s come from fold_in(key, s)."""
    train = make_train(smoke_cfg)
    hp = default_hparams(train.cfg)
    s0 = train.init(seed_keys([0])[0], hp)
    a, _ = jax.jit(train.advance)(s0, hp, 10)
    b, _ = jax.jit(train.advance)(s0, hp, 4)
    b, _ = jax.jit(train.advance)(b, hp, 6)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_hparams_and_keys_are_checked_at_the_entry_points(smoke_cfg):
    train = make_train(smoke_cfg)
    key = jax.random.key(0)
    hp = default_hparams(train.cfg)
    with pytest.raises(ConfigError, match=r"unknown key 'lr'.*allowed: optim.lr, "):
        train.init(key, {**hp, "lr": 1e-3})
    with pytest.raises(ConfigError, match="unknown key 'task.n_dims'"):
        train(key, {"task.n_dims": 3.0})
    # a partial dict: the config's values for the rest, the given one used
    partial = train.init(key, {"optim.lr": 1e-3})
    full = train.init(key, {**hp, "optim.lr": 1e-3})
    for a, b in zip(jax.tree.leaves(partial), jax.tree.leaves(full)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(TypeError, match=r"typed PRNG key \(jax.random.key\(seed, impl='threefry2x32'\)"):
        train.init(0)
    with pytest.raises(TypeError, match="typed PRNG key"):
        train.init(jax.random.PRNGKey(0))  # raw key data
    rbg = make_train(smoke_cfg.with_overrides({"train.prng_impl": "rbg"}))
    with pytest.raises(
        TypeError, match=r"a threefry2x32 key, but train.prng_impl is 'rbg'.*seed_keys\(seeds, impl='rbg'\)"
    ):
        jax.vmap(rbg.init)(seed_keys(range(2)))
    jax.vmap(rbg.init)(seed_keys(range(2), impl="rbg"))  # the key the message names works
    # step and advance check the same way
    with pytest.raises(ConfigError, match="unknown key 'lr'"):
        train.step(full, {"lr": 1e-3})
    with pytest.raises(ConfigError, match="unknown key 'lr'"):
        train.advance(full, {"lr": 1e-3}, 1)
