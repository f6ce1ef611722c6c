"""Garg et al.'s curriculum (`function_classes.sample(..., step=t)`, `CurriculumTrain`): the schedule against
Garg's `Curriculum` class re-written here in Python, the zeroed coordinates, the sparse support and the
loss mask of batches at given steps in NumPy, one compiled program for every stage, and a loss that
counts the active examples only."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.errors import ConfigError
from jaxlab.experiments import function_classes_curriculum as fcc
from jaxlab.registry import get_experiment
from jaxlab.tasks import function_classes as fc
from jaxlab.train.engine import Train

EXP = get_experiment("function-classes")


def garg_schedule(start, end, inc, interval, steps):
    """Garg's src/curriculum.py: the value each training step sees (`update()` runs after the step)."""
    var, count, out = start, 0, []
    for _ in range(steps):
        out.append(var)
        count += 1
        if count % interval == 0:
            var += inc
        var = min(var, end)
    return out


def test_schedule_matches_gargs_curriculum_class():
    for sched in ((5, 20, 1, 2000), (11, 41, 2, 2000), (2, 5, 1, 60), (3, 11, 2, 7)):
        steps = 40 * sched[3]
        want = garg_schedule(*sched, steps)
        got = jax.jit(jax.vmap(lambda t: fc.scheduled(sched, t, 1000)))(jnp.arange(steps))
        np.testing.assert_array_equal(np.asarray(got), want)
    assert int(fc.scheduled((), 123, 9)) == 9
    assert int(fc.scheduled((2, 20, 1, 10), 10_000, 7)) == 7  # capped at the task's size


_sample_at = jax.jit(fc.sample, static_argnums=(1, 2))


@pytest.mark.parametrize("function_class", ["linear", "sparse_linear", "decision_tree"])
def test_batches_at_steps_zero_the_right_coordinates_and_mask_the_right_points(function_class):
    d, N, k, B = 6, 9, 2, 64
    cfg = fc.Config(
        function_class=function_class,
        n_dims=d,
        n_context=N,
        sparsity=k,
        tree_depth=2,
        curriculum_dims=(2, 6, 1, 5),
        curriculum_points=(3, 9, 2, 5),
    )
    for step in (0, 4, 5, 12, 17, 1000):
        d_t, n_t = min(2 + step // 5, 6), min(3 + 2 * (step // 5), 9)
        b = _sample_at(jax.random.key(step), cfg, B, jnp.int32(step))
        x = np.asarray(b.inputs)[:, 0::2, :d]
        assert np.all(x[:, :, d_t:] == 0) and np.all(x[:, :, :d_t] != 0), (step, d_t)
        mask = np.asarray(b.loss_mask)
        want = np.zeros(2 * N)
        want[0 : 2 * n_t : 2] = 1.0  # the x-tokens of the first n_t examples
        np.testing.assert_array_equal(mask, np.broadcast_to(want, (B, 2 * N)))
        y = np.asarray(b.inputs)[:, 1::2, d]
        if function_class == "linear":  # y = w . x over the active coordinates only
            w = np.asarray(b.aux["w"])[:, 0]
            np.testing.assert_allclose(y, np.einsum("bd,bnd->bn", w[:, :d_t], x[:, :, :d_t]), rtol=1e-5, atol=1e-5)
        if function_class == "sparse_linear":  # k non-zero weights, all among the first d_t coordinates
            support = np.asarray(b.aux["support"])
            assert np.all(support.sum(axis=1) == k) and np.all(support[:, d_t:] == 0)
            if d_t > k:  # uniform over the valid coordinates: every one of them is used somewhere
                assert np.all(support[:, :d_t].sum(axis=0) > 0)
    full = _sample_at(jax.random.key(0), cfg, B, None)  # evaluation: the whole task
    assert np.all(np.asarray(full.inputs)[:, 0::2, :d] != 0)
    np.testing.assert_array_equal(np.asarray(full.loss_mask), np.tile([1.0, 0.0], (B, N)))


def test_no_curriculum_and_step_none_give_the_plain_task():
    cfg = fc.Config(function_class="sparse_linear", n_dims=5, n_context=7, sparsity=2)
    plain = fc.sample(jax.random.key(3), cfg, 8)
    at_step = fc.sample(jax.random.key(3), cfg, 8, step=5)
    for a, b in zip(jax.tree_util.tree_leaves(plain), jax.tree_util.tree_leaves(at_step)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_schedules_are_validated():
    base = fc.Config(function_class="sparse_linear", n_dims=5, n_context=7, sparsity=2)
    for field, value, words in (
        ("curriculum_dims", (6, 8, 1, 10), "n_dims = 5"),
        ("curriculum_points", (3, 7, 2), "4 integers"),
        ("curriculum_points", (3, 7, 0, 10), "inc >= 1"),
        ("curriculum_dims", (1, 5, 1, 10), "below sparsity"),
        ("curriculum_points", (5, 3, 1, 10), "start <= end"),
    ):
        with pytest.raises(ConfigError, match=words):
            dataclasses.replace(base, **{field: value})


@pytest.fixture(scope="module")
def smoke_train():
    cfg = EXP.preset("smoke").set("task.function_class", "linear")
    train = EXP.make_train(cfg)
    params = train.init(jax.random.key(0)).params
    return cfg.resolve(), train, params


def test_smoke_trains_with_the_curriculum_and_plain_configs_do_not(smoke_train):
    cfg, train, _ = smoke_train
    assert isinstance(train, fcc.CurriculumTrain) and cfg.task.has_curriculum
    plain = EXP.make_train(cfg.set("task.curriculum_dims", ()).set("task.curriculum_points", ()))
    assert type(plain) is Train


def test_stream_batch_is_the_task_at_that_step_and_compiles_once(smoke_train):
    cfg, train, _ = smoke_train
    data = jax.random.key_data(jax.random.key(7))
    draw = jax.jit(train.stream_batch)
    for step in (0, 9, 10, 25, 39):
        got = draw(data, jnp.int32(step))
        key = jax.random.fold_in(jax.random.wrap_key_data(data, impl=cfg.train.prng_impl), step)
        want = fc.sample(key, cfg.task, cfg.train.batch_size, step=step)
        np.testing.assert_allclose(
            np.asarray(got.inputs), np.asarray(want.inputs), rtol=1e-5, atol=1e-6
        )  # jit vs eager
        np.testing.assert_array_equal(np.asarray(got.inputs) == 0, np.asarray(want.inputs) == 0)
        np.testing.assert_array_equal(np.asarray(got.loss_mask), np.asarray(want.loss_mask))
    assert draw._cache_size() == 1  # one program for every stage


def test_training_loss_counts_only_the_active_examples(smoke_train):
    cfg, train, params = smoke_train
    d = cfg.task.n_dims
    data = jax.random.key_data(jax.random.key(1))
    step = 10  # smoke: d_t = 3, n_t = 5 of N = 7
    n_t = 5
    batch = train.stream_batch(data, jnp.int32(step))
    loss = float(jax.jit(train.train_loss)(params, batch))
    out = np.asarray(train.apply(params, batch.inputs), np.float64)[:, 0::2, 0]
    y = np.asarray(batch.inputs, np.float64)[:, 1::2, d]
    want = 0.5 * np.mean((out[:, :n_t] - y[:, :n_t]) ** 2)  # jaxlab's mse: half the squared error
    assert loss == pytest.approx(want, rel=1e-4)
    # the inactive examples' targets do not move it
    noisy = batch.replace(targets=batch.targets.at[:, 2 * n_t :].add(100.0))
    assert float(jax.jit(train.train_loss)(params, noisy)) == pytest.approx(loss, rel=1e-6)
