"""Progress of a sweep over run-steps (runs x optimizer steps), across groups and run chunks.

A tqdm bar (rate in run-steps/s, ETA, and as postfix the group, chunk, step, median training loss
and the number of diverged runs so far), or in quiet mode one log line per evaluation interval,
for cluster logs. Work found already done on resume is counted as done without inflating the
rate. In a multi-process sweep only process 0 reports.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import TextIO

from tqdm.auto import tqdm


def _duration(seconds: float) -> str:
    if seconds != seconds or seconds == float("inf"):
        return "?"
    seconds = round(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


def _rate(x: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


class Progress:
    """The progress report of one sweep (module docstring): a bar, or log lines when `quiet`; silent when not
    `enabled`."""

    def __init__(
        self,
        name: str,
        total_run_steps: int,
        n_groups: int,
        quiet: bool,
        enabled: bool = True,
        file: TextIO | None = None,
        heartbeat: Callable[[str], None] | None = None,
    ):
        self.name, self.quiet, self.n_groups, self.enabled = name, quiet, n_groups, enabled
        self.heartbeat = heartbeat  # told of every step of progress (`jaxlab.train.watchdog`)
        self.total = total_run_steps
        self.file = file if file is not None else sys.stderr
        self.done = 0  # run-steps finished, including those skipped on resume
        self.measured = 0  # run-steps trained in this process (for the rate)
        self.t_first: float | None = None
        self.diverged_before = 0  # diverged runs of finished chunks
        self.bar = None
        if enabled and not quiet:
            self.bar = tqdm(total=total_run_steps, unit="run-step", unit_scale=True, desc=name, file=self.file)

    def _where(self, group: int, chunk: int, n_chunks: int) -> str:
        where = f"group {group + 1}/{self.n_groups} " if self.n_groups > 1 else ""
        return where + (f"chunk {chunk + 1}/{n_chunks} " if n_chunks > 1 else "")

    def beat(self, what: str) -> None:
        """Progress that moves no run-steps (a program compiled, a chunk finalized): `what` just finished."""
        if self.heartbeat is not None:
            self.heartbeat(what)

    def skip(self, run_steps: int) -> None:
        """Work already done (resume): counts towards the total, not towards the rate."""
        self.beat("skipped finished work")
        self.done += run_steps
        if self.bar is not None:
            self.bar.n += run_steps
            self.bar.last_print_n = self.bar.n
            self.bar.refresh()

    def update(
        self,
        *,
        group: int,
        chunk: int,
        n_chunks: int,
        runs: int,
        run_steps: int,
        step: int,
        steps: int,
        loss: float,
        diverged: int,
    ) -> None:
        """One evaluation interval done: `run_steps` more run-steps; `diverged` in the current chunk."""
        self.beat(f"{self._where(group, chunk, n_chunks)}step {step}/{steps}".replace("/", " of ", 1))
        now = time.time()
        if self.t_first is None:
            # the first interval includes the program's first launch; rate from its end on
            self.t_first = now
        else:
            self.measured += run_steps
        self.done += run_steps
        if not self.enabled:
            return
        n_div = self.diverged_before + diverged
        status = (
            f"{self._where(group, chunk, n_chunks)}step {step}/{steps} runs {runs} loss {loss:.4g} diverged {n_div}"
        )
        if self.bar is not None:
            self.bar.set_postfix_str(status, refresh=False)
            self.bar.update(run_steps)
            return
        elapsed = now - self.t_first
        rate = self.measured / elapsed if self.measured and elapsed > 0 else float("nan")
        eta = (self.total - self.done) / rate if rate == rate and rate > 0 else float("nan")
        pct = 100.0 * self.done / max(1, self.total)
        speed = _rate(rate) if rate == rate else "?"
        print(
            f"[jaxlab] {self.name} {status} | {pct:.0f}% {speed} run-steps/s ETA {_duration(eta)}",
            file=self.file,
            flush=True,
        )

    def chunk_done(self, diverged: int) -> None:
        """A run chunk finished with `diverged` diverged runs (added to the count shown from now on)."""
        self.beat("a run chunk finished")
        self.diverged_before += diverged

    def close(self) -> None:
        """Close the bar (nothing in quiet mode)."""
        if self.bar is not None:
            self.bar.close()
