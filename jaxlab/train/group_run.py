"""Running one program (group) of a sweep: its run chunks, checkpoints, resume and result parts.

A group's R runs are laid out over a 1-D mesh of all devices (`jaxlab.train.sharding`) and, when
they do not fit in memory at once, split into equal run chunks (`jaxlab.train.chunking`) trained
one after the other through the same two compiled programs (`jaxlab.train.programs`). For each
chunk the host loop is: `start` (init, evaluation data, step-0 metrics), then one `interval` per
evaluation interval (buffers donated; only the median loss and the diverged count come to the
host), orbax checkpoints every `train.checkpoint_every` intervals, every
`train.checkpoint_minutes`, at the end and on SIGINT / SIGTERM (`jaxlab.interrupt`), then the
experiment's `finalize` and the chunk's result part. `--resume` continues each chunk from its
newest checkpoint that verifies (`jaxlab.train.checkpoint`) on the device count it started on.
Checkpoints, `finalize` and the result see the parameters per block, whatever layout the programs
train in (`jaxlab.train.param_layout`).
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxlab import interrupt
from jaxlab.errors import ConfigError, UserError
from jaxlab.hostdevices import ENV as CPU_DEVICES_ENV
from jaxlab.hostdevices import cpu_cores
from jaxlab.trackers import Tracker, write_row
from jaxlab.train import bounds, chunking
from jaxlab.train.checkpoint import GroupCheckpointer, IncompatibleCheckpoint, SaveSchedule
from jaxlab.train.distributed import agree_decision, agree_min, barrier, is_primary
from jaxlab.train.experiment import Experiment, Finalized
from jaxlab.train.groups import Group
from jaxlab.train.hparams import stack_hparams
from jaxlab.train.outcomes import GroupOutcome, concat_outcome, outcome_records, select_finalized
from jaxlab.train.param_layout import state_per_block, state_stacked
from jaxlab.train.plan import recorded_plan
from jaxlab.train.programs import Programs, first_row, key_data
from jaxlab.train.progress import Progress
from jaxlab.train.replicate import copy_tree, replicate_config, replicate_row
from jaxlab.train.restore import load_chunk
from jaxlab.train.rundir import RunStore, checkpoint_steps
from jaxlab.train.sharding import Placement, padded_size


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


def check_resume_plan(layout: dict[str, Any], group: int, plan: dict[str, Any]) -> None:
    """Refuse to resume group `group` under another execution plan than it started with (a
    different run block or micro-batch changes float sums, as another device count does)."""
    started = layout.get("plan")
    if started is None:  # layouts written before jaxlab recorded plans: not checked
        return
    try:  # fields added to the plan since it was recorded take the value that jaxlab used
        started = json.loads(json.dumps(recorded_plan(started)))
    except ConfigError:  # fields this jaxlab does not know: compared as stored, and named below
        pass
    plan = json.loads(json.dumps(plan))  # as stored: tuples become lists
    # `forced` records which settings fixed a field, not what runs: only the fields' values count
    differ = sorted(k for k in set(started) | set(plan) if k != "forced" and started.get(k) != plan.get(k))
    if differ:
        was = ", ".join(f"{k}={started.get(k)!r}" for k in differ)
        now = ", ".join(f"{k}={plan.get(k)!r}" for k in differ)
        raise UserError(
            f"--resume: group {group} was started with the execution plan {was} and would continue with {now}; "
            "the numbers would silently change. Resume on the machine and settings it started with "
            "(train.run_layout / train.run_block / train.micro_batch / train.attention_kernel force a plan), "
            "or start again with --overwrite"
        )


def _notice(message: str) -> None:
    """One line on stderr, from process 0 only, above the progress bar."""
    if is_primary():
        tqdm.write(f"jaxlab: {message}", file=sys.stderr)


def _platform(placement: Placement) -> str:
    return str(placement.mesh.devices.flat[0].platform)


class _GroupRun:
    """The state shared by the run chunks of one group (programs, inputs, where to write)."""

    def __init__(
        self,
        exp: Experiment,
        group: Group,
        placement: Placement,
        store: RunStore | None,
        resume: bool,
        trackers: list[Tracker] | None = None,
    ):
        self.exp, self.group, self.placement, self.store, self.resume = exp, group, placement, store, resume
        self.trackers = trackers or []
        self._row_of: Any = None
        cfg = group.cfg
        self.train = exp.make_train(cfg)
        self.hp_all = stack_hparams(cfg, [r.point for r in group.runs])
        self.hp_keys = list(self.hp_all)
        self.kd_all = key_data(group.seeds, cfg.train.prng_impl)
        self.programs = Programs(self.train, placement, self.kd_all.shape[1])
        self.replicate_train = exp.make_train(replicate_config(cfg), plan=self.train.plan)
        self.replicate_data: Any = None
        self.checkpoint_steps: Sequence[int] | None = self.train.eval_steps  # names on disk (resume: its layout)
        # checkpoints, finalize and outcomes see the per-block parameter layout (`jaxlab.train.param_layout`)
        self.to_per_block, self.to_training = lambda st: st, lambda st: st
        if self.train.stacked:
            runs = placement.runs
            self.to_per_block = jax.jit(lambda st: state_per_block(self.train, st), out_shardings=runs)
            self.to_training = jax.jit(lambda st: state_stacked(self.train, st), out_shardings=runs)

    def compile(self) -> float:
        """Choose the run-chunk layout and compile the two programs for it; returns seconds."""
        t0 = time.time()
        g, n, d = self.group, len(self.group.runs), self.placement.n_devices
        layout = self.store.read_layout(g.index) if (self.store is not None and self.resume) else None
        compile_interval = lambda size: self.programs.compile_interval(size, self.hp_keys)
        if layout is not None:
            check_resume_devices(layout, g.index, self.placement)
            check_resume_plan(layout, g.index, self.train.plan.as_dict())
            size = int(layout["chunk_size"])
            self.chunks, self.interval = chunking.RunChunks(n, size), compile_interval(size)
            self.estimate = layout.get("estimate", {})
            self.checkpoint_steps = checkpoint_steps(layout, self.train.eval_steps)
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
                        "plan": self.train.plan.as_dict(),
                        "n_processes": jax.process_count(),
                        "estimate": self.estimate,
                        "checkpoint_names": "step",
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
            ckpt = self.store.checkpointer(g.index, k, keep=tcfg.keep_checkpoints, steps=self.checkpoint_steps)
        where = f"group {g.index + 1}/{progress.n_groups} chunk {k + 1}/{chunks.n_chunks}"
        try:
            begin = 0
            if ckpt is not None and self.resume:
                begin, state, history = self._resume(ckpt, state, history, where)
                progress.skip(n_real * steps[begin])
            if begin == 0:
                state, history = first_row(self.interval, p, state, history, hp, eval_data, valid)
                self._track(history, 0, slots, real)
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
                self._track(history, i, slots, real)
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
                    ckpt.save(i, self.to_per_block(state), history, force=bool(stop))
                    schedule.saved()
                if stop:
                    if ckpt is None:
                        raise interrupt.Interrupted(stop, f"at step {steps[i]}; nothing saved (no run directory)")
                    ckpt.wait()
                    raise interrupt.Interrupted(stop, f"checkpoint saved at step {steps[i]} of {steps[-1]} ({where})")
            if ckpt is not None and begin != last:
                ckpt.save(last, self.to_per_block(state), history, force=True)
            replicate = self._replicate(state, history, hp, valid)
            out = self._collect(k, state, history, hp, slots, real, replicate)
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

        try:
            got = ckpt.restore_newest(self.to_per_block(state), history, on_damaged=damaged)
        except IncompatibleCheckpoint as err:
            raise UserError(
                f"{where}: cannot resume: the checkpoint at step {steps[err.index]} was written by a jaxlab "
                f"whose training state or evaluation differs from this one's ({err.difference()}). Resume it "
                "with the jaxlab that wrote it (config.json names its version), or run the sweep again into "
                "a new directory; nothing here was changed"
            ) from None
        if got.index is None:
            why = "no usable checkpoint" if got.damaged else "no checkpoint yet"
            _notice(f"{'warning: ' if got.damaged else ''}{where}: {why}, starting from step 0")
            return 0, state, history
        unverified = "" if got.verified else "; it has no fingerprint to verify it against"
        _notice(
            f"{where}: resuming from step {steps[got.index]} of {steps[-1]} "
            f"(checkpoint after evaluation {got.index} of {len(steps) - 1}{unverified})"
        )
        return got.index, self.to_training(got.state), got.history

    def _track(self, history: dict, i: int, slots: np.ndarray, real: np.ndarray) -> None:
        """Hand the trackers row `i` of the history: this process's real runs at evaluation step i
        (the row is sliced on the device, so the history itself stays donatable)."""
        if not self.trackers:
            return
        p = self.placement
        if self._row_of is None:
            self._row_of = jax.jit(lambda h, i: {m: v[i] for m, v in h.items()}, out_shardings=p.runs)
        row = self._row_of(history, p.put(np.int32(i), p.replicated))
        local = {m: p.local(v) for m, v in row.items()}
        pos = next(iter(local.values()))[0]
        keep = real[pos]
        runs = [self.group.runs[j].run for j in slots[pos[keep]]]
        write_row(self.trackers, runs, int(self.train.eval_steps[i]), {m: v[keep] for m, (_, v) in local.items()})

    def _replicate(self, state: Any, history: dict, hp: dict, valid: jax.Array) -> dict[str, jax.Array]:
        """The chunk's history with its last row re-evaluated on the replicate evaluation set: the
        compiled `interval` with zero optimizer steps, on copies of the state and history
        (`jaxlab.train.replicate`)."""
        p = self.placement
        if self.replicate_data is None:
            self.replicate_data = jax.jit(self.replicate_train.make_eval_batch, out_shardings=p.replicated)()
        state_copy, history_copy = copy_tree((state, history), (p.runs, p.runs_second))
        zero = p.put(np.int32(0), p.replicated)
        last = p.put(np.int32(len(self.train.eval_steps) - 1), p.replicated)
        _, history_copy, _ = self.interval(state_copy, history_copy, hp, self.replicate_data, zero, last, valid)
        return history_copy

    def _collect(
        self,
        k: int,
        state: Any,
        history: dict,
        hp: dict,
        slots: np.ndarray,
        real: np.ndarray,
        replicate: dict | None = None,
    ) -> GroupOutcome:
        """This process's real runs of the chunk, on the host, with the experiment's finalize (and
        the final metrics on the replicate evaluation set, from `_replicate`'s history)."""
        g, p = self.group, self.placement
        state = self.to_per_block(state)
        local, state_local = p.local_tree(state)
        keep = real[local]
        rows = local[keep]
        runs = [g.runs[i] for i in slots[rows]]
        hist = {m: p.local(h, axis=1)[1][:, keep].T for m, h in history.items()}
        fin = Finalized()
        if self.exp.finalize is not None:
            seeds = g.seeds[slots]
            if jax.process_count() == 1:  # the sharded device arrays of the whole chunk
                fin = select_finalized(self.exp.finalize(self.train, state, hp, seeds), rows)
            else:  # this process's rows only: finalize may move its results to the host
                hp_local = {key: v[slots][local] for key, v in self.hp_all.items()}
                fin = self.exp.finalize(self.train, state_local, hp_local, seeds[local])
                fin = select_finalized(fin, np.nonzero(keep)[0])
        if self.exp.from_history is not None:
            extra = self.exp.from_history(self.train, hist, np.asarray(self.train.eval_steps))
            if isinstance(extra, Finalized):
                fin.per_run.update(extra.per_run)
                fin.history.update(extra.history)
                fin.reference.update(extra.reference)
            else:
                fin.per_run.update(extra)
        if replicate is not None:
            last = len(self.train.eval_steps) - 1
            fin.per_run.update(replicate_row({m: p.local(h, axis=1)[1][:, keep] for m, h in replicate.items()}, last))
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


def run_group(
    exp: Experiment,
    group: Group,
    progress: Progress,
    store: RunStore | None = None,
    resume: bool = False,
    placement: Placement | None = None,
    trackers: list[Tracker] | None = None,
) -> GroupOutcome:
    """Train every run of `group` (run chunk by run chunk); returns final states, history and probes.
    `trackers` get every evaluation of every run as it is made (`jaxlab.trackers`)."""
    t0 = time.time()
    gr = _GroupRun(exp, group, placement or Placement.default(), store, resume, trackers)
    compile_s = gr.compile()
    progress.beat(f"group {group.index} compiled")
    outs = []
    for k in range(gr.chunks.n_chunks):
        if store is not None and resume and store.chunk_done(group.index, k):
            progress.skip(gr.chunks.n_real(k) * group.cfg.train.steps)
            outs.append(
                load_chunk(store, group, gr.train, gr.chunks, k, gr.placement, local=True, names=gr.checkpoint_steps)
            )
            continue
        outs.append(gr.run_chunk(k, progress, compile_s))
    return concat_outcome(group, gr.train, outs, compile_s, t0)
