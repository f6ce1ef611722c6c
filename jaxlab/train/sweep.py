"""Run a sweep: its groups (`jaxlab.train.groups`) one program after another, then the run directory's merge.

`run_sweep(experiment, cfg, out_dir)` checks every program's config first, then process 0 locks
and prepares the run directory (`jaxlab.train.replace`), each group runs (`jaxlab.train.group_run`:
run chunks, checkpoints, resume) under the stall watchdog and SIGINT/SIGTERM handling, the
experiment's analyses across groups follow (`after_sweep`), and the parts are merged into
`metrics.parquet` and `summary.json` (`jaxlab.train.rundir`) and the report written. Several
processes (`--distributed`) run the same loop on their own shards; process 0 merges.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import jax

from jaxlab import interrupt, results, runfiles
from jaxlab.config import ExperimentConfig, require_config
from jaxlab.errors import ConfigError, UserError
from jaxlab.reporting import write_report_of
from jaxlab.trackers import check_trackers, close_all, open_trackers
from jaxlab.train.distributed import agree_min, barrier, is_primary
from jaxlab.train.experiment import Experiment
from jaxlab.train.group_run import run_group
from jaxlab.train.groups import Group, plan_groups
from jaxlab.train.outcomes import GroupOutcome, SweepResult, outcome_records
from jaxlab.train.progress import Progress
from jaxlab.train.replace import RunAttempt
from jaxlab.train.restore import load_group
from jaxlab.train.rundir import (
    RunStore,
    build_summary,
    check_run_dir,
    merge_parts,
)
from jaxlab.train.sharding import Placement
from jaxlab.train.watchdog import Watchdog


# -- the sweep -------------------------------------------------------------------------------------
def _group_done(store: RunStore, group: Group) -> bool:
    layout = store.read_layout(group.index)
    return layout is not None and all(store.chunk_done(group.index, k) for k in range(int(layout["n_chunks"])))


class _StartSignal(Progress):
    """A Progress that calls `on_start` once, after its first update: the end of the sweep's first
    training interval, when the run is known to start (config valid, programs compiled, memory
    sufficed)."""

    def __init__(self, *args: Any, on_start: Callable[[], None] | None = None, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._on_start = on_start

    def update(self, **kwargs: Any) -> None:
        super().update(**kwargs)
        if self._on_start is not None:
            on_start, self._on_start = self._on_start, None
            on_start()


def run_sweep(
    experiment: Experiment,
    cfg: ExperimentConfig,
    out_dir: str | Path | None = None,
    *,
    resume: bool = False,
    overwrite: bool = False,
    quiet: bool = False,
    progress: bool = True,
    command: str | None = None,
    report: bool = True,
    placement: Placement | None = None,
    log: Sequence[str] = (),
) -> SweepResult:
    """Train and probe every run of `cfg.sweep` of `experiment`; write the run directory when `out_dir`
    is given. (`jaxlab.registry.get_experiment(name)` finds an experiment by name.) `log`: trackers
    (`jaxlab.trackers.TRACKERS`, e.g. "tensorboard") that get every evaluation as it is made.

    Runs are sharded over `placement` (default: a 1-D mesh of every device of every process). In
    a multi-process sweep every process calls this with the same arguments; each writes the
    parts of its runs, process 0 merges them, and `groups` holds this process's runs.

    The run directory (`jaxlab.train.replace`): process 0 locks it for the whole sweep, checks
    it and, for a fresh run, moves aside what jaxlab wrote there before. The old run is deleted
    once the first training interval has finished (the run is known to start) and put back if
    the sweep fails before that; a failed fresh run leaves the directory as it found it.
    """
    t0 = time.time()
    exp = _require_experiment(experiment, cfg)
    groups = plan_groups(cfg)  # every program's config is valid before the directory is touched
    options = dict(
        resume=resume, quiet=quiet, progress=progress, command=command, report=report, placement=placement, log=log
    )
    check_trackers(log, None if out_dir is None else Path(out_dir))  # before anything is written
    if out_dir is None:
        return _sweep(cfg, exp, groups, None, t0=t0, **options)
    run_dir = Path(out_dir)
    attempt = RunAttempt(run_dir, resume=resume, overwrite=overwrite, command=command)
    with interrupt.stop_on_signals():  # SIGINT / SIGTERM: a checkpoint after the current interval, then stop
        try:
            error: BaseException | None = None
            if is_primary():
                try:
                    attempt.begin(lambda: check_run_dir(run_dir, cfg, resume, overwrite))
                    if not resume:
                        results.write_text(run_dir / "config.json", cfg.to_json() + "\n")
                    else:  # provenance: the command that started the run, not this --resume
                        options["command"] = runfiles.started_by(run_dir) or command
                except BaseException as err:
                    error = err
            if agree_min(0 if error is not None else 1) == 0:  # every process learns process 0's outcome
                raise error or UserError(f"--out {run_dir}: process 0 could not prepare it (see its message)")
            result = _sweep(cfg, exp, groups, run_dir, t0=t0, on_start=attempt.started, **options)
            attempt.started()  # also a sweep that had nothing left to train
            return result
        except BaseException:
            attempt.abandon()
            raise
        finally:
            attempt.release()


def tracker_configs(cfg: ExperimentConfig, groups: Sequence[Group]) -> dict[int, dict[str, Any]]:
    """{run: its experiment, preset, group, seed and grid values}: what a tracker records about each run."""
    return {
        r.run: {"experiment": cfg.experiment, "preset": cfg.preset, "group": g.index, "seed": r.seed, **r.point}
        for g in groups
        for r in g.runs
    }


def preset_overrides(exp: Experiment, cfg: ExperimentConfig) -> dict[str, Any]:
    """The config values that differ from `cfg.preset`'s (the swept keys aside): what `--set` changed.
    Empty for a config whose preset the experiment does not have."""
    try:
        base = exp.preset(cfg.preset)
    except UserError:
        return {}
    swept = {k for k, _ in cfg.sweep.grid}
    shared = set(base.valid_keys()) - swept
    return {k: cfg.get(k) for k in cfg.valid_keys() if k in shared and base.get(k) != cfg.get(k)}


def _require_experiment(experiment: Any, cfg: Any) -> Experiment:
    """`experiment`, checked against `cfg` (TypeError for the old `run_sweep(cfg, out)` call)."""
    if not isinstance(experiment, Experiment):
        raise TypeError(
            "run_sweep(experiment, cfg, out_dir): expected a jaxlab Experiment first "
            f"(jaxlab.registry.get_experiment(name)), got {type(experiment).__name__}"
        )
    require_config(cfg, "run_sweep(experiment, cfg)")
    if cfg.experiment != experiment.name:
        raise ConfigError("experiment", f"the config is of {cfg.experiment!r}, not of {experiment.name!r}")
    return experiment


def _sweep(
    cfg: ExperimentConfig,
    exp: Experiment,
    groups: list[Group],
    run_dir: Path | None,
    *,
    resume: bool,
    quiet: bool,
    progress: bool,
    command: str | None,
    report: bool,
    placement: Placement | None,
    t0: float,
    log: Sequence[str] = (),
    on_start: Callable[[], None] | None = None,
) -> SweepResult:
    """`run_sweep` in a prepared (locked, checked) run directory, or none."""
    placement = placement or Placement.default()
    primary = is_primary()
    store = RunStore(run_dir) if run_dir is not None else None
    trackers = open_trackers(log, run_dir, primary, tracker_configs(cfg, groups))

    with Watchdog(cfg.train.stall_timeout, run_dir, jax.process_index()) as watchdog:
        total = sum(len(g.runs) * g.cfg.train.steps for g in groups)
        bar = _StartSignal(
            cfg.experiment,
            total,
            len(groups),
            quiet=quiet,
            enabled=progress and primary,
            on_start=on_start,
            heartbeat=watchdog.beat,
        )
        outcomes: list[GroupOutcome] = []
        skipped: list[int] = []
        try:
            for group in groups:
                if store is not None and resume and _group_done(store, group):
                    bar.skip(len(group.runs) * group.cfg.train.steps)
                    skipped.append(group.index)
                    continue
                outcomes.append(
                    run_group(exp, group, bar, store, resume=resume, placement=placement, trackers=trackers)
                )
        finally:
            bar.close()
            close_all(trackers)
        interrupt.training_over()  # a stop signal from here on: the results and report still finish
        barrier("jaxlab-groups-done")

        cross = None
        if exp.after_sweep is not None and len(groups) > 1:
            if run_dir is not None and (skipped or jax.process_count() > 1):
                # every run of every group (this process may hold only some)
                full = [load_group(exp, run_dir, g.index) for g in groups]
            else:
                full = sorted(outcomes, key=lambda o: o.group.index)
            cross = exp.after_sweep(full)
            watchdog.beat("the analyses across groups")
            if run_dir is not None and primary:
                results.write_json(run_dir / "parts" / "cross.json", {"reference": cross.reference})

        wall_s = time.time() - t0
        if run_dir is None:
            parts = [outcome_records(o)[1] for o in outcomes]
            if cross is not None:
                parts.append({"label": "", "runs": [], "compile_s": 0.0, "reference": cross.reference})
            summary = build_summary(cfg, parts, wall_s, command, exp.claims, exp.deviations(cfg))
            return SweepResult(None, summary, outcomes)
        if primary:
            overrides = preset_overrides(exp, cfg)
            summary = merge_parts(run_dir, cfg, wall_s, command, exp.claims, exp.deviations(cfg), overrides)
            if report:
                write_report_of(run_dir, exp)
        barrier("jaxlab-merged")
        if not primary:
            summary = results.load_summary(run_dir)
        return SweepResult(run_dir, summary, outcomes)
