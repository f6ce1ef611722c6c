"""What a finished program (group) or sweep hands back: states, histories, probe results, records.

A `GroupOutcome` holds host arrays with a leading axis over its runs; `outcome_records` turns it
into the tidy table and json part that `jaxlab.train.rundir` writes and merges.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd

from jaxlab import results
from jaxlab.train.engine import Train
from jaxlab.train.experiment import Finalized
from jaxlab.train.groups import Group, RunInfo
from jaxlab.train.rundir import (
    part_records,
)


@dataclass
class GroupOutcome:
    """A finished group: host arrays with a leading axis over `runs` (all of the group's runs,
    or in a multi-process sweep the ones this process trained)."""

    group: Group
    train: Train
    state: Any
    hparams: dict[str, np.ndarray]
    history: dict[str, np.ndarray]  # metric -> [R, n_evals]
    finalized: Finalized
    compile_s: float = 0.0
    wall_s: float = 0.0
    runs: list[RunInfo] = field(default_factory=list)
    diverged_at: np.ndarray | None = None


@dataclass
class SweepResult:
    """What `run_sweep` returns: the run directory (None when nothing was written), the summary.json dict and every
    group's outcome."""

    run_dir: Path | None
    summary: dict[str, Any]
    groups: list[GroupOutcome] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        """The run's tidy metric table (`jaxlab.results.load` of the run directory); ValueError when the sweep wrote
        none."""
        if self.run_dir is None:
            raise ValueError("run_sweep(..., out_dir=None) keeps no table; use .groups")
        return results.load(self.run_dir)


# -- a chunk's results -----------------------------------------------------------------------------


def run_seeds(outcome: Any) -> list[int]:
    """The seeds of a group outcome's runs, in the order of its state's run axis."""
    return [int(r.seed) for r in outcome.runs] if outcome.runs else [int(s) for s in outcome.group.seeds]


def finished_runs(outcome: Any) -> np.ndarray:
    """[R] whether each run of a group outcome finished without diverging (order of `run_seeds`)."""
    n = len(run_seeds(outcome))
    div = outcome.diverged_at
    return np.ones(n, bool) if div is None else np.asarray(div).reshape(-1)[:n] < 0


def select_finalized(fin: Finalized, rows: np.ndarray) -> Finalized:
    """The rows `rows` of every per-run and history array of `fin` (references kept, as floats)."""
    return Finalized(
        per_run={k: np.asarray(v)[rows] for k, v in fin.per_run.items()},
        history={k: (np.asarray(s), np.asarray(v)[rows]) for k, (s, v) in fin.history.items()},
        reference={k: float(v) for k, v in fin.reference.items()},
    )


def concat_outcome(group: Group, train: Train, parts: list[GroupOutcome], compile_s: float, t0: float) -> GroupOutcome:
    """One outcome from the outcomes of a group's run chunks (same order as the runs)."""
    cat = lambda *xs: np.concatenate([np.asarray(x) for x in xs])
    fins = [p.finalized for p in parts]
    weights = [len(p.runs) for p in parts]
    reference = {
        k: float(np.average([f.reference[k] for f in fins], weights=weights))
        for k in fins[0].reference
        if all(k in f.reference for f in fins) and sum(weights) > 0
    }
    return GroupOutcome(
        group=group,
        train=train,
        state=jax.tree_util.tree_map(cat, *[p.state for p in parts]),
        hparams={k: cat(*[p.hparams[k] for p in parts]) for k in parts[0].hparams},
        history={k: cat(*[p.history[k] for p in parts]) for k in parts[0].history},
        finalized=Finalized(
            per_run={k: cat(*[f.per_run[k] for f in fins]) for k in fins[0].per_run},
            history={k: (fins[0].history[k][0], cat(*[f.history[k][1] for f in fins])) for k in fins[0].history},
            reference=reference,
        ),
        compile_s=compile_s,
        wall_s=time.time() - t0,
        runs=[r for p in parts for r in p.runs],
        diverged_at=cat(*[p.diverged_at for p in parts]),
    )


def outcome_records(out: GroupOutcome, chunk: int = 0, process: int = 0) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The tidy table and json part of a (chunk's or group's) outcome."""
    fin = out.finalized
    return part_records(
        group=out.group.index,
        chunk=chunk,
        process=process,
        label=out.group.label,
        runs=[r.as_dict() for r in out.runs],
        steps=np.asarray(out.train.eval_steps),
        history=out.history,
        diverged_at=out.diverged_at,
        per_run=fin.per_run,
        fin_history=fin.history,
        reference=fin.reference,
        compile_s=out.compile_s,
        wall_s=out.wall_s,
        plan=out.train.plan.as_dict(),
    )
