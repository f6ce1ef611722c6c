"""`jaxlab.load(run_dir)`: a sweep's run directory as one object, for notebooks and scripts.

    sweep = jaxlab.load("runs/lsa")
    sweep.runs(status="ok", **{"optim.lr": 1e-3})  # one row per run: run, seed, group, status, config
    sweep.table                                    # metrics.parquet: one row per (run, step, metric)
    sweep.steps()                                  # steps with a checkpoint of every run of a group
    params = sweep.params(step=600)                # stacked parameters, leading axis [R] over the runs
    out = sweep.model().apply({"params": jax.tree.map(lambda p: p[0], params)}, x_BTD)  # run 0

A sweep's runs fall into groups, one compiled program each (runs of one group share their shapes:
`jaxlab.train.groups`); arrays are stacked per group, so `params`, `state`, `model` and `outcome`
take a `group` (needed only when the sweep has several; `runs=[...]` picks it too). Checkpoints are
named by training step; `step=None` is the final state. Arrays come back on this process's
default device, whatever device or process count trained them (the checkpoint is read as host
arrays first). A stopped sweep loads too: its config, the checkpoints it has written, and (no
`metrics.parquet` yet) no table. Experiments that are plug-ins are found after `plugins=[...]`
loads them (`path/to/file.py:NAME` or `package.module:NAME`, as `jaxlab run --plugin` takes).

The same checkpoints restore with plain orbax, without jaxlab (`jaxlab.train.checkpoint`).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd

from jaxlab import results
from jaxlab.config import ExperimentConfig
from jaxlab.errors import UserError
from jaxlab.models import Transformer
from jaxlab.registry import load_plugin, read_run_config
from jaxlab.train import load_group
from jaxlab.train.engine import Train
from jaxlab.train.experiment import Experiment
from jaxlab.train.groups import Group, plan_groups
from jaxlab.train.outcomes import GroupOutcome
from jaxlab.train.restore import checkpoint_indices
from jaxlab.train.rundir import RUN_STATUSES, RunStore, named_by_step

__all__ = ["Sweep", "load"]


def load(run_dir: str | Path, plugins: Iterable[str] = ()) -> Sweep:
    """The sweep in `run_dir` (finished or stopped): config, experiment, runs, table, checkpoints.

    `plugins`: plug-in specs to load first, for a sweep of an experiment defined outside jaxlab.
    Raises `UserError` when `run_dir` holds no jaxlab run.
    """
    for spec in plugins:
        load_plugin(spec)
    run_dir = Path(run_dir)
    if not (run_dir / "config.json").is_file():
        raise UserError(f"{run_dir} holds no jaxlab run (no config.json)")
    experiment, cfg = read_run_config(run_dir)
    return Sweep(run_dir=run_dir, experiment=experiment, config=cfg, groups=plan_groups(cfg, check=False))


@dataclass
class Sweep:
    """A run directory, loaded (`load`). Tables are read when first asked for; restored states
    are kept per (group, step) on this object."""

    run_dir: Path
    experiment: Experiment
    config: ExperimentConfig
    groups: list[Group]
    _outcomes: dict[tuple[int, int | None], GroupOutcome] = field(default_factory=dict, repr=False)

    # -- tables ------------------------------------------------------------------------------------
    @property
    def summary(self) -> dict[str, Any]:
        """summary.json: finals, reference values, claims, timings (`UserError` before the sweep ends)."""
        return results.load_summary(self.run_dir)

    @property
    def finished(self) -> bool:
        """Whether the sweep ended and merged its results (summary.json and metrics.parquet exist)."""
        return (self.run_dir / "summary.json").is_file() and (self.run_dir / "metrics.parquet").is_file()

    @property
    def table(self) -> pd.DataFrame:
        """The tidy metric table, metrics.parquet (`results.load`): experiment, preset, run, seed, the run's
        status and diverged_at_step, a column per config value the sweep sets or sweeps (`optim__lr`),
        step, metric, the metric's parameters, value. Every other config value of a run is in `runs()`
        (one row per run), to merge on `run`."""
        return results.load(self.run_dir)

    def runs(self, status: str | None = None, group: int | None = None, **where: Any) -> pd.DataFrame:
        """One row per run: run, seed, group, status, diverged_at_step and every config value.

        Keep the rows whose `status` ("ok", "diverged"), `group` and config values match `where`;
        keys are dotted config keys (`**{"optim.lr": 1e-3}`) or column names (`optim__lr=1e-3`),
        floats compared with a relative tolerance of 1e-6.
        """
        df = self._run_table()
        if status is not None:
            if status not in RUN_STATUSES:
                raise UserError(f"runs(status={status!r}): unknown status (allowed: {', '.join(RUN_STATUSES)})")
            df = df[df.status == status]
        if group is not None:
            self._check_group(group)
            df = df[df.group == group]
        for key, value in where.items():
            name = results.column(key)
            if name not in df.columns:
                allowed = ", ".join(c for c in df.columns if "__" in c)
                raise UserError(f"runs(): no config key {key!r} (allowed: {allowed})")
            df = df[_matches(df[name], value)]
        return df.reset_index(drop=True)

    def _run_table(self) -> pd.DataFrame:
        group_of = {r.run: g.index for g in self.groups for r in g.runs}
        path = self.run_dir / "runs.parquet"
        if path.is_file():
            df = results.read_parquet(path)
        else:  # a stopped sweep: what its config says; status unknown until it ends
            rows = [{"run": r.run, "seed": r.seed, "status": None} for g in self.groups for r in g.runs]
            df = pd.DataFrame(rows)
        df.insert(2, "group", df.run.map(group_of).astype("int64"))
        return df

    # -- models and checkpoints --------------------------------------------------------------------
    def group(self, group: int | None = None, runs: Sequence[int] | None = None) -> Group:
        """The group asked for: `group`, the one holding every run of `runs`, or the only one."""
        if group is not None:
            self._check_group(group)
            return self.groups[group]
        if runs is not None:
            owners = {g.index for g in self.groups for r in g.runs if r.run in set(runs)}
            missing = set(runs) - {r.run for g in self.groups for r in g.runs}
            if missing:
                raise UserError(f"runs {sorted(missing)} are not in this sweep (runs 0..{self._n_runs() - 1})")
            if len(owners) != 1:
                raise UserError(f"runs {list(runs)} are in groups {sorted(owners)}; arrays stack within one group")
            return self.groups[owners.pop()]
        if len(self.groups) != 1:
            labels = "; ".join(f"{g.index}: {g.label}" for g in self.groups)
            raise UserError(f"the sweep has {len(self.groups)} groups, pick one with group= ({labels})")
        return self.groups[0]

    def train(self, group: int | None = None) -> Train:
        """The engine of a group (its model, loss, evaluation and `apply`), built as the sweep built it."""
        return self.experiment.make_train(self.group(group).cfg)

    def model(self, group: int | None = None) -> Transformer:
        """The Flax module of a group; `model.apply({"params": p}, inputs)` for one run's `p`."""
        return self.train(group).model

    def steps(self, group: int | None = None) -> list[int]:
        """Training steps at which every run of the group has a checkpoint, oldest first."""
        g = self.group(group)
        eval_steps = g.cfg.train.eval_steps()
        return [int(eval_steps[i]) for i in checkpoint_indices(self.experiment, self.run_dir, g.index)]

    def checkpoint_path(self, step: int | None = None, group: int | None = None, chunk: int = 0) -> Path:
        """The absolute path of a checkpoint's item, for plain orbax (`jaxlab.train.checkpoint`):
        `DIR/checkpoints/group-GGGG/chunk-KKKK/<step>/item` (step None: the last one)."""
        g = self.group(group)
        if step is None:
            have = self.steps(g.index)
            if not have:
                raise UserError(f"group {g.index} has no checkpoint")
            step = have[-1]
        index = self._index(g, step)  # checks that there is one at `step`
        chunk_dir = self.run_dir.absolute() / "checkpoints" / f"group-{g.index:04d}" / f"chunk-{chunk:04d}"
        if not chunk_dir.is_dir():
            raise UserError(f"group {g.index} has no run chunk {chunk}")
        by_step = named_by_step(RunStore(self.run_dir).read_layout(g.index) or {})
        return chunk_dir / str(step if by_step else index) / "item"  # older run directories: by index

    def outcome(self, step: int | None = None, group: int | None = None) -> GroupOutcome:
        """Everything `run_sweep` had in memory for the group at `step` (None: the end): `train`,
        `state` and `history` ([R, ...] host arrays), hyperparameters, probe results."""
        g = self.group(group)
        key = (g.index, step)
        if key not in self._outcomes:
            self._outcomes[key] = load_group(self.experiment, self.run_dir, g.index, self._index(g, step))
        return self._outcomes[key]

    def state(self, step: int | None = None, group: int | None = None, runs: Sequence[int] | None = None) -> Any:
        """The stacked `TrainState` (params, optimizer state, ...) at `step`, leading axis over the
        group's runs (or over `runs`, in that order), on this process's default device."""
        g = self.group(group, runs)
        out = self.outcome(step, g.index)
        rows = slice(None) if runs is None else _rows(out, runs)
        return jax.device_put(jax.tree_util.tree_map(lambda x: np.asarray(x)[rows], out.state))

    def params(self, step: int | None = None, group: int | None = None, runs: Sequence[int] | None = None) -> Any:
        """The stacked parameters [R, ...] at `step` (`state(...).params`)."""
        return self.state(step, group, runs).params

    def _index(self, g: Group, step: int | None) -> int | None:
        if step is None:
            return None
        have = self.steps(g.index)
        if step not in have:
            raise UserError(f"group {g.index} has no checkpoint at step {step} (have steps {have})")
        return list(g.cfg.train.eval_steps()).index(step)

    def _check_group(self, group: int) -> None:
        if not 0 <= group < len(self.groups):
            raise UserError(f"the sweep has groups 0..{len(self.groups) - 1}, not {group}")

    def _n_runs(self) -> int:
        return sum(len(g.runs) for g in self.groups)

    def __repr__(self) -> str:
        return (
            f"Sweep({str(self.run_dir)!r}, experiment={self.experiment.name!r}, preset={self.config.preset!r}, "
            f"runs={self._n_runs()}, groups={len(self.groups)}, finished={self.finished})"
        )


def _rows(out: GroupOutcome, runs: Sequence[int]) -> np.ndarray:
    position = {r.run: i for i, r in enumerate(out.runs)}
    return np.asarray([position[r] for r in runs], dtype=np.int64)


def _matches(values: pd.Series, wanted: Any) -> pd.Series:
    """Rows of `values` equal to `wanted`; a float (Python, NumPy or a jax scalar: float32 hyperparameters
    as `stack_hparams` gives them) matches a numeric column within a relative 1e-6."""
    number = np.asarray(wanted) if isinstance(wanted, (float, np.floating, jax.Array)) else None
    if number is not None and number.shape == () and np.issubdtype(number.dtype, np.floating):
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            close = np.isclose(values.to_numpy(dtype=float), float(number), rtol=1e-6, atol=0.0)
            return pd.Series(close, index=values.index)
        wanted = float(number)
    return values == wanted
