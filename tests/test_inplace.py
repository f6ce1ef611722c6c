"""The chunk's training steps written back into the state they read (`jaxlab.train.inplace`): bitwise what
`over_runs` (`jax.lax.map` into new buffers) computes, in blocks of one run and of several."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.train import make_train, seed_keys, stack_hparams
from jaxlab.train.inplace import advance_runs, in_place_runs
from jaxlab.train.runmap import map_runs


def _toy_advance(state, hparams, n):
    """A run's nonlinear update with a per-run rate and a float32 loss: every run's rows must land in its place."""
    w = state["w"]
    for _ in range(3):
        w = jnp.tanh(w @ state["m"] * hparams["lr"] + n)
    return {"w": w, "m": state["m"] * 1.5, "step": state["step"] + 1}, jnp.sum(w * w).astype(jnp.float32)


@pytest.mark.parametrize("block", [1, 2, 4])
def test_in_place_runs_equal_the_mapped_runs_bitwise(block):
    """Against `map_runs(..., "scan", block)` (the `lax.map` path) on 6 runs: blocks of 1, 2 and 3 (4 -> 3, a
    divisor of 6), and the state's rows are those of the runs they came from (distinct runs)."""
    R = 6
    k = jax.random.split(jax.random.key(0), 2)
    state = {
        "w": jax.random.normal(k[0], (R, 3, 4)),
        "m": jax.random.normal(k[1], (R, 4, 4)),
        "step": jnp.arange(R, dtype=jnp.int32),
    }
    hp = {"lr": jnp.linspace(0.1, 0.6, R, dtype=jnp.float32)}
    n = jnp.float32(0.25)
    want_state, want_loss = jax.jit(map_runs(_toy_advance, (0, 0, None), "scan", block))(state, hp, n)
    got_state, got_loss = jax.jit(in_place_runs(_toy_advance, block), donate_argnums=0)(
        jax.tree_util.tree_map(jnp.copy, state), hp, n
    )
    np.testing.assert_array_equal(got_loss, want_loss)
    for key in state:
        np.testing.assert_array_equal(got_state[key], want_state[key])
    np.testing.assert_array_equal(got_state["step"], np.arange(R) + 1)
    # independent: run 2 alone gives its row
    alone_state, alone_loss = _toy_advance({key: v[2] for key, v in state.items()}, {"lr": hp["lr"][2]}, n)
    np.testing.assert_allclose(got_state["w"][2], alone_state["w"], rtol=1e-6)
    np.testing.assert_allclose(got_loss[2], alone_loss, rtol=1e-6)
    with pytest.raises(ValueError, match="block"):
        in_place_runs(_toy_advance, 0)


def test_advance_runs_equal_over_runs_on_a_training_state_bitwise(smoke_cfg):
    """`Train.advance` of 4 smoke runs with distinct learning rates, 2 steps, in blocks of 1 and 2: the states
    and losses of `advance_runs` (in place) are bitwise those of `over_runs` (`lax.map`)."""
    R = 4
    train = make_train(smoke_cfg.set("train.batch_size", 8))
    points = [{"optim.lr": lr} for lr in (1e-2, 2e-2, 3e-2, 4e-2)]
    hp = {k: jnp.asarray(v) for k, v in stack_hparams(train.cfg, points).items()}
    states = jax.vmap(train.init)(seed_keys(range(R)), hp)
    n = jnp.int32(2)
    for block in (1, 2):
        want_state, want_loss = jax.jit(map_runs(train.advance, (0, 0, None), "scan", block))(states, hp, n)
        got_state, got_loss = jax.jit(advance_runs(train, "scan", None, block))(states, hp, n)
        np.testing.assert_array_equal(got_loss, want_loss)
        for got, want in zip(jax.tree_util.tree_leaves(got_state), jax.tree_util.tree_leaves(want_state)):
            np.testing.assert_array_equal(got, want)
        assert np.all(np.asarray(got_state.step) == 2)
        # the runs differ (distinct rates), so a row written to the wrong place would fail above
        assert not np.array_equal(np.asarray(got_loss[0]), np.asarray(got_loss[3]))
