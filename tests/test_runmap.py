"""The run layouts of one program (`jaxlab.train.runmap`): scanned runs equal the plain computation,
one run at a time; bad layouts are a ConfigError naming the field."""

import json
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _jaxenv import jax_env

from jaxlab.errors import ConfigError
from jaxlab.train import make_train, seed_keys, stack_hparams
from jaxlab.train.microbatch import WORK_BYTES
from jaxlab.train.runmap import auto_block, over_runs, resolve_layout


def test_scanned_runs_equal_the_runs_trained_one_at_a_time(smoke_cfg):
    """The `scan` layout against a Python loop of the plain one-run program (`vmap` is jax.vmap)."""
    R = 3
    train = make_train(smoke_cfg.set("train.batch_size", 16))
    points = [{"optim.lr": lr} for lr in (1e-2, 3e-2, 5e-2)]
    hp = {k: jnp.asarray(v) for k, v in stack_hparams(train.cfg, points).items()}
    states = jax.vmap(train.init)(seed_keys(range(R)), hp)
    n = jnp.int32(4)
    one = jax.jit(train.advance)
    plain = [one(jax.tree_util.tree_map(lambda x: x[r], states), {k: v[r] for k, v in hp.items()}, n) for r in range(R)]
    # 3 runs: blocks of at most 2 -> 1 (a divisor of 3), blocks of 3, vmap
    for layout, block in (("scan", 1), ("scan", 2), ("scan", 3), ("vmap", 1)):
        got_state, got_loss = jax.jit(over_runs(train.advance, (0, 0, None), layout, block=block))(states, hp, n)
        for r, (want_state, want_loss) in enumerate(plain):
            np.testing.assert_allclose(got_loss[r], want_loss, rtol=1e-5, err_msg=layout)
            assert int(got_state.step[r]) == int(want_state.step) == 4
            for got, want in zip(
                jax.tree_util.tree_leaves(got_state.params), jax.tree_util.tree_leaves(want_state.params)
            ):
                np.testing.assert_allclose(got[r], want, rtol=1e-4, atol=1e-6, err_msg=layout)
    # the runs are distinct (different learning rates), so the comparison above can fail
    assert len({float(loss) for _, loss in plain}) == R


def test_layout_choice_and_bad_input():
    assert resolve_layout("auto") == ("scan" if jax.default_backend() == "cpu" else "vmap")
    assert resolve_layout("vmap") == "vmap"
    with pytest.raises(ConfigError, match="run_layout"):
        resolve_layout("loop")
    with pytest.raises(ValueError, match="in_axes"):
        over_runs(lambda x: x, (1,))
    with pytest.raises(ConfigError, match="train.run_block"):
        over_runs(lambda x: x, (0,), block=0)


# 6 runs with different learning rates over 3 CPU devices: each device scans its 2 runs (blocks of
# 2), against the same runs scanned on one device.
THREE_DEVICES = """
import json, sys
import jax, jax.numpy as jnp, numpy as np
from jaxlab.registry import get_experiment
from jaxlab.train import make_train, seed_keys, stack_hparams
from jaxlab.train.runmap import over_runs
from jaxlab.train.sharding import Placement
p = Placement.default()
train = make_train(get_experiment("icl-regression").preset("smoke").set("train.batch_size", 16))
hp = {k: jnp.asarray(v) for k, v in stack_hparams(train.cfg, [{"optim.lr": 1e-2 * (r + 1)} for r in range(6)]).items()}
states = jax.vmap(train.init)(seed_keys(range(6)), hp)
n = jnp.int32(4)
one = jax.jit(over_runs(train.advance, (0, 0, None), "scan", None, 2))(states, hp, n)
split = over_runs(train.advance, (0, 0, None), "scan", p.mesh, 2)
text = jax.jit(split).lower(states, hp, n).as_text()
many = jax.jit(split)(jax.device_put(states, p.runs), jax.device_put(hp, p.runs), n)
json.dump({"devices": p.n_devices, "shard_map": "shard_map" in text or "sdy.manual_computation" in text,
           "sharded": len(many[1].sharding.device_set),
           "loss": [np.asarray(one[1]).tolist(), np.asarray(many[1]).tolist()],
           "params": [[np.asarray(a).tolist(), np.asarray(b).tolist()] for a, b in zip(
               jax.tree_util.tree_leaves(one[0].params), jax.tree_util.tree_leaves(many[0].params))]}, sys.stdout)
"""


def test_scan_layout_splits_runs_over_devices():
    proc = subprocess.run(
        [sys.executable, "-c", THREE_DEVICES], env=jax_env(n_devices=3), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["devices"] == 3 and out["shard_map"] and out["sharded"] == 3
    one, many = out["loss"]
    np.testing.assert_allclose(many, one, rtol=1e-5)
    assert len({round(x, 6) for x in one}) == 6  # six distinct runs
    for a, b in out["params"]:
        np.testing.assert_allclose(np.asarray(b), np.asarray(a), rtol=1e-4, atol=1e-6)


def test_auto_block_keeps_a_block_within_the_work_budget():
    # a run whose micro-batch fills the 2 MB budget (both benchmark workloads) -> 1; tiny runs share
    assert auto_block(2048 * 968) == 1
    assert auto_block(8 * 409_600) == 1
    assert auto_block(1000) == 8  # capped
    for unit in [300_000, 700_000, 1_100_000]:
        k = auto_block(unit)
        assert 1 <= k <= 8 and (k == 1 or k * unit <= WORK_BYTES)
        assert k == 8 or (k + 1) * unit > WORK_BYTES
