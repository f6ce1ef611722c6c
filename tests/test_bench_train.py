"""`jaxlab bench train`: the CI throughput regression check (a ratio within one run, in a subprocess
with XLA's default flags), the analytic FLOP count, the reference baseline's model, and bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from _jaxenv import default_flags

from jaxlab.bench import train as bench_train
from jaxlab.bench._reference import ReferenceLoop, sample_one
from jaxlab.bench._train_workloads import WORKLOADS, flops_per_run_step
from jaxlab.cli import main
from jaxlab.tasks import regression
from jaxlab.train import make_train, seed_keys
from jaxlab.train.programs import Programs

ROOT = Path(__file__).resolve().parent.parent


def test_vectorized_sweep_is_faster_than_the_per_run_loop():
    """Fails when the vectorized sweep is not faster than one-run-at-a-time training (same process)."""
    env = dict(os.environ)
    env["XLA_FLAGS"] = default_flags(env.get("XLA_FLAGS", ""))  # timings need XLA's default compilation
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    cmd = [sys.executable, "-m", "jaxlab", "bench", "train", "--workload", "lsa-regression", "--runs", "8",
           "--steps", "5", "--batch-size", "64", "--repeats", "3", "--baselines", "loop", "--baseline-runs", "2",
           "--matmul-size", "256", "--json"]  # fmt: skip
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    r = json.loads(out.stdout)
    for key in ("run_steps_per_s", "datagen_run_steps_per_s", "model_flops_per_s", "peak_flops_per_s",
                "utilization", "compile_s", "device", "workload", "runs", "steps", "speedup_vs_loop"):  # fmt: skip
        assert key in r, key
    assert (r["workload"], r["runs"], r["steps"], r["batch_size"]) == ("lsa-regression", 8, 5, 64)
    assert r["model_flops_per_s"] == pytest.approx(r["run_steps_per_s"] * r["flops_per_run_step"], rel=0.2)
    assert r["speedup_vs_loop"] > 1.0, r


def test_flop_count_is_the_documented_formula():
    lsa = WORKLOADS["lsa-regression"].config()
    T, D = 11, 11  # paired layout: N + 1 tokens of width d + 1
    forward = 6 * T * D * D + 4 * T * T * D + 2 * T * D * D
    assert flops_per_run_step(lsa) == 3 * forward * 2048
    soft = WORKLOADS["softmax-regression"].config()
    T, D, F = 80, 64, 256
    forward = 6 * T * D * D + 4 * T * T * D + 2 * T * D * D + 4 * T * D * F
    assert flops_per_run_step(soft) == 3 * forward * 2 * 256
    T, D, F = 15, 256, 1024  # the clustering model: 6 blocks, 256 instructions per step
    forward = 6 * T * D * D + 4 * T * T * D + 2 * T * D * D + 4 * T * D * F
    assert flops_per_run_step(WORKLOADS["clustering"].config()) == 3 * forward * 6 * 256


def test_reference_baseline_of_a_token_task_takes_jaxlabs_loss_on_the_sampled_batch():
    from jaxlab.registry import get_experiment
    from jaxlab.train import default_hparams

    train = make_train(get_experiment("instruction-clustering").preset("smoke"))
    ref = ReferenceLoop(train)
    hp = default_hparams(train.cfg)
    state = train.init(seed_keys([0])[0], hp)
    batch = ref.data(jax.random.PRNGKey(0))
    assert batch.inputs.shape == (train.cfg.train.batch_size, train.spec.seq_len)
    want = float(jax.jit(train.loss)(state.params, batch))
    params, _, loss = ref.update(state.params, state.opt_state, hp, batch)
    assert float(loss) == pytest.approx(want, rel=1e-5) and np.isfinite(want)
    assert float(jax.jit(train.loss)(params, batch)) < want  # one step down the same loss


def test_reference_baseline_trains_the_same_model_on_the_same_task(smoke_cfg):
    train = make_train(smoke_cfg)
    ref = ReferenceLoop(train)
    cfg = train.cfg.task
    assert isinstance(cfg, regression.Config)

    @jax.jit
    def outputs(key):
        state = train.init(key)
        batch = train.train_batch(state)
        explicit, _ = train.model.apply({"params": state.params}, batch.inputs, mutable=["intermediates"])
        return explicit, train.apply(state.params, batch.inputs)

    # the explicit-attention model of the baseline is jaxlab's model
    explicit, plain = outputs(seed_keys([0])[0])
    np.testing.assert_allclose(explicit, plain, rtol=1e-4, atol=1e-6)
    # its per-sequence sampler has the task's layout and distribution
    b = ref.data(jax.random.PRNGKey(0))
    x = np.asarray(b.inputs)
    assert x.shape == (train.cfg.train.batch_size, cfg.n_context + 1, cfg.n_dims + 1)
    big = jax.jit(jax.vmap(lambda k: sample_one(k, cfg)))(jax.random.split(jax.random.key(1), 4000))
    xb, w = np.asarray(big.inputs), np.asarray(big.aux["w"])[:, 0]
    assert xb[..., : cfg.n_dims].var() == pytest.approx(1 / 12, rel=0.03)
    assert w.var() == pytest.approx(1.0, rel=0.05)
    np.testing.assert_allclose(xb[:, :-1, -1], np.einsum("bd,btd->bt", w, xb[:, :-1, :-1]), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(xb[:, -1, -1], 0)
    np.testing.assert_array_equal(np.asarray(big.loss_mask)[:, -1], 1)


@pytest.mark.parametrize(
    ("argv", "field"),
    [(["--workload", "nope"], "--workload"), (["--dtype", "float16"], "--dtype"), (["--runs", "0"], "--runs"),
     (["--baselines", "loop,fast"], "--baselines"), (["--prng-impl", "xor"], "--prng-impl"),
     (["--micro-batch", "100"], "train.micro_batch")],
)  # fmt: skip
def test_bad_input_is_a_user_error(argv, field, capsys):
    assert main(["bench", "train", *argv]) == 2
    assert field in capsys.readouterr().err


def recording(monkeypatch, name):
    """Wrap `Programs.<name>` (the engine's program builder) to record its calls and results."""
    calls = []
    original = getattr(Programs, name)

    def wrapper(self, size, hparam_keys):
        compiled = original(self, size, hparam_keys)
        calls.append({"train": self.train, "size": size, "keys": list(hparam_keys), "compiled": compiled})
        return compiled

    monkeypatch.setattr(Programs, name, wrapper)
    return calls


def test_benchmark_times_the_programs_jaxlab_run_compiles(monkeypatch):
    """`jaxlab bench train` builds its sweep with `jaxlab.train.programs.Programs` (what `jaxlab run`
    compiles), calls that very executable, and records the execution plan."""
    intervals, starts = recording(monkeypatch, "compile_interval"), recording(monkeypatch, "compile_start")
    r = bench_train.measure(
        "lsa-regression", runs=2, steps=3, repeats=1, baselines=(), matmul_size=16, batch_size=8, micro_batch=4
    )
    assert [c["size"] for c in intervals] == [2] and [c["size"] for c in starts] == [2]
    train = intervals[0]["train"]
    assert train.cfg.train.micro_batch == 4 and train.plan.micro_batch == 4
    assert r["plan"] == train.plan.as_dict() and r["micro_batch"] == 4 and r["run_steps_per_s"] > 0

    # the timed sweep is the recorded executable: each call advances every run `steps` steps
    cfg = WORKLOADS["lsa-regression"].config()
    train = make_train(cfg.with_overrides({"train.batch_size": 8, "train.eval_batch_size": 1}))
    w = bench_train.TrainBench(train, runs=2, steps=3)
    assert w.interval is intervals[-1]["compiled"] and intervals[-1]["train"] is train
    w.sweep()
    w.sweep()
    assert np.asarray(w.states[0].step).tolist() == [6, 6]
    assert np.isfinite(np.asarray(w.histories[0]["train_loss"])[1]).all()
