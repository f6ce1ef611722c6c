"""A message, not a traceback: environment errors (full disk, read-only or blocked paths), damaged
files read back, out-of-range values and wrong argument types.

Through the command line every case exits with status 2 and one `jaxlab: error:` line naming the
path or the field; through the Python API the same cases raise `UserError` subclasses
(`StorageError` is also an `OSError`, `CorruptFileError` also a `ValueError`). A full or read-only
disk is simulated by making the OS calls that create files and directories under one directory
fail with that errno, never by filling a disk.
"""

import errno
import json
import os
import shutil
from pathlib import Path

import pytest
from _rundirs import error_line
from _runs import run_cfg

from jaxlab import results
from jaxlab.cli import main
from jaxlab.config import TrainConfig
from jaxlab.errors import ConfigError, CorruptFileError, StorageError, UserError, environment_error
from jaxlab.registry import get_experiment, load_run_group
from jaxlab.report import write_report
from jaxlab.train import make_train, with_seeds
from jaxlab.train import sweep as sweep_module
from jaxlab.train.chunking import BUDGET_ENV, parse_bytes

pytestmark = pytest.mark.timeout(300)  # the sweeps compile and train: a hang must fail

SMOKE = ["run", "icl-regression", "--preset", "smoke", "--seeds", "1", "--quiet"]


# -- helpers -----------------------------------------------------------------------------------------
def refuse_writes(monkeypatch, root: Path, code: int, name_starts: str = "") -> None:
    """Make creating files and directories under `root` (whose names start with `name_starts`)
    fail with `code`, as a full (ENOSPC) or read-only (EROFS) file system does."""
    real_open, real_mkdir = os.open, os.mkdir
    top = os.path.abspath(root)

    def refused(path) -> bool:
        p = os.path.abspath(os.fspath(path))
        return (p == top or p.startswith(top + os.sep)) and os.path.basename(p).startswith(name_starts)

    def fake_open(path, flags, mode=0o777, *, dir_fd=None):
        if dir_fd is None and flags & (os.O_WRONLY | os.O_RDWR | os.O_CREAT) and refused(path):
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real_open(path, flags, mode, dir_fd=dir_fd)

    def fake_mkdir(path, mode=0o777, *, dir_fd=None):
        if dir_fd is None and refused(path):
            raise OSError(code, os.strerror(code), os.fspath(path))
        return real_mkdir(path, mode, dir_fd=dir_fd)

    monkeypatch.setattr(os, "open", fake_open)
    monkeypatch.setattr(os, "mkdir", fake_mkdir)


def no_training(monkeypatch) -> None:
    """Fail the test if a sweep gets as far as training a group."""

    def trained(*args, **kwargs):
        raise AssertionError("the run trained before refusing")

    monkeypatch.setattr(sweep_module, "run_group", trained)


def snapshot(directory: Path) -> dict[str, bytes]:
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A finished smoke run directory (copy it before damaging it)."""
    cfg = with_seeds(get_experiment("icl-regression").preset("smoke"), (0,))
    out = tmp_path_factory.mktemp("finished") / "run"
    run_cfg(cfg, out, progress=False)
    return out


@pytest.fixture
def run_copy(finished, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(finished, out)
    return out


def truncate(path: Path, keep: int = 40) -> None:
    path.write_bytes(path.read_bytes()[:keep])


# -- environment errors while writing --------------------------------------------------------------
def test_out_under_a_file_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    blocker = tmp_path / "afile"
    blocker.write_text("the user's file\n")
    no_training(monkeypatch)
    assert main([*SMOKE, "--out", str(blocker / "sub")]) == 2
    line = error_line(capsys)
    assert str(blocker / "sub") in line and os.strerror(errno.ENOTDIR) in line
    assert blocker.read_text() == "the user's file\n"
    cfg = get_experiment("icl-regression").preset("smoke")
    with pytest.raises(UserError, match="afile"):
        run_cfg(cfg, blocker / "sub", progress=False)


def test_read_only_out_is_refused_before_any_work(tmp_path, capsys, monkeypatch):
    out = tmp_path / "ro"
    out.mkdir()
    refuse_writes(monkeypatch, out, errno.EROFS)
    no_training(monkeypatch)
    assert main([*SMOKE, "--out", str(out)]) == 2
    line = error_line(capsys)
    assert str(out) in line and os.strerror(errno.EROFS) in line
    assert list(out.iterdir()) == []
    cfg = get_experiment("icl-regression").preset("smoke")
    with pytest.raises(UserError, match=os.strerror(errno.EROFS)):
        run_cfg(cfg, out, progress=False)


def test_full_disk_during_a_run_then_resume(tmp_path, capsys, monkeypatch):
    out = tmp_path / "full"
    with monkeypatch.context() as m:
        refuse_writes(m, out / "parts", errno.ENOSPC, name_starts=".part-")  # after training, at the results
        assert main([*SMOKE, "--out", str(out)]) == 2
    line = error_line(capsys)
    assert "part-0000-0000-00000.parquet" in line and os.strerror(errno.ENOSPC) in line
    assert (out / "config.json").exists() and (out / "checkpoints").is_dir()  # nothing lost
    assert not list((out / "parts").glob(".*.tmp"))  # no half-written file left behind
    # space again: the same command with --resume completes from the checkpoint
    assert main([*SMOKE, "--out", str(out), "--resume"]) == 0
    assert results.load_summary(out)["n_runs"] == 1


def test_full_disk_in_report_keeps_the_old_report(run_copy, capsys, monkeypatch):
    before = snapshot(run_copy)
    refuse_writes(monkeypatch, run_copy, errno.ENOSPC)
    assert main(["report", str(run_copy)]) == 2
    line = error_line(capsys)
    assert str(run_copy) in line and os.strerror(errno.ENOSPC) in line
    assert snapshot(run_copy) == before  # the old report and figures are whole; no temporary files
    with pytest.raises(StorageError) as info:
        write_report(run_copy)
    assert info.value.errno == errno.ENOSPC and isinstance(info.value, UserError) and isinstance(info.value, OSError)
    assert snapshot(run_copy) == before


def test_writers_raise_storage_error_and_keep_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "d" / "summary.json"
    results.write_json(path, {"a": 1})
    refuse_writes(monkeypatch, tmp_path / "d", errno.ENOSPC)
    with pytest.raises(StorageError) as info:
        results.write_json(path, {"a": 2})
    err = info.value
    assert err.errno == errno.ENOSPC and err.filename == str(path)
    assert str(err) == f"cannot write {path}: {os.strerror(errno.ENOSPC)}"
    assert json.loads(path.read_text()) == {"a": 1}
    assert sorted(p.name for p in path.parent.iterdir()) == ["summary.json"]


def test_a_directory_under_a_file_names_the_file(tmp_path):
    (tmp_path / "afile").write_text("x")
    with pytest.raises(StorageError) as info:
        results.write_text(tmp_path / "afile" / "sub" / "report.md", "text")
    assert info.value.errno == errno.ENOTDIR
    assert f"{tmp_path / 'afile'} is a file, not a directory" in str(info.value)


def test_library_wrapped_environment_errors_become_messages(tmp_path, capsys, monkeypatch):
    """A full disk reported through another library's exception (its cause) is still exit 2."""
    disk_full = OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / "x.png"))

    def failing_report(run_dir):
        raise RuntimeError("could not save the figure") from disk_full

    monkeypatch.setattr("jaxlab.report.write_report", failing_report)
    assert main(["report", str(tmp_path)]) == 2
    line = error_line(capsys)
    assert str(tmp_path / "x.png") in line and os.strerror(errno.ENOSPC) in line
    # not an environment error: stays an internal error (a traceback, exit 1)
    assert environment_error(RuntimeError("bug")) is None
    assert environment_error(FileNotFoundError(errno.ENOENT, "No such file", "f")) is None
    assert environment_error(ValueError("x")) is None
    try:  # found through __context__ too (an error raised while handling the OS's)
        try:
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), "/ro/file")
        except OSError:
            raise KeyError("while handling")  # noqa: B904 (the implicit context is the point)
    except KeyError as err:
        found = environment_error(err)
    assert isinstance(found, StorageError) and found.errno == errno.EROFS
    assert str(found) == f"/ro/file: {os.strerror(errno.EROFS)}"


# -- damaged files read back -------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["summary.json", "config.json"])
def test_truncated_json_in_report(run_copy, capsys, name):
    truncate(run_copy / name)
    assert main(["report", str(run_copy)]) == 2
    line = error_line(capsys)
    assert str(run_copy / name) in line and "truncated or not JSON" in line


def test_truncated_summary_through_the_api(run_copy):
    truncate(run_copy / "summary.json")
    with pytest.raises(CorruptFileError, match="summary.json: truncated or not JSON") as info:
        results.load_summary(run_copy)
    assert isinstance(info.value, UserError) and isinstance(info.value, ValueError)


def test_summary_that_is_json_but_not_a_summary(run_copy, capsys):
    (run_copy / "summary.json").write_text("{}\n")
    with pytest.raises(CorruptFileError, match="not a jaxlab summary"):
        results.load_summary(run_copy)
    assert main(["report", str(run_copy)]) == 2
    assert "summary.json: not a jaxlab summary" in error_line(capsys)


def test_truncated_config_in_resume_and_load_group(run_copy, capsys):
    truncate(run_copy / "config.json")
    assert main(["run", "icl-regression", "--out", str(run_copy), "--resume", "--quiet"]) == 2
    line = error_line(capsys)
    assert str(run_copy / "config.json") in line and "truncated or not JSON" in line
    with pytest.raises(CorruptFileError, match="config.json: truncated or not JSON"):
        load_run_group(run_copy)


@pytest.mark.parametrize(
    "content, problem",
    [("[1, 2]\n", "a JSON list, not an object"), ('{"experiment": "icl-regression"}\n', "no 'preset' field")],
)
def test_config_that_is_json_but_not_a_config(run_copy, capsys, content, problem):
    (run_copy / "config.json").write_text(content)
    assert main(["report", str(run_copy)]) == 2
    line = error_line(capsys)
    assert "config.json: not a jaxlab config" in line and problem in line


def test_truncated_part_json_in_load_group(run_copy):
    part = run_copy / "parts" / "part-0000-0000-00000.json"
    truncate(part)
    with pytest.raises(CorruptFileError) as info:
        load_run_group(run_copy)
    assert str(info.value).startswith(f"{part}: truncated or not JSON")


def test_corrupt_metrics_parquet_in_report_and_load(run_copy, capsys):
    table = run_copy / "metrics.parquet"
    truncate(table, keep=200)
    assert main(["report", str(run_copy)]) == 2
    line = error_line(capsys)
    assert str(table) in line and "not a parquet file" in line
    with pytest.raises(CorruptFileError, match="metrics.parquet: not a parquet file"):
        results.load(run_copy)


def test_corrupt_part_parquet_in_load(run_copy):
    (run_copy / "metrics.parquet").unlink()  # a running sweep: load reads the parts
    part = run_copy / "parts" / "part-0000-0000-00000.parquet"
    part.write_text("not parquet at all\n")
    with pytest.raises(CorruptFileError) as info:
        results.load(run_copy)
    assert str(info.value).startswith(f"{part}: not a parquet file")


def test_unreadable_file_is_a_storage_error(tmp_path):
    (tmp_path / "summary.json").mkdir()  # a directory where the file should be: EISDIR on read
    with pytest.raises(StorageError, match="cannot read .*summary.json"):
        results.load_summary(tmp_path)


# -- values out of range -------------------------------------------------------------------------------
def test_memory_budget_not_finite(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv(BUDGET_ENV, "1e999G")
    assert main([*SMOKE, "--out", str(tmp_path / "r")]) == 2
    line = error_line(capsys)
    assert "JAXLAB_MEMORY_BUDGET='1e999G'" in line and "512M" in line and "1024T" in line


@pytest.mark.parametrize("text", ["1e999G", "inf", "-inf", "nan", "0", "-1", "0.5", "2000T", "lots", ""])
def test_memory_budget_refused(text):
    with pytest.raises(UserError, match=BUDGET_ENV):
        parse_bytes(text)


@pytest.mark.parametrize("text, expected", [("512M", 512 * 2**20), ("1.5G", 3 * 2**29), ("1024T", 2**50), ("7", 7)])
def test_memory_budget_accepted(text, expected):
    assert parse_bytes(text) == expected


def test_eval_seed_out_of_range(tmp_path, capsys):
    out = tmp_path / "r"
    assert main([*SMOKE, "--out", str(out), "--set", "train.eval_seed=1e20"]) == 2
    line = error_line(capsys)
    assert "train.eval_seed" in line and "0..2147483647" in line
    assert not out.exists()  # refused before anything was written


@pytest.mark.parametrize(
    "field, value", [("eval_seed", 2**31), ("eval_seed", -1), ("eval_seed", 10**20), ("steps", 2**31)]
)
def test_device_integers_are_range_checked(field, value):
    with pytest.raises(ConfigError) as info:
        TrainConfig(**{field: value})
    assert info.value.field == f"train.{field}" and "2147483647" in str(info.value)


def test_device_integers_at_the_edge_are_accepted():
    assert TrainConfig(eval_seed=2**31 - 1).eval_seed == 2**31 - 1
    assert TrainConfig(eval_seed=0, steps=1).steps == 1


# -- wrong types in the Python API ---------------------------------------------------------------------
@pytest.mark.parametrize("bad", [None, {}, "icl-regression"])
def test_make_train_wrong_type(bad):
    with pytest.raises(
        TypeError, match=rf"make_train\(cfg\): expected a jaxlab.config.ExperimentConfig .* got {type(bad).__name__}"
    ):
        make_train(bad)


def test_make_train_wrong_callbacks(smoke_cfg):
    with pytest.raises(TypeError, match=r"make_train\(evaluate=...\): expected a function or None, got int"):
        make_train(smoke_cfg, evaluate=3)
