"""The run layouts of one program (`jaxlab.train.runmap`): scanned runs equal the plain computation,
one run at a time; bad layouts are a ConfigError naming the field."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.errors import ConfigError
from jaxlab.train import make_train, seed_keys, stack_hparams
from jaxlab.train.runmap import over_runs, resolve_layout


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
    for layout in ("scan",):
        got_state, got_loss = jax.jit(over_runs(train.advance, (0, 0, None), layout))(states, hp, n)
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
    assert resolve_layout("auto", n_devices=2) == "vmap"
    assert resolve_layout("vmap") == "vmap"
    with pytest.raises(ConfigError, match="run_layout"):
        resolve_layout("loop")
    with pytest.raises(ValueError, match="in_axes"):
        over_runs(lambda x: x, (1,))
