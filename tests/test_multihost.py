"""Two processes on 127.0.0.1 (`--distributed`): each writes its shard, process 0 merges, same results."""

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from _jaxenv import free_port, jax_env
from _runs import run_cfg

from jaxlab import results
from jaxlab.registry import get_experiment
from jaxlab.train import with_seeds

ARGS = ["--preset", "smoke", "--seeds", "0:6", "--set", "train.steps=20", "--set", "train.eval_every=10", "--quiet"]

pytestmark = pytest.mark.multiprocess


def test_two_processes_merge_equals_single_process(tmp_path):
    out = tmp_path / "two"
    port = free_port()
    distributed = lambda i: ["--coordinator", f"127.0.0.1:{port}", "--num-processes", "2", "--process-id", str(i)]
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "jaxlab", "run", "icl-regression", *ARGS, "--out", str(out), *distributed(i)],
            env=jax_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    try:
        outputs = [p.communicate(timeout=300) for p in procs]
    finally:
        for p in procs:
            p.kill()
    for p, (_, err) in zip(procs, outputs):
        assert p.returncode == 0, err[-3000:]
    assert "6 runs (0 diverged)" in outputs[0][0] and "runs (" not in outputs[1][0]  # process 0 reports

    # 6 runs, 1 device: the same program as tests/test_sharding.py's reference run (compilation cache)
    cfg = with_seeds(get_experiment("icl-regression").preset("smoke"), tuple(range(6)))
    single = run_cfg(cfg.with_overrides({"train.steps": 20, "train.eval_every": 10}), tmp_path / "one", progress=False)

    # each process wrote only its own runs; together they are every run once
    parts = sorted((out / "parts").glob("part-*.json"))
    assert [p.name for p in parts] == ["part-0000-0000-00000.json", "part-0000-0000-00001.json"]
    shards = [{r["run"] for r in json.loads(p.read_text())["runs"]} for p in parts]
    assert shards[0] and shards[1] and not shards[0] & shards[1] and shards[0] | shards[1] == set(range(6))

    summary = results.load_summary(out)
    assert summary["n_processes"] == 2 and summary["n_devices"] == 2 and summary["n_runs"] == 6
    assert [r["run"] for r in summary["runs"]] == list(range(6))
    for a, b in zip(summary["runs"], single.summary["runs"]):
        assert (a["seed"], a["status"]) == (b["seed"], b["status"])
        assert a["final"] == pytest.approx(b["final"], rel=1e-5)

    key = ["run", "metric", "step"]
    merged = results.load(out).sort_values(key, ignore_index=True)
    alone = results.load(tmp_path / "one").sort_values(key, ignore_index=True)
    pd.testing.assert_frame_equal(merged.drop(columns="value"), alone.drop(columns="value"))
    np.testing.assert_allclose(merged["value"], alone["value"], rtol=1e-5)
    assert (out / "report.md").is_file()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--num-processes", "2", "--process-id", "2"], "--process-id: must be in 0..1, got 2"),
        (["--num-processes", "0"], "--num-processes: must be >= 1, got 0"),
        (["--coordinator", "localhost"], "--coordinator: expected HOST:PORT"),
        (["--distributed"], "no other flag is needed; elsewhere pass --coordinator HOST:PORT"),
    ],
)
def test_distributed_flags_are_checked(flags, message, tmp_path, capsys, monkeypatch):
    from jaxlab.cli import main

    for var in ("SLURM_JOB_ID", "OMPI_MCA_orte_hnp_uri", "OMPI_MCA_ess_base_jobid", "TPU_WORKER_HOSTNAMES"):
        monkeypatch.delenv(var, raising=False)
    out = tmp_path / "x"
    assert main(["run", "icl-regression", "--preset", "smoke", "--out", str(out), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
