"""Shared task streams (`task.shared_stream`, `jaxlab.train.streams`): each step's batches drawn once per
data seed and fed to the runs of that seed, the same batches and the same numbers as without sharing."""

import dataclasses
import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _jaxenv import ROOT, jax_env
from _runs import run_cfg

from jaxlab.config import apply_sweep_args
from jaxlab.errors import ConfigError
from jaxlab.registry import get_experiment
from jaxlab.rng import rng_scope
from jaxlab.tasks import sample
from jaxlab.train import make_train, plan_groups, programs, with_seeds
from jaxlab.train.hparams import stack_hparams
from jaxlab.train.runmap import over_runs
from jaxlab.train.sharding import Placement
from jaxlab.train.streams import shared_advance, stream_table

SEEDS = (0, 1, 0, 1, 0, 1)  # 2 data seeds x 3 learning rates, point-major as a sweep orders them
LRS = (1e-2, 1e-2, 3e-2, 3e-2, 1e-1, 1e-1)
TINY = {"train.steps": 8, "train.eval_every": 4, "train.batch_size": 16, "train.eval_batch_size": 32}


@pytest.fixture(scope="module")
def tiny():
    return get_experiment("icl-regression").preset("smoke").with_overrides(TINY)


@pytest.fixture(scope="module")
def runs(tiny):
    """(train, states [6], hyperparameters [6]) of the runs SEEDS x LRS (the initial state does not depend on the
    run layout)."""
    train = make_train(tiny.set("task.shared_stream", True))
    return (train, *_runs(train, SEEDS, LRS))


def _runs(train, seeds, lrs):
    """States and hyperparameters [R] of runs with these seeds and learning rates (as `Programs.start`)."""
    keys = jnp.stack([jax.random.key(s) for s in seeds])
    hp = {k: jnp.asarray(v) for k, v in stack_hparams(train.cfg, [{"optim.lr": lr} for lr in lrs]).items()}
    return jax.jit(jax.vmap(train.init))(keys, hp), hp


def _leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_bad_values_and_sweeps_are_refused(tiny):
    for value in ("maybe", "2"):
        with pytest.raises(ConfigError, match="task.shared_stream.*true, false"):
            tiny.set("task.shared_stream", value)
    for value in (1, 0.5, None, "true"):  # Python values are not parsed: a bool or nothing
        with pytest.raises(ConfigError, match="task.shared_stream: expected bool"):
            dataclasses.replace(tiny.task, shared_stream=value)
    assert tiny.set("task.shared_stream", "true").task.shared_stream is True
    assert tiny.task.shared_stream is False  # the default
    with pytest.raises(ConfigError, match="cannot be swept"):
        plan_groups(apply_sweep_args(tiny, ["task.shared_stream=false,true"]))


def test_runs_of_one_data_seed_see_the_same_batches_and_other_seeds_do_not(tiny, runs):
    train, state, _ = runs
    one = jax.jit(train.train_batch)  # one run at a time, as the shared streams draw them
    inputs = [np.asarray(one(jax.tree_util.tree_map(lambda x, i=i: x[i], state)).inputs) for i in range(len(SEEDS))]

    @jax.jit
    def expected(seed):
        # the data seed of a run is its seed: key(seed) -> (init key, data key), step t -> fold_in(data key, t)
        with rng_scope():
            data_key = jax.random.split(jax.random.key(seed))[1]
            return sample(jax.random.fold_in(data_key, 0), train.cfg.task, train.cfg.train.batch_size).inputs

    for i, seed in enumerate(SEEDS):
        # the same numbers; y = W x may be summed in another order in another program (last bit)
        np.testing.assert_allclose(inputs[i], expected(seed), rtol=1e-6, atol=1e-7)
    for i in range(len(SEEDS)):
        for j in range(len(SEEDS)):
            assert np.array_equal(inputs[i], inputs[j]) == (SEEDS[i] == SEEDS[j]), (i, j)


def test_stream_table_matches_a_direct_computation():
    rows = np.array([[5, 1], [2, 2], [5, 1], [7, 0], [2, 2], [5, 1], [7, 1]], np.uint32)
    leader, stream, n = (np.asarray(x) for x in jax.jit(stream_table)(jnp.asarray(rows)))
    firsts: dict[tuple, int] = {}
    for r, row in enumerate(map(tuple, rows)):
        firsts.setdefault(row, r)
    order = sorted(firsts.values())
    assert int(n) == len(order) == 4
    np.testing.assert_array_equal(leader[: len(order)], order)
    np.testing.assert_array_equal(stream, [order.index(firsts[tuple(row)]) for row in rows])


def test_shared_steps_draw_once_per_seed_and_equal_independent_ones_alone_or_not(tiny, runs):
    """The scan layout on one device (both layouts on two devices: the next test)."""
    train = make_train(tiny.with_overrides({"task.shared_stream": True, "train.run_layout": "scan"}))
    _, state, hp = runs
    draws = []
    drawn = train.stream_batch

    def counted(data_key, step):
        jax.debug.callback(lambda k, s: draws.append((tuple(np.asarray(k)), int(s))), data_key, step)
        return drawn(data_key, step)

    train.stream_batch = counted  # this instance only
    plan = train.plan
    shared = jax.jit(shared_advance(train, plan.run_layout, None, plan.run_block))
    independent = jax.jit(over_runs(train.advance, (0, 0, None), plan.run_layout, None, plan.run_block))
    n = 4
    got, loss = jax.block_until_ready(shared(state, hp, n))
    assert sorted(draws) == sorted((tuple(np.asarray(state.data_key[i])), t) for i in (0, 1) for t in range(n))
    want, want_loss = independent(state, hp, n)
    np.testing.assert_array_equal(loss, want_loss)
    for a, b in zip(_leaves(got), _leaves(want), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(loss[0], loss[2])  # other learning rates: other runs

    # a run alone (seed 1, lr 3e-2) has the bits it has among the others, and two calls give one
    alone, alone_hp = jax.tree_util.tree_map(lambda x: x[3:4], (state, hp))
    mid, _ = shared(alone, alone_hp, 2)
    end, _ = shared(mid, alone_hp, n - 2)
    for a, b in zip(_leaves(end), _leaves(got), strict=True):
        np.testing.assert_array_equal(a[0], b[3])


TWO_DEVICES = """
import jax, numpy as np
import test_shared_stream as t
from jaxlab.train import make_train
from jaxlab.train.runmap import over_runs
from jaxlab.train.sharding import Placement
from jaxlab.train.sharding import Placement
from jaxlab.train.streams import shared_advance
from jaxlab.registry import get_experiment
from jaxlab.rng import rng_scope
p = Placement.default()
assert p.n_devices == 2
tiny = get_experiment("icl-regression").preset("smoke").with_overrides({**t.TINY, "task.shared_stream": True})
state, hp = jax.device_put(t._runs(make_train(tiny), t.SEEDS, t.LRS), p.runs)
for layout in ("scan", "vmap"):
    train = make_train(tiny.set("train.run_layout", layout))
    args = (train.plan.run_layout, p.mesh, train.plan.run_block)
    got = jax.jit(shared_advance(train, *args))(state, hp, 4)
    want = jax.jit(over_runs(train.advance, (0, 0, None), *args))(state, hp, 4)
    same = all(np.array_equal(a, b) for a, b in zip(t._leaves(got), t._leaves(want), strict=True))
    print(layout, "same", same, got[0].step.sharding.spec == jax.sharding.PartitionSpec("runs"))
"""


def test_on_two_devices_in_both_layouts_shared_steps_equal_independent_ones():
    env = jax_env(2)
    env["PYTHONPATH"] = f"{ROOT / 'tests'}:{env['PYTHONPATH']}"
    out = subprocess.run(
        [sys.executable, "-c", TWO_DEVICES], env=env, capture_output=True, text=True, timeout=300, cwd=ROOT
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert out.stdout.split("\n")[:2] == ["scan same True True", "vmap same True True"]


def test_a_sweep_with_shared_streams_uses_them_and_says_so(tiny, tmp_path, monkeypatch):
    made = []

    def recorded(*args):
        made.append(args[1:])
        return shared_advance(*args)

    monkeypatch.setattr(programs, "shared_advance", recorded)
    cfg = apply_sweep_args(with_seeds(tiny.set("task.shared_stream", True), (0, 1)), ["optim.lr=1e-2,3e-2"])
    result = run_cfg(cfg, tmp_path / "run", progress=False)
    plan = result.groups[0].train.plan
    assert made and set(made) == {(plan.run_layout, Placement.default().mesh, plan.run_block)}
    loss = result.groups[0].history["eval_loss"]  # runs point-major: (lr 1e-2: seeds 0, 1), (lr 3e-2: seeds 0, 1)
    assert loss.shape == (4, 3) and np.all(np.isfinite(loss)) and not np.array_equal(loss[0], loss[2])
    assert json.loads((tmp_path / "run" / "config.json").read_text())["task"]["shared_stream"] is True
    report = (tmp_path / "run" / "report.md").read_text()
    assert "shared task streams (`task.shared_stream`)" in report
