"""The run axis over several devices and in memory-bounded run chunks: same runs, same numbers."""

import dataclasses
import json
import subprocess
import sys
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from _jaxenv import jax_env
from _runs import run_cfg

from jaxlab.registry import get_experiment, load_run_group, run_checkpoint_indices
from jaxlab.train import chunking, run_sweep, with_seeds
from jaxlab.train.chunking import RunChunks
from jaxlab.train.experiment import Finalized

# 6 runs on 4 devices, at most 4 per chunk: chunks of 4 runs (one per device), the second one
# holding 2 real runs and 2 copies; each device trains one run at a time.
FOUR_DEVICES = """
import json, sys
import jax, numpy as np
from jaxlab.registry import get_experiment
from jaxlab.train import run_sweep, with_seeds
exp = get_experiment("icl-regression")
cfg = with_seeds(exp.preset("smoke"), tuple(range(6)))
cfg = cfg.with_overrides({"train.steps": 20, "train.eval_every": 10, "train.max_runs_per_chunk": 4})
res = run_sweep(exp, cfg, sys.argv[1], progress=False, report=False)
g = res.groups[0]
layout = json.load(open(f"{sys.argv[1]}/checkpoints/group-0000/layout.json"))
json.dump({
    "n_devices": jax.device_count(), "summary_devices": res.summary["n_devices"], "layout": layout,
    "runs": [r.run for r in g.runs], "seeds": [r.seed for r in g.runs],
    "eval_loss": g.history["eval_loss"].tolist(), "train_loss": g.history["train_loss"].tolist(),
    "params": [np.asarray(x).tolist() for x in jax.tree_util.tree_leaves(g.state.params)],
}, sys.stdout)
"""


def small(cfg, n_seeds):
    return with_seeds(cfg, tuple(range(n_seeds))).with_overrides({"train.steps": 20, "train.eval_every": 10})


@pytest.fixture(scope="module")
def one_device_six_runs(smoke_cfg_module):
    assert jax.device_count() == 1
    return run_cfg(small(smoke_cfg_module, 6), progress=False)


@pytest.fixture(scope="module")
def smoke_cfg_module():
    return get_experiment("icl-regression").preset("smoke")


def test_four_devices_equal_one_device(tmp_path, one_device_six_runs):
    proc = subprocess.run(
        [sys.executable, "-c", FOUR_DEVICES, str(tmp_path / "four")],
        env=jax_env(n_devices=4),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    four = json.loads(proc.stdout)
    assert four["n_devices"] == 4 and four["summary_devices"] == 4
    assert four["layout"]["chunk_size"] == 4 and four["layout"]["n_chunks"] == 2 and four["layout"]["n_devices"] == 4
    # padding dropped: exactly the 6 runs, in order
    assert four["runs"] == list(range(6)) and four["seeds"] == list(range(6))
    one = one_device_six_runs.groups[0]
    for metric in ("eval_loss", "train_loss"):
        assert np.asarray(four[metric]).shape == one.history[metric].shape == (6, 3)
        np.testing.assert_allclose(four[metric], one.history[metric], rtol=1e-5)
    leaves = jax.tree_util.tree_leaves(one.state.params)
    assert len(leaves) == len(four["params"])
    for a, b in zip(four["params"], leaves):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-5, atol=1e-7)
    # the runs are different runs (not six copies of one)
    assert len({round(x, 7) for x in np.asarray(four["eval_loss"])[:, -1]}) == 6


def finalize(train, state, hparams, seeds):
    """A stand-in for an experiment's post-training probe: per-run values, a curve, a constant."""
    total = sum(np.asarray(x).reshape(len(seeds), -1).sum(1) for x in jax.tree_util.tree_leaves(state.params))
    seeds = np.asarray(seeds, np.float64)
    return Finalized(
        per_run={"param_sum": total, "seed_twice": 2 * seeds},
        history={"seed_curve": (np.array([0, 20]), np.stack([seeds, seeds + 1], axis=1))},
        reference={"constant": 1.5},
    )


def test_auto_chunks_under_a_small_memory_budget(tmp_path, monkeypatch, one_device_six_runs, smoke_cfg_module):
    """A budget too small for 5 runs: equal chunks through one program, padding dropped, same numbers;
    the experiment's finalize sees each chunk and its results line up with the runs."""
    exp = dataclasses.replace(get_experiment("icl-regression"), finalize=finalize)
    budget = 600_000  # bytes; 5 vmapped smoke runs need about 0.9 MB of temporaries, 3 runs about 0.55 MB
    monkeypatch.setenv(chunking.BUDGET_ENV, str(budget))
    # the vmap layout: its temporaries grow with the runs (the CPU's default scan layout holds one run's)
    cfg = small(smoke_cfg_module, 5).with_overrides({"train.run_layout": "vmap"})
    res = run_sweep(exp, cfg, tmp_path / "r", progress=False, report=False)
    layout = json.loads((tmp_path / "r" / "checkpoints" / "group-0000" / "layout.json").read_text())
    est = layout["estimate"]
    assert est["mode"] == "auto" and est["budget_bytes"] == budget and est["bytes_all_runs"] > budget
    assert est["bytes_per_chunk"] <= budget
    assert layout["n_chunks"] >= 2 and layout["chunk_size"] * layout["n_chunks"] > 5  # the last one padded

    # the first 5 runs of the 6-run sweep: a run does not depend on what else is in its program
    got, whole = res.groups[0], one_device_six_runs.groups[0]
    assert [r.run for r in got.runs] == list(range(5))
    for metric in ("eval_loss", "train_loss"):
        np.testing.assert_allclose(got.history[metric], whole.history[metric][:5], rtol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(got.state.params), jax.tree_util.tree_leaves(whole.state.params)):
        np.testing.assert_allclose(a, np.asarray(b)[:5], rtol=1e-5, atol=1e-7)
    assert res.summary["n_runs"] == 5 and [r["run"] for r in res.summary["runs"]] == list(range(5))

    want = sum(np.asarray(x).reshape(5, -1).sum(1) for x in jax.tree_util.tree_leaves(got.state.params))
    np.testing.assert_allclose(got.finalized.per_run["param_sum"], want, rtol=1e-6)
    np.testing.assert_array_equal(got.finalized.per_run["seed_twice"], 2 * np.arange(5))
    np.testing.assert_array_equal(got.finalized.history["seed_curve"][1][:, 1], np.arange(5) + 1)
    assert res.summary["reference"] == {"constant": 1.5}
    assert [r["final"]["seed_twice"] for r in res.summary["runs"]] == [0, 2, 4, 6, 8]
    table = res.frame()
    curve = table[table.metric == "seed_curve"].pivot(index="run", columns="step", values="value")
    np.testing.assert_array_equal(curve.to_numpy(), np.stack([np.arange(5), np.arange(5) + 1], axis=1))

    # and back from the run directory
    again = load_run_group(tmp_path / "r", 0)
    assert [r.run for r in again.runs] == list(range(5))
    np.testing.assert_array_equal(again.finalized.per_run["seed_twice"], 2 * np.arange(5))
    np.testing.assert_array_equal(again.finalized.history["seed_curve"][1], got.finalized.history["seed_curve"][1])
    for a, b in zip(jax.tree_util.tree_leaves(again.state), jax.tree_util.tree_leaves(got.state)):
        np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(again.history["eval_loss"], got.history["eval_loss"])
    assert run_checkpoint_indices(tmp_path / "r", 0) == [2]


def test_run_chunk_layout():
    c = RunChunks(n_runs=10, size=4)
    assert c.n_chunks == 3
    np.testing.assert_array_equal(c.positions(0), [0, 1, 2, 3])
    np.testing.assert_array_equal(c.positions(2), [8, 9, 9, 9])  # padded with the last run
    np.testing.assert_array_equal(c.real(2), [True, True, False, False])
    assert [c.n_real(k) for k in range(3)] == [4, 4, 2]
    # balanced: fewest chunks of at most max runs, multiple of the device count, least padding
    assert chunking.balanced(10_000, 6000, 4) == 5000
    assert chunking.balanced(10, 4, 4) == 4
    assert chunking.balanced(10, 3, 4) == 4  # at least one run per device
    assert chunking.balanced(7, 100, 2) == 8


def test_choose_uses_the_memory_estimate():
    """Auto mode: fit -> one chunk and the first program; too big -> a linear estimate, recompiled."""
    compiled_at = []

    def compiler(n_devices, per_run=1000, fixed=500):
        def compile_at(size):  # per-device bytes: fixed + 1000 per run on the device
            compiled_at.append(size)
            on_device = per_run * (size // n_devices)
            stats = SimpleNamespace(
                argument_size_in_bytes=fixed + on_device // 2,
                output_size_in_bytes=on_device // 2,
                alias_size_in_bytes=on_device // 2,
                temp_size_in_bytes=on_device // 2,
            )
            return SimpleNamespace(memory_analysis=lambda: stats, size=size)

        return compile_at

    chunks, prog, info = chunking.choose(100, 1, 0, compiler(1), fixed_bytes=500, budget=10**6)
    assert chunks.size == 100 and prog.size == 100 and compiled_at == [100]
    compiled_at.clear()
    chunks, prog, info = chunking.choose(100, 4, 0, compiler(4), fixed_bytes=500, budget=500 + 30 * 1000)
    # 100 runs over 4 devices = 25 per device = 25,500 bytes: fits
    assert chunks.size == 100 and compiled_at == [100]
    compiled_at.clear()
    chunks, prog, info = chunking.choose(100, 4, 0, compiler(4), fixed_bytes=500, budget=500 + 10 * 1000)
    # 10 runs per device fit -> at most 40 per chunk -> 3 chunks -> balanced to 36 (9 per device)
    assert chunks.size == 36 and chunks.n_chunks == 3 and compiled_at == [100, 36] and prog.size == 36
    assert info["bytes_per_chunk"] == 500 + 9 * 1000
    compiled_at.clear()
    chunks, prog, _ = chunking.choose(100, 4, 30, compiler(4))
    assert chunks.size == 28 and compiled_at == [28]  # fixed: 4 chunks of 28 (7 per device), no estimate
    with pytest.raises(Exception, match="JAXLAB_MEMORY_BUDGET"):
        chunking.parse_bytes("lots")
    assert chunking.parse_bytes("512M") == 512 * 2**20 and chunking.parse_bytes("2G") == 2 * 2**30
