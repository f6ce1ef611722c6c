"""Stopping a sweep on SIGINT or SIGTERM without losing its work.

A scheduler preempting a job (Slurm sends SIGTERM, then SIGKILL after a grace period) or a user
pressing Ctrl-C should cost at most the current evaluation interval. While `stop_on_signals()` is
active, SIGINT and SIGTERM only record that a stop was asked for; the sweep's interval loop
(`jaxlab.train.sweep`) looks after every interval, saves a checkpoint of the current state, waits
for it, and raises `Interrupted`, which the command line reports in one line (exit status
128 + the signal: 130 for SIGINT, 143 for SIGTERM) with the command that continues the sweep.

Python runs signal handlers in the main thread between bytecodes; a KeyboardInterrupt raised
from inside orbax's or JAX's machinery would leave a half-finished save and a traceback, which
is why the handler only sets a flag. A second SIGINT while the checkpoint is being written raises
KeyboardInterrupt at once (abort now; the previous checkpoint stays intact, saves are atomic).
"""

from __future__ import annotations

import contextlib
import os
import signal
import threading
from collections.abc import Iterator

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)

_requested = 0  # the first stop signal received while `stop_on_signals` is active, else 0
_trained = False  # every group has trained: what is left (merge, analyses, report) finishes anyway


def training_over() -> None:
    """Every group of the sweep has trained: a stop signal from now on is acknowledged as that (the sweep
    finishes its results and report, nothing is left to checkpoint), not as a stop after an interval."""
    global _trained
    _trained = True


class Interrupted(Exception):
    """The sweep stopped on `signum`; `state` says what it leaves ("checkpoint saved at step 240
    of 400 (group 1/1 chunk 1/1)"). `exit_status` is 128 + signum, as a shell reports a process
    killed by that signal."""

    def __init__(self, signum: int, state: str):
        self.signum, self.state = int(signum), state
        self.exit_status = 128 + self.signum
        super().__init__(f"stopped by {signal_name(self.signum)}: {state}")


def signal_name(signum: int) -> str:
    """The signal's name (`SIGINT`), or `signal N` for a number Python does not name."""
    try:
        return signal.Signals(signum).name
    except ValueError:
        return f"signal {signum}"


def requested() -> int:
    """The stop signal received (0: none) since `stop_on_signals` was entered."""
    return _requested


def request(signum: int) -> None:
    """Ask the sweep to stop after its current interval, as the signal `signum` would."""
    global _requested
    if not _requested:
        _requested = int(signum)


def _handle(signum: int, frame: object) -> None:
    if _requested and signum == signal.SIGINT:
        raise KeyboardInterrupt  # the second Ctrl-C: abort now
    if not _requested:
        # os.write: a signal handler may interrupt a print to stderr, and print is not reentrant
        note = " (Ctrl-C again to abort at once)" if signum == signal.SIGINT else ""
        if _trained:
            what = "training is over: finishing the results and the report, then exiting"
        else:
            what = "stopping after the current interval with a checkpoint"
        message = f"jaxlab: {signal_name(signum)}: {what}{note}\n"
        try:
            os.write(2, message.encode())
        except OSError:
            pass
    request(signum)


@contextlib.contextmanager
def stop_on_signals(signals: tuple[int, ...] = STOP_SIGNALS) -> Iterator[None]:
    """While inside, `signals` set the stop flag instead of their usual effect (module docstring).

    Only in the main thread (Python allows handlers nowhere else); a signal the process ignores
    (SIG_IGN, e.g. SIGINT of a background job) stays ignored. The previous handlers come back on
    exit and the flag is cleared on entry and exit.
    """
    global _requested, _trained
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {}
    _requested, _trained = 0, False
    try:
        for sig in signals:
            if signal.getsignal(sig) is not signal.SIG_IGN:
                previous[sig] = signal.signal(sig, _handle)
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if handler is not None else signal.SIG_DFL)
        _requested, _trained = 0, False
