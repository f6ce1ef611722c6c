"""The stall watchdog: a sweep that stops making progress writes its stacks and exits, instead of hanging.

A compiled program can stop making progress inside native code (a deadlocked thread pool, a
collective waiting for a process that died), where no Python exception will ever be raised. The
sweep loop reports progress (`beat`) at every phase boundary: a group compiled, an evaluation
interval done, a checkpoint written, a run chunk finalized. A background thread checks that a beat
came within the allowed silence:

    allowed = train.stall_timeout (minutes) + the longest gap between two beats seen so far

(so a sweep whose intervals take an hour each is not stopped after fifteen minutes), and it fires
only while the process computes nothing: the CPU time of all its threads over the last
`idle_window` seconds (min(train.stall_timeout, 2 minutes)) must stay below `IDLE_CORES` of one
core. A wedged thread pool or a collective waiting for a dead process blocks its threads and uses
no CPU; a first evaluation interval that simply takes longer than the allowance (its length is not
known before it ends: 4500 steps of a CPU preset took more than 15 minutes) keeps computing and is
left to finish. Work that runs
outside the sweep loop's phases, e.g. an experiment's analysis across programs that trains many
stitches, reports its own progress with `progress(what)`, which beats the watchdog of the sweep
running in this process (none: a no-op). The watch
starts with the first beat: how long the first program takes to compile is not known in advance
(minutes for a large model on a loaded machine), and it is the execution, not the compilation,
that wedges (XLA:CPU's thread pool, collectives); later compilations count as gaps. When that
passes, the watchdog writes `stall-<process>.txt` into the run directory (the last beat, every
Python thread's stack via `faulthandler`, and the native stacks of every thread from `gdb`, or
`eu-stack`, when one is installed), prints one message saying what to do, and ends the process with
exit status 3 (`STALL_EXIT`). Checkpoints written so far stay; `--resume` continues from the last
one. The main thread may be blocked in native code, so the process ends with `os._exit`.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import TextIO

from jaxlab import runfiles

STALL_EXIT = 3
NATIVE_TIMEOUT_S = 120.0
IDLE_CORES = 0.05  # CPU time per second (in cores) below which a silent process counts as stalled
IDLE_WINDOW_S = 120.0  # the span over which that CPU time is measured (at most train.stall_timeout)
_ACTIVE: list[Watchdog] = []  # the watchdogs entered in this process, innermost last


def progress(what: str) -> None:
    """Report progress to the watchdog of the sweep running in this process (a no-op outside one):
    for long work inside an experiment's hooks, between the sweep loop's own beats."""
    if _ACTIVE:
        _ACTIVE[-1].beat(what)


def native_stacks(pid: int, timeout: float = NATIVE_TIMEOUT_S) -> str:
    """Native stacks of every thread of process `pid` from gdb (or eu-stack), or why there are none.

    The tool's output goes to a file, not a pipe: gdb stops every thread of the process it attaches
    to, the reading thread included, and would block on a full pipe.
    """
    commands = []
    if shutil.which("gdb"):
        quiet = ["-iex", "set debuginfod enabled off", "-iex", "set auto-load off"]
        commands.append(["gdb", "-p", str(pid), "-batch", "-nx", *quiet, "-ex", "thread apply all bt"])
    if shutil.which("eu-stack"):
        commands.append(["eu-stack", "-p", str(pid)])
    if not commands:
        return "(no native stacks: neither gdb nor eu-stack is installed)\n"
    notes = []
    for cmd in commands:
        with tempfile.TemporaryFile("w+") as out:
            try:
                done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
            except (OSError, subprocess.TimeoutExpired) as err:
                notes.append(f"{cmd[0]}: {err}")
                continue
            out.seek(0)
            text = out.read()
        if "Thread" in text or "TID" in text:
            return text
        notes.append(f"{cmd[0]} (exit {done.returncode}): {text.strip()[-500:]}")
    return "(no native stacks: " + "; ".join(notes) + ")\n"


def python_stacks() -> str:
    """The Python stack of every thread of this process, innermost call last."""
    names = {t.ident: t.name for t in threading.enumerate()}
    parts = []
    for ident, frame in sys._current_frames().items():
        parts.append(f"Thread {names.get(ident, '?')} ({ident}):\n" + "".join(traceback.format_stack(frame)))
    return "\n".join(parts)


class Watchdog:
    """Watches the beats of one process's sweep (module docstring). Use as a context manager."""

    def __init__(
        self,
        stall_minutes: float,
        report_dir: Path | None,
        process: int = 0,
        on_stall: Callable[[str], None] | None = None,
        poll_s: float | None = None,
        clock: Callable[[], float] = time.monotonic,
        native: bool = True,
        cpu_clock: Callable[[], float] = time.process_time,
    ):
        self.allowed_base = 60.0 * stall_minutes
        self.cpu_clock = cpu_clock  # CPU seconds of every thread of this process
        self.idle_window = min(IDLE_WINDOW_S, self.allowed_base)
        self._cpu_samples: deque[tuple[float, float]] = deque()  # (clock, cpu_clock) at each check
        self.report_dir = Path(report_dir) if report_dir is not None else None
        self.process = process
        self.on_stall = on_stall if on_stall is not None else _exit_stalled
        self.clock = clock
        self.native = native  # also the native stacks (gdb / eu-stack: can take a minute)
        self.poll_s = poll_s if poll_s is not None else min(10.0, max(0.05, self.allowed_base / 20))
        self.last = clock()
        self.last_what = "sweep started"
        self.longest_gap = 0.0
        self.armed = False  # from the first beat on (the first program's compilation is not watched)
        self.fired = False
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def enabled(self) -> bool:
        """Whether the watchdog watches at all (`train.stall_timeout` > 0)."""
        return self.allowed_base > 0

    def beat(self, what: str) -> None:
        """Progress: `what` just finished."""
        with self._lock:
            now = self.clock()
            self.longest_gap = max(self.longest_gap, now - self.last)
            self.last, self.last_what, self.armed = now, what, True

    def allowed(self) -> float:
        """Seconds of silence allowed now."""
        return self.allowed_base + self.longest_gap

    def silent_for(self) -> float:
        """Seconds since the last beat."""
        with self._lock:
            return self.clock() - self.last

    def check(self) -> bool:
        """Fire (once) if the silence exceeds what is allowed; True if it fired."""
        if self.fired or not self.enabled or not self.armed:
            return False
        with self._lock:
            now = self.clock()
            silent = now - self.last
            allowed = self.allowed_base + self.longest_gap
            what = self.last_what
        cores = self.cpu_use(now)
        if silent <= allowed or cores >= IDLE_CORES:
            return False
        self.fired = True
        path = self.write_report(silent, what, cores)
        where = f"; stacks written to {path}" if path is not None else ""
        message = (
            f"no progress for {silent / 60:.1f} min (allowed: train.stall_timeout {self.allowed_base / 60:g} min "
            f"+ the slowest step seen, {self.longest_gap / 60:.1f} min; last progress: {what}; "
            f"CPU use over the last {self.idle_window:.0f} s: {cores:.2f} cores){where}. "
            "Checkpoints written so far are kept: continue with --resume. If the computation is just slow, "
            "raise train.stall_timeout (0 turns the watchdog off)"
        )
        self.on_stall(message)
        return True

    def cpu_use(self, now: float) -> float:
        """Cores this process has used (CPU seconds per second, all threads) since the latest check at
        least `idle_window` seconds ago (since the oldest check while there is none); 0 at the first
        check. Records this check's sample."""
        samples = self._cpu_samples
        cpu = self.cpu_clock()
        samples.append((now, cpu))
        while len(samples) > 2 and samples[1][0] <= now - self.idle_window:
            samples.popleft()
        t0, cpu0 = samples[0]
        return (cpu - cpu0) / (now - t0) if now > t0 else 0.0

    def write_report(self, silent: float, what: str, cores: float | None = None) -> Path | None:
        """Write the stall report (last beat, Python and native stacks) into the run directory, or to
        stderr without one; returns the file's path (None: stderr)."""
        if self.report_dir is not None:
            path = self.report_dir / f"stall-{self.process:05d}.txt"
            try:
                self.report_dir.mkdir(parents=True, exist_ok=True)
                with open(path, "w") as f:
                    _write_report(f, silent, what, self.native, cores)
            except OSError:
                pass
            else:
                try:  # jaxlab wrote it: --overwrite may move it aside with the run
                    runfiles.record(self.report_dir, [path.name])
                except Exception:
                    pass  # the report itself is written; the process is about to end
                return path
        _write_report(sys.stderr, silent, what, self.native, cores)
        return None

    def _run(self) -> None:
        while not self._stop.wait(self.poll_s):
            if self.check():
                return

    def __enter__(self) -> Watchdog:
        if self.enabled:
            self._thread = threading.Thread(target=self._run, name="jaxlab-watchdog", daemon=True)
            self._thread.start()
        _ACTIVE.append(self)
        return self

    def __exit__(self, *exc: object) -> None:
        if self in _ACTIVE:
            _ACTIVE.remove(self)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)


def _write_report(f: TextIO, silent: float, what: str, native: bool, cores: float | None = None) -> None:
    cpu = "" if cores is None else f"; CPU use before the report: {cores:.2f} cores"
    f.write(
        f"jaxlab stall report: pid {os.getpid()} on {socket.gethostname()}, "
        f"{time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}\n"
        f"no progress for {silent:.0f} s; last progress: {what}{cpu}\n\n== Python stacks ==\n"
    )
    f.write(python_stacks())
    f.write("\n== native stacks ==\n")
    f.flush()
    f.write(native_stacks(os.getpid()) if native else "(not asked for)\n")
    f.flush()


def _exit_stalled(message: str) -> None:
    print(f"jaxlab: error: {message}", file=sys.stderr, flush=True)
    os._exit(STALL_EXIT)


__all__ = [
    "IDLE_CORES",
    "IDLE_WINDOW_S",
    "NATIVE_TIMEOUT_S",
    "STALL_EXIT",
    "Watchdog",
    "native_stacks",
    "python_stacks",
]
