"""Experiment trackers: every run's evaluation metrics, written at each evaluation point (`--log`).

The sweep's metrics live on the device between evaluations; after each evaluation interval the
runner reads the new row of the history (the values of every real run of the chunk at that step)
and hands it to the trackers, from the host, as {metric: value} per run. A tracker is a small
writer interface (`Tracker.write(run, step, scalars)`, `close()`), so a run directory's
`metrics.parquet` stays the record and the trackers are views of it while the sweep runs.

  tensorboard  event files under DIR/tensorboard/run-<run>/ (one TensorBoard "run" per jaxlab run,
               one scalar series per metric), written by tensorboardX (`pip install 'jaxlab[log]'`).
               A resumed chunk purges its runs' events from the first step it writes again, so a
               curve has no duplicate steps after --resume.

`check_trackers(names, run_dir)` refuses an unknown name, a missing library or a sweep without a
run directory with a `UserError` naming the option and what to install, before anything is written.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from jaxlab import runfiles
from jaxlab.errors import UserError

TRACKERS = ("tensorboard",)
TENSORBOARD_DIR = "tensorboard"


class Tracker(Protocol):
    """What `--log` writes every evaluation to: per-run scalars at a step, then a close."""

    def write(self, run: int, step: int, scalars: Mapping[str, float]) -> None:
        """Record the finite `scalars` of jaxlab run `run` at optimizer step `step`."""

    def close(self) -> None:
        """Flush and release everything."""


class TensorBoard:
    """One tensorboardX `SummaryWriter` per jaxlab run, opened at the run's first write with
    `purge_step` = that step (events at or after it from an earlier, interrupted attempt are dropped)."""

    def __init__(self, root: Path, writer_class: Any):
        self.root = Path(root)
        self._writer_class = writer_class
        self._writers: dict[int, Any] = {}

    def write(self, run: int, step: int, scalars: Mapping[str, float]) -> None:
        """Add the finite `scalars` of run `run` at `step` to its event file (`run-NNNNN/`, opened at its first
        write)."""
        writer = self._writers.get(run)
        if writer is None:
            # a unique, time-ordered suffix: a second attempt within the same second as the first
            # (a quick resume) must not reuse, and so truncate, the first attempt's file
            writer = self._writer_class(
                logdir=str(self.root / f"run-{run:05d}"),
                purge_step=int(step),
                filename_suffix=f".{time.time_ns()}.{os.getpid()}",
            )
            self._writers[run] = writer
        for name, value in scalars.items():
            if math.isfinite(value):
                writer.add_scalar(name, float(value), global_step=int(step))

    def close(self) -> None:
        """Close every run's writer (flushing its events)."""
        for writer in self._writers.values():
            writer.close()
        self._writers.clear()


def _summary_writer() -> Any:
    try:
        from tensorboardX import SummaryWriter  # an optional dependency, loaded only when asked for
    except ImportError:
        raise UserError("--log tensorboard: needs tensorboardX; pip install 'jaxlab[log]'") from None
    return SummaryWriter


def check_trackers(names: Sequence[str], run_dir: Path | None) -> None:
    """Refuse (UserError) an unknown tracker, a missing library, or trackers without a run directory."""
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise UserError(f"--log: unknown tracker {unknown[0]!r}; allowed: {', '.join(TRACKERS)}")
    if names and run_dir is None:
        raise UserError("--log: trackers write into the run directory; give --out (run_sweep's out_dir)")
    if "tensorboard" in names:
        _summary_writer()
        theirs = Path(run_dir) / TENSORBOARD_DIR
        if theirs.exists() and TENSORBOARD_DIR not in runfiles.owned(Path(run_dir)):
            raise UserError(
                f"--log tensorboard: {theirs} is not jaxlab's and the event files would go there; "
                "move it away or choose another --out"
            )


def open_trackers(names: Sequence[str], run_dir: Path | None, primary: bool = True) -> list[Tracker]:
    """The trackers `names` (each of `TRACKERS`) writing into `run_dir` (`check_trackers` first);
    process 0 (`primary`) records their directories as jaxlab's, refusing one of the user's."""
    check_trackers(names, run_dir)
    out: list[Tracker] = []
    for name in dict.fromkeys(names):
        if name == "tensorboard":
            if primary:
                runfiles.claim(Path(run_dir), TENSORBOARD_DIR)  # never into a directory of the user's
            out.append(TensorBoard(Path(run_dir) / TENSORBOARD_DIR, _summary_writer()))
    return out


def write_row(trackers: Sequence[Tracker], runs: Sequence[int], step: int, row: Mapping[str, Sequence[float]]) -> None:
    """Hand every tracker one evaluation: row[metric][j] is the value of jaxlab run runs[j] at `step`."""
    for j, run in enumerate(runs):
        scalars = {m: float(v[j]) for m, v in row.items()}
        for t in trackers:
            t.write(int(run), int(step), scalars)


def close_all(trackers: Sequence[Tracker]) -> None:
    """Close every tracker of `trackers`."""
    for t in trackers:
        t.close()


__all__ = ["TRACKERS", "TensorBoard", "Tracker", "check_trackers", "close_all", "open_trackers", "write_row"]
