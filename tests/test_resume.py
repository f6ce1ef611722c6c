"""A sweep killed with SIGKILL mid-run resumes (`--resume`) to the uninterrupted run's numbers, bit for bit."""

import json
import signal
import subprocess
import sys

import jax
import numpy as np
from _jaxenv import jax_env
from _runs import run_cfg

from jaxlab import results
from jaxlab.cli import main
from jaxlab.registry import get_experiment, load_run_group
from jaxlab.train import with_seeds

# 20 evaluation intervals, a checkpoint after every second one: the kill lands between two
SETTINGS = {"train.steps": 400, "train.eval_every": 20, "train.checkpoint_every": 2, "train.keep_checkpoints": 2}
ARGS = ["--preset", "smoke", "--seeds", "0:3"] + [a for k, v in SETTINGS.items() for a in ("--set", f"{k}={v}")]
KILL_AFTER_STEP = 120


def cli(out, *extra):
    cmd = [sys.executable, "-m", "jaxlab", "run", "icl-regression", "--out", str(out), "--quiet", *extra]
    return subprocess.Popen(cmd, env=jax_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def progress_steps(lines):
    return [int(line.split(" step ")[1].split("/")[0]) for line in lines if line.startswith("[jaxlab]")]


def test_sigkill_then_resume_equals_uninterrupted_bitwise(tmp_path, capsys):
    out = tmp_path / "killed"
    proc = cli(out, *ARGS)
    seen = []
    try:
        for line in proc.stderr:  # one line per evaluation interval (quiet mode)
            seen.append(line)
            if progress_steps([line]) and progress_steps([line])[0] >= KILL_AFTER_STEP:
                proc.send_signal(signal.SIGKILL)
                break
        proc.wait(timeout=120)
    finally:
        proc.kill()
    assert proc.returncode == -signal.SIGKILL, "".join(seen)[-3000:]

    # killed mid-run: whole files only, no summary or table yet, a checkpoint to resume from
    assert not (out / "summary.json").exists() and not (out / "metrics.parquet").exists()
    assert json.loads((out / "config.json").read_text())["experiment"] == "icl-regression"
    chunk_dir = out / "checkpoints" / "group-0000" / "chunk-0000"
    kept = [int(p.name) for p in chunk_dir.iterdir() if p.name.isdigit()]  # named by step
    assert kept and max(kept) < 400 and all(step % 20 == 0 for step in kept), kept

    # the same command line, in this process (same XLA flags as the killed one)
    capsys.readouterr()
    assert main(["run", "icl-regression", "--out", str(out), "--resume", "--quiet"]) == 0
    steps_after = progress_steps(capsys.readouterr().err.splitlines())
    # it continued from the last checkpoint, not from step 0
    assert steps_after[0] >= 2 * 20 + 20 and steps_after[-1] == 400, steps_after

    cfg = with_seeds(get_experiment("icl-regression").preset("smoke"), (0, 1, 2)).with_overrides(SETTINGS)
    whole = run_cfg(cfg, progress=False)

    again = load_run_group(out, 0)
    for a, b in zip(jax.tree_util.tree_leaves(again.state), jax.tree_util.tree_leaves(whole.groups[0].state)):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    for name in ("eval_loss", "train_loss"):
        np.testing.assert_array_equal(again.history[name], whole.groups[0].history[name])
    table = results.load(out)
    for name in ("eval_loss", "train_loss"):
        wide = table[table.metric == name].pivot(index="run", columns="step", values="value")
        np.testing.assert_array_equal(wide.to_numpy(), whole.groups[0].history[name])
    summary = results.load_summary(out)
    assert [r["final"] for r in summary["runs"]] == [r["final"] for r in whole.summary["runs"]]
    assert not list(out.rglob("*.tmp")) and not list(chunk_dir.glob("*tmp*"))
