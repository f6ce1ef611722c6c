"""Tidy results: `metrics.parquet` (run, seed, <hparams>, step, metric, value), `summary.json`, `load`.

A sweep writes one part per run chunk and process (`parts/part-GGGG-KKKK-PPPPP.parquet` + `.json`,
see `jaxlab.train.rundir`) as each finishes, then process 0 merges the parts into
`metrics.parquet` and `summary.json`. Every file is written to a temporary name and renamed, so
a crash never leaves half a table or half a summary. One long table per sweep, with the same
columns whatever the host count, so tables of several sweeps concatenate (`load_many`).
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from jaxlab.errors import UserError

BASE_COLUMNS = ("run", "seed", "step", "metric", "value")


# -- atomic writes ---------------------------------------------------------------------------------
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _atomic(path: Path, write) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from the group
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_text(path: Path, text: str) -> None:
    _atomic(path, lambda p: p.write_text(text))


def write_json(path: Path, data: Any) -> None:
    write_text(path, json.dumps(_jsonable(data), indent=2) + "\n")


def write_parquet(path: Path, df: pd.DataFrame) -> None:
    _atomic(path, lambda p: df.to_parquet(p, index=False))


def _jsonable(x: Any) -> Any:
    if isinstance(x, Mapping):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating, float)):
        return float(x) if math.isfinite(float(x)) else None
    if isinstance(x, np.ndarray):
        return _jsonable(x.tolist())
    if isinstance(x, np.bool_):
        return bool(x)
    return x


# -- building tables -------------------------------------------------------------------------------
def tidy_rows(
    runs: Sequence[Mapping[str, Any]],
    steps: Sequence[int],
    history: Mapping[str, np.ndarray],
) -> pd.DataFrame:
    """Long table from history[metric] of shape [R, n_steps]; `runs[i]` has run, seed, point."""
    frames = []
    steps = np.asarray(steps)
    for metric, values in history.items():
        values = np.asarray(values, dtype=np.float64)
        R, n = values.shape
        frames.append(
            pd.DataFrame(
                {
                    "run": np.repeat([r["run"] for r in runs], n),
                    "seed": np.repeat([r["seed"] for r in runs], n),
                    "step": np.tile(steps[:n] if len(steps) >= n else steps, R),
                    "metric": metric,
                    "value": values.reshape(-1),
                }
            )
        )
    df = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(BASE_COLUMNS))
    return add_point_columns(df, runs)


def add_point_columns(df: pd.DataFrame, runs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    keys = sorted({k for r in runs for k in r.get("point", {})})
    by_run = {r["run"]: r.get("point", {}) for r in runs}
    for k in keys:
        df[k] = df["run"].map(lambda run, k=k: by_run[run].get(k))
    ordered = ["run", "seed", *keys, "step", "metric", "value"]
    return df[ordered]


def aggregate(values: Iterable[float]) -> dict[str, float | None]:
    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return {"mean": None, "median": None, "std": None, "min": None, "max": None, "n": 0}
    return {
        "mean": float(arr.mean()),
        "median": float(np.median(arr)),
        "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0,
        "min": float(arr.min()),
        "max": float(arr.max()),
        "n": int(arr.size),
    }


def summarize_runs(
    runs: Sequence[Mapping[str, Any]], metrics: Sequence[str] | None = None
) -> dict[str, dict[str, float | None]]:
    """Aggregate the `final` metrics of the runs whose status is ok (diverged runs never enter)."""
    ok = [r for r in runs if r["status"] == "ok"]
    metrics = sorted({m for r in ok for m in r["final"]}) if metrics is None else metrics
    return {m: aggregate(r["final"].get(m) for r in ok) for m in metrics}


def aggregate_by_point(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per grid point: run and diverged counts, and the aggregate over its runs that did not
    diverge (a point whose runs all diverged lists every metric with n = 0 and no values)."""
    points: dict[str, list] = {}
    for r in runs:
        points.setdefault(json.dumps(r["hparams"], sort_keys=True), []).append(r)
    names = sorted({m for r in runs if r["status"] == "ok" for m in r["final"]})
    return [
        {
            "hparams": json.loads(k),
            "n_runs": len(v),
            "n_diverged": sum(r["status"] != "ok" for r in v),
            "aggregate": summarize_runs(v, names),
        }
        for k, v in points.items()
    ]


# -- reading ---------------------------------------------------------------------------------------
def load(run_dir: str | Path) -> pd.DataFrame:
    """The tidy metrics table of a run directory (merged, or its parts while it is running)."""
    run_dir = Path(run_dir)
    table = run_dir / "metrics.parquet"
    if table.exists():
        return pd.read_parquet(table)
    parts = sorted((run_dir / "parts").glob("part-*.parquet"))
    if not parts:
        raise UserError(f"{run_dir}: no metrics.parquet and no result parts: is it a jaxlab run directory?")
    return pd.concat([pd.read_parquet(p) for p in parts], ignore_index=True)


def load_many(run_dirs: Iterable[str | Path], key: str = "sweep") -> pd.DataFrame:
    """The tables of several run directories, one below the other, with a column `key` naming
    each directory (its name); hyperparameter columns missing from a sweep are left empty."""
    frames = []
    for d in run_dirs:
        df = load(d)
        df.insert(0, key, Path(d).name)
        frames.append(df)
    if not frames:
        raise UserError("load_many: no run directories given")
    return pd.concat(frames, ignore_index=True)


def load_summary(run_dir: str | Path) -> dict[str, Any]:
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        raise UserError(f"{run_dir}: no summary.json: is it a finished jaxlab run directory?")
    return json.loads(path.read_text())


def final_values(df: pd.DataFrame, metric: str) -> pd.Series:
    """Per-run value of `metric` at its last recorded step."""
    sub = df[df.metric == metric].sort_values("step")
    return sub.groupby("run")["value"].last()
