"""jaxlab.rng draws JAX's own threefry bits, and the training data it feeds are independent across
runs and steps with the task's moments, for every `train.prng_impl`."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy import stats

from jaxlab import rng
from jaxlab.train import make_train, seed_keys, stack_hparams, with_seeds

SHAPES = [(1,), (7,), (10, 3), (2, 1, 3), (64, 11, 10)]


def test_fast_threefry_is_bit_identical_to_jax_random():
    def draws(key, shape, fast):
        m = rng if fast else jax.random
        bits = rng.random_bits(key, shape) if fast else jax.random.bits(key, shape, jnp.uint32)
        return (
            bits,
            m.uniform(key, shape, minval=-0.5, maxval=0.5),
            m.normal(key, shape),
            jax.random.key_data(m.split(key, shape[0])),
        )

    with rng.rng_scope():
        for shape in SHAPES:
            for seed in (0, 123456789):
                key = jax.random.key(seed)
                fast = jax.jit(draws, static_argnums=(1, 2))(key, shape, True)
                ref = jax.jit(draws, static_argnums=(1, 2))(key, shape, False)
                for a, b in zip(fast, ref):
                    np.testing.assert_array_equal(a, b)


def test_fast_threefry_under_vmap_matches_per_key_draws():
    with rng.rng_scope():
        keys = jax.random.split(jax.random.key(3), 4)
        batched = jax.jit(jax.vmap(lambda k: rng.normal(k, (3, 5))))(keys)
        for i in range(4):
            np.testing.assert_array_equal(batched[i], jax.random.normal(keys[i], (3, 5)))


def test_other_key_implementations_fall_back_to_jax_random():
    key = jax.random.key(1, impl="rbg")
    with rng.rng_scope():
        np.testing.assert_array_equal(rng.uniform(key, (6,)), jax.random.uniform(key, (6,)))


def _train_inputs(smoke_cfg, impl, seeds, steps):
    """x of the training batches [runs, steps, B, T, d] drawn by the engine, runs vmapped."""
    cfg = with_seeds(smoke_cfg.set("train.prng_impl", impl), tuple(seeds))
    train = make_train(cfg)
    keys = seed_keys(seeds, impl)
    hp = {k: jnp.asarray(v) for k, v in stack_hparams(train.cfg, [{}] * len(seeds)).items()}
    states = jax.jit(jax.vmap(train.init))(keys, hp)

    def batches(state):
        return jax.vmap(lambda s: train.train_batch(state.replace(step=s)).inputs)(jnp.arange(steps))

    return np.asarray(jax.jit(jax.vmap(batches))(states)), train


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg", "unsafe_rbg"])
def test_training_data_moments_and_independence(smoke_cfg, impl):
    x, train = _train_inputs(smoke_cfg, impl, seeds=[0, 1, 2], steps=4)
    d = train.cfg.task.n_dims
    xs = x[..., :d]  # U(-1/2, 1/2)
    n = xs[0, 0].size
    assert abs(xs.mean()) < 4 * np.sqrt(1 / 12 / xs.size)
    assert xs.var() == pytest.approx(1 / 12, rel=0.02)
    assert stats.kstest(xs.ravel()[:20000], stats.uniform(loc=-0.5, scale=1).cdf).pvalue > 1e-3
    # y = w . x with w ~ N(0, I): var(y) = d var(x)
    ys = x[..., :-1, d]
    assert ys.var() == pytest.approx(d / 12, rel=0.05)
    bound = 4 / np.sqrt(n)  # |r| of independent samples is below 4 standard errors
    for a, b in [((0, 0), (1, 0)), ((0, 0), (2, 0)), ((1, 2), (2, 2))]:  # runs at one step
        assert abs(np.corrcoef(xs[a].ravel(), xs[b].ravel())[0, 1]) < bound
    for s in range(3):  # consecutive steps of one run
        assert abs(np.corrcoef(xs[0, s].ravel(), xs[0, s + 1].ravel())[0, 1]) < bound
    assert len({xs[r, s, 0, 0, 0] for r in range(3) for s in range(4)}) == 12


@pytest.mark.parametrize("impl", ["threefry2x32", "rbg"])
def test_run_data_do_not_depend_on_the_other_runs(smoke_cfg, impl):
    """jax's RngBitGenerator batching rule reads the first key only; the engine loops over runs."""
    many, _ = _train_inputs(smoke_cfg, impl, seeds=[0, 5, 9], steps=2)
    alone, _ = _train_inputs(smoke_cfg, impl, seeds=[5], steps=2)
    np.testing.assert_array_equal(many[1], alone[0])
