"""docs/extending.md, run exactly as written from a directory outside the repository: a user's task and
experiment in one file, through `jaxlab list/run/report --plugin` and through `run_sweep` in Python."""

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from _jaxenv import ROOT, jax_env

DOC = ROOT / "docs" / "extending.md"


def blocks(kind: str) -> list[str]:
    return [body for lang, body in re.findall(r"```(\w+)\n(.*?)```", DOC.read_text(), re.S) if lang == kind]


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("user")
    assert ROOT not in d.parents
    (d / "context_mean.py").write_text(blocks("python")[0])
    return d


def env():
    e = jax_env(n_devices=2)
    e.pop("PYTHONPATH")  # the installed jaxlab, as a user has it
    e["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), e.get("PATH", "")])
    return e


@pytest.mark.timeout(600)
def test_the_command_lines_of_the_page_run_a_plugin_experiment(user_dir):
    commands = [line for line in blocks("bash")[0].splitlines() if line.startswith("jaxlab ")]
    assert [c.split()[1] for c in commands] == ["list", "run", "report"]
    outputs = []
    for command in commands:
        done = subprocess.run(
            shlex.split(command), cwd=user_dir, env=env(), capture_output=True, text=True, timeout=500
        )
        assert done.returncode == 0, (command, done.stderr[-3000:])
        outputs.append(done.stdout)
    assert "context-mean  (plug-in)" in outputs[0]
    run = user_dir / "runs" / "context-mean"
    summary = json.loads((run / "summary.json").read_text())
    assert summary["experiment"] == "context-mean" and summary["n_runs"] == 2
    assert all(r["status"] == "ok" and "bayes_gap" in r["final"] for r in summary["runs"])
    report = (run / "report.md").read_text()
    assert "Against the Bayes-optimal predictor" in report and "bayes_gap" in report
    [claim] = summary["claims"]  # 2 seeds: computed, but too few for a verdict
    assert claim["id"] == "reaches_bayes" and claim["n_seeds"] == 2 and claim["verdict"] == "inconclusive"
    assert report.index("## Claims") < report.index("## Deviations from the paper's setup") < report.index("## Setup")
    # a resume names the plug-in again and finds the stored task by its kind
    resume = ["jaxlab", "run", "context_mean.py:EXPERIMENT", "--out", "runs/context-mean", "--resume"]
    done = subprocess.run(resume, cwd=user_dir, env=env(), capture_output=True, text=True, timeout=500)
    assert done.returncode == 0, done.stderr[-3000:]


@pytest.mark.timeout(600)
def test_the_python_block_of_the_page_runs(user_dir):
    done = subprocess.run(
        [sys.executable, "-c", blocks("python")[1]],
        cwd=user_dir,
        env=env(),
        capture_output=True,
        text=True,
        timeout=500,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    gap = float(done.stdout.strip().splitlines()[-1])
    assert (user_dir / "runs" / "context-mean-py" / "report.md").exists()
    # the same sweep as the command line's (same seeds, config and devices): the same numbers
    cli = json.loads((user_dir / "runs" / "context-mean" / "summary.json").read_text())
    assert gap == cli["aggregate"]["bayes_gap"]["median"]


def test_an_unknown_plugin_is_a_clear_error(user_dir, capsys):
    from jaxlab.cli import main

    assert main(["list", "--plugin", str(user_dir / "context_mean.py") + ":NOPE"]) == 2
    err = capsys.readouterr().err
    assert "defines no 'NOPE'" in err and "EXPERIMENT" in err
    assert main(["list", "--plugin", "no_such_file.py:X"]) == 2
    assert "no such file" in capsys.readouterr().err
