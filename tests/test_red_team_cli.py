"""Cases a red-team pass of the command line found (2026-12-08): files that were not jaxlab's deleted by
`--overwrite` or by `jaxlab bench memory`, a resume that merged a sweep without one of its chunks,
tracebacks instead of one-line errors, and a resumed run's provenance. Each case as it was reported,
with what must happen now: exit 2 and one `jaxlab: error:` line, and nothing of the user's touched.
"""

from __future__ import annotations

import json
import os
import signal
import socket
from pathlib import Path

import pytest
from _rundirs import error_line, run, tree
from _runs import run_cfg

from jaxlab import hostdevices, interrupt, results, runfiles
from jaxlab.cli import main
from jaxlab.errors import ConfigError, UserError
from jaxlab.registry import get_experiment, load_plugin
from jaxlab.train import distributed, with_seeds
from jaxlab.train import replace as replace_module
from jaxlab.train.replace import REPLACED
from jaxlab.train.rundir import check_run_dir

pytestmark = pytest.mark.timeout(300)


# -- nothing of the user's is deleted ----------------------------------------------------------------
def test_a_users_config_json_is_not_read_as_an_old_run(tmp_path, capsys):
    d = tmp_path / "u"
    d.mkdir()
    (d / "config.json").write_text('{"my": "own config"}')
    (d / "report.md").write_text("# notes\n![p](myplot.png)\n")
    (d / "myplot.png").write_text("DATA")
    before = tree(d)
    assert not runfiles.holds_run(d) and runfiles.owned(d) == set()
    for extra in ([], ["--overwrite"]):
        assert run(d, *extra) == 2
        assert "config.json, report.md are not jaxlab's" in error_line(capsys)
        assert tree(d) == before


def test_overwrite_refuses_files_of_the_users_inside_a_checkpoint_group(old_run, capsys):
    (old_run / "checkpoints" / "group-0000" / "NOTES.txt").write_text("mine")
    (old_run / "checkpoints" / "group-0000" / "chunk-0000" / "mine.txt").write_text("mine too")
    before = tree(old_run)
    assert runfiles.strangers(old_run) == [
        "checkpoints/group-0000/NOTES.txt",
        "checkpoints/group-0000/chunk-0000/mine.txt",
    ]
    assert run(old_run, "--overwrite") == 2
    assert "checkpoints/group-0000/NOTES.txt, checkpoints/group-0000/chunk-0000/mine.txt" in error_line(capsys)
    assert tree(old_run) == before


def test_tracker_directories_keep_what_the_trackers_did_not_write(old_run):
    assert runfiles.is_jaxlab_entry("wandb", "offline-run-20261208_010203-abc")
    assert not runfiles.is_jaxlab_entry("wandb", "my_notes.txt")
    board = old_run / "tensorboard"
    (board / "run-00000").mkdir(parents=True)
    (board / "run-00000" / "events.out.tfevents.1.host").write_bytes(b"jaxlab's")
    (board / "mine").mkdir()
    (board / "mine" / "events.out.mine").write_text("the user's")
    runfiles.record(old_run, ["tensorboard"])  # as the tracker's claim records it
    assert run(old_run, "--overwrite") == 0  # no --log: the new run writes no tensorboard/
    assert (board / "mine" / "events.out.mine").read_text() == "the user's"
    assert not (board / "run-00000").exists()  # the old run's events went with it
    # a user's file inside a TensorBoard run of jaxlab's is refused, not deleted
    (board / "run-00001").mkdir()
    (board / "run-00001" / "notes.txt").write_text("mine")
    runfiles.record(old_run, ["tensorboard"])
    assert runfiles.strangers(old_run) == ["tensorboard/run-00001/notes.txt"]


def test_a_symlink_named_like_jaxlabs_replaced_run_is_refused_and_its_target_untouched(old_run, tmp_path, capsys):
    target = tmp_path / "userdir"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    (old_run / REPLACED).symlink_to(target)
    before = tree(old_run)
    assert run(old_run, "--overwrite") == 2
    assert f"{REPLACED} is not jaxlab's" in error_line(capsys)
    assert tree(old_run) == before and (target / "notes.txt").read_text() == "mine"


def test_resume_refuses_a_config_json_that_is_not_jaxlabs(tmp_path, capsys):
    d = tmp_path / "u"
    d.mkdir()
    for content in ('{"my": "own config"}', "[1, 2]"):
        (d / "config.json").write_text(content)
        assert main(["run", "icl-regression", "--out", str(d), "--resume", "--quiet"]) == 2
        assert "not a jaxlab" in error_line(capsys)
        with pytest.raises(UserError, match="is not a jaxlab run's config"):  # the Python API's check
            check_run_dir(d, get_experiment("icl-regression").preset("smoke"), resume=True, overwrite=False)
        assert (d / "config.json").read_text() == content


def test_a_file_named_like_jaxlabs_replaced_run_is_kept(old_run, capsys):
    (old_run / REPLACED).write_text("mine")
    before = tree(old_run)
    assert run(old_run, "--overwrite") == 2
    assert f"{REPLACED} is not jaxlab's" in error_line(capsys)
    assert tree(old_run) == before


def test_a_move_aside_that_fails_half_way_puts_everything_back(old_run, monkeypatch, capsys):
    before = tree(old_run)
    real_rename = os.rename

    def rename(src, dst):
        if Path(src).name == "parts":
            raise PermissionError(1, "Operation not permitted", str(src))
        return real_rename(src, dst)

    monkeypatch.setattr(replace_module.os, "rename", rename)
    code = run(old_run, "--overwrite")
    assert code == 2, code
    assert "Operation not permitted" in error_line(capsys)
    assert tree(old_run) == before


def test_the_report_records_only_the_files_it_created(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    (tmp_path / "summary.json").write_text("{}")
    before = runfiles.listing(tmp_path)
    (tmp_path / "notes.txt").write_text("mine, edited meanwhile")  # the user's file, changed during the report
    (tmp_path / "summary.json").write_text('{"a": 1}')
    (tmp_path / "figure.png").write_bytes(b"new")
    assert runfiles.written(tmp_path, before) == ["figure.png"]


def test_bench_memory_never_replaces_a_run_unasked(old_run, capsys):
    before = tree(old_run)
    assert main(["bench", "memory", "--runs", "2", "--out", str(old_run)]) == 2
    assert "already holds a run; pass --resume to continue it or --overwrite" in error_line(capsys)
    assert tree(old_run) == before
    for args, field in ((["--runs", "0"], "--runs"), (["--experiment", "nope"], "experiment")):
        assert main(["bench", "memory", *args]) == 2
        assert field in error_line(capsys)


def test_bench_scaling_refuses_an_existing_output_and_a_nan_time(tmp_path, capsys):
    fig = tmp_path / "fig.png"
    fig.write_bytes(b"mine")
    base = ["bench", "scaling", "--axis", "runs", "--values", "1", "--steps", "1", "--repeats", "1"]
    assert main([*base, "--min-time", "0", "--plot", str(fig)]) == 2
    assert "--plot: " in error_line(capsys) and fig.read_bytes() == b"mine"
    assert main([*base, "--min-time", "nan"]) == 2
    assert "--min-time: must be a finite number >= 0, got nan" in error_line(capsys)


# -- resume -------------------------------------------------------------------------------------------
def test_a_done_chunk_whose_part_is_gone_is_redone_on_resume(old_run):
    n_runs = results.load_summary(old_run)["n_runs"]
    (old_run / "parts" / "part-0000-0000-00000.json").unlink()
    assert main(["run", "icl-regression", "--out", str(old_run), "--resume", "--quiet"]) == 0
    assert results.load_summary(old_run)["n_runs"] == n_runs == 2
    for suffix in ("json", "parquet"):
        (old_run / "parts" / f"part-0000-0000-00000.{suffix}").unlink()
    assert main(["run", "icl-regression", "--out", str(old_run), "--resume", "--quiet"]) == 0
    assert results.load_summary(old_run)["n_runs"] == 2


def test_a_damaged_layout_is_a_message_and_a_resume_keeps_the_runs_command(old_run, capsys):
    started = results.load_summary(old_run)["command"]
    assert started.startswith("jaxlab run icl-regression --preset smoke --quiet --out ")
    (old_run / "summary.json").unlink()
    assert main(["run", "icl-regression", "--out", str(old_run), "--resume", "--quiet"]) == 0
    assert results.load_summary(old_run)["command"] == started  # not the resume command
    assert f"reproduce: `{started}`" in (old_run / "report.md").read_text()
    # a record written before it held the command: the finished run's summary.json says it
    manifest = json.loads((old_run / runfiles.MANIFEST).read_text())
    del manifest["command"]
    (old_run / runfiles.MANIFEST).write_text(json.dumps(manifest))
    assert main(["run", "icl-regression", "--out", str(old_run), "--resume", "--quiet"]) == 0
    assert results.load_summary(old_run)["command"] == started
    capsys.readouterr()
    (old_run / "checkpoints" / "group-0000" / "layout.json").write_text("garbage")
    assert main(["run", "icl-regression", "--out", str(old_run), "--resume", "--quiet"]) == 2
    assert "layout.json: truncated or not JSON" in error_line(capsys)


# -- one line, not a traceback ------------------------------------------------------------------------
@pytest.mark.parametrize(
    "source, expected",
    [
        ("def f(:\n", "SyntaxError"),
        ("x = 1\nraise RuntimeError('boom in the plug-in')\n", "RuntimeError: boom in the plug-in"),
        ("import no_such_module_xyz\n", "ModuleNotFoundError"),
    ],
)
def test_a_plugin_that_fails_to_import_is_a_message(tmp_path, capsys, source, expected):
    path = tmp_path / "plug.py"
    path.write_text(source)
    with pytest.raises(ConfigError, match=f"plug.py failed to load: {expected}"):
        load_plugin(f"{path}:X")
    assert main(["run", f"{path}:X", "--out", str(tmp_path / "o"), "--show-config"]) == 2
    assert expected in error_line(capsys)


@pytest.mark.parametrize("value", ["²", "٣x", "1 2"])
def test_non_ascii_digits_in_the_device_count_are_refused(monkeypatch, value):
    monkeypatch.setenv(hostdevices.ENV, value)
    with pytest.raises(ConfigError, match=hostdevices.ENV):
        hostdevices.requested_devices()


def test_an_absent_coordinator_is_a_message_after_the_wait():
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    told = []
    with pytest.raises(UserError, match=rf"--coordinator 127.0.0.1:{port}: nothing answered there for 0.5 s"):
        distributed.wait_for_coordinator(f"127.0.0.1:{port}", timeout_s=0.5, notice=told.append)
    assert len(told) == 1 and "waiting up to 0.5 s" in told[0]
    with pytest.raises(UserError, match="expected HOST:PORT"):
        distributed.initialize("localhost:²", 2, 1)


def test_an_empty_preset_name_is_refused(tmp_path, capsys):
    assert main(["run", "icl-regression", "--preset", "", "--out", str(tmp_path / "o"), "--show-config"]) == 2
    assert "has no preset ''" in error_line(capsys)


def test_set_values_are_validated_together_whatever_their_order(tmp_path, capsys):
    """400000 steps evaluated every 1000: 401 evaluations, but set one at a time from the preset's
    eval_every = 20 the state in between has 20001 (refused before the values were set together)."""
    cfg = get_experiment("icl-regression").preset("smoke")
    assert cfg.train.eval_every == 20
    both = {"train.steps": 400000, "train.eval_every": 1000}
    assert cfg.with_overrides(both).train.n_eval_points() == 401
    with pytest.raises(ConfigError, match="20001 evaluations"):
        cfg.set("train.steps", 400000)  # the state in between, alone: refused
    out = str(tmp_path / "o")
    sets = ["--set", "train.steps=400000", "--set", "train.eval_every=1000"]
    assert main(["run", "icl-regression", "--preset", "smoke", *sets, "--out", out, "--show-config"]) == 0
    capsys.readouterr()
    log = {"train.eval_schedule": "log", "train.n_evals": 10000, "train.steps": 4}
    assert cfg.with_overrides(log).train.n_eval_points() == 5  # at most steps + 1 distinct steps
    assert cfg.with_overrides({"train.n_evals": 10**6}).train.n_evals == 10**6  # unused by the linear schedule
    with pytest.raises(ConfigError, match="train.n_evals"):
        cfg.with_overrides({"train.eval_schedule": "log", "train.n_evals": 10**6})


def test_the_python_api_run_is_unchanged_by_the_record_of_its_command(tmp_path):
    cfg = with_seeds(get_experiment("icl-regression").preset("smoke"), (0,)).set("train.steps", 4)
    run_cfg(cfg, tmp_path / "api", progress=False, quiet=True)
    manifest = json.loads((tmp_path / "api" / runfiles.MANIFEST).read_text())
    assert manifest["started"] is True and "command" not in manifest  # no command line: nothing recorded


def test_a_stop_signal_after_training_says_the_sweep_finishes(capfd):
    with interrupt.stop_on_signals():
        interrupt.training_over()
        os.kill(os.getpid(), signal.SIGTERM)
        assert interrupt.requested() == signal.SIGTERM
    err = capfd.readouterr().err
    assert "SIGTERM: training is over: finishing the results and the report, then exiting" in err, err
    with interrupt.stop_on_signals():  # a new sweep: the usual message again
        os.kill(os.getpid(), signal.SIGTERM)
    assert "stopping after the current interval with a checkpoint" in capfd.readouterr().err
