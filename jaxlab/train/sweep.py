"""Run a sweep: seeds x grid points, as few compiled programs as the grid allows.

Grid keys that only change values (`hparams.TRACED_KEYS`: learning rate, weight decay, betas, init
scale) vary inside one program, vmapped with the seeds. Keys that change shapes or code (e.g.
`model.n_heads`, `task.n_context`) split the sweep into groups, one program each, run in turn.

For each group the host loop is: init (vmapped), then one jitted chunk per evaluation interval
(`Train.chunk`, vmapped over runs, buffers donated), moving only the evaluation metrics to the host.
Checkpoints are written every `train.checkpoint_every` chunks and at the end; a finished group
writes its result part; the parts are merged into `metrics.parquet` and `summary.json`.
"""

from __future__ import annotations

import dataclasses
import shutil
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
from tqdm.auto import tqdm

import jaxlab
from jaxlab import results
from jaxlab.config import ExperimentConfig
from jaxlab.errors import UserError
from jaxlab.experiments import Experiment, Finalized, get_experiment
from jaxlab.train.checkpoint import GroupCheckpointer
from jaxlab.train.engine import Train, TrainState, host, seed_keys
from jaxlab.train.hparams import is_traced, stack_hparams

RUN_FILES = ("config.json", "summary.json", "metrics.parquet", "report.md")
RUN_DIRS = ("parts", "checkpoints")


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
    group: Group
    train: Train
    state: TrainState
    hparams: dict[str, np.ndarray]
    history: dict[str, np.ndarray]
    finalized: Finalized
    compile_s: float = 0.0
    wall_s: float = 0.0


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
def plan(cfg: ExperimentConfig) -> list[Group]:
    """Split seeds x grid into groups that share one compiled program. Run ids: point-major."""
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
    return list(groups.values())


# -- progress --------------------------------------------------------------------------------------
class Progress:
    """A tqdm bar over run-steps (runs x optimizer steps), or one line per chunk when quiet."""

    def __init__(self, name: str, total_run_steps: int, n_groups: int, quiet: bool, enabled: bool = True):
        self.name, self.quiet, self.n_groups = name, quiet, n_groups
        self.enabled = enabled
        self.start = time.time()
        self.bar = None
        if enabled and not quiet:
            self.bar = tqdm(total=total_run_steps, unit="run-step", unit_scale=True, desc=name, file=sys.stderr)

    def update(self, group: Group, run_steps: int, step: int, loss: float, diverged: int) -> None:
        if not self.enabled:
            return
        where = f"group {group.index + 1}/{self.n_groups} " if self.n_groups > 1 else ""
        status = (
            f"{where}step {step}/{group.cfg.train.steps} runs {len(group.runs)} loss {loss:.4g} diverged {diverged}"
        )
        if self.bar is not None:
            self.bar.update(run_steps)
            self.bar.set_postfix_str(status)
        else:
            elapsed = time.time() - self.start
            print(f"[jaxlab] {self.name} {status} elapsed {elapsed:.1f}s", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


# -- one group -------------------------------------------------------------------------------------
def _median_finite(x: np.ndarray) -> float:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    return float(np.median(x)) if x.size else float("nan")


def run_group(
    exp: Experiment,
    group: Group,
    progress: Progress,
    checkpointer: GroupCheckpointer | None = None,
    resume: bool = False,
) -> GroupOutcome:
    """Train every run of `group` as one program; returns final states, history and probes."""
    t_start = time.time()
    cfg = group.cfg
    train = exp.make_train(cfg)
    keys = seed_keys(group.seeds, cfg.train.prng_impl)
    hp_np = stack_hparams(cfg, [r.point for r in group.runs])
    hp = {k: jnp.asarray(v) for k, v in hp_np.items()}

    t0 = time.time()
    start_v = jax.jit(lambda k, h: _start(train, k, h)).lower(keys, hp).compile()
    state, eval_batch, first = start_v(keys, hp)
    chunk_v = (
        jax.jit(jax.vmap(train.chunk, in_axes=(0, 0, None, None)), donate_argnums=0)
        .lower(state, hp, eval_batch, jnp.int32(0))
        .compile()
    )
    compile_s = time.time() - t0

    steps = train.eval_steps
    start_index = 0
    rows: list[dict[str, np.ndarray]] = []
    if resume and checkpointer is not None and checkpointer.latest() is not None:
        index = checkpointer.latest()
        like_hist = {k: np.zeros((index + 1, len(group.runs)), np.float32) for k in first}
        state, hist = checkpointer.restore(index, state, like_hist)
        rows = [{k: hist[k][i] for k in hist} for i in range(index + 1)]
        start_index = index
        progress.update(group, len(group.runs) * steps[index], steps[index], _median_finite(rows[-1]["train_loss"]), 0)
    else:
        rows.append(host(first))

    every = cfg.train.checkpoint_every
    for i in range(start_index + 1, len(steps)):
        gap = steps[i] - steps[i - 1]
        state, metrics = chunk_v(state, hp, eval_batch, jnp.int32(gap))
        rows.append(host(metrics))
        diverged = int(np.sum(np.asarray(state.diverged_at) >= 0))
        progress.update(group, len(group.runs) * gap, steps[i], _median_finite(rows[-1]["train_loss"]), diverged)
        if checkpointer is not None and every and i % every == 0 and i < len(steps) - 1:
            checkpointer.save(i, state, _stack_rows(rows))
    if checkpointer is not None:
        checkpointer.save(len(steps) - 1, state, _stack_rows(rows), force=True)

    history = {k: v.T for k, v in _stack_rows(rows).items()}  # [R, n_evals]
    finalized = exp.finalize(train, state, hp, group.seeds) if exp.finalize is not None else Finalized()
    if exp.summarize_history is not None:
        extra = exp.summarize_history(train, history, np.asarray(steps))
        finalized.per_run.update(extra.per_run)
        finalized.history.update(extra.history)
        finalized.reference.update(extra.reference)
    return GroupOutcome(
        group=group,
        train=train,
        state=state,
        hparams=hp_np,
        history=history,
        finalized=finalized,
        compile_s=compile_s,
        wall_s=time.time() - t_start,
    )


def _start(train: Train, keys: jax.Array, hp: dict[str, jax.Array]) -> tuple[TrainState, Any, dict[str, jax.Array]]:
    """Initial states [R], the evaluation set, and the step-0 metrics [R], as one program."""
    state = jax.vmap(train.init)(keys, hp)
    eval_batch = train.make_eval_batch()
    return state, eval_batch, jax.vmap(train.initial_metrics, in_axes=(0, None))(state, eval_batch)


def _stack_rows(rows: list[Mapping[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.stack([np.asarray(r[k], np.float32) for r in rows]) for k in rows[0]}


# -- results of a group ----------------------------------------------------------------------------
def group_records(outcome: GroupOutcome) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The tidy table and the json part of one finished group."""
    group, fin = outcome.group, outcome.finalized
    runs = [r.as_dict() for r in group.runs]
    steps = np.asarray(outcome.train.eval_steps)
    frames = [results.tidy_rows(runs, steps, outcome.history)]
    final_step = int(steps[-1])
    if fin.per_run:
        frames.append(
            results.tidy_rows(runs, [final_step], {k: np.asarray(v)[:, None] for k, v in fin.per_run.items()})
        )
    for name, (h_steps, values) in fin.history.items():
        frames.append(results.tidy_rows(runs, h_steps, {name: values}))
    table = pd.concat(frames, ignore_index=True)

    diverged_at = np.asarray(outcome.state.diverged_at)
    run_entries = []
    for i, r in enumerate(group.runs):
        final = {k: float(v[i, -1]) for k, v in outcome.history.items()}
        final.update({k: float(np.asarray(v)[i]) for k, v in fin.per_run.items()})
        run_entries.append(
            {
                "run": r.run,
                "seed": r.seed,
                "hparams": r.point,
                "status": "diverged" if diverged_at[i] >= 0 else "ok",
                "diverged_at_step": int(diverged_at[i]) if diverged_at[i] >= 0 else None,
                "final": final,
            }
        )
    part = {
        "group": group.index,
        "label": group.label,
        "runs": run_entries,
        "reference": dict(fin.reference),
        "compile_s": outcome.compile_s,
        "wall_s": outcome.wall_s,
    }
    return table, part


def _part_path(run_dir: Path, index: int, suffix: str) -> Path:
    return run_dir / "parts" / f"part-{index:04d}.{suffix}"


def write_part(run_dir: Path, outcome: GroupOutcome) -> None:
    table, part = group_records(outcome)
    results.write_parquet(_part_path(run_dir, outcome.group.index, "parquet"), table)
    results.write_json(_part_path(run_dir, outcome.group.index, "json"), part)


def merge_parts(run_dir: Path, cfg: ExperimentConfig, wall_s: float, command: str | None) -> dict[str, Any]:
    """Merge the group parts (and cross-group results) into metrics.parquet and summary.json."""
    import json

    parts = [json.loads(p.read_text()) for p in sorted((run_dir / "parts").glob("part-*.json"))]
    cross = run_dir / "parts" / "cross.json"
    if cross.exists():
        parts.append({"label": "", "runs": [], "compile_s": 0.0, **json.loads(cross.read_text())})
    table = pd.concat(
        [pd.read_parquet(p) for p in sorted((run_dir / "parts").glob("part-*.parquet"))], ignore_index=True
    )
    results.write_parquet(run_dir / "metrics.parquet", table)
    summary = build_summary(cfg, parts, wall_s, command)
    results.write_json(run_dir / "summary.json", summary)
    return summary


def build_summary(
    cfg: ExperimentConfig, parts: list[dict[str, Any]], wall_s: float, command: str | None
) -> dict[str, Any]:
    runs = sorted((r for p in parts for r in p["runs"]), key=lambda r: r["run"])
    reference: dict[str, float] = {}
    n_groups = sum(1 for p in parts if p["label"] or p["runs"])
    for p in parts:
        for name, value in p["reference"].items():
            reference[f"{name}[{p['label']}]" if n_groups > 1 and p["label"] else name] = value
    device = jax.devices()[0]
    summary = {
        "experiment": cfg.experiment,
        "preset": cfg.preset,
        "jaxlab_version": jaxlab.__version__,
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "n_devices": jax.device_count(),
        "n_runs": len(runs),
        "wall_s": wall_s,
        "compile_s": float(sum(p["compile_s"] for p in parts)),
        "runs": runs,
        "aggregate": results.summarize_runs(runs),
        "reference": reference,
        "command": command,
    }
    if cfg.sweep.grid:
        summary["aggregate_by_point"] = results.aggregate_by_point(runs)
    return summary


# -- the run directory -----------------------------------------------------------------------------
def holds_run(run_dir: Path) -> bool:
    return any((run_dir / f).exists() for f in RUN_FILES + RUN_DIRS)


def prepare_run_dir(run_dir: Path, cfg: ExperimentConfig, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a run unless asked; on resume, insist on the same config."""
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other: choose one")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir}: exists and is not a directory")
    if resume:
        stored = run_dir / "config.json"
        if not stored.exists():
            raise UserError(f"--resume: {run_dir} holds no run to resume (no config.json)")
        import json

        old = json.loads(stored.read_text())
        new = cfg.to_dict()
        old.pop("command", None)
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            raise UserError(
                f"--resume: the stored config of {run_dir} differs in {', '.join(diff)}; "
                "resume with the same arguments, or use --overwrite to start again"
            )
        return
    if run_dir.exists() and holds_run(run_dir):
        if not overwrite:
            raise UserError(
                f"--out {run_dir} already holds a run; pass --resume to continue it or --overwrite to replace it"
            )
        for name in RUN_FILES:
            (run_dir / name).unlink(missing_ok=True)
        for name in RUN_DIRS:
            shutil.rmtree(run_dir / name, ignore_errors=True)
        for png in run_dir.glob("*.png"):
            png.unlink()
    run_dir.mkdir(parents=True, exist_ok=True)


# -- the sweep -------------------------------------------------------------------------------------
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
) -> SweepResult:
    """Train and probe every run of `cfg.sweep`; write the run directory when `out_dir` is given."""
    t0 = time.time()
    exp = get_experiment(cfg.experiment)
    groups = plan(cfg)
    run_dir = Path(out_dir) if out_dir is not None else None
    if run_dir is not None:
        prepare_run_dir(run_dir, cfg, resume, overwrite)
        if not resume:
            results.write_text(run_dir / "config.json", cfg.to_json() + "\n")

    total = sum(len(g.runs) * g.cfg.train.steps for g in groups)
    bar = Progress(cfg.experiment, total, len(groups), quiet=quiet, enabled=progress)
    outcomes: list[GroupOutcome] = []
    try:
        for group in groups:
            if run_dir is not None and resume and _part_path(run_dir, group.index, "json").exists():
                bar.update(group, len(group.runs) * group.cfg.train.steps, group.cfg.train.steps, float("nan"), 0)
                continue
            ckpt = None
            if run_dir is not None:
                ckpt = GroupCheckpointer(
                    run_dir / "checkpoints" / f"group-{group.index:04d}", keep=cfg.train.keep_checkpoints
                )
            try:
                outcome = run_group(exp, group, bar, ckpt, resume=resume)
            finally:
                if ckpt is not None:
                    ckpt.close()
            outcomes.append(outcome)
            if run_dir is not None:
                write_part(run_dir, outcome)
    finally:
        bar.close()

    if exp.after_sweep is not None and len(groups) > 1:
        done = {o.group.index for o in outcomes}
        if run_dir is not None:
            outcomes += [load_group(run_dir, g.index) for g in groups if g.index not in done]
        outcomes.sort(key=lambda o: o.group.index)
        cross = exp.after_sweep(outcomes)
        if run_dir is not None:
            results.write_json(run_dir / "parts" / "cross.json", {"reference": cross.reference})

    wall_s = time.time() - t0
    if run_dir is None:
        parts = [group_records(o)[1] for o in outcomes]
        if exp.after_sweep is not None and len(groups) > 1:
            parts.append({"label": "", "runs": [], "compile_s": 0.0, "reference": cross.reference})
        return SweepResult(None, build_summary(cfg, parts, wall_s, command), outcomes)
    summary = merge_parts(run_dir, cfg, wall_s, command)
    if report:
        from jaxlab.report import write_report

        write_report(run_dir)
    return SweepResult(run_dir, summary, outcomes)


def load_group(run_dir: str | Path, index: int = 0) -> GroupOutcome:
    """Final states, hyperparameters and history of group `index` of a finished run directory.

    The returned `train` and `state` [R] feed any probe, exactly as `run_sweep` had them.
    """
    import json

    run_dir = Path(run_dir)
    cfg = ExperimentConfig.from_dict(json.loads((run_dir / "config.json").read_text()))
    exp = get_experiment(cfg.experiment)
    groups = plan(cfg)
    if not 0 <= index < len(groups):
        raise UserError(f"{run_dir} has groups 0..{len(groups) - 1}, not {index}")
    group = groups[index]
    train = exp.make_train(group.cfg)
    keys = seed_keys(group.seeds, group.cfg.train.prng_impl)
    hp_np = stack_hparams(group.cfg, [r.point for r in group.runs])
    hp = {k: jnp.asarray(v) for k, v in hp_np.items()}
    like_state = jax.eval_shape(jax.vmap(train.init), keys, hp)
    eval_batch = jax.eval_shape(train.make_eval_batch)
    first = jax.eval_shape(jax.vmap(train.initial_metrics, in_axes=(0, None)), like_state, eval_batch)
    ckpt = GroupCheckpointer(run_dir / "checkpoints" / f"group-{index:04d}", async_save=False)
    try:
        last = ckpt.latest()
        if last is None:
            raise UserError(f"{run_dir}: group {index} has no checkpoint")
        like_hist = {k: np.zeros((last + 1, len(group.runs)), np.float32) for k in first}
        state, hist = ckpt.restore(last, like_state, like_hist)
    finally:
        ckpt.close()
    part_path = _part_path(run_dir, index, "json")
    reference = json.loads(part_path.read_text())["reference"] if part_path.exists() else {}
    return GroupOutcome(
        group=group,
        train=train,
        state=state,
        hparams=hp_np,
        history={k: v.T for k, v in hist.items()},
        finalized=Finalized(reference=reference),
    )


def with_seeds(cfg: ExperimentConfig, seeds: tuple[int, ...]) -> ExperimentConfig:
    return dataclasses.replace(cfg, sweep=dataclasses.replace(cfg.sweep, seeds=seeds))
