"""The stall watchdog: fires only after the allowed silence, writes stacks, and a stalled sweep exits and resumes."""

import json
import os
import shutil
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest

from jaxlab.train.watchdog import IDLE_CORES, STALL_EXIT, Watchdog, native_stacks, progress

ROOT = Path(__file__).resolve().parent.parent


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_fires_after_the_timeout_plus_the_slowest_gap_once(tmp_path):
    clock, fired = Clock(), []
    dog = Watchdog(1.0, tmp_path, on_stall=fired.append, clock=clock, native=False)  # 60 s
    clock.t = 50.0
    dog.beat("interval 1")  # longest gap 50 s: 110 s of silence allowed from now on
    clock.t = 50.0 + 109.0
    assert not dog.check() and fired == []
    dog.beat("interval 2")
    assert dog.allowed() == pytest.approx(60.0 + 109.0)
    clock.t += 169.5
    assert dog.check()
    assert not dog.check()  # once
    assert len(fired) == 1
    message = fired[0]
    assert "no progress for 2.8 min" in message and "interval 2" in message
    assert "train.stall_timeout" in message and "--resume" in message
    report = (tmp_path / "stall-00000.txt").read_text()
    assert "last progress: interval 2" in report
    assert "test_fires_after_the_timeout_plus_the_slowest_gap_once" in report  # this thread's Python stack
    assert "== native stacks ==\n(not asked for)" in report  # gdb's: in the stalled sweep below
    assert json.loads((tmp_path / ".jaxlab-files.json").read_text())["files"] == ["stall-00000.txt"]


def test_a_silent_process_that_keeps_computing_is_not_stopped_until_it_idles(tmp_path):
    """A first interval longer than the allowance computes all along: the watchdog waits. It fires once
    the process has used less than IDLE_CORES of a core over the idle window (a wedged pool uses none)."""
    clock, cpu, fired = Clock(), Clock(), []
    dog = Watchdog(1.0, tmp_path, on_stall=fired.append, clock=clock, native=False, cpu_clock=cpu)
    assert dog.idle_window == 60.0  # min(IDLE_WINDOW_S, the 60 s allowance)
    dog.beat("group 0 compiled")
    for t in range(10, 3610, 10):  # an hour of silence at 1.5 cores (2 XLA threads, partly busy)
        clock.t, cpu.t = float(t), 1.5 * t
        assert not dog.check(), t
    assert fired == []
    stalled_at = clock.t
    while not dog.check():  # CPU stops: the pool wedged
        clock.t += 10.0
        assert clock.t < stalled_at + 200.0
    assert clock.t - stalled_at == pytest.approx(dog.idle_window)  # the first check whose whole window is idle
    assert len(fired) == 1 and "CPU use over the last 60 s: 0.00 cores" in fired[0]
    assert "CPU use before the report: 0.00 cores" in (tmp_path / "stall-00000.txt").read_text()


def test_cpu_use_is_measured_over_the_idle_window():
    """cpu_use: cores between this check and the latest check at least idle_window before it."""
    clock, cpu = Clock(), Clock()
    dog = Watchdog(0.5, None, clock=clock, native=False, cpu_clock=cpu)  # 30 s allowance and window
    assert dog.cpu_use(0.0) == 0.0  # no earlier sample
    cpu.t = 20.0
    assert dog.cpu_use(10.0) == pytest.approx(2.0)  # 20 CPU-s in 10 s, from the only earlier sample
    cpu.t = 35.0
    assert dog.cpu_use(40.0) == pytest.approx(0.5)  # from t=10, the newest sample >= 30 s old: 15 / 30
    cpu.t = 41.0
    assert dog.cpu_use(60.0) == pytest.approx(21.0 / 50.0)  # still from t=10 (t=40 is 20 s old): 21 / 50
    assert dog.cpu_use(75.0) == pytest.approx(6.0 / 35.0)  # from t=40 (t=60 is 15 s old): 6 / 35
    assert IDLE_CORES < 0.5 <= 1.0


def test_a_busy_main_thread_is_not_stopped_and_a_sleeping_one_is():
    """With the real CPU clock: a main thread computing past the 0.12 s allowance keeps the watchdog quiet;
    once it blocks, the watchdog fires."""
    fired = threading.Event()
    with Watchdog(0.002, None, on_stall=lambda m: fired.set(), poll_s=0.02, native=False) as dog:
        dog.beat("armed")
        end = time.monotonic() + 1.0  # eight allowances of pure computation
        x = 0
        while time.monotonic() < end:
            x += sum(i * i for i in range(2000))
        assert x > 0 and not fired.is_set()
        assert fired.wait(10.0)  # blocked here: no CPU


def test_disabled_with_zero_and_silent_without_a_directory(capsys):
    clock = Clock()
    off = Watchdog(0.0, None, on_stall=lambda m: pytest.fail(m), clock=clock, native=False)
    with off:
        assert off._thread is None
    clock.t = 1e9
    assert not off.check()
    fired = []
    clock.t = 0.0
    dog = Watchdog(0.001, None, on_stall=fired.append, clock=clock, native=False)
    clock.t = 1.0
    assert not dog.check()  # not armed before the first beat (the first compilation)
    dog.beat("group 0 compiled")  # a 1 s gap: 1.06 s of silence allowed
    clock.t = 2.0
    assert not dog.check()
    clock.t = 3.0
    assert dog.check() and fired
    assert "no progress" in capsys.readouterr().err  # the report goes to stderr


def test_progress_from_inside_an_experiment_beats_the_running_sweeps_watchdog():
    # an experiment's long analysis (e.g. training stitches across programs) reports its own progress
    progress("outside any sweep: a no-op")
    clock = Clock()
    outer = Watchdog(1.0, None, on_stall=lambda m: pytest.fail(m), clock=clock, native=False)
    inner = Watchdog(1.0, None, on_stall=lambda m: pytest.fail(m), clock=clock, native=False)
    with outer:
        clock.t = 30.0
        progress("stitching job 1 of 9")
        assert outer.last == 30.0 and outer.last_what == "stitching job 1 of 9" and outer.armed
        with inner:  # the innermost sweep gets the beat
            clock.t = 40.0
            progress("job 2")
            assert (inner.last, outer.last) == (40.0, 30.0)
        clock.t = 50.0
        progress("job 3")
        assert outer.last == 50.0
    progress("after the sweep: a no-op again")
    assert outer.last == 50.0


def test_background_thread_fires_for_a_blocked_main_thread():
    fired = threading.Event()
    with Watchdog(0.002, None, on_stall=lambda m: fired.set(), poll_s=0.02, native=False) as dog:  # 0.12 s
        dog.beat("armed")
        assert fired.wait(10.0)


def test_no_fire_while_beats_keep_coming():
    fired = []
    dog = Watchdog(0.01, None, on_stall=fired.append, poll_s=0.01, native=False)  # 0.6 s
    with dog:
        for i in range(40):
            dog.beat(f"step {i}")
            threading.Event().wait(0.02)
    assert fired == []


STALLED_RUN = textwrap.dedent(
    """
    import sys, time
    from jaxlab.train import progress

    calls = []
    update = progress.Progress.update

    def stalling_update(self, **kw):
        update(self, **kw)
        calls.append(kw["step"])
        if len(calls) == 3:
            time.sleep(600)  # a program that never returns, as far as the sweep can tell

    progress.Progress.update = stalling_update
    from jaxlab.cli import main
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.timeout(300)
def test_a_stalled_sweep_writes_stacks_and_exits_3_keeping_its_checkpoints(tmp_path):
    """(A resume from kept checkpoints: tests/test_resume.py, tests/test_checkpoint_safety.py.)"""
    script = tmp_path / "stall.py"
    script.write_text(STALLED_RUN)
    out = tmp_path / "run"
    args = ["icl-regression", "--preset", "smoke", "--out", str(out), "--quiet"]
    # 6 s of silence beyond the slowest gap between beats so far (the watch starts once the program
    # is compiled; an interval with its checkpoint takes about 1 s here): far less than the stall's 600 s
    sets = ["--set", "train.stall_timeout=0.1", "--set", "train.checkpoint_every=1"]
    # no gdb on the PATH: attaching it to a process with jaxlib loaded takes about 8 s (its symbols);
    # native_stacks is tested on a small process below
    env = {**os.environ, "PATH": str(Path(sys.executable).parent)}
    run = subprocess.run(
        [sys.executable, str(script), "run", *args, *sets],
        capture_output=True,
        text=True,
        timeout=240,
        cwd=tmp_path,
        env=env,
    )
    assert run.returncode == STALL_EXIT, run.stderr[-3000:]
    errors = [line for line in run.stderr.splitlines() if line.startswith("jaxlab: error:")]
    assert len(errors) == 1 and "no progress" in errors[0] and "--resume" in errors[0], run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    report = (out / "stall-00000.txt").read_text()
    assert "stalling_update" in report and "time.sleep" in report  # where the main thread waits
    native = report.split("== native stacks ==")[1]
    assert "no native stacks: neither gdb nor eu-stack is installed" in native
    assert list((out / "checkpoints").rglob("_CHECKPOINT_METADATA"))  # checkpoints kept


@pytest.mark.timeout(120)
def test_native_stacks_of_a_waiting_process_name_its_threads_and_frames():
    if not (shutil.which("gdb") or shutil.which("eu-stack")):
        assert "neither gdb nor eu-stack is installed" in native_stacks(os.getpid())
        return
    waiting = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(300)"])
    try:
        time.sleep(0.5)  # past the interpreter's start
        stacks = native_stacks(waiting.pid, timeout=100)
    finally:
        waiting.kill()
        waiting.wait()
    assert "Thread" in stacks or "TID" in stacks, stacks[-2000:]
    assert "sleep" in stacks or "select" in stacks or "nanosleep" in stacks, stacks[-2000:]  # where it waits
