"""Loading a finished group back from its run directory: final (or earlier) states, history, probes.

`load_group(experiment, run_dir, index)` restores what `run_sweep` had in memory for group `index`
(host arrays, all its runs) from the orbax checkpoints and result parts; `checkpoint_indices` lists
the evaluation indices at which every run chunk has a checkpoint.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd

from jaxlab import results
from jaxlab.config import ExperimentConfig
from jaxlab.errors import UserError
from jaxlab.train import chunking
from jaxlab.train.checkpoint import DamagedCheckpoint, IncompatibleCheckpoint
from jaxlab.train.engine import Train
from jaxlab.train.experiment import Experiment, Finalized
from jaxlab.train.groups import Group, RunInfo, plan_groups
from jaxlab.train.hparams import stack_hparams
from jaxlab.train.outcomes import GroupOutcome, concat_outcome
from jaxlab.train.param_layout import state_per_block
from jaxlab.train.programs import Programs, key_data
from jaxlab.train.rundir import RunStore, checkpoint_steps
from jaxlab.train.sharding import Placement, run_mesh


# -- loading a finished group back -----------------------------------------------------------------
def _finalized_from_parts(store: RunStore, group: int, chunk: int, runs: list[RunInfo]) -> Finalized:
    parts = [results.read_json(p) for p in store.chunk_parts(group, chunk, "json")]
    if not parts:
        return Finalized()
    entries = {e["run"]: e for p in parts for e in p["runs"]}
    nan = float("nan")
    per_run = {
        m: np.asarray([entries[r.run]["final"].get(m, nan) if r.run in entries else nan for r in runs], np.float64)
        for m in parts[0].get("per_run_metrics", [])
    }
    history = {}
    names = parts[0].get("history_metrics", [])
    if names:
        table = pd.concat([results.read_parquet(p) for p in store.chunk_parts(group, chunk, "parquet")])
        for m in names:
            wide = table[table.metric == m].pivot_table(index="run", columns="step", values="value", dropna=False)
            wide = wide.reindex([r.run for r in runs])
            history[m] = (wide.columns.to_numpy(), wide.to_numpy())
    weights = [max(1, p.get("n_runs", 1)) for p in parts]
    reference = {
        k: float(np.average([p["reference"][k] for p in parts], weights=weights))
        for k in parts[0]["reference"]
        if all(p["reference"].get(k) is not None for p in parts)
    }
    return Finalized(per_run=per_run, history=history, reference=reference)


def chunk_shapes(group: Group, train: Train, chunks: chunking.RunChunks) -> tuple[Any, Any]:
    """(state, history) shapes of one run chunk, from tracing the chunk's start program (no compilation)."""
    one = Placement(run_mesh(jax.local_devices()[:1]))  # shapes only: any chunk size
    programs = Programs(train, one, key_data(group.seeds[:1], group.cfg.train.prng_impl).shape[1])
    like_state, _, like_hist = programs.trace_start(chunks.size, list(stack_hparams(group.cfg, [{}]))).out_info
    return like_state, like_hist


def load_chunk(
    store: RunStore,
    group: Group,
    train: Train,
    chunks: chunking.RunChunks,
    k: int,
    placement: Placement,
    local: bool,
    checkpoint: int | None = None,
    names: Sequence[int] | None = None,
    like: tuple[Any, Any] | None = None,
) -> GroupOutcome:
    """A run chunk from its checkpoint (default: the final one) and its result parts, on the host.

    checkpoint: an evaluation index; local: only the runs this process holds under `placement` (a
    resumed multi-process sweep), otherwise all of them; names: the checkpoints' names on disk
    (`rundir.checkpoint_steps`); like: `chunk_shapes(group, train, chunks)`, when already known.
    """
    like_state, like_hist = like if like is not None else chunk_shapes(group, train, chunks)
    zeros = lambda x: np.zeros(x.shape, x.dtype)
    ckpt = store.checkpointer(group.index, k, keep=0, steps=names, async_save=False)
    try:
        index = ckpt.latest() if checkpoint is None else checkpoint
        if index is None or index not in ckpt.all():
            have = [train.eval_steps[i] for i in ckpt.all()]
            asked = "" if index is None else f"at step {train.eval_steps[index]} "
            raise UserError(
                f"{store.run_dir}: group {group.index} chunk {k} has no checkpoint "
                + (f"{asked}(have steps {have})" if have else "(is the run finished?)")
            )
        try:
            like_state = state_per_block(train, jax.tree_util.tree_map(zeros, like_state))  # as on disk
            # a history without metrics this version records (an older run) reads with them NaN
            state, hist = ckpt.restore(index, like_state, jax.tree_util.tree_map(zeros, like_hist), "nan")
        except DamagedCheckpoint as err:
            raise UserError(
                f"{store.run_dir}: group {group.index} chunk {k}: the checkpoint at step "
                f"{train.eval_steps[index]} is damaged ({err.reason})"
            ) from None
        except IncompatibleCheckpoint as err:
            raise UserError(
                f"{store.run_dir}: group {group.index} chunk {k}: the checkpoint at step "
                f"{train.eval_steps[index]} was written by a jaxlab whose training state differs from this "
                f"one's ({err.difference()}); read it with the jaxlab that wrote it (config.json names its "
                "version). Its tables still load (jaxlab.results.load)"
            ) from None
    finally:
        ckpt.close()
    slots, real = chunks.positions(k), chunks.real(k)
    rows = placement.local_slots(chunks.size) if local else np.arange(chunks.size)
    rows = rows[real[rows]]
    runs = [group.runs[i] for i in slots[rows]]
    state = jax.tree_util.tree_map(lambda x: np.asarray(x)[rows], state)
    hp_all = stack_hparams(group.cfg, [r.point for r in group.runs])
    return GroupOutcome(
        group=group,
        train=train,
        state=state,
        hparams={key: v[slots][rows] for key, v in hp_all.items()},
        history={m: np.asarray(h)[:, rows].T for m, h in hist.items()},
        finalized=_finalized_from_parts(store, group.index, k, runs),
        runs=runs,
        diverged_at=np.asarray(state.diverged_at),
    )


def _group_layout(
    experiment: Experiment, run_dir: Path, index: int
) -> tuple[ExperimentConfig, Group, RunStore, chunking.RunChunks, Sequence[int] | None]:
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    data = results.read_config_data(path)
    try:
        cfg = experiment.config_from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError, UserError) as err:
        raise results.config_error(path, err) from None
    groups = plan_groups(cfg, check=False)
    if not 0 <= index < len(groups):
        raise UserError(f"{run_dir} has groups 0..{len(groups) - 1}, not {index}")
    store = RunStore(run_dir)
    layout = store.read_layout(index)
    if layout is None:
        raise UserError(f"{run_dir}: group {index} has no checkpoint (was it started?)")
    group = groups[index]
    names = checkpoint_steps(layout, group.cfg.train.eval_steps())
    return cfg, group, store, chunking.RunChunks(len(group.runs), int(layout["chunk_size"])), names


def checkpoint_indices(experiment: Experiment, run_dir: str | Path, index: int = 0) -> list[int]:
    """Evaluation indices at which every run chunk of group `index` has a checkpoint, oldest first.

    The step of index i is `load_group(...).train.eval_steps[i]`.
    """
    _, group, store, chunks, names = _group_layout(experiment, Path(run_dir), index)
    common: set[int] | None = None
    for k in range(chunks.n_chunks):
        ckpt = store.checkpointer(group.index, k, keep=0, steps=names, async_save=False)
        try:
            have = set(ckpt.all())
        finally:
            ckpt.close()
        common = have if common is None else common & have
    return sorted(common or ())


def load_group(
    experiment: Experiment, run_dir: str | Path, index: int = 0, checkpoint: int | None = None
) -> GroupOutcome:
    """States [R], hyperparameters, history and probe results of group `index` of a run directory.

    `checkpoint`: an evaluation index from `checkpoint_indices` (default: the final state; the
    history of an earlier one is NaN after it). The returned `train` and `state` (host arrays, all
    the group's runs) feed any probe, exactly as `run_sweep` had them.
    """
    return load_group_series(experiment, run_dir, index, [checkpoint])[0]


def load_group_series(
    experiment: Experiment, run_dir: str | Path, index: int, checkpoints: Sequence[int | None]
) -> list[GroupOutcome]:
    """`load_group` at each of `checkpoints` (evaluation indices; None: the final state), with the run
    layout read and the programs' shapes traced once for the series."""
    t0 = time.time()
    _, group, store, chunks, names = _group_layout(experiment, Path(run_dir), index)
    train = experiment.make_train(group.cfg)
    placement = Placement.default()
    like = chunk_shapes(group, train, chunks)
    out = []
    for checkpoint in checkpoints:
        outs = [
            load_chunk(store, group, train, chunks, k, placement, False, checkpoint, names, like)
            for k in range(chunks.n_chunks)
        ]
        out.append(concat_outcome(group, train, outs, 0.0, t0))
    return out
