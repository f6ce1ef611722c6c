"""The divergence threshold (`train.diverge_above`): a run whose training loss exceeds the factor
times its first loss is diverged, although every number stays finite.

At learning rate 1000 the smoke preset's loss grows to ~1e31 without overflowing (so only the
threshold can catch it). The reference is an independent NumPy reading of the per-step losses of
the unguarded run (`diverge_above = 0`): the first step t with loss_t > factor * max(loss_0, floor).
"""

import jax
import numpy as np
import pytest
from _runs import run_cfg

from jaxlab import results
from jaxlab.cli import main
from jaxlab.errors import ConfigError
from jaxlab.registry import load_run_group
from jaxlab.train import default_hparams, make_train, seed_keys, with_seeds
from jaxlab.train.engine import FIRST_LOSS_FLOOR

pytestmark = pytest.mark.timeout(300)  # the sweeps compile and train: a hang must fail

FACTOR = 1e6  # the default train.diverge_above
N_STEPS = 12


def step_by_step(cfg, seed, n_steps=N_STEPS):
    """The states after 0..n_steps steps and the loss of every step, one jitted step at a time."""
    train = make_train(cfg)
    hp = default_hparams(train.cfg)
    state = train.init(seed_keys([seed])[0], hp)
    step = jax.jit(train.step)
    states, losses = [state], []
    for _ in range(n_steps):
        state, loss = step(state, hp)
        states.append(state)
        losses.append(float(loss))
    return states, np.asarray(losses, np.float64)


@pytest.fixture(scope="module")
def blowup_cfg():
    from jaxlab.registry import get_experiment

    cfg = get_experiment("icl-regression").preset("smoke")
    return with_seeds(cfg.with_overrides({"optim.lr": 1000.0}), (0, 1))


def leaves(tree):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(tree)]


def test_threshold_stops_a_finite_blowup_at_the_right_step(blowup_cfg):
    plain_states, plain = step_by_step(blowup_cfg.set("train.diverge_above", 0.0), seed=0)
    states, guarded = step_by_step(blowup_cfg, seed=0)
    # the unguarded run blows up by many orders of magnitude while staying finite
    assert np.all(np.isfinite(plain)) and plain.max() > 1e20 * plain[0]
    assert all(int(s.diverged_at) == -1 for s in plain_states)

    exceeded = plain > FACTOR * max(plain[0], FIRST_LOSS_FLOOR)
    assert exceeded.any() and not exceeded[0]
    t = int(np.argmax(exceeded))
    final = states[-1]
    assert int(final.diverged_at) == t
    assert float(final.first_loss) == pytest.approx(plain[0], rel=1e-6)
    # up to step t both runs are the same run; from then on the guarded one keeps the state
    # after exactly t steps (the state whose loss tripped the threshold, frozen)
    np.testing.assert_array_equal(guarded[: t + 1], plain[: t + 1])
    for s in states[t:]:
        for a, b in zip(leaves(s.params), leaves(plain_states[t].params)):
            np.testing.assert_array_equal(a, b)
    assert int(final.step) == N_STEPS  # the step counter still advances (data stay aligned)


def test_sweep_reports_diverged_and_zero_factor_keeps_it_ok(blowup_cfg, tmp_path, capsys):
    out = tmp_path / "lr1000"
    args = ["run", "icl-regression", "--preset", "smoke", "--seeds", "0,1", "--set", "optim.lr=1000", "--quiet"]
    assert main([*args, "--out", str(out)]) == 0
    assert "2 runs (2 diverged)" in capsys.readouterr().out
    summary = results.load_summary(out)
    expected = {}
    for seed in (0, 1):
        _, plain = step_by_step(blowup_cfg.set("train.diverge_above", 0.0), seed=seed)
        expected[seed] = int(np.argmax(plain > FACTOR * max(plain[0], FIRST_LOSS_FLOOR)))
    assert [(r["status"], r["diverged_at_step"]) for r in summary["runs"]] == [
        ("diverged", expected[0]),
        ("diverged", expected[1]),
    ]
    assert summary["n_diverged"] == 2 and summary["aggregate"] == {}  # no run enters the aggregate
    assert "Diverged runs" in (out / "report.md").read_text()
    # the checkpointed state holds the first loss: the step-0 training loss of the history
    group = load_run_group(out)
    step0 = group.history["train_loss"][:, 0]
    np.testing.assert_allclose(group.state.first_loss, step0, rtol=1e-5)

    off = tmp_path / "off"
    assert main([*args, "--set", "train.diverge_above=0", "--out", str(off)]) == 0
    runs = results.load_summary(off)["runs"]
    assert [(r["status"], r["diverged_at_step"]) for r in runs] == [("ok", None), ("ok", None)]
    df = results.load(off)
    loss = df[df.metric == "train_loss"].pivot_table(index="run", columns="step", values="value")
    first, last = loss.iloc[:, 0].to_numpy(), loss.iloc[:, -1].to_numpy()
    assert np.all(np.isfinite(last)) and np.all(last > FACTOR * first)  # huge, finite, and "ok"


def test_normal_run_is_bit_identical_with_and_without_the_threshold(smoke_cfg):
    guarded = run_cfg(smoke_cfg, progress=False)
    plain = run_cfg(smoke_cfg.set("train.diverge_above", 0.0), progress=False)
    assert [r["status"] for r in guarded.summary["runs"]] == ["ok"] * len(smoke_cfg.sweep.seeds)
    g, p = guarded.groups[0], plain.groups[0]
    assert sorted(g.history) == sorted(p.history)
    for name in g.history:
        np.testing.assert_array_equal(g.history[name], p.history[name])
    for a, b in zip(leaves(g.state.params), leaves(p.state.params)):
        np.testing.assert_array_equal(a, b)


def test_threshold_rule_with_zero_tiny_and_missing_first_loss(smoke_cfg):
    """loss <= factor * max(first, floor): a first loss of 0 or nearly 0 uses the floor, a NaN one
    (step 0 not finite, already diverged by the finiteness test) never trips the threshold."""
    guarded = make_train(smoke_cfg.set("train.diverge_above", 10.0))
    ok = lambda loss, first: bool(guarded.below_threshold(np.float32(loss), np.float32(first)))
    floor = 10.0 * FIRST_LOSS_FLOOR
    assert ok(floor, 0.0) and not ok(floor * 1.01, 0.0)  # first loss 0: the floor
    assert ok(floor, 1e-9) and not ok(floor * 1.01, 1e-9)  # tiny: the floor as well
    assert ok(20.0, 2.0) and not ok(20.01, 2.0)  # otherwise: the factor times the first loss
    assert ok(1e30, np.nan)
    off = make_train(smoke_cfg.set("train.diverge_above", 0.0))
    assert bool(off.below_threshold(np.float32(3e38), np.float32(1e-9)))


@pytest.mark.parametrize("value", [0.5, 1.0, -1.0, float("inf"), float("nan")])
def test_diverge_above_is_zero_or_a_factor_above_one(smoke_cfg, value):
    with pytest.raises(ConfigError) as info:
        smoke_cfg.set("train.diverge_above", value)
    assert info.value.field == "train.diverge_above"


def test_diverge_above_accepted_values(smoke_cfg):
    for value in (0.0, 1.5, 1e6, 1e30):
        assert smoke_cfg.set("train.diverge_above", value).train.diverge_above == value
