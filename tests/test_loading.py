"""`jaxlab.load`: a run made by the CLI on 2 devices, opened in a fresh 1-device process, with
jaxlab and with plain orbax; selecting runs, groups and checkpoints by step; old run directories
whose checkpoints are named by evaluation index."""

import json
import shutil
import subprocess
import sys
import textwrap

import jax
import numpy as np
import pytest
from _jaxenv import jax_env

import jaxlab
from jaxlab.errors import UserError

# 2 groups (the layer count changes the program) x 2 learning rates (traced: one program) x 2 seeds
ARGS = [
    "run", "icl-regression", "--preset", "smoke", "--seeds", "0:2",
    "--sweep", "optim.lr=0.01,0.02", "--sweep", "model.n_layers=1,2",
    "--set", "train.steps=60", "--set", "train.eval_every=20",
    "--set", "train.checkpoint_every=1", "--set", "train.keep_checkpoints=0", "--quiet",
]  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("load") / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "jaxlab", *ARGS, "--out", str(out)],
        env=jax_env(n_devices=2),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


# what docs/tutorial.md and jaxlab.train.checkpoint show, in a process with one device
FRESH = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np
    import orbax.checkpoint as ocp
    import jaxlab

    run_dir = sys.argv[1]
    sweep = jaxlab.load(run_dir)
    params = sweep.params(group=0)
    train = sweep.train(group=0)
    batch = train.make_eval_batch()
    loss = jax.vmap(lambda p: train.evaluate(p, batch)["eval_loss"])(params)

    path = f"{run_dir}/checkpoints/group-0000/chunk-0000/60/item"
    ckptr = ocp.StandardCheckpointer()
    tree = ckptr.restore(path, jax.tree.map(lambda m: np.empty(m.shape, m.dtype), ckptr.metadata(path).item_metadata))

    same = jax.tree.map(lambda a, b: bool(np.array_equal(np.asarray(a), b)), params, tree["state"]["params"])
    print(json.dumps({
        "devices": jax.device_count(),
        "leading": sorted({x.shape[0] for x in jax.tree.leaves(params)}),
        "on": sorted({str(d) for x in jax.tree.leaves(params) for d in x.devices()}),
        "eval_loss": np.asarray(loss).tolist(),
        "orbax_equal": all(jax.tree.leaves(same)),
        "orbax_types": sorted({type(x).__name__ for x in jax.tree.leaves(tree)}),
    }))
    """
)


def test_a_two_device_cli_run_loads_in_a_fresh_one_device_process(run_dir):
    layout = json.loads((run_dir / "checkpoints" / "group-0000" / "layout.json").read_text())
    assert layout["n_devices"] == 2 and layout["n_chunks"] == 1 and layout["checkpoint_names"] == "step"
    proc = subprocess.run(
        [sys.executable, "-c", FRESH, str(run_dir)],
        env=jax_env(n_devices=1),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["devices"] == 1 and got["leading"] == [4] and got["on"] == ["cpu:0"]
    # the loaded parameters are the run's: they give the run's own final evaluation loss
    summary = json.loads((run_dir / "summary.json").read_text())
    finals = {r["run"]: r["final"]["eval_loss"] for r in summary["runs"]}
    group0 = [r.run for r in jaxlab.load(run_dir).group(0).runs]
    np.testing.assert_allclose(got["eval_loss"], [finals[r] for r in group0], rtol=1e-5)
    # plain orbax restores the same arrays, as NumPy arrays
    assert got["orbax_equal"] and got["orbax_types"] == ["ndarray"]


def test_runs_groups_and_checkpoints_by_step(run_dir):
    sweep = jaxlab.load(run_dir)
    assert len(sweep.groups) == 2 and sweep.finished and "groups=2" in repr(sweep)
    runs = sweep.runs()
    assert len(runs) == 8 and set(runs.columns) >= {"run", "seed", "group", "status", "optim__lr", "model__n_layers"}
    assert (runs.groupby("group").model__n_layers.nunique() == 1).all()
    picked = sweep.runs(status="ok", **{"optim.lr": 0.02, "model.n_layers": 2})
    assert len(picked) == 2 and set(picked.seed) == {0, 1} and (picked.group == 1).all()
    assert len(sweep.runs(optim__lr=0.01, group=0)) == 2
    with pytest.raises(UserError, match="no config key 'optim.rate'"):
        sweep.runs(**{"optim.rate": 0.1})
    # the float32 values stack_hparams / default_hparams give match within the same tolerance
    for lr in (np.float32(0.02), jax.numpy.float32(0.02), np.float64(0.02)):
        assert len(sweep.runs(**{"optim.lr": lr})) == 4, lr
    with pytest.raises(UserError, match=r"unknown status \(allowed: ok, diverged\)"):
        sweep.runs(status="finished")

    # several groups: arrays stack within one, so the group must be named
    with pytest.raises(UserError, match="the sweep has 2 groups, pick one with group="):
        sweep.params()
    with pytest.raises(UserError, match="groups 0..1, not 5"):
        sweep.params(group=5)
    assert sweep.steps(group=1) == [20, 40, 60]  # every evaluation (checkpoint_every=1), named by step
    assert sorted(p.name for p in (run_dir / "checkpoints" / "group-0001" / "chunk-0000").glob("[0-9]*")) == [
        "20",
        "40",
        "60",
    ]
    final = sweep.params(group=1)
    early = sweep.params(step=20, group=1)
    assert jax.tree.structure(final) == jax.tree.structure(early)
    assert all(a.shape[0] == 4 for a in jax.tree.leaves(final))
    assert not all(np.array_equal(a, b) for a, b in zip(jax.tree.leaves(final), jax.tree.leaves(early)))
    with pytest.raises(UserError, match=r"no checkpoint at step 30 \(have steps \[20, 40, 60\]\)"):
        sweep.params(step=30, group=1)
    # runs=[...] picks the group and the order
    g1 = [r.run for r in sweep.group(1).runs]
    two = sweep.params(runs=[g1[3], g1[0]])
    for a, b in zip(jax.tree.leaves(two), jax.tree.leaves(final)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b)[[3, 0]])
    with pytest.raises(UserError, match="arrays stack within one group"):
        sweep.params(runs=[0, g1[0]])
    # the model and the table
    assert sweep.model(group=1).cfg.n_layers == 2
    table = sweep.table
    assert set(table.run) == set(runs.run) and {"step", "metric", "value", "model__n_layers"} <= set(table.columns)


def test_old_run_directories_name_checkpoints_by_evaluation_index(run_dir, tmp_path):
    """Checkpoints written before they were named by step: <index>/ and fingerprints/<index>.json,
    no "checkpoint_names" in layout.json. They still load, to the same arrays."""
    old = tmp_path / "old"
    shutil.copytree(run_dir, old)
    for g in (0, 1):
        group_dir = old / "checkpoints" / f"group-000{g}"
        layout = json.loads((group_dir / "layout.json").read_text())
        del layout["checkpoint_names"]
        (group_dir / "layout.json").write_text(json.dumps(layout))
        chunk = group_dir / "chunk-0000"
        for step in (20, 40, 60):
            (chunk / str(step)).rename(chunk / str(step // 20))
            record = json.loads((chunk / "fingerprints" / f"{step}.json").read_text())
            record["index"] = step // 20
            del record["step"]
            (chunk / "fingerprints" / f"{step // 20}.json").write_text(json.dumps(record))
            (chunk / "fingerprints" / f"{step}.json").unlink()
    new, legacy = jaxlab.load(run_dir), jaxlab.load(old)
    assert legacy.steps(group=0) == [20, 40, 60]
    assert legacy.checkpoint_path(40, group=0) == old.absolute() / "checkpoints/group-0000/chunk-0000/2/item"
    assert new.checkpoint_path(40, group=0) == run_dir.absolute() / "checkpoints/group-0000/chunk-0000/40/item"
    for a, b in zip(jax.tree.leaves(legacy.params(step=40, group=0)), jax.tree.leaves(new.params(step=40, group=0))):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_load_refuses_what_is_not_a_run(tmp_path):
    with pytest.raises(UserError, match="holds no jaxlab run"):
        jaxlab.load(tmp_path)


def test_a_plugin_sweep_loaded_without_its_plugin_says_how(run_dir, tmp_path):
    copy = tmp_path / "plugin-run"
    copy.mkdir()
    cfg = json.loads((run_dir / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**cfg, "experiment": "context-mean"}))
    summary = json.loads((run_dir / "summary.json").read_text())
    (copy / "summary.json").write_text(json.dumps({**summary, "command": "jaxlab run my_exp.py:context-mean"}))
    with pytest.raises(UserError, match=r"plugins=\['path/to/file.py:NAME'\].*started with: jaxlab run my_exp.py"):
        jaxlab.load(copy)
