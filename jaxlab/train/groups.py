"""A sweep as groups of runs: seeds x grid points, one compiled program per group.

Grid keys that only change values (`hparams.TRACED_KEYS`: learning rate, weight decay, betas, init
scale) vary inside one program, vmapped with the seeds. Keys that change shapes or code (e.g.
`model.n_heads`, `task.n_context`) split the sweep into groups, one program each, run in turn.
`plan_groups` also refuses sweeps over keys with no effect and sizes that cannot fit.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxlab.config import ExperimentConfig
from jaxlab.errors import ConfigError
from jaxlab.train import bounds, chunking
from jaxlab.train.hparams import is_traced


@dataclass(frozen=True)
class RunInfo:
    """One run of a sweep: its id (point-major over the sweep), its seed and its grid point (`key` -> value)."""

    run: int
    seed: int
    point: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        """The JSON form: run, seed and point."""
        return {"run": self.run, "seed": self.seed, "point": self.point}


@dataclass
class Group:
    """The runs of a sweep that share one compiled program: its index, its resolved config (structural grid values
    set), its runs and a label naming those values."""

    index: int
    cfg: ExperimentConfig
    runs: list[RunInfo]
    label: str

    @property
    def seeds(self) -> np.ndarray:
        """The seeds of the group's runs, in run order."""
        return np.asarray([r.seed for r in self.runs])


# -- planning --------------------------------------------------------------------------------------
def plan_groups(cfg: ExperimentConfig, check: bool = True) -> list[Group]:
    """Split seeds x grid into groups that share one compiled program. Run ids: point-major.

    `check` (the default): before anything is compiled or written, refuse a sweep over a key
    that cannot change its runs (`check_sweep_keys`) and a program whose one run cannot fit a
    device (`bounds.check_fits`); loading a finished run turns it off.
    """
    points = cfg.sweep.points()
    structural = [k for k, _ in cfg.sweep.grid if not is_traced(k)]
    groups: dict[tuple, Group] = {}
    run = 0
    for point in points:
        skey = tuple((k, point[k]) for k in structural)
        if skey not in groups:
            gcfg = cfg.with_overrides(dict(skey)).resolve()
            label = ", ".join(f"{k}={v}" for k, v in skey)
            groups[skey] = Group(index=len(groups), cfg=gcfg, runs=[], label=label)
        for seed in cfg.sweep.seeds:
            groups[skey].runs.append(RunInfo(run=run, seed=seed, point=dict(point)))
            run += 1
    out = list(groups.values())
    if check:
        check_sweep_keys(cfg, out)
        budget = chunking.memory_budget()
        for group in out:
            bounds.check_fits(group.cfg, group.label, budget)
    return out


def check_sweep_keys(cfg: ExperimentConfig, groups: list[Group]) -> None:
    """Refuse a grid key whose values would all give the same runs.

    That is a key that holds one value for the whole sweep (a section's `SWEEP_WIDE`: how the
    sweep runs, or an analysis across its programs) or one with no effect in some program's
    resolved config (a section's `INERT` rules, the probe config's `UNREAD_KEYS`).
    """
    wide = cfg.sweep_wide_keys()
    for key, _ in cfg.sweep.grid:
        if key in wide:
            raise ConfigError(
                f"--sweep {key}", f"cannot be swept: it {wide[key]}; give one value with --set {key}=VALUE"
            )
        for group in groups:
            why = group.cfg.inert_keys().get(key)
            if why is not None:
                others = [f"{k}={v}" for k, v in group.runs[0].point.items() if k != key and not is_traced(k)]
                where = f" (in the program {', '.join(others)})" if others else ""
                raise ConfigError(f"--sweep {key}", f"{why}{where}, so every value would give the same runs")


def with_seeds(cfg: ExperimentConfig, seeds: Iterable[int]) -> ExperimentConfig:
    """A copy of `cfg` whose sweep has the given seeds (any iterable of ints: `range(8)`, a list)."""
    return dataclasses.replace(cfg, sweep=dataclasses.replace(cfg.sweep, seeds=tuple(seeds)))  # validated there
