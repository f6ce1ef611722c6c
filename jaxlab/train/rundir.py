"""The run directory of a sweep: what is written where, by which process, and the final merge.

```
DIR/config.json                                   the resolved config (process 0)
DIR/parts/part-GGGG-KKKK-PPPPP.{parquet,json}     results of group G, run chunk K, process P
DIR/parts/done-GGGG-KKKK.json                     run chunk K of group G finished on every process
DIR/parts/cross.json                              after_sweep results across groups
DIR/checkpoints/group-GGGG/layout.json            the run-chunk layout (chunk size, device count)
DIR/checkpoints/group-GGGG/chunk-KKKK/<step>/     orbax checkpoints at training step <step>
DIR/metrics.parquet, DIR/summary.json             the merge of every part (process 0)
DIR/report.md, DIR/*.png                          the report (`jaxlab.report`)
DIR/.jaxlab.lock                                  held by the one writer (`jaxlab.train.lock`)
DIR/.jaxlab-files.json                            what jaxlab wrote here, and whether the run
                                                  started (`jaxlab.runfiles`)
DIR/.jaxlab-replaced/                             the old run, during an --overwrite until the new
                                                  run has started (`jaxlab.train.replace`)
```
Every file is written under a temporary name and renamed (`jaxlab.results`), orbax checkpoints
likewise, so a crash at any point leaves whole files: a resume redoes at most one run chunk's
tail. Parts are per process so that several hosts never write the same file. Anything else in
DIR is the user's: jaxlab never moves or deletes it.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import numpy as np
import pandas as pd

from jaxlab import results, runfiles
from jaxlab._version import __version__
from jaxlab.claims import Claim
from jaxlab.claims import evaluate as evaluate_claims
from jaxlab.config import EXECUTION_ONLY, SECTIONS, ExperimentConfig
from jaxlab.errors import CorruptFileError, UserError
from jaxlab.runfiles import RUN_DIRS, RUN_FILES, holds_run
from jaxlab.train.checkpoint import GroupCheckpointer

RUN_STATUSES = ("ok", "diverged")  # a run's `status` in runs.parquet and summary.json

__all__ = [
    "RUN_DIRS",
    "RUN_FILES",
    "RUN_STATUSES",
    "RunStore",
    "build_summary",
    "check_run_dir",
    "checkpoint_steps",
    "holds_run",
    "merge_parts",
    "named_by_step",
    "part_records",
]


def named_by_step(layout: Mapping[str, Any]) -> bool:
    """Whether a group's checkpoints are named by step on disk (its layout says "checkpoint_names":
    "step"); run directories written before that name them by evaluation index."""
    return layout.get("checkpoint_names") == "step"


def checkpoint_steps(layout: Mapping[str, Any], eval_steps: Sequence[int]) -> Sequence[int] | None:
    """The names of a group's checkpoints on disk: `eval_steps` (`named_by_step`), or None (by
    evaluation index)."""
    return eval_steps if named_by_step(layout) else None


class RunStore:
    """Paths and bookkeeping of one run directory, as seen by one process."""

    def __init__(self, run_dir: Path, process: int | None = None):
        self.run_dir = Path(run_dir)
        self.process = jax.process_index() if process is None else process

    # -- checkpoints and layout ------------------------------------------------------------------
    def group_dir(self, group: int) -> Path:
        """DIR/checkpoints/group-GGGG: the group's checkpoints and layout.json."""
        return self.run_dir / "checkpoints" / f"group-{group:04d}"

    def checkpointer(
        self, group: int, chunk: int, keep: int, steps: Sequence[int] | None, async_save: bool = True
    ) -> GroupCheckpointer:
        """The checkpointer of run chunk `chunk` of group `group`; `steps` names its checkpoints on
        disk (`checkpoint_steps`)."""
        directory = self.group_dir(group) / f"chunk-{chunk:04d}"
        return GroupCheckpointer(directory, keep=keep, async_save=async_save, steps=steps)

    def read_layout(self, group: int) -> dict[str, Any] | None:
        """The group's layout.json (chunk size, devices, plan, checkpoint names), None before it is written."""
        path = self.group_dir(group) / "layout.json"
        if not path.exists():
            return None
        layout = results.read_json(path)  # CorruptFileError naming the file when it is damaged
        if not isinstance(layout, dict) or "chunk_size" not in layout or "n_chunks" not in layout:
            raise CorruptFileError(path, "not a jaxlab run-chunk layout (no chunk_size / n_chunks)")
        return layout

    def write_layout(self, group: int, layout: Mapping[str, Any]) -> None:
        """Write the group's layout.json (process 0)."""
        results.write_json(self.group_dir(group) / "layout.json", layout)

    # -- parts -----------------------------------------------------------------------------------
    def part_path(self, group: int, chunk: int, suffix: str, process: int | None = None) -> Path:
        """DIR/parts/part-GGGG-KKKK-PPPPP.<suffix> of a process (default: this one)."""
        process = self.process if process is None else process
        return self.run_dir / "parts" / f"part-{group:04d}-{chunk:04d}-{process:05d}.{suffix}"

    def chunk_parts(self, group: int, chunk: int, suffix: str) -> list[Path]:
        """Every process's part files of a run chunk with this suffix, in process order."""
        return sorted((self.run_dir / "parts").glob(f"part-{group:04d}-{chunk:04d}-*.{suffix}"))

    def done_path(self, group: int, chunk: int) -> Path:
        """DIR/parts/done-GGGG-KKKK.json: written once the chunk finished on every process."""
        return self.run_dir / "parts" / f"done-{group:04d}-{chunk:04d}.json"

    def chunk_done(self, group: int, chunk: int) -> bool:
        """Whether the run chunk finished on every process: its done file exists and so does every part
        (json and parquet) of the processes it counts. A done file whose parts are gone (deleted) does
        not count: `--resume` redoes the chunk from its checkpoints instead of merging a sweep without
        it. (A part that is there but damaged is read, and refused naming the file, by the merge.)"""
        path = self.done_path(group, chunk)
        if not path.exists():
            return False
        try:
            n_processes = int(json.loads(path.read_text())["processes"])
        except (OSError, ValueError, KeyError, TypeError):
            return False
        return all(
            self.part_path(group, chunk, suffix, process).is_file()
            for process in range(n_processes)
            for suffix in ("json", "parquet")
        )

    def write_part(self, group: int, chunk: int, table: pd.DataFrame, part: Mapping[str, Any]) -> None:
        """Write this process's results of a run chunk: its metric table, then its JSON part."""
        # the table first: a json part is the sign that its table is complete
        results.write_parquet(self.part_path(group, chunk, "parquet"), table)
        results.write_json(self.part_path(group, chunk, "json"), part)

    def mark_done(self, group: int, chunk: int, n_processes: int) -> None:
        """Write the done file of a run chunk (process 0, after every process wrote its part)."""
        results.write_json(self.done_path(group, chunk), {"group": group, "chunk": chunk, "processes": n_processes})

    def clear_chunk_parts(self, group: int, chunk: int) -> None:
        """Remove the parts of an unfinished chunk (it is about to be redone)."""
        for suffix in ("json", "parquet"):
            for p in self.chunk_parts(group, chunk, suffix):
                p.unlink(missing_ok=True)


# -- records of finished runs ----------------------------------------------------------------------
def part_records(
    *,
    group: int,
    chunk: int,
    process: int,
    label: str,
    runs: Sequence[Mapping[str, Any]],
    steps: np.ndarray,
    history: Mapping[str, np.ndarray],
    diverged_at: np.ndarray,
    per_run: Mapping[str, np.ndarray],
    fin_history: Mapping[str, tuple[np.ndarray, np.ndarray]],
    reference: Mapping[str, float],
    compile_s: float,
    wall_s: float,
    plan: Mapping[str, Any] | None = None,
) -> tuple[pd.DataFrame, dict[str, Any]]:
    """The tidy table and the json part of some finished runs (history[m]: [n, n_evals]); `plan`: how
    their program was executed (`ExecutionPlan.as_dict()`)."""
    frames = [results.tidy_rows(runs, steps, history)]
    final_step = int(steps[-1])
    if per_run:
        frames.append(results.tidy_rows(runs, [final_step], {k: np.asarray(v)[:, None] for k, v in per_run.items()}))
    for name, (h_steps, values) in fin_history.items():
        frames.append(results.tidy_rows(runs, h_steps, {name: values}))
    table = pd.concat(frames, ignore_index=True)
    table = table[[c for c in table.columns if c != "value"] + ["value"]]  # metric parameters before the value

    entries = []
    for i, r in enumerate(runs):
        final = {k: float(v[i, -1]) for k, v in history.items()}
        final.update({k: float(np.asarray(v)[i]) for k, v in per_run.items()})
        d = int(diverged_at[i])
        entries.append(
            {
                "run": r["run"],
                "seed": r["seed"],
                "hparams": r["point"],
                "status": RUN_STATUSES[1] if d >= 0 else RUN_STATUSES[0],
                "diverged_at_step": d if d >= 0 else None,
                "final": final,
            }
        )
    part = {
        "group": group,
        "chunk": chunk,
        "process": process,
        "label": label,
        "n_runs": len(entries),
        "runs": entries,
        "reference": dict(reference),
        "per_run_metrics": sorted(per_run),
        "history_metrics": sorted(fin_history),
        "compile_s": compile_s,
        "wall_s": wall_s,
        "plan": dict(plan) if plan is not None else None,
    }
    return table, part


# -- merge -----------------------------------------------------------------------------------------
def merge_parts(
    run_dir: Path,
    cfg: ExperimentConfig,
    wall_s: float,
    command: str | None,
    claims: Sequence[Claim] = (),
    deviations: Sequence[str] = (),
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Merge every part (and the cross-group results) into metrics.parquet, runs.parquet and
    summary.json. `overrides`: the config values set on top of the preset (dotted key -> value),
    written as columns of every row of metrics.parquet (`results.with_run_columns`)."""
    parts_dir = Path(run_dir) / "parts"
    parts = [results.read_json(p) for p in sorted(parts_dir.glob("part-*.json"))]
    cross = parts_dir / "cross.json"
    if cross.exists():
        parts.append({"label": "", "runs": [], "compile_s": 0.0, **results.read_json(cross)})
    tables = [results.read_parquet(p) for p in sorted(parts_dir.glob("part-*.parquet"))]
    table = pd.concat(tables, ignore_index=True).sort_values("run", kind="stable", ignore_index=True)
    summary = build_summary(cfg, parts, wall_s, command, claims, deviations)
    runs = summary["runs"]
    table = results.with_run_columns(table, cfg.experiment, cfg.preset, runs, overrides or {})
    results.write_parquet(Path(run_dir) / "metrics.parquet", table)
    every_key = {k: cfg.get(k) for k in cfg.valid_keys()}
    results.write_parquet(
        Path(run_dir) / results.RUNS_TABLE, results.runs_table(runs, lambda r: {**every_key, **r["hparams"]})
    )
    results.write_json(Path(run_dir) / "summary.json", summary)
    return summary


def combined_reference(parts: Sequence[Mapping[str, Any]]) -> dict[str, float]:
    """Reference values by group label; a group split into chunks gets the run-weighted mean."""
    by_label: dict[str, dict[str, list[tuple[float, int]]]] = {}
    for p in parts:
        for name, value in p["reference"].items():
            if value is not None:
                by_label.setdefault(p["label"], {}).setdefault(name, []).append((float(value), p.get("n_runs", 1) or 1))
    n_groups = len({p["group"] for p in parts if "group" in p})
    out: dict[str, float] = {}
    for label, refs in by_label.items():
        for name, vals in refs.items():
            mean = sum(v * w for v, w in vals) / sum(w for _, w in vals)
            out[f"{name}[{label}]" if n_groups > 1 and label else name] = mean
    return out


def program_plans(parts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One entry per program (group): its label and how it was executed (`jaxlab.train.plan`)."""
    seen: dict[int, dict[str, Any]] = {}
    for p in parts:
        if "group" in p and p["group"] not in seen:
            seen[p["group"]] = {"group": p["group"], "label": p.get("label", ""), "plan": p.get("plan")}
    return [seen[g] for g in sorted(seen)]


def build_summary(
    cfg: ExperimentConfig,
    parts: list[dict[str, Any]],
    wall_s: float,
    command: str | None,
    claims: Sequence[Claim] = (),
    deviations: Sequence[str] = (),
) -> dict[str, Any]:
    """summary.json: the runs, their aggregates and reference values, the programs' plans, and the
    experiment's `claims` evaluated on these runs (`jaxlab.claims`) with its `deviations` from the paper."""
    runs = sorted((r for p in parts for r in p["runs"]), key=lambda r: r["run"])
    device = jax.devices()[0]
    summary = {
        "experiment": cfg.experiment,
        "preset": cfg.preset,
        "jaxlab_version": __version__,
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "n_devices": jax.device_count(),
        "n_processes": jax.process_count(),
        "n_runs": len(runs),
        "n_diverged": sum(r["status"] != "ok" for r in runs),
        "wall_s": wall_s,
        "compile_s": float(sum(p["compile_s"] for p in parts if p.get("process", 0) == 0)),
        "runs": runs,
        "aggregate": results.summarize_runs(runs),
        "reference": combined_reference(parts),
        "command": command,
        "programs": program_plans(parts),
    }
    summary["claims"] = evaluate_claims(claims, cfg, runs, summary["reference"])
    summary["deviations"] = list(deviations)
    if cfg.sweep.grid:
        summary["aggregate_by_point"] = results.aggregate_by_point(runs)
    return summary


# -- checking the directory ------------------------------------------------------------------------
def fill_added_fields(stored: dict[str, Any], cfg: ExperimentConfig) -> dict[str, Any]:
    """A stored config.json as this jaxlab would write it, for the resume comparison: a section field
    added since it was written (absent from `stored`) takes `cfg`'s value when that value is the
    field's default, which is what the older jaxlab ran (e.g. `task.shared_stream = false`), or
    whatever `cfg` sets when the field only sets how the sweep executes (`SWEEP_WIDE` says so: e.g.
    `train.attention_kernel`; what it changes is the execution plan, which the resume compares with
    the recorded one, `group_run.check_resume_plan`). Any other value of an added field differs."""
    out = dict(stored)
    for section in SECTIONS:
        obj, old = getattr(cfg, section, None), stored.get(section)
        if not dataclasses.is_dataclass(obj) or not isinstance(old, dict):
            continue
        filled = dict(old)
        for f in dataclasses.fields(obj):
            if f.name in old or not f.init:
                continue
            default = f.default
            if f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            execution_only = str(getattr(obj, "SWEEP_WIDE", {}).get(f.name, "")).startswith(EXECUTION_ONLY)
            if execution_only or (default is not dataclasses.MISSING and getattr(obj, f.name) == default):
                filled[f.name] = json.loads(json.dumps(getattr(obj, f.name)))
        out[section] = filled
    return out


def check_run_dir(run_dir: Path, cfg: ExperimentConfig, resume: bool, overwrite: bool) -> None:
    """Refuse to clobber a run unless asked, or to mix a run with the user's files; on resume,
    insist on the same config. Reads only (`jaxlab.train.replace` calls it under the lock)."""
    if resume and overwrite:
        raise UserError("--resume and --overwrite contradict each other: choose one")
    if run_dir.exists() and not run_dir.is_dir():
        raise UserError(f"--out {run_dir}: exists and is not a directory")
    if resume:
        stored = run_dir / "config.json"
        if not stored.exists():
            raise UserError(f"--resume: {run_dir} holds no run to resume (no config.json)")
        if not runfiles.is_jaxlab_config(stored):
            raise UserError(f"--resume: {stored} is not a jaxlab run's config (no run to resume there)")
        new = json.loads(json.dumps(cfg.to_dict()))  # as stored: tuples become lists
        old = fill_added_fields(json.loads(stored.read_text()), cfg)
        old.pop("command", None)
        diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
        if diff:
            raise UserError(
                f"--resume: the stored config of {run_dir} differs in {', '.join(diff)}; "
                "resume with the same arguments, or use --overwrite to start again"
            )
        return
    if not run_dir.exists():
        return
    if holds_run(run_dir) and not overwrite:
        raise UserError(
            f"--out {run_dir} already holds a run; pass --resume to continue it or --overwrite to replace it"
        )
    theirs = runfiles.foreign(run_dir)
    if theirs:
        names = ", ".join(n + ("/" if (run_dir / n).is_dir() else "") for n in theirs)
        raise UserError(
            f"--out {run_dir}: {names} {'is' if len(theirs) == 1 else 'are'} not jaxlab's (no jaxlab run there "
            "wrote it) and a run would write there; move it away or choose another --out"
        )
