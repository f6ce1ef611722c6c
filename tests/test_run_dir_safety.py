"""A run directory is never lost or mixed: the lock, --overwrite, and nothing written before the start.

- one writer at a time (`DIR/.jaxlab.lock`, `jaxlab.train.lock`): a second `jaxlab run` (plain,
  --resume, --overwrite) or `jaxlab report` is refused with exit 2 naming the owner; a dead
  owner's lock is taken over with a notice; another host's is refused with how to remove it;
- --overwrite moves and deletes only what jaxlab wrote (`DIR/.jaxlab-files.json`), and only after
  the new run finished its first training interval; before that any failure puts the old run back;
- a fresh run that fails before its first interval leaves the directory as it found it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from _jaxenv import jax_env
from _rundirs import SMOKE, run, tree

from jaxlab import results, runfiles
from jaxlab.cli import main
from jaxlab.errors import UserError
from jaxlab.train import progress as progress_module
from jaxlab.train import sweep as sweep_module
from jaxlab.train.lock import LOCK_NAME, RunLock, pid_alive
from jaxlab.train.replace import REPLACED, RunAttempt, move_aside, rollback
from jaxlab.train.rundir import check_run_dir

HOST = socket.gethostname()


def seeds(d: Path) -> list[int]:
    return [r["seed"] for r in results.load_summary(d)["runs"]]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def write_lock(d: Path, pid: int, host: str = HOST, since: float | None = None, command: str = "jaxlab run x") -> None:
    since = time.time() if since is None else since
    (d / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": host, "since": since, "command": command}))


@pytest.fixture
def sleeper():
    """A live process of this host that is not this one (an owner that is still running)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(120)"])
    time.sleep(0.05)  # a lock taken now is younger than the process
    yield proc
    proc.kill()
    proc.wait()


def boom_at_first_interval(monkeypatch, exc: BaseException) -> None:
    """Fail at the end of the first training interval, before the run counts as started."""

    def update(self, **kwargs):
        raise exc

    monkeypatch.setattr(progress_module.Progress, "update", update)


# -- the lock --------------------------------------------------------------------------------------
def test_lock_file_names_its_owner_and_refuses_a_second_writer(tmp_path):
    lock = RunLock.acquire(tmp_path, "jaxlab run icl-regression --out x")
    data = json.loads((tmp_path / LOCK_NAME).read_text())
    assert (
        data["pid"] == os.getpid() and data["host"] == HOST and data["command"] == "jaxlab run icl-regression --out x"
    )
    assert abs(data["since"] - time.time()) < 600
    with pytest.raises(UserError, match=f"in use by another jaxlab process: pid {os.getpid()}@{HOST}, since "):
        RunLock.acquire(tmp_path, "second")
    lock.release()
    assert not (tmp_path / LOCK_NAME).exists()
    with RunLock.acquire(tmp_path, "third"):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["command"] == "third"
    assert not (tmp_path / LOCK_NAME).exists()


def test_stale_lock_of_a_dead_process_is_taken_over_with_a_notice(tmp_path):
    pid = dead_pid()
    write_lock(tmp_path, pid)
    notices = []
    lock = RunLock.acquire(tmp_path, "mine", notice=notices.append)
    assert len(notices) == 1 and f"pid {pid}@{HOST}" in notices[0] and "no longer running" in notices[0]
    assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    lock.release()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="process start times come from Linux's /proc")
def test_a_live_pid_that_started_after_the_lock_is_not_its_owner(tmp_path, sleeper):
    assert pid_alive(sleeper.pid, since=time.time())
    assert not pid_alive(sleeper.pid, since=time.time() - 3600)  # the owner's pid, reused since
    write_lock(tmp_path, sleeper.pid, since=time.time() - 3600)
    notices = []
    RunLock.acquire(tmp_path, "mine", notice=notices.append).release()
    assert len(notices) == 1 and f"pid {sleeper.pid}@{HOST}" in notices[0]


def test_lock_from_another_host_is_refused_with_how_to_remove_it(tmp_path):
    write_lock(tmp_path, 12345, host="other-host.example")
    with pytest.raises(UserError) as err:
        RunLock.acquire(tmp_path, "mine")
    msg = str(err.value)
    assert "pid 12345@other-host.example, since" in msg and f"remove {tmp_path / LOCK_NAME}" in msg
    assert json.loads((tmp_path / LOCK_NAME).read_text())["host"] == "other-host.example"  # left alone


def test_unreadable_lock_file_is_refused_with_how_to_remove_it(tmp_path):
    (tmp_path / LOCK_NAME).write_text("not json")
    old = time.time() - 3600
    os.utime(tmp_path / LOCK_NAME, (old, old))
    with pytest.raises(UserError, match="cannot read .*remove that file"):
        RunLock.acquire(tmp_path, "mine")
    assert (tmp_path / LOCK_NAME).read_text() == "not json"


def test_every_writer_is_refused_while_the_lock_is_held(old_run, sleeper, capsys):
    write_lock(old_run, sleeper.pid, command="jaxlab run icl-regression --out old")
    before = tree(old_run)
    for extra in ([], ["--overwrite"], ["--resume"]):
        assert run(old_run, *extra) == 2, extra
        err = capsys.readouterr().err
        assert f"in use by another jaxlab process: pid {sleeper.pid}@{HOST}, since " in err, err
        assert f"kill {sleeper.pid}" in err and "jaxlab run icl-regression --out old" in err
    assert main(["report", str(old_run)]) == 2
    assert f"pid {sleeper.pid}@{HOST}" in capsys.readouterr().err
    assert tree(old_run) == before


def test_lock_is_released_after_success_and_on_sigterm(finished, tmp_path, monkeypatch):
    """(Errors and Ctrl-C: `test_overwrite_that_fails_before_its_first_interval_puts_the_old_run_back`.)"""
    assert not (finished / LOCK_NAME).exists()

    def terminated(self, **kwargs):
        os.kill(os.getpid(), signal.SIGTERM)  # a scheduler's preemption while the lock is held

    monkeypatch.setattr(progress_module.Progress, "update", terminated)
    d = tmp_path / "d"
    # after the first interval the run has started: a checkpoint, then exit 143 (jaxlab.interrupt)
    assert run(d) == 128 + signal.SIGTERM
    assert not (d / LOCK_NAME).exists()  # unlocked
    assert (d / "config.json").exists() and list((d / "checkpoints").rglob("_CHECKPOINT_METADATA"))
    assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL


# -- --overwrite moves and deletes only jaxlab's files ---------------------------------------------
def test_overwrite_keeps_the_users_files(old_run):
    """Reproduction (a): a user's figure next to a run (a non-empty directory that holds no run
    is accepted: `test_fresh_run_that_fails_...`) and files in its parts/ and checkpoints/."""
    d = old_run
    (d / "my_figure.png").write_bytes(b"x\n")
    assert "my_figure.png" not in runfiles.owned(d) and "loss_curves.png" in runfiles.owned(d)
    (d / "parts" / "notes.txt").write_text("mine")
    (d / "checkpoints" / "mine.txt").write_text("mine too")
    (d / "notes").mkdir()
    (d / "notes" / "a.txt").write_text("a")

    assert run(d, "--seeds", "5,6", "--overwrite") == 0
    assert seeds(d) == [5, 6]
    assert (d / "my_figure.png").read_bytes() == b"x\n"
    assert (d / "parts" / "notes.txt").read_text() == "mine"
    assert (d / "checkpoints" / "mine.txt").read_text() == "mine too"
    assert (d / "notes" / "a.txt").read_text() == "a"
    assert not (d / REPLACED).exists() and not (d / LOCK_NAME).exists()
    assert sorted(p.name for p in (d / "parts").glob("part-*.json")) == ["part-0000-0000-00000.json"]
    assert json.loads((d / runfiles.MANIFEST).read_text())["started"] is True


def test_run_refuses_parts_or_checkpoints_it_did_not_write(tmp_path, capsys):
    for name in ("parts", "checkpoints"):
        d = tmp_path / name
        (d / name).mkdir(parents=True)
        (d / name / "data.bin").write_bytes(b"1")
        before = tree(d)
        for extra in ([], ["--overwrite"]):
            assert run(d, *extra) == 2
            err = capsys.readouterr().err
            assert f"{name}/ is not jaxlab's" in err and "move it away or choose another --out" in err, err
            assert tree(d) == before


def test_report_refuses_to_overwrite_a_users_file(old_run, capsys):
    (old_run / "loss_curves.png").unlink()
    manifest = json.loads((old_run / runfiles.MANIFEST).read_text())
    manifest["files"].remove("loss_curves.png")
    (old_run / runfiles.MANIFEST).write_text(json.dumps(manifest))
    (old_run / "loss_curves.png").write_bytes(b"the user's")
    assert main(["report", str(old_run)]) == 2
    assert "loss_curves.png is not jaxlab's" in capsys.readouterr().err
    assert (old_run / "loss_curves.png").read_bytes() == b"the user's"


def test_legacy_run_directory_is_replaced_without_touching_other_files(old_run):
    """A run written before the record existed: its files are known by name and by report.md."""
    (old_run / runfiles.MANIFEST).unlink()
    (old_run / "extra.png").write_bytes(b"not in report.md")
    assert runfiles.owned(old_run) >= {"config.json", "parts", "checkpoints", "loss_curves.png"}
    assert "extra.png" not in runfiles.owned(old_run)
    assert run(old_run, "--seeds", "3,4", "--overwrite") == 0
    assert seeds(old_run) == [3, 4] and (old_run / "extra.png").read_bytes() == b"not in report.md"


# -- nothing deleted before the new run is known to start ------------------------------------------
def test_overwrite_with_a_bad_config_keeps_the_old_run(old_run, capsys):
    """Reproduction (b)."""
    before = tree(old_run)
    assert run(old_run, "--overwrite", "--set", "train.eval_seed=1e20") == 2
    assert "train.eval_seed" in capsys.readouterr().err
    assert tree(old_run) == before


@pytest.mark.parametrize(
    "exc", [UserError("not enough memory for one run"), KeyboardInterrupt(), RuntimeError("internal")]
)
def test_overwrite_that_fails_before_its_first_interval_puts_the_old_run_back(old_run, monkeypatch, exc):
    before = tree(old_run)
    boom_at_first_interval(monkeypatch, exc)
    try:
        code = run(old_run, "--seeds", "7,8", "--overwrite")
    except RuntimeError:
        code = 1
    assert code == {UserError: 2, KeyboardInterrupt: 130, RuntimeError: 1}[type(exc)]
    assert tree(old_run) == before  # bit for bit, no lock, no .jaxlab-replaced


def test_overwrite_that_fails_after_its_first_interval_keeps_the_new_run(old_run, monkeypatch, capsys):
    def merge_fails(*args, **kwargs):
        raise UserError("disk full")

    monkeypatch.setattr(sweep_module, "merge_parts", merge_fails)
    assert run(old_run, "--seeds", "7,8", "--overwrite") == 2
    assert not (old_run / REPLACED).exists() and not (old_run / LOCK_NAME).exists()
    assert json.loads((old_run / "config.json").read_text())["sweep"]["seeds"] == [7, 8]
    assert not (old_run / "summary.json").exists()  # the old one went with the old run
    assert json.loads((old_run / runfiles.MANIFEST).read_text())["started"] is True
    monkeypatch.undo()
    assert main(["run", "icl-regression", "--out", str(old_run), "--resume", "--quiet"]) == 0
    assert seeds(old_run) == [7, 8]


def test_fresh_run_that_fails_before_its_first_interval_leaves_nothing(tmp_path, monkeypatch, capsys):
    new = tmp_path / "new" / "run"  # neither exists
    users = tmp_path / "users"
    users.mkdir()
    (users / "my_figure.png").write_bytes(b"x")
    before = tree(users)
    boom_at_first_interval(monkeypatch, UserError("not enough memory for one run"))
    assert run(new) == 2 and run(users) == 2
    assert not (tmp_path / "new").exists()
    assert tree(users) == before
    monkeypatch.undo()
    # the identical corrected command is accepted without --overwrite (the directory holds no run)
    assert run(users) == 0
    assert (users / "my_figure.png").read_bytes() == b"x" and seeds(users) == [0, 1]
    assert "my_figure.png" not in runfiles.owned(users) and "loss_curves.png" in runfiles.owned(users)


def test_resume_of_a_run_that_never_started_is_refused_and_changes_nothing(tmp_path, capsys):
    assert run(tmp_path / "none", "--resume") == 2
    assert "holds no run to resume" in capsys.readouterr().err
    assert not (tmp_path / "none").exists()


# -- a writer killed (SIGKILL) in the middle: the next one completes what it left -------------------
def test_killed_overwrite_before_its_start_is_undone_by_the_next_writer(old_run, capsys):
    before = tree(old_run)
    attempt = RunAttempt(old_run, resume=False, overwrite=True, command="killed")
    attempt.begin(check=lambda: None)
    (old_run / "config.json").write_text("{}")
    (old_run / "checkpoints").mkdir()
    assert (old_run / REPLACED / "summary.json").exists()
    write_lock(old_run, dead_pid())  # it died here, holding the lock
    assert run(old_run) == 2  # the next writer puts the old run back, then refuses to replace it
    err = capsys.readouterr().err
    assert "no longer running" in err and "stopped before its first training interval" in err
    assert "already holds a run" in err
    assert tree(old_run) == before


def test_killed_move_aside_is_put_back_by_the_next_writer(old_run, capsys):
    before = tree(old_run)
    assert move_aside(old_run)  # interrupted before it recorded the new run
    assert not (old_run / "summary.json").exists()
    write_lock(old_run, dead_pid())
    assert run(old_run) == 2
    assert "putting back" in capsys.readouterr().err
    assert tree(old_run) == before


def test_interrupted_deletion_of_a_replaced_run_is_finished_by_the_next_writer(old_run, capsys):
    before = tree(old_run)
    (old_run / REPLACED / "checkpoints").mkdir(parents=True)  # the old run, half deleted
    (old_run / REPLACED / "checkpoints" / "x").write_text("old")
    write_lock(old_run, dead_pid())
    assert run(old_run) == 2 and "already holds a run" in capsys.readouterr().err
    assert tree(old_run) == before


def test_putting_back_never_overwrites_what_took_a_name_meanwhile(old_run, capsys):
    old_summary = (old_run / "summary.json").read_bytes()
    assert move_aside(old_run)
    (old_run / "summary.json").write_text("written by the user meanwhile")
    rollback(old_run)
    assert (old_run / "summary.json").read_text() == "written by the user meanwhile"
    spare = [p for p in old_run.iterdir() if p.name.startswith(REPLACED + "-")]
    assert len(spare) == 1 and (spare[0] / "summary.json").read_bytes() == old_summary
    assert (old_run / "config.json").exists() and not (old_run / REPLACED).exists()
    assert "could not put back summary.json" in capsys.readouterr().err


# -- two processes ---------------------------------------------------------------------------------
SLOW = ["--set", "train.steps=200", "--set", "train.eval_every=20", "--set", "train.checkpoint_every=2"]


def cli(out: Path, *extra: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "jaxlab", *SMOKE, "--out", str(out), *SLOW, *extra]
    return subprocess.Popen(cmd, env=jax_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for_intervals(proc: subprocess.Popen, n: int) -> list[str]:
    """Read `proc`'s stderr until its n-th progress line (one per interval in quiet mode)."""
    seen = []
    for line in proc.stderr:
        seen.append(line)
        if sum(s.startswith("[jaxlab]") for s in seen) >= n:
            return seen
    raise AssertionError("".join(seen)[-3000:])


def lock_pid(d: Path) -> int:
    return json.loads((d / LOCK_NAME).read_text())["pid"]


@pytest.mark.timeout(240)
def test_second_writer_of_a_running_directory_is_refused(tmp_path, capsys):
    """Reproduction (c): a run in progress; --overwrite, a plain run, --resume and a report of
    its directory meanwhile are refused, and the first run finishes intact."""
    d = tmp_path / "running"
    first = cli(d)
    try:
        wait_for_intervals(first, 1)
        first.send_signal(signal.SIGSTOP)  # holds the lock, mid-run, for as long as the test needs
        assert lock_pid(d) == first.pid
        frozen = tree(d)
        for extra in (["--overwrite"], [], ["--resume"]):
            assert main([*SMOKE, "--out", str(d), *SLOW, "--seeds", "5,6", *extra]) == 2, extra
            assert f"pid {first.pid}@{HOST}" in capsys.readouterr().err
        assert main(["report", str(d)]) == 2
        assert tree(d) == frozen
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=180)
    finally:
        first.kill()
    assert first.returncode == 0, err[-3000:]
    assert seeds(d) == [0, 1]
    assert sorted(results.load(d).step.unique())[-1] == 200
    assert not (d / LOCK_NAME).exists()


@pytest.mark.timeout(240)
def test_two_resumes_of_one_directory(tmp_path, monkeypatch, capsys):
    """A run killed mid-way (its lock left behind); a --resume takes over the stale lock; a second
    --resume meanwhile is refused."""
    d = tmp_path / "killed"
    update, calls = progress_module.Progress.update, []

    def killed_at_third_interval(self, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        update(self, **kwargs)

    monkeypatch.setattr(progress_module.Progress, "update", killed_at_third_interval)
    assert main([*SMOKE, "--out", str(d), *SLOW]) == 130
    monkeypatch.undo()
    assert (d / "checkpoints").exists() and not (d / "summary.json").exists()
    killed = dead_pid()
    write_lock(d, killed)

    first = cli(d, "--resume")
    try:
        seen = wait_for_intervals(first, 1)
        first.send_signal(signal.SIGSTOP)
        assert any(f"taking over the lock of pid {killed}@{HOST}" in s for s in seen), "".join(seen)
        assert lock_pid(d) == first.pid
        assert main([*SMOKE, "--out", str(d), *SLOW, "--resume"]) == 2
        assert f"in use by another jaxlab process: pid {first.pid}@{HOST}" in capsys.readouterr().err
        first.send_signal(signal.SIGCONT)
        _, err = first.communicate(timeout=180)
    finally:
        first.kill()
    assert first.returncode == 0, err[-3000:]
    assert seeds(d) == [0, 1] and sorted(results.load(d).step.unique())[-1] == 200
    assert not (d / LOCK_NAME).exists()


def test_a_config_written_before_a_field_existed_resumes_when_the_field_is_at_its_default(tmp_path, smoke_cfg):
    """config.json of an older jaxlab lacks fields added since (task.shared_stream): the resume check
    reads them as their defaults, what the older jaxlab ran; a stored field that differs still differs."""
    stored = json.loads(json.dumps(smoke_cfg.to_dict()))
    del stored["task"]["shared_stream"]
    (tmp_path / "config.json").write_text(json.dumps(stored))
    check_run_dir(tmp_path, smoke_cfg, resume=True, overwrite=False)
    # shared_stream only sets how the sweep runs (bitwise the same runs): it may be set on resume too
    check_run_dir(tmp_path, smoke_cfg.set("task.shared_stream", "true"), resume=True, overwrite=False)
    stored["task"]["n_context"] = 99  # a stored value that is not the default still differs
    (tmp_path / "config.json").write_text(json.dumps(stored))
    with pytest.raises(UserError, match=r"differs in task"):
        check_run_dir(tmp_path, smoke_cfg, resume=True, overwrite=False)


def test_an_added_execution_only_field_may_take_any_value_on_resume(tmp_path, smoke_cfg):
    """`train.attention_kernel` sets only how the sweep runs: absent from an older config.json, it may be
    set on resume (the execution plan, compared separately, decides whether the numbers would change)."""
    stored = json.loads(json.dumps(smoke_cfg.to_dict()))
    del stored["train"]["attention_kernel"]
    (tmp_path / "config.json").write_text(json.dumps(stored))
    check_run_dir(tmp_path, smoke_cfg.set("train.attention_kernel", "jaxlab"), resume=True, overwrite=False)
    stored["train"]["attention_kernel"] = "fused"  # recorded, it is compared as any field
    (tmp_path / "config.json").write_text(json.dumps(stored))
    with pytest.raises(UserError, match=r"differs in train"):
        check_run_dir(tmp_path, smoke_cfg.set("train.attention_kernel", "jaxlab"), resume=True, overwrite=False)
