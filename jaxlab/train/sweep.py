"""Run a sweep: seeds x grid points, as few compiled programs as the grid allows, on every device.

Grid keys that only change values (`hparams.TRACED_KEYS`: learning rate, weight decay, betas, init
scale) vary inside one program, vmapped with the seeds. Keys that change shapes or code (e.g.
`model.n_heads`, `task.n_context`) split the sweep into groups, one program each, run in turn.

A group's R runs are laid out over a 1-D mesh of all devices (`jaxlab.train.sharding`) and, when
they do not fit in memory at once, split into equal run chunks (`jaxlab.train.chunking`) trained
one after the other through the same two compiled programs (`jaxlab.train.programs`). For each
chunk the host loop is: `start` (init, evaluation data, step-0 metrics), then one `interval` per
evaluation interval (buffers donated; only the median loss and the diverged count come to the
host), orbax checkpoints every `train.checkpoint_every` intervals, every
`train.checkpoint_minutes`, at the end and on SIGINT / SIGTERM (`jaxlab.interrupt`), then the
experiment's `finalize` and the chunk's result part. `--resume` continues each chunk from its
newest checkpoint that verifies (`jaxlab.train.checkpoint`) on the device count it started on.
The parts are merged into `metrics.parquet` and `summary.json` (`jaxlab.train.rundir`). Several
processes (`--distributed`) run the same loop on their own shards; process 0 merges.
"""

from __future__ import annotations

import dataclasses
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

from jaxlab import interrupt, results
from jaxlab.config import ExperimentConfig
from jaxlab.errors import ConfigError, UserError
from jaxlab.experiments import Experiment, Finalized, get_experiment
from jaxlab.hostdevices import ENV as CPU_DEVICES_ENV
from jaxlab.hostdevices import cpu_cores
from jaxlab.train import bounds, chunking
from jaxlab.train.checkpoint import DamagedCheckpoint, GroupCheckpointer, SaveSchedule
from jaxlab.train.distributed import agree_decision, agree_min, barrier, is_primary
from jaxlab.train.engine import Train
from jaxlab.train.hparams import is_traced, stack_hparams
from jaxlab.train.programs import Programs, key_data
from jaxlab.train.progress import Progress
from jaxlab.train.replace import RunAttempt
from jaxlab.train.rundir import (
    RUN_DIRS,
    RUN_FILES,
    RunStore,
    build_summary,
    check_run_dir,
    holds_run,
    merge_parts,
    part_records,
)
from jaxlab.train.sharding import Placement, padded_size, run_mesh
from jaxlab.train.watchdog import Watchdog

__all__ = [
    "RUN_DIRS",
    "RUN_FILES",
    "Group",
    "GroupOutcome",
    "Progress",
    "RunInfo",
    "SweepResult",
    "build_summary",
    "checkpoint_indices",
    "holds_run",
    "load_group",
    "merge_parts",
    "plan",
    "run_group",
    "run_sweep",
    "with_seeds",
]


@dataclass(frozen=True)
class RunInfo:
    run: int
    seed: int
    point: dict[str, Any]

    def as_dict(self) -> dict[str, Any]:
        return {"run": self.run, "seed": self.seed, "point": self.point}


@dataclass
class Group:
    index: int
    cfg: ExperimentConfig
    runs: list[RunInfo]
    label: str

    @property
    def seeds(self) -> np.ndarray:
        return np.asarray([r.seed for r in self.runs])


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
    run_dir: Path | None
    summary: dict[str, Any]
    groups: list[GroupOutcome] = field(default_factory=list)

    def frame(self) -> pd.DataFrame:
        if self.run_dir is None:
            raise ValueError("run_sweep(..., out_dir=None) keeps no table; use .groups")
        return results.load(self.run_dir)


# -- planning --------------------------------------------------------------------------------------
def plan(cfg: ExperimentConfig, check: bool = True) -> list[Group]:
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


# -- a chunk's results -----------------------------------------------------------------------------
def _select_finalized(fin: Finalized, rows: np.ndarray) -> Finalized:
    return Finalized(
        per_run={k: np.asarray(v)[rows] for k, v in fin.per_run.items()},
        history={k: (np.asarray(s), np.asarray(v)[rows]) for k, (s, v) in fin.history.items()},
        reference={k: float(v) for k, v in fin.reference.items()},
    )


def _concat_outcome(group: Group, train: Train, parts: list[GroupOutcome], compile_s: float, t0: float) -> GroupOutcome:
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


# -- one group -------------------------------------------------------------------------------------
def check_resume_devices(layout: dict[str, Any], group: int, placement: Placement) -> None:
    """Refuse to continue a group on another device count or platform than it started on.

    A run's numbers depend on how its chunk's runs are spread over the devices, not only on the
    run: with the `scan` layout each device trains its C / D runs in vmapped blocks of the largest
    divisor of C / D up to `train.run_block`, and the step-0 metrics are one program over the
    chunk's runs partitioned over the D devices. Other block sizes and loop lengths are other XLA
    kernels, whose float sums differ in the last bits and then grow with training (measured: the
    instruction-clustering smoke preset from scratch on 1 and 2 CPU devices differs in 31266 of
    33386 values, by up to 0.03; with `train.run_block=1` only evaluation metrics differ, by up
    to 1e-5). Keeping C / D fixed would mean repartitioning checkpoints; so a resume uses the
    device count and platform of the start, which gives bit-identical results.
    """
    started, now = int(layout.get("n_devices", placement.n_devices)), placement.n_devices
    here = _platform(placement)
    platform = layout.get("platform", here)  # layouts written before jaxlab recorded it: not checked
    if started == now and platform == here:
        return
    if platform != "cpu":
        how = f"{started} {platform} devices"
    elif started <= cpu_cores():
        how = f"{CPU_DEVICES_ENV}={started} jaxlab run ... --resume"
    else:  # more devices than this machine's cores: only XLA's own flag still asks for them
        how = f"XLA_FLAGS=--xla_force_host_platform_device_count={started} jaxlab run ... --resume"
    raise UserError(
        f"--resume: group {group} was started on {started} {platform} device(s) and this run has {now} "
        f"{here} device(s); a run's numbers depend on how runs are spread over the devices, so "
        f"continuing here would silently change them. Resume with {how}, or start again with --overwrite"
    )


def _notice(message: str) -> None:
    """One line on stderr, from process 0 only, above the progress bar."""
    if is_primary():
        tqdm.write(f"jaxlab: {message}", file=sys.stderr)


def _platform(placement: Placement) -> str:
    return str(placement.mesh.devices.flat[0].platform)


class _GroupRun:
    """The state shared by the run chunks of one group (programs, inputs, where to write)."""

    def __init__(self, exp: Experiment, group: Group, placement: Placement, store: RunStore | None, resume: bool):
        self.exp, self.group, self.placement, self.store, self.resume = exp, group, placement, store, resume
        cfg = group.cfg
        self.train = exp.make_train(cfg)
        self.hp_all = stack_hparams(cfg, [r.point for r in group.runs])
        self.hp_keys = list(self.hp_all)
        self.kd_all = key_data(group.seeds, cfg.train.prng_impl)
        self.programs = Programs(self.train, placement, self.kd_all.shape[1])

    def compile(self) -> float:
        """Choose the run-chunk layout and compile the two programs for it; returns seconds."""
        t0 = time.time()
        g, n, d = self.group, len(self.group.runs), self.placement.n_devices
        layout = self.store.read_layout(g.index) if (self.store is not None and self.resume) else None
        compile_interval = lambda size: self.programs.compile_interval(size, self.hp_keys)
        if layout is not None:
            check_resume_devices(layout, g.index, self.placement)
            size = int(layout["chunk_size"])
            self.chunks, self.interval = chunking.RunChunks(n, size), compile_interval(size)
            self.estimate = layout.get("estimate", {})
        else:
            max_runs = g.cfg.train.max_runs_per_chunk
            full = padded_size(n, d)
            self.chunks, self.interval, self.estimate = chunking.choose(
                n,
                d,
                max_runs,
                compile_interval,
                fixed_bytes=0 if max_runs else self.programs.eval_data_bytes(full, self.hp_keys),
                agree=agree_min,
                others=lambda size: [self.programs.compile_start(size, self.hp_keys)],
                drivers=bounds.drivers(g.cfg),
            )
            if self.store is not None and is_primary():
                self.store.write_layout(
                    g.index,
                    {
                        "n_runs": n,
                        "chunk_size": self.chunks.size,
                        "n_chunks": self.chunks.n_chunks,
                        "n_devices": d,
                        "platform": _platform(self.placement),
                        "n_processes": jax.process_count(),
                        "estimate": self.estimate,
                    },
                )
        self.start = self.programs.compile_start(self.chunks.size, self.hp_keys)
        return time.time() - t0

    def run_chunk(self, k: int, progress: Progress, compile_s: float) -> GroupOutcome:
        """Train run chunk k from scratch or from its last checkpoint; write its result part."""
        t0 = time.time()
        g, p, chunks, train = self.group, self.placement, self.chunks, self.train
        tcfg = g.cfg.train
        slots, real = chunks.positions(k), chunks.real(k)
        hp = p.put_tree({key: v[slots] for key, v in self.hp_all.items()}, p.runs)
        valid = p.put(real, p.runs)
        state, eval_data, history = self.start(p.put(self.kd_all[slots], p.runs), hp)

        steps = train.eval_steps
        last = len(steps) - 1
        n_real = chunks.n_real(k)
        ckpt = None
        if self.store is not None:
            if self.resume:
                if is_primary():
                    self.store.clear_chunk_parts(g.index, k)
                barrier(f"jaxlab-clear-{g.index}-{k}")
            ckpt = self.store.checkpointer(g.index, k, keep=tcfg.keep_checkpoints)
        where = f"group {g.index + 1}/{progress.n_groups} chunk {k + 1}/{chunks.n_chunks}"
        try:
            begin = 0
            if ckpt is not None and self.resume:
                begin, state, history = self._resume(ckpt, state, history, where)
                progress.skip(n_real * steps[begin])
            schedule = SaveSchedule(tcfg.checkpoint_every, tcfg.checkpoint_minutes)
            n_div = None
            for i in range(begin + 1, len(steps)):
                if i == begin + 1:
                    # asked to stop before this chunk trained (while compiling, restoring or
                    # finishing the previous chunk): its state is saved already, or is step 0
                    # (a fresh sweep stopped here is rolled back, `jaxlab.train.replace`)
                    _, stop = agree_decision(0, interrupt.requested())
                    if stop:
                        saved = f"checkpoint saved at step {steps[begin]} of {steps[-1]} ({where})"
                        raise interrupt.Interrupted(stop, saved if begin else f"before training {where}")
                gap = steps[i] - steps[i - 1]
                n = p.put(np.int32(gap), p.replicated)
                state, history, (loss, n_div) = self.interval(
                    state, history, hp, eval_data, n, p.put(np.int32(i), p.replicated), valid
                )
                progress.update(
                    group=g.index,
                    chunk=k,
                    n_chunks=chunks.n_chunks,
                    runs=n_real,
                    run_steps=n_real * gap,
                    step=steps[i],
                    steps=steps[-1],
                    loss=float(loss),
                    diverged=int(n_div),
                )
                if ckpt is not None:
                    ckpt.poll()
                # every process saves at the same intervals (saves are collective): by time on
                # process 0's clock, and when any process was asked to stop (`jaxlab.interrupt`)
                by_time, stop = agree_decision(schedule.time_due(), interrupt.requested())
                if ckpt is not None and (stop or (i < last and (by_time or schedule.every_due(i)))):
                    ckpt.save(i, state, history, force=bool(stop))
                    schedule.saved()
                if stop:
                    if ckpt is None:
                        raise interrupt.Interrupted(stop, f"at step {steps[i]}; nothing saved (no run directory)")
                    ckpt.wait()
                    raise interrupt.Interrupted(stop, f"checkpoint saved at step {steps[i]} of {steps[-1]} ({where})")
            if ckpt is not None and begin != last:
                ckpt.save(last, state, history, force=True)
            out = self._collect(k, state, history, hp, slots, real)
        finally:
            if ckpt is not None:
                ckpt.close()  # the final checkpoint is complete before the part says the chunk is done
        diverged = int(n_div) if n_div is not None else int(np.sum(out.diverged_at >= 0))
        progress.chunk_done(diverged)
        out.compile_s, out.wall_s = (compile_s if k == 0 else 0.0), time.time() - t0
        if self.store is not None:
            self._write_part(k, out)
        return out

    def _resume(self, ckpt: GroupCheckpointer, state: Any, history: dict, where: str) -> tuple[int, Any, dict]:
        """(evaluation index, state, history) of the newest usable checkpoint, or of step 0 (the
        given state) when there is none; says on stderr which, and which were damaged."""
        steps = self.train.eval_steps

        def damaged(index: int, reason: str, moved: Path | None) -> None:
            _notice(
                f"warning: {where}: the checkpoint at step {steps[index]} is damaged ({reason}); "
                f"kept in {moved}; trying the one before"
            )

        got = ckpt.restore_newest(state, history, on_damaged=damaged)
        if got.index is None:
            why = "no usable checkpoint" if got.damaged else "no checkpoint yet"
            _notice(f"{'warning: ' if got.damaged else ''}{where}: {why}, starting from step 0")
            return 0, state, history
        unverified = "" if got.verified else "; it has no fingerprint to verify it against"
        _notice(
            f"{where}: resuming from step {steps[got.index]} of {steps[-1]} "
            f"(checkpoint after evaluation {got.index} of {len(steps) - 1}{unverified})"
        )
        return got.index, got.state, got.history

    def _collect(
        self, k: int, state: Any, history: dict, hp: dict, slots: np.ndarray, real: np.ndarray
    ) -> GroupOutcome:
        """This process's real runs of the chunk, on the host, with the experiment's finalize."""
        g, p = self.group, self.placement
        local, state_local = p.local_tree(state)
        keep = real[local]
        rows = local[keep]
        runs = [g.runs[i] for i in slots[rows]]
        hist = {m: p.local(h, axis=1)[1][:, keep].T for m, h in history.items()}
        fin = Finalized()
        if self.exp.finalize is not None:
            seeds = g.seeds[slots]
            if jax.process_count() == 1:  # the sharded device arrays of the whole chunk
                fin = _select_finalized(self.exp.finalize(self.train, state, hp, seeds), rows)
            else:  # this process's rows only: finalize may move its results to the host
                hp_local = {key: v[slots][local] for key, v in self.hp_all.items()}
                fin = self.exp.finalize(self.train, state_local, hp_local, seeds[local])
                fin = _select_finalized(fin, np.nonzero(keep)[0])
        if self.exp.from_history is not None:
            extra = self.exp.from_history(self.train, hist, np.asarray(self.train.eval_steps))
            if isinstance(extra, Finalized):
                fin.per_run.update(extra.per_run)
                fin.history.update(extra.history)
                fin.reference.update(extra.reference)
            else:
                fin.per_run.update(extra)
        state_host = jax.tree_util.tree_map(lambda x: np.asarray(x)[keep], state_local)
        return GroupOutcome(
            group=g,
            train=self.train,
            state=state_host,
            hparams={key: v[slots][rows] for key, v in self.hp_all.items()},
            history=hist,
            finalized=fin,
            runs=runs,
            diverged_at=np.asarray(state_host.diverged_at),
        )

    def _write_part(self, k: int, out: GroupOutcome) -> None:
        g = self.group
        table, part = outcome_records(out, chunk=k, process=self.store.process)
        self.store.write_part(g.index, k, table, part)
        barrier(f"jaxlab-part-{g.index}-{k}")
        if is_primary():
            self.store.mark_done(g.index, k, jax.process_count())


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
    )


def run_group(
    exp: Experiment,
    group: Group,
    progress: Progress,
    store: RunStore | None = None,
    resume: bool = False,
    placement: Placement | None = None,
) -> GroupOutcome:
    """Train every run of `group` (run chunk by run chunk); returns final states, history and probes."""
    t0 = time.time()
    gr = _GroupRun(exp, group, placement or Placement.default(), store, resume)
    compile_s = gr.compile()
    progress.beat(f"group {group.index} compiled")
    outs = []
    for k in range(gr.chunks.n_chunks):
        if store is not None and resume and store.chunk_done(group.index, k):
            progress.skip(gr.chunks.n_real(k) * group.cfg.train.steps)
            outs.append(_load_chunk(store, group, gr.train, gr.chunks, k, gr.placement, local=True))
            continue
        outs.append(gr.run_chunk(k, progress, compile_s))
    return _concat_outcome(group, gr.train, outs, compile_s, t0)


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


def _load_chunk(
    store: RunStore,
    group: Group,
    train: Train,
    chunks: chunking.RunChunks,
    k: int,
    placement: Placement,
    local: bool,
    checkpoint: int | None = None,
) -> GroupOutcome:
    """A run chunk from its checkpoint (default: the final one) and its result parts, on the host.

    local: only the runs this process holds under `placement` (a resumed multi-process sweep);
    otherwise all of them.
    """
    one = Placement(run_mesh(jax.local_devices()[:1]))  # shapes only: any chunk size
    programs = Programs(train, one, key_data(group.seeds[:1], group.cfg.train.prng_impl).shape[1])
    like_state, _, like_hist = programs.trace_start(chunks.size, list(stack_hparams(group.cfg, [{}]))).out_info
    zeros = lambda x: np.zeros(x.shape, x.dtype)
    ckpt = store.checkpointer(group.index, k, keep=0, async_save=False)
    try:
        index = ckpt.latest() if checkpoint is None else checkpoint
        if index is None or index not in ckpt.all():
            have = ckpt.all()
            raise UserError(
                f"{store.run_dir}: group {group.index} chunk {k} has no checkpoint "
                + (f"{index} (have {have})" if have else "(is the run finished?)")
            )
        try:
            state, hist = ckpt.restore(
                index, jax.tree_util.tree_map(zeros, like_state), jax.tree_util.tree_map(zeros, like_hist)
            )
        except DamagedCheckpoint as err:
            raise UserError(
                f"{store.run_dir}: group {group.index} chunk {k}: the checkpoint at step "
                f"{train.eval_steps[index]} is damaged ({err.reason})"
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


def _group_layout(run_dir: Path, index: int) -> tuple[ExperimentConfig, Group, RunStore, chunking.RunChunks]:
    run_dir = Path(run_dir)
    cfg = results.read_config(run_dir / "config.json")
    groups = plan(cfg, check=False)
    if not 0 <= index < len(groups):
        raise UserError(f"{run_dir} has groups 0..{len(groups) - 1}, not {index}")
    store = RunStore(run_dir)
    layout = store.read_layout(index)
    if layout is None:
        raise UserError(f"{run_dir}: group {index} has no checkpoint (was it started?)")
    return cfg, groups[index], store, chunking.RunChunks(len(groups[index].runs), int(layout["chunk_size"]))


def checkpoint_indices(run_dir: str | Path, index: int = 0) -> list[int]:
    """Evaluation indices at which every run chunk of group `index` has a checkpoint, oldest first.

    The step of index i is `load_group(...).train.eval_steps[i]`.
    """
    _, group, store, chunks = _group_layout(Path(run_dir), index)
    common: set[int] | None = None
    for k in range(chunks.n_chunks):
        ckpt = store.checkpointer(group.index, k, keep=0, async_save=False)
        try:
            have = set(ckpt.all())
        finally:
            ckpt.close()
        common = have if common is None else common & have
    return sorted(common or ())


def load_group(run_dir: str | Path, index: int = 0, checkpoint: int | None = None) -> GroupOutcome:
    """States [R], hyperparameters, history and probe results of group `index` of a run directory.

    `checkpoint`: an evaluation index from `checkpoint_indices` (default: the final state; the
    history of an earlier one is NaN after it). The returned `train` and `state` (host arrays, all
    the group's runs) feed any probe, exactly as `run_sweep` had them.
    """
    t0 = time.time()
    _, group, store, chunks = _group_layout(Path(run_dir), index)
    exp = get_experiment(group.cfg.experiment)
    train = exp.make_train(group.cfg)
    placement = Placement.default()
    outs = [
        _load_chunk(store, group, train, chunks, k, placement, local=False, checkpoint=checkpoint)
        for k in range(chunks.n_chunks)
    ]
    return _concat_outcome(group, train, outs, 0.0, t0)


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
) -> SweepResult:
    """Train and probe every run of `cfg.sweep`; write the run directory when `out_dir` is given.

    Runs are sharded over `placement` (default: a 1-D mesh of every device of every process). In
    a multi-process sweep every process calls this with the same arguments; each writes the
    parts of its runs, process 0 merges them, and `groups` holds this process's runs.

    The run directory (`jaxlab.train.replace`): process 0 locks it for the whole sweep, checks
    it and, for a fresh run, moves aside what jaxlab wrote there before. The old run is deleted
    once the first training interval has finished (the run is known to start) and put back if
    the sweep fails before that; a failed fresh run leaves the directory as it found it.
    """
    t0 = time.time()
    exp = get_experiment(cfg.experiment)
    groups = plan(cfg)  # every program's config is valid before the directory is touched
    options = dict(resume=resume, quiet=quiet, progress=progress, command=command, report=report, placement=placement)
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
    on_start: Callable[[], None] | None = None,
) -> SweepResult:
    """`run_sweep` in a prepared (locked, checked) run directory, or none."""
    placement = placement or Placement.default()
    primary = is_primary()
    store = RunStore(run_dir) if run_dir is not None else None

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
                outcomes.append(run_group(exp, group, bar, store, resume=resume, placement=placement))
        finally:
            bar.close()
        barrier("jaxlab-groups-done")

        cross = None
        if exp.after_sweep is not None and len(groups) > 1:
            if run_dir is not None and (skipped or jax.process_count() > 1):
                # every run of every group (this process may hold only some)
                full = [load_group(run_dir, g.index) for g in groups]
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
            return SweepResult(None, build_summary(cfg, parts, wall_s, command), outcomes)
        if primary:
            summary = merge_parts(run_dir, cfg, wall_s, command)
            if report:
                from jaxlab.report import write_report

                write_report(run_dir)
        barrier("jaxlab-merged")
        if not primary:
            summary = results.load_summary(run_dir)
        return SweepResult(run_dir, summary, outcomes)


def with_seeds(cfg: ExperimentConfig, seeds: tuple[int, ...]) -> ExperimentConfig:
    return dataclasses.replace(cfg, sweep=dataclasses.replace(cfg.sweep, seeds=seeds))
