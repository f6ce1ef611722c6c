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

  wandb        one Weights & Biases run per jaxlab run (name run-<run>, the sweep's directory as
               its group, the run's experiment, preset, group, seed and grid values as its config),
               written by the wandb library into DIR/wandb/ (`pip install 'jaxlab[log]'`). Offline
               unless WANDB_MODE says otherwise (`wandb sync DIR/wandb/offline-run-*` uploads);
               project WANDB_PROJECT or "jaxlab". The run id is <sweep>-<run>, where <sweep> hashes
               the run directory's path and the time its config.json was written, so a --resume
               continues the same W&B runs (`resume="allow"`; W&B ignores steps at or before the
               last it has) and an --overwrite starts new ones.

`check_trackers(names, run_dir)` refuses an unknown name, a missing library or a sweep without a
run directory with a `UserError` naming the option and what to install, before anything is written.
"""

from __future__ import annotations

import hashlib
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

from jaxlab import runfiles
from jaxlab.errors import UserError

TRACKERS = ("tensorboard", "wandb")
TENSORBOARD_DIR = "tensorboard"
WANDB_DIR = "wandb"
_DIRS = {"tensorboard": TENSORBOARD_DIR, "wandb": WANDB_DIR}


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


class WandB:
    """One Weights & Biases run per jaxlab run, started at the run's first write (`wandb.init` with
    `reinit="create_new"`: many runs open in one process) and finished by `close`."""

    def __init__(self, run_dir: Path, wandb: Any, sweep_id: str, group: str, configs: Mapping[int, Mapping[str, Any]]):
        self.run_dir = Path(run_dir)  # wandb writes into its `wandb/` subdirectory
        self._wandb = wandb
        self.sweep_id, self.group = sweep_id, group
        self._configs = configs
        self._runs: dict[int, Any] = {}

    def write(self, run: int, step: int, scalars: Mapping[str, float]) -> None:
        """Log the finite `scalars` of run `run` at `step` (its W&B run started at the first write)."""
        handle = self._runs.get(run)
        if handle is None:
            handle = self._wandb.init(
                dir=str(self.run_dir),
                mode=os.environ.get("WANDB_MODE", "offline"),
                project=os.environ.get("WANDB_PROJECT", "jaxlab"),
                group=self.group,
                name=f"run-{run:05d}",
                id=f"{self.sweep_id}-{run:05d}",
                resume="allow",
                config=dict(self._configs.get(run, {})),
                reinit="create_new",
                settings=self._wandb.Settings(silent=True, console="off", x_disable_stats=True),
            )
            self._runs[run] = handle
        finite = {name: float(v) for name, v in scalars.items() if math.isfinite(v)}
        if finite:
            handle.log(finite, step=int(step))

    def close(self) -> None:
        """Finish every run (its offline files complete)."""
        for handle in self._runs.values():
            handle.finish()
        self._runs.clear()


def wandb_sweep_id(run_dir: Path) -> str:
    """8 hex digits naming one sweep: the run directory's absolute path and its config.json's write time (the same
    across --resume, new after --overwrite)."""
    run_dir = Path(run_dir).resolve()
    config = run_dir / "config.json"
    written = config.stat().st_mtime_ns if config.exists() else 0
    return hashlib.sha1(f"{run_dir}|{written}".encode()).hexdigest()[:8]


def _wandb() -> Any:
    try:
        import wandb  # an optional dependency, loaded only when asked for
    except ImportError:
        raise UserError("--log wandb: needs wandb; pip install 'jaxlab[log]'") from None
    return wandb


def _summary_writer() -> Any:
    try:
        from tensorboardX import SummaryWriter  # an optional dependency, loaded only when asked for
    except ImportError:
        raise UserError("--log tensorboard: needs tensorboardX; pip install 'jaxlab[log]'") from None
    return SummaryWriter


_LIBRARIES = {"tensorboard": _summary_writer, "wandb": _wandb}


def check_trackers(names: Sequence[str], run_dir: Path | None) -> None:
    """Refuse (UserError) an unknown tracker, a missing library, or trackers without a run directory."""
    unknown = [n for n in names if n not in TRACKERS]
    if unknown:
        raise UserError(f"--log: unknown tracker {unknown[0]!r}; allowed: {', '.join(TRACKERS)}")
    if names and run_dir is None:
        raise UserError("--log: trackers write into the run directory; give --out (run_sweep's out_dir)")
    for name in dict.fromkeys(names):
        _LIBRARIES[name]()  # refuses a missing library
        theirs = Path(run_dir) / _DIRS[name]
        if theirs.exists() and _DIRS[name] not in runfiles.owned(Path(run_dir)):
            raise UserError(
                f"--log {name}: {theirs} is not jaxlab's and the tracker's files would go there; "
                "move it away or choose another --out"
            )


def open_trackers(
    names: Sequence[str],
    run_dir: Path | None,
    primary: bool = True,
    configs: Mapping[int, Mapping[str, Any]] | None = None,
) -> list[Tracker]:
    """The trackers `names` (each of `TRACKERS`) writing into `run_dir` (`check_trackers` first);
    process 0 (`primary`) records their directories as jaxlab's, refusing one of the user's.
    `configs[run]`: what a tracker with per-run metadata (wandb) records for the run."""
    check_trackers(names, run_dir)
    out: list[Tracker] = []
    for name in dict.fromkeys(names):
        if primary:
            runfiles.claim(Path(run_dir), _DIRS[name])  # never into a directory of the user's
        root = Path(run_dir) / _DIRS[name]
        if name == "tensorboard":
            out.append(TensorBoard(root, _LIBRARIES[name]()))
        else:
            run_dir = Path(run_dir)
            out.append(
                WandB(run_dir, _LIBRARIES[name](), wandb_sweep_id(run_dir), run_dir.resolve().name, configs or {})
            )
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


__all__ = [
    "TRACKERS",
    "TensorBoard",
    "Tracker",
    "WandB",
    "check_trackers",
    "close_all",
    "open_trackers",
    "wandb_sweep_id",
    "write_row",
]
