"""The command line end to end: files, schema, errors (exit 2, no traceback), nothing lost."""

import json
import re
import shutil
import subprocess
import sys

import pandas as pd
import pytest

import jaxlab
from jaxlab import results
from jaxlab.cli import main

SUMMARY_KEYS = {
    "experiment", "preset", "jaxlab_version", "device", "n_devices", "n_runs", "wall_s", "compile_s",
    "runs", "aggregate", "reference",
}  # fmt: skip


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "smoke"
    assert main(["run", "icl-regression", "--preset", "smoke", "--out", str(out), "--quiet"]) == 0
    return out


def test_run_writes_the_documented_layout(smoke_run):
    for name in ("config.json", "summary.json", "metrics.parquet", "runs.parquet", "report.md", "loss_curves.png"):
        assert (smoke_run / name).is_file(), name
    assert any((smoke_run / "checkpoints").rglob("*")), "no checkpoint written"
    summary = json.loads((smoke_run / "summary.json").read_text())
    assert SUMMARY_KEYS <= set(summary)
    assert summary["experiment"] == "icl-regression" and summary["preset"] == "smoke" and summary["n_runs"] == 2
    for run in summary["runs"]:
        assert set(run) == {"run", "seed", "hparams", "status", "diverged_at_step", "final"}
        assert run["status"] == "ok" and run["final"]["eval_loss"] > 0
    assert set(summary["aggregate"]["eval_loss"]) >= {"mean", "median", "std", "min", "max"}

    df = results.load(smoke_run)
    assert list(df.columns) == [
        "experiment", "preset", "run", "seed", "status", "diverged_at_step", "step", "metric", "value",
    ]  # fmt: skip
    assert set(df.experiment) == {"icl-regression"} and set(df.preset) == {"smoke"} and set(df.status) == {"ok"}
    assert df.diverged_at_step.isna().all()
    runs = pd.read_parquet(smoke_run / "runs.parquet")
    assert list(runs.run) == [0, 1] and list(runs.seed) == [0, 1]
    cfg = json.loads((smoke_run / "config.json").read_text())
    assert runs.model__n_layers.tolist() == [cfg["model"]["n_layers"]] * 2 and (runs.train__steps == 80).all()
    assert sorted(df.step.unique()) == [0, 20, 40, 60, 80]
    # the final loss on the replicate evaluation set (jaxlab.train.replicate) sits at the last step only
    assert set(df.metric) == {"train_loss", "eval_loss", "replicate_eval_loss"}
    assert sorted(df[df.metric == "replicate_eval_loss"].step.unique()) == [80]
    last = results.final_values(df, "eval_loss")
    assert last.to_dict() == pytest.approx({r["run"]: r["final"]["eval_loss"] for r in summary["runs"]})
    report = (smoke_run / "report.md").read_text()
    assert "![loss_curves.png](loss_curves.png)" in report and "jaxlab run icl-regression --preset smoke" in report


def test_existing_run_is_refused_and_kept(smoke_run, capsys):
    before = (smoke_run / "summary.json").read_bytes()
    assert main(["run", "icl-regression", "--preset", "smoke", "--out", str(smoke_run)]) == 2
    err = capsys.readouterr().err
    assert "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert (smoke_run / "summary.json").read_bytes() == before


def test_resume_of_a_finished_run_keeps_its_results(smoke_run):
    before = pd.read_parquet(smoke_run / "metrics.parquet")
    assert main(["run", "icl-regression", "--out", str(smoke_run), "--resume", "--quiet"]) == 0
    pd.testing.assert_frame_equal(pd.read_parquet(smoke_run / "metrics.parquet"), before)


def test_report_command_rewrites_report(smoke_run):
    (smoke_run / "report.md").unlink()
    assert main(["report", str(smoke_run)]) == 0
    assert (smoke_run / "report.md").exists()


def test_report_of_a_run_with_a_retired_field_is_refused_and_leaves_its_files(smoke_run, tmp_path, capsys):
    """A config field this jaxlab no longer has (written by another version of the experiment): the
    loader would skip it and the claims would be re-evaluated on metrics this version may not read."""
    old = tmp_path / "old"
    shutil.copytree(smoke_run, old)
    config = json.loads((old / "config.json").read_text())
    config["probe"]["retired_setting"] = 3
    (old / "config.json").write_text(json.dumps(config))
    before = {name: (old / name).read_bytes() for name in ("summary.json", "report.md")}
    assert main(["report", str(old)]) == 2
    err = capsys.readouterr().err
    assert "probe.retired_setting" in err and "left as they are" in err and "Traceback" not in err
    assert {name: (old / name).read_bytes() for name in before} == before
    assert len(jaxlab.load(old).runs()) == 2  # the tables still load


def test_sweep_over_traced_key_adds_columns_and_points(tmp_path):
    out = tmp_path / "sweep"
    args = ["run", "icl-regression", "--preset", "smoke", "--seeds", "0:2", "--sweep", "optim.lr=0.01,0.03"]
    assert main([*args, "--set", "train.steps=40", "--out", str(out), "--quiet"]) == 0
    df = results.load(out)
    assert "optim__lr" in df.columns and set(df["optim__lr"]) == {0.01, 0.03}
    # a --set value is a column of every row (a preset's own values are in runs.parquet)
    assert "train__steps" in df.columns and set(df["train__steps"]) == {40}
    summary = results.load_summary(out)
    assert summary["n_runs"] == 4 and len(summary["aggregate_by_point"]) == 2


def test_two_run_directories_group_by_a_set_value_in_one_sql_query(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    for layers in (2, 3):
        args = ["run", "icl-regression", "--preset", "smoke", "--set", f"model.n_layers={layers}"]
        short = ["--set", "train.steps=20", "--set", "train.eval_every=10"]
        assert main([*args, *short, "--out", str(tmp_path / f"l{layers}"), "--quiet"]) == 0
    files = [str(tmp_path / f"l{layers}" / "metrics.parquet") for layers in (2, 3)]
    query = (
        "SELECT model__n_layers, count(DISTINCT run) AS runs, avg(value) AS loss FROM read_parquet($files) "
        "WHERE metric = 'eval_loss' AND step = 20 GROUP BY model__n_layers ORDER BY model__n_layers"
    )
    got = duckdb.execute(query, {"files": files}).fetchall()
    assert [(row[0], row[1]) for row in got] == [(2, 2), (3, 2)]
    for layers, (_, _, loss) in zip((2, 3), got):
        want = results.load(tmp_path / f"l{layers}").query("metric == 'eval_loss' and step == 20").value.mean()
        assert loss == pytest.approx(want)


def test_overwrite_replaces(tmp_path):
    out = tmp_path / "o"
    base = ["run", "icl-regression", "--preset", "smoke", "--quiet", "--out", str(out)]  # the fixture's program
    assert main([*base, "--seeds", "0,1"]) == 0
    assert main([*base, "--seeds", "5,6", "--overwrite"]) == 0
    assert sorted(results.load(out).seed.unique()) == [5, 6]
    assert [r["seed"] for r in results.load_summary(out)["runs"]] == [5, 6]


def test_list_and_show_config(capsys):
    assert main(["list"]) == 0
    assert "icl-regression" in capsys.readouterr().out
    assert main(["run", "icl-regression", "--preset", "paper", "--set", "model.n_layers=2", "--show-config"]) == 0
    out = capsys.readouterr().out
    for key, value in (("model.n_layers", "2"), ("train.batch_size", "2048"), ("model.d_model", "11")):
        assert re.search(rf"^{re.escape(key)}:\s+\S.*? = {value}\s+# ", out, re.M), key


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "no-such-exp", "--out", "X"], "experiment: unknown experiment 'no-such-exp' (allowed: function-classes, icl-autoregressive, icl-regression"),
        (["run", "icl-regression", "--preset", "huge", "--out", "X"], "no preset 'huge' (allowed: context, deep, depth, depth-noisy, ood, paper, quick, recurrent, recurrent-context, smoke, softmax, softmax-mlp)"),
        (["run", "icl-regression", "--set", "model.n_head=2", "--out", "X"], "model.n_head: unknown config key (allowed: model.n_layers"),
        (["run", "icl-regression", "--set", "model.activation=swish", "--out", "X"], "model.activation: unknown value 'swish' (allowed: gelu, relu, solu)"),
        (["run", "icl-regression", "--set", "train.steps=-3", "--out", "X"], "train.steps: must be > 0"),
        (["run", "icl-regression", "--set", "model.d_model=12", "--set", "model.read_in=linear", "--set", "model.n_heads=5", "--out", "X"], "model.n_heads: d_model=12 is not divisible by n_heads=5"),
        (["run", "icl-regression", "--seeds", "a:b", "--out", "X"], "--seeds: cannot parse 'a:b'"),
        (["run", "icl-regression"], "--out: required"),
    ],
)  # fmt: skip
def test_user_errors_exit_2_with_message(args, message, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not (tmp_path / "X").exists()


def test_console_entry_point_error_has_no_traceback(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jaxlab",
            "run",
            "icl-regression",
            "--set",
            "optim.name=lion",
            "--out",
            str(tmp_path / "r"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    assert "optim.name: unknown value 'lion' (allowed: adamw, adam, sgd)" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_version_and_the_help_say_what_jaxlab_is_and_needs(capsys):
    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0 and capsys.readouterr().out.strip() == f"jaxlab {jaxlab.__version__}"
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    assert "--out DIR" in capsys.readouterr().out.replace("\n", " ")
