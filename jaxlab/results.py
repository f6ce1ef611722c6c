"""Tidy results: `metrics.parquet` (run, seed, <hparams>, step, metric, <metric parameters>, value), `summary.json`,
`load`.

Config values are columns named `section__field` (`column`). A metric measured at a parameter
(a loss at input scale alpha, an error after n examples) is named `name[key=value,...]`
(`metric_name`) where it is produced and in summary.json; the tidy tables split it into the
metric `name` and one column per parameter key (`alpha`, `n`), empty for the other metrics, so a
query filters and groups by the parameter instead of parsing names.

A sweep writes one part per run chunk and process (`parts/part-GGGG-KKKK-PPPPP.parquet` + `.json`,
see `jaxlab.train.rundir`) as each finishes, then process 0 merges the parts into
`metrics.parquet` and `summary.json`. Every file is written to a temporary name and renamed, so
a crash never leaves half a table or half a summary; a machine that refuses a write (disk full,
read-only) raises `StorageError`, and a damaged file read back raises `CorruptFileError`, both
naming the file (`jaxlab.errors`). One long table per sweep, with the same
columns whatever the host count, so tables of several sweeps concatenate (`load_many`).
"""

from __future__ import annotations

import json
import math
import os
import re
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from jaxlab.errors import CorruptFileError, StorageError, UserError

BASE_COLUMNS = ("run", "seed", "step", "metric", "value")
# what metrics.parquet says of each row's run besides its seed (`with_run_columns`)
RUN_COLUMNS = ("experiment", "preset", "status", "diverged_at_step")
RUNS_TABLE = "runs.parquet"


def column(key: str) -> str:
    """The table column of a dotted config key, a name SQL engines take unquoted: `optim.lr` ->
    `optim__lr` (section and field joined by two underscores)."""
    return key.replace(".", "__")


_METRIC_PARAMS = re.compile(r"^(?P<name>[^\[\]=,]+)\[(?P<params>[^\[\]]+)\]$")
_PARAM_KEY = re.compile(r"^[a-z][a-z0-9_]*$")


def _valid_key(key: str) -> bool:
    """A parameter key: lower-case letters, digits and single underscores, not one of the table's own columns."""
    return bool(_PARAM_KEY.match(key)) and "__" not in key and key not in BASE_COLUMNS and key not in RUN_COLUMNS


def _param_key(key: str, name: str) -> str:
    if not _valid_key(key):
        raise ValueError(
            f"metric {name!r}: parameter key {key!r} must be lower-case letters, digits and single "
            f"underscores, and not one of the table's own columns ({', '.join(BASE_COLUMNS + RUN_COLUMNS)})"
        )
    return key


def metric_name(name: str, **params: float | int | str) -> str:
    """The name of metric `name` measured at `params`: `metric_name("ood_eval_loss", alpha=0.5)` ->
    `ood_eval_loss[alpha=0.5]`; the tidy tables split it back (`split_metric`)."""
    if not params:
        return name
    parts = []
    for key, value in params.items():
        _param_key(key, name)
        text = repr(float(value)) if isinstance(value, float) else str(value)
        if any(c in text for c in "[],="):
            raise ValueError(f"metric {name!r}: parameter {key}={text!r} may not contain [ ] , =")
        parts.append(f"{key}={text}")
    return f"{name}[{','.join(parts)}]"


def split_metric(name: str) -> tuple[str, dict[str, float | str]]:
    """(`name`, {key: value}) of a `metric_name`; values that read as numbers are floats. Any other name (no
    brackets, or brackets that are not `key=value` items with valid keys) is a plain name without parameters."""
    m = _METRIC_PARAMS.match(name)
    if m is None:
        return name, {}
    params: dict[str, float | str] = {}
    for item in m.group("params").split(","):
        key, eq, text = item.partition("=")
        if not eq or not _valid_key(key):
            return name, {}
        try:
            value: float | str = float(text)
        except ValueError:
            value = text
        params[key] = value
    return m.group("name"), params


def split_metric_column(df: pd.DataFrame) -> pd.DataFrame:
    """`df` with parameterized metric names (`metric_name`) split into the metric and one column per parameter
    key, placed after `metric` (empty where a metric has no such parameter). Unchanged without any."""
    if "metric" not in df.columns or df.empty:
        return df
    split = {m: split_metric(m) for m in pd.unique(df["metric"])}
    keys = list(dict.fromkeys(k for _, params in split.values() for k in params))
    if not keys:
        return df
    out = df.copy()
    out["metric"] = out["metric"].map(lambda m: split[m][0])
    at = out.columns.get_loc("metric") + 1
    for i, key in enumerate(keys):
        values = df["metric"].map(lambda m, key=key: split[m][1].get(key))
        numeric = all(isinstance(v, float) for _, p in split.values() for k, v in p.items() if k == key)
        out.insert(at + i, key, values.astype("float64") if numeric else values.astype("string"))
    return out


def config_key(name: str) -> str:
    """The dotted config key of a column (`column`'s inverse; a dotted name is returned as it is)."""
    return name.replace("__", ".", 1) if "." not in name else name


def _cell(value: Any) -> Any:
    """A config value as a table cell: scalars as they are, anything else as its JSON text."""
    return value if value is None or isinstance(value, (bool, int, float, str)) else json.dumps(_jsonable(value))


# -- atomic writes ---------------------------------------------------------------------------------
# Every writer raises `StorageError` (a `UserError` and an `OSError`) naming the file and the OS's
# reason when the machine refuses (disk full, read-only, no permission, a file in the way): the
# CLI prints it as one line with exit status 2; library users can catch it as either.
def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _blocking_file(path: Path) -> Path | None:
    """The nearest ancestor of `path` that exists and is not a directory (ENOTDIR's culprit)."""
    for parent in [path, *path.parents]:
        if parent.exists() or parent.is_symlink():
            return None if parent.is_dir() else parent
    return None


def ensure_dir(path: str | Path) -> Path:
    """`mkdir -p path`; `StorageError` when it cannot be created."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        blocker = _blocking_file(path)
        detail = f"{blocker} is a file, not a directory" if blocker is not None else None
        raise StorageError(path, err, "create the directory", detail) from err
    return path


def _remove(tmp: str | None) -> None:
    if tmp is not None and os.path.lexists(tmp):
        try:
            os.unlink(tmp)
        except OSError:
            pass  # the error that brought us here is the one to report


def write_with(path: str | Path, write: Callable[[Path], None]) -> None:
    """Write `path` atomically: `write(tmp)` fills a temporary file beside it, which then replaces
    `path` in one rename, so readers never see half a file and a failure leaves the old one.
    `StorageError` when the machine refuses."""
    path = Path(path)
    ensure_dir(path.parent)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp's 0600 would hide results from the group
        write(Path(tmp))
        os.replace(tmp, path)
        tmp = None
    except OSError as err:
        raise StorageError(path, err) from err
    finally:
        _remove(tmp)


def write_text(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically (`write_with`)."""
    write_with(path, lambda p: p.write_text(text))


def write_json(path: str | Path, data: Any) -> None:
    """Write `data` as indented JSON to `path` atomically (NumPy values made JSON-able)."""
    write_text(path, json.dumps(_jsonable(data), indent=2) + "\n")


def write_parquet(path: str | Path, df: pd.DataFrame) -> None:
    """Write `df` (without its index) as Parquet to `path` atomically."""
    write_with(path, lambda p: df.to_parquet(p, index=False))


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
    return split_metric_column(add_point_columns(df, runs))


def add_point_columns(df: pd.DataFrame, runs: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """The swept values of each row's run as columns (`column` names) between seed and step."""
    keys = sorted({k for r in runs for k in r.get("point", {})})
    by_run = {r["run"]: r.get("point", {}) for r in runs}
    for k in keys:
        df[column(k)] = df["run"].map(lambda run, k=k: by_run[run].get(k))
    ordered = ["run", "seed", *map(column, keys), "step", "metric", "value"]
    return df[ordered]


def with_run_columns(
    table: pd.DataFrame,
    experiment: str,
    preset: str,
    runs: Sequence[Mapping[str, Any]],
    overrides: Mapping[str, Any],
) -> pd.DataFrame:
    """metrics.parquet's columns: experiment, preset, run, seed, status, diverged_at_step, the config
    values set on top of the preset (`overrides`, dotted key -> value; the same for every run), the
    swept values, then step, metric, value. `runs`: summary.json's run records."""
    by_run = {r["run"]: r for r in runs}
    out = table.copy()
    out.insert(0, "experiment", experiment)
    out.insert(1, "preset", preset)
    status = out["run"].map(lambda r: by_run[r]["status"] if r in by_run else None)
    diverged = out["run"].map(lambda r: by_run[r].get("diverged_at_step") if r in by_run else None)
    out.insert(out.columns.get_loc("seed") + 1, "status", status)
    out.insert(out.columns.get_loc("status") + 1, "diverged_at_step", pd.array(diverged, dtype="Int64"))
    at = out.columns.get_loc("diverged_at_step") + 1
    for i, (key, value) in enumerate(sorted(overrides.items())):
        if column(key) not in out.columns:
            out.insert(at + i, column(key), _cell(value))
    return out


def runs_table(
    runs: Sequence[Mapping[str, Any]], config_of: Callable[[Mapping[str, Any]], Mapping[str, Any]]
) -> pd.DataFrame:
    """runs.parquet: one row per run with its seed, status, diverged_at_step and EVERY config value
    (`config_of(run)`: dotted key -> value, the swept values included), under `column` names."""
    rows = []
    for r in runs:
        row = {"run": r["run"], "seed": r["seed"], "status": r["status"], "diverged_at_step": r.get("diverged_at_step")}
        row.update({column(k): _cell(v) for k, v in config_of(r).items()})
        rows.append(row)
    df = pd.DataFrame(rows)
    if "diverged_at_step" in df:
        df["diverged_at_step"] = pd.array(df["diverged_at_step"], dtype="Int64")
    return df


def aggregate(values: Iterable[float]) -> dict[str, float | None]:
    """mean, median, std, min, max and n of the finite values among `values` (all None, n = 0, when there are none)."""
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
# Readers raise `CorruptFileError` (a `UserError`) naming the file and what is wrong with it when a
# file is truncated or damaged, and `StorageError` when the machine refuses to read it.
def read_json(path: str | Path) -> Any:
    """The JSON document in `path`."""
    path = Path(path)
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise CorruptFileError(path, "not a text file (damaged?)") from None
    except OSError as err:
        raise StorageError(path, err, "read") from err
    try:
        return json.loads(text)
    except json.JSONDecodeError as err:
        where = f"line {err.lineno} column {err.colno}"
        raise CorruptFileError(path, f"truncated or not JSON ({err.msg} at {where})") from None


def read_parquet(path: str | Path) -> pd.DataFrame:
    """The table in the parquet file `path`."""
    path = Path(path)
    try:
        return pd.read_parquet(path)
    except OSError as err:
        if err.errno is not None:
            raise StorageError(path, err, "read") from err
        raise CorruptFileError(path, f"not a parquet file, or a damaged one ({_first_line(err)})") from None
    except (pa.ArrowException, ValueError) as err:
        raise CorruptFileError(path, f"not a parquet file, or a damaged one ({_first_line(err)})") from None


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__


def read_config_data(path: str | Path) -> dict[str, Any]:
    """The JSON object of a run's `config.json` (`jaxlab.registry.read_config` makes the config)."""
    data = read_json(path)
    if not isinstance(data, dict):
        raise CorruptFileError(path, f"not a jaxlab config (a JSON {type(data).__name__}, not an object)")
    if "experiment" not in data:
        raise CorruptFileError(path, "not a jaxlab config (no 'experiment' field)")
    return data


def config_error(path: str | Path, err: Exception) -> CorruptFileError:
    """What a config.json that does not rebuild (`ExperimentConfig.from_dict` raised `err`) is."""
    if isinstance(err, KeyError):
        return CorruptFileError(path, f"not a jaxlab config (no {err.args[0]!r} field)")
    if isinstance(err, UserError):
        return CorruptFileError(path, f"not a valid jaxlab config: {err}")
    return CorruptFileError(path, f"not a jaxlab config ({_first_line(err)})")


def load(run_dir: str | Path) -> pd.DataFrame:
    """The tidy metrics table of a run directory (merged, or its parts while it is running)."""
    run_dir = Path(run_dir)
    table = run_dir / "metrics.parquet"
    if table.exists():
        return read_parquet(table)
    parts = sorted((run_dir / "parts").glob("part-*.parquet"))
    if not parts:
        raise UserError(f"{run_dir}: no metrics.parquet and no result parts: is it a jaxlab run directory?")
    return pd.concat([read_parquet(p) for p in parts], ignore_index=True)


def load_many(run_dirs: Iterable[str | Path], key: str = "sweep") -> pd.DataFrame:
    """The tables of several run directories, one below the other, with a column `key` naming
    each directory: its name, or, where two of the directories share a name (`runs/a/smoke`,
    `runs/b/smoke`), the path as given, so that every label names one sweep (`sweep_labels`). A
    config column that one directory's table has (a value set or swept there) and another's lacks
    (the preset's value there) is filled from the other's runs.parquet, so every row carries every
    config value any of the tables shows. Run numbers restart in every sweep: group by (`key`,
    `run`), as `final_values` does."""
    dirs = [Path(d) for d in run_dirs]
    if not dirs:
        raise UserError("load_many: no run directories given")
    labels = sweep_labels(dirs)
    frames = [load(d) for d in dirs]
    shown = {c for f in frames for c in f.columns if "__" in c}
    for d, df in zip(dirs, frames):
        missing = sorted(shown - set(df.columns))
        table = d / RUNS_TABLE
        if missing and table.exists():
            runs = read_parquet(table).set_index("run")
            for c in missing:
                if c in runs.columns:
                    df[c] = df["run"].map(runs[c])
        df.insert(0, key, labels[d])
    return pd.concat(frames, ignore_index=True)


def sweep_labels(dirs: Sequence[Path]) -> dict[Path, str]:
    """{directory: label} for `load_many`: the directory's name, or its path as given where another
    directory has the same name; the same directory twice is refused."""
    seen: dict[Path, Path] = {}
    for d in dirs:
        real = d.resolve()
        if real in seen:
            raise UserError(f"load_many: {d} is given twice (as {seen[real]} too): its rows would be counted twice")
        seen[real] = d
    names = [d.name for d in dirs]
    return {d: (str(d) if names.count(d.name) > 1 else d.name) for d in dirs}


SUMMARY_FIELDS = ("experiment", "n_runs", "runs", "aggregate")


def load_summary(run_dir: str | Path) -> dict[str, Any]:
    """`summary.json` of a finished run directory (`CorruptFileError` if it is not one)."""
    path = Path(run_dir) / "summary.json"
    if not path.exists():
        raise UserError(f"{run_dir}: no summary.json: is it a finished jaxlab run directory?")
    summary = read_json(path)
    if not isinstance(summary, dict):
        raise CorruptFileError(path, f"not a jaxlab summary (a JSON {type(summary).__name__}, not an object)")
    missing = [k for k in SUMMARY_FIELDS if k not in summary]
    if missing or not isinstance(summary["runs"], list):
        raise CorruptFileError(path, f"not a jaxlab summary (missing {', '.join(missing) or 'the runs list'})")
    return summary


def final_values(df: pd.DataFrame, metric: str, by: Sequence[str] | None = None) -> pd.Series:
    """Per-run value of `metric` at its last recorded step (NaN when that value is NaN: an earlier
    step's value never stands in for it).

    Indexed by `run`, or by `by` and `run` where the metric's rows differ in them. `by` (default
    `key_columns(df)`): the metric's parameters (`alpha` of `ood_eval_loss[alpha=...]`: one value
    per run and alpha) and `load_many`'s label `sweep` (run numbers restart in every sweep); a
    column that is the same on all of the metric's rows (a parameter filtered to one value) is left
    out. Other columns (a value derived per row, a merged config value) never split the runs.
    """
    sub = df[df.metric == metric]
    if sub.empty:
        known = sorted(pd.unique(df["metric"])) if "metric" in df.columns else []
        raise UserError(f"final_values: no metric {metric!r} in the table (metrics: {', '.join(map(str, known))})")
    by = key_columns(df) if by is None else list(by)
    missing = [c for c in by if c not in sub.columns]
    if missing:
        raise UserError(f"final_values: by={missing} are not columns of the table")
    keys = [c for c in by if sub[c].nunique(dropna=False) > 1] + ["run"]
    last = sub.sort_values("step", kind="stable").groupby(keys, dropna=False, sort=True).tail(1)
    return last.set_index(keys)["value"].sort_index()


def key_columns(df: pd.DataFrame, label: str = "sweep") -> list[str]:
    """The columns of a tidy table besides the run that tell its rows' measurements apart: `load_many`'s
    `label` column when present, and the metric parameters (the columns `split_metric_column` puts between
    `metric` and `value`)."""
    cols = list(df.columns)
    params = cols[cols.index("metric") + 1 : cols.index("value")] if {"metric", "value"} <= set(cols) else []
    return ([label] if label in cols else []) + [c for c in params if isinstance(c, str) and _valid_key(c)]
