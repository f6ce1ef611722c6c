"""The building blocks of report sections, for experiments and the report writer alike.

A report is a list of `Section`s (title, markdown body, `Figure`s) rendered by `jaxlab.report`.
Experiments build their sections from a `ReportContext` (the run directory, its config, summary and
tidy metric table) with the helpers here: `fmt` and `table` for markdown; `ok_runs`, `finals` (a
metric's final values over the runs) and `spread` ("median [min, max]") for tables of runs;
`quantile_curves` and `curves_by_point` for per-run curves (median, 10-90% band); and
`ReportContext.save` for figures (atomic, recorded as jaxlab's, never over a user's file).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from jaxlab import results, runfiles
from jaxlab.claims import REPLICATE_PREFIX, bootstrap_median_ci
from jaxlab.claims import evaluate as evaluate_claims
from jaxlab.config import ExperimentConfig
from jaxlab.errors import UserError


@dataclass
class Figure:
    """A figure of the report: its file in the run directory and its caption."""

    filename: str
    caption: str


@dataclass
class Section:
    """A section of report.md: a title, a markdown body and figures (`render` writes it)."""

    title: str
    body: str = ""
    figures: list[Figure] = field(default_factory=list)


@dataclass
class ReportContext:
    """What report sections read: the run directory, its config, summary.json and tidy metrics, and
    the `Experiment` being reported (for sections that reload the run's programs, e.g. to read its
    checkpoints; `write_report_of` sets it)."""

    run_dir: Path
    cfg: ExperimentConfig
    summary: dict[str, Any]
    df: pd.DataFrame
    experiment: Any = None

    @property
    def command(self) -> str:
        """The command that made the run (summary.json's `command`, else `jaxlab run EXPERIMENT --preset PRESET`)."""
        return self.summary.get("command") or f"jaxlab run {self.cfg.experiment} --preset {self.cfg.preset}"

    def provenance(self) -> str:
        """One sentence for captions: the `jaxlab report` command and the run's command."""
        return f"Made by `jaxlab report {self.run_dir}` from the run `{self.command}`."

    def save(self, fig: plt.Figure, filename: str) -> str:
        """Save `fig` as `filename` in the run directory (atomically; never over a file of the user's) and
        close it; returns `filename`.
        """
        fig.tight_layout()
        runfiles.claim(self.run_dir, filename)  # never over a file of the user's
        kind = Path(filename).suffix[1:] or "png"  # the temporary file's name does not tell matplotlib
        try:  # atomically, StorageError when the disk refuses (jaxlab.results)
            results.write_with(self.run_dir / filename, lambda p: fig.savefig(p, format=kind, dpi=110))
        finally:
            plt.close(fig)
        return filename


# -- formatting ------------------------------------------------------------------------------------
def fmt(x: Any, digits: int = 4) -> str:
    """A value for a table: integers as they are, floats to `digits` significant digits (scientific below 1e-3 or from
    1e5), None and non-finite as —."""
    if x is None:
        return "—"
    if isinstance(x, (int, np.integer)) and not isinstance(x, bool):
        return str(int(x))
    if isinstance(x, (float, np.floating)):
        if not math.isfinite(x):
            return "—"
        if x != 0 and (abs(x) < 1e-3 or abs(x) >= 1e5):
            return f"{x:.{digits - 1}e}"
        return f"{x:.{digits}g}"
    return str(x)


def table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """A markdown table of `header` and `rows` (cells through `fmt`)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def aggregate_table(aggregate: dict[str, dict[str, Any]], metrics: Sequence[str] | None = None) -> str:
    """The markdown table of summary.json's `aggregate` (mean, median, std, min, max, runs) for `metrics` (default:
    all, sorted)."""
    names = [m for m in (metrics or sorted(aggregate)) if m in aggregate]
    rows = [
        [m, *(aggregate[m].get(s) for s in ("mean", "median", "std", "min", "max")), aggregate[m].get("n")]
        for m in names
    ]
    return table(["metric", "mean", "median", "std", "min", "max", "runs"], rows)


def ok_runs(ctx: ReportContext) -> list[dict[str, Any]]:
    """The summary.json entries of the runs that did not diverge, in order."""
    return [r for r in ctx.summary["runs"] if r["status"] == "ok"]


def finals(ctx: ReportContext, key: str) -> np.ndarray:
    """[R] float64: the final value of metric `key` of every run that did not diverge (`ok_runs`),
    NaN where a run has no value (missing or null)."""
    values = [r["final"].get(key) for r in ok_runs(ctx)]
    return np.asarray([np.nan if v is None else v for v in values], np.float64)


def finite_median_ci(values: Iterable[float]) -> tuple[float, float, float]:
    """(median, ci_low, ci_high) of the finite values (`jaxlab.claims.bootstrap_median_ci`); NaNs when
    there is none."""
    x = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, np.float64)
    x = x[np.isfinite(x)]
    return bootstrap_median_ci(x) if x.size else (np.nan, np.nan, np.nan)


def spread(values: Iterable[float | None], empty: str = "—") -> str:
    """ "median [min, max]" of the finite values (None and non-finite ones dropped); the value alone
    when there is one, `empty` when there is none."""
    v = np.asarray([np.nan if x is None else x for x in values], np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return empty
    if v.size == 1:
        return fmt(float(v[0]))
    return f"{fmt(float(np.median(v)))} [{fmt(float(v.min()))}, {fmt(float(v.max()))}]"


# -- figures ---------------------------------------------------------------------------------------
def quantile_curves(
    ax: plt.Axes,
    df: pd.DataFrame,
    metric: str,
    label: str | None = None,
    color: str | None = None,
    show_runs: bool = True,
) -> None:
    """Every run faint, the median bold, the 10-90% quantile band shaded."""
    sub = df[df.metric == metric]
    if sub.empty:
        return
    wide = sub.pivot_table(index="step", columns="run", values="value", aggfunc="last").sort_index()
    steps = wide.index.to_numpy()
    values = wide.to_numpy(dtype=np.float64)
    line = ax.plot(steps, np.nanmedian(values, axis=1), lw=2, label=label or metric, color=color)[0]
    color = line.get_color()
    if values.shape[1] > 1:
        lo, hi = np.nanquantile(values, [0.1, 0.9], axis=1)
        ax.fill_between(steps, lo, hi, color=color, alpha=0.2, lw=0)
        if show_runs:
            ax.plot(steps, values, color=color, alpha=0.15, lw=0.7)


def curves_by_point(ax: plt.Axes, df: pd.DataFrame, metric: str, point_cols: Sequence[str]) -> None:
    """`quantile_curves` of `metric` on `ax`, one curve per grid point of `point_cols` (all runs together without
    them)."""
    if not point_cols:
        quantile_curves(ax, df, metric)
        return
    for key, sub in df.groupby(list(point_cols), dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        quantile_curves(ax, sub, metric, label=", ".join(f"{c}={v}" for c, v in zip(point_cols, key)), show_runs=False)


def point_columns(df: pd.DataFrame) -> list[str]:
    """The columns of a tidy table that tell its grid points apart: config columns whose value
    differs between runs (the run-level columns, and `--set` values shared by every run, aside)."""
    fixed = set(results.BASE_COLUMNS) | set(results.RUN_COLUMNS)
    candidates = [c for c in df.columns if c not in fixed and "__" in c]  # config columns, not metric parameters
    if not candidates:
        return []
    per_run = df.groupby("run")[candidates].first()
    return [c for c in candidates if per_run[c].nunique(dropna=False) > 1]


def loss_figure(ctx: ReportContext) -> Figure | None:
    """The training and evaluation loss curves of all runs, by grid point (`loss_curves.png`); None without loss
    metrics."""
    metrics = [m for m in ("train_loss", "eval_loss") if m in set(ctx.df.metric)]
    if not metrics:
        return None
    fig, axes = plt.subplots(1, len(metrics), figsize=(5.5 * len(metrics), 3.8), squeeze=False)
    cols = point_columns(ctx.df)
    for ax, metric in zip(axes[0], metrics):
        curves_by_point(ax, ctx.df, metric, cols)
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(metric)
        if (ctx.df[ctx.df.metric == metric].value > 0).all():
            ax.set_yscale("log")
        ax.set_title(f"{metric}: median, 10-90% band, {ctx.summary['n_runs']} runs")
        if cols:
            ax.legend(fontsize=7)
    name = ctx.save(fig, "loss_curves.png")
    return Figure(name, f"Loss curves of all runs. {ctx.provenance()}")


# -- the report ------------------------------------------------------------------------------------
def render(sections: Sequence[Section]) -> str:
    """The markdown of `sections`: a `##` title, the body and the figures with their captions, each."""
    out = []
    for s in sections:
        out.append(f"## {s.title}\n")
        if s.body:
            out.append(s.body.rstrip() + "\n")
        for f in s.figures:
            out.append(f"![{f.filename}]({f.filename})\n\n*{f.caption}*\n")
    return "\n".join(out)


def claims_sections(summary: dict[str, Any]) -> list[Section]:
    """The Claims table (claim | paper | jaxlab median [95% CI] | control | verdict) and the
    deviations from the paper's setup: the first sections of every report (`jaxlab.claims`)."""
    out = []
    claims = summary.get("claims") or []
    if claims:
        rows = []
        for c in claims:
            paper = f"{c['paper_ref']}" + (f": {fmt(c['paper_value'])}" if c.get("paper_value") is not None else "")
            if c.get("median") is None:
                measured = "—"
            else:
                measured = f"{fmt(c['median'])} [{fmt(c['ci_low'])}, {fmt(c['ci_high'])}] (n={c['n_seeds']})"
            rows.append([c["claim"], paper, f"{c['statistic']}: {measured}", c["control"], f"**{c['verdict']}**"])
        body = table(["claim", "paper", "jaxlab median [95% CI]", "control", "verdict"], rows)
        reasons = [
            f"- `{c['id']}` ({c['verdict']}): {c['reason']}; rule: {c['rule']}{replicate_text(c)}" for c in claims
        ]
        out.append(Section("Claims", body + "\n\n" + "\n".join(reasons)))
    deviations = summary.get("deviations") or []
    if deviations:
        out.append(Section("Deviations from the paper's setup", "\n".join(f"- {d}" for d in deviations)))
    return out


def replicate_text(claim: dict[str, Any]) -> str:
    """The claim's statistic on the replicate evaluation set, or why it has none (empty for untested
    claims and for summaries written before jaxlab scored a replicate set)."""
    rep = claim.get("replicate")
    if rep is not None:
        return (
            f"; on a replicate evaluation set of the same size: median {fmt(rep['median'])}, 95% CI "
            f"[{fmt(rep['ci_low'])}, {fmt(rep['ci_high'])}] ({rep['verdict']})"
        )
    note = claim.get("replicate_note")
    return f"; replicate evaluation set: {note}" if note and claim.get("median") is not None else ""


def evaluation_set_section(summary: dict[str, Any]) -> Section | None:
    """Each final metric on the shared evaluation set beside the same metric on the replicate set
    (`jaxlab.train.replicate`): the sampling error of the evaluation set itself, which is common to
    every seed and so not in a bootstrap over seeds."""
    runs = [r for r in summary["runs"] if r["status"] == "ok"]
    names = sorted({k[len(REPLICATE_PREFIX) :] for r in runs for k in r["final"] if k.startswith(REPLICATE_PREFIX)})
    rows = []
    for m in names:
        pairs = np.array(
            [[r["final"].get(m, math.nan), r["final"].get(REPLICATE_PREFIX + m, math.nan)] for r in runs], np.float64
        )
        pairs = pairs[np.all(np.isfinite(pairs), axis=1)]
        if pairs.size:
            shared, replicate = np.median(pairs, axis=0)
            rows.append([m, shared, replicate, float(np.median(np.abs(pairs[:, 1] - pairs[:, 0]))), len(pairs)])
    if not rows:
        return None
    body = (
        "Every run's final parameters scored on the shared evaluation set (key `train.eval_seed`, the "
        "same for every seed) and on a replicate set of the same size drawn the same way from another "
        "key (`jaxlab.train.replicate`). Their difference is the evaluation set's own sampling error, "
        "which a bootstrap over seeds cannot see; claims are evaluated on both (Claims above).\n\n"
    ) + table(["metric", "median, shared set", "median, replicate set", "median abs(difference)", "runs"], rows)
    return Section("Evaluation-set sampling error", body)


def generic_sections(ctx: ReportContext) -> list[Section]:
    """The sections every report has: claims, setup, final metrics (and diverged runs), the evaluation-set error, grid
    points, reference values, training curves."""
    s = ctx.summary
    runs = s["runs"]
    diverged = [r for r in runs if r["status"] != "ok"]
    setup = (
        f"- experiment `{s['experiment']}`, preset `{s['preset']}`, {s['n_runs']} runs "
        f"({len(ctx.cfg.sweep.seeds)} seeds"
        + (f" x {len(ctx.cfg.sweep.points())} grid points" if ctx.cfg.sweep.grid else "")
        + ")\n"
        + (
            "- shared task streams (`task.shared_stream`): each step's training batches were drawn once per data "
            "seed (the run's seed) and device, and fed to every run of that seed (the batches every run of the "
            "seed draws for itself without the option)\n"
            if getattr(ctx.cfg.task, "shared_stream", False)
            else ""
        )
        + f"- device `{s['device']}` x {s['n_devices']}, jaxlab {s['jaxlab_version']}\n"
        f"- wall {fmt(s['wall_s'])} s, of which compilation {fmt(s['compile_s'])} s\n"
        f"- reproduce: `{ctx.command}`; this report: `jaxlab report {ctx.run_dir}`\n"
        f"- full config: `config.json`; tidy metrics: `metrics.parquet` (`jaxlab.results.load`)\n"
    )
    sections = [*claims_sections(s), Section("Setup", setup)]
    own = [m for m in sorted(s["aggregate"]) if not m.startswith(REPLICATE_PREFIX)]
    body = "Final values over the runs that did not diverge.\n\n" + aggregate_table(s["aggregate"], own)
    if diverged:
        body += (
            "\n\n**Diverged runs** (loss not finite, or above `train.diverge_above` x the loss of step 0; "
            "frozen at the step that failed the check, excluded above):\n\n"
        ) + table(
            ["run", "seed", "hparams", "diverged at step"],
            [[r["run"], r["seed"], json.dumps(r["hparams"]), r["diverged_at_step"]] for r in diverged],
        )
    else:
        body += "\n\nNo run diverged."
    sections.append(Section("Final metrics", body))
    replicate = evaluation_set_section(s)
    if replicate is not None:
        sections.append(replicate)
    if s.get("aggregate_by_point"):
        rows = []
        for entry in s["aggregate_by_point"]:
            for m, a in entry["aggregate"].items():
                if m in ("eval_loss", "train_loss"):
                    rows.append([json.dumps(entry["hparams"]), m, a["mean"], a["median"], a["std"], a["n"]])
        sections.append(Section("By grid point", table(["point", "metric", "mean", "median", "std", "runs"], rows)))
    if s.get("reference"):
        sections.append(Section("Reference values", table(["name", "value"], sorted(s["reference"].items()))))
    fig = loss_figure(ctx)
    if fig is not None:
        sections.append(Section("Training curves", figures=[fig]))
    return sections


def _unknown_fields(stored: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """`section.field` names of a stored config.json that this jaxlab's config of the run does not have
    (a field retired since the run was written: the config loader skips it)."""
    out = []
    for section, fields in stored.items():
        if isinstance(fields, dict) and isinstance(now.get(section), dict):
            out += [f"{section}.{name}" for name in fields if name not in now[section]]
    return sorted(out)


def write_report_of(run_dir: str | Path, experiment: Any) -> Path:
    """(Re)write `run_dir/report.md` and its figures from the files of the run, with `experiment`'s
    sections (an `Experiment`: its `config_from_dict`, `report`, `description` and `metrics`).
    The claims' verdicts are evaluated again from the runs in summary.json, with the experiment's
    claims and deviations as the code declares them now (summary.json is updated if they changed)."""
    run_dir = Path(run_dir)
    path = run_dir / "config.json"
    if not path.exists():
        raise UserError(f"{run_dir}: no config.json: is it a jaxlab run directory?")
    data = results.read_config_data(path)
    try:
        cfg = experiment.config_from_dict(data)
    except (KeyError, TypeError, ValueError, AttributeError, UserError) as err:
        raise results.config_error(path, err) from None
    unknown = _unknown_fields(data, cfg.to_dict())
    if unknown:
        raise UserError(
            f"{run_dir}: config.json has fields this jaxlab's {cfg.experiment} does not know "
            f"({', '.join(unknown)}): the run was written by another version of the experiment, whose metrics "
            "this one may not read; its report.md and summary.json are left as they are (jaxlab.load reads its tables)"
        )
    summary = results.load_summary(run_dir)
    before = runfiles.listing(run_dir)
    # the verdicts follow the experiment's claims as they are now, from the runs on disk
    claims = evaluate_claims(experiment.claims, cfg, summary["runs"], summary.get("reference", {}))
    deviations = list(experiment.deviations(cfg))
    if claims != summary.get("claims") or deviations != summary.get("deviations"):
        summary["claims"], summary["deviations"] = claims, deviations
        results.write_json(run_dir / "summary.json", summary)
    ctx = ReportContext(run_dir, cfg, summary, results.load(run_dir), experiment)
    sections = generic_sections(ctx)
    if experiment.report is not None:
        sections += experiment.report(ctx)
    title = f"# {cfg.experiment} — preset `{cfg.preset}`\n\n{experiment.description}\n\n"
    metrics_doc = "\n".join(f"- `{k}`: {v}" for k, v in experiment.metrics.items())
    if metrics_doc:
        sections.append(Section("Metric definitions", metrics_doc))
    out = run_dir / "report.md"
    results.write_text(out, title + render(sections))
    # what the sections wrote, also outside ctx.save (figures, caches): jaxlab's, replaced with the run
    runfiles.record(run_dir, ["report.md", *runfiles.written(run_dir, before)])
    return out
