"""Report sections of function-classes: error against the number of in-context examples, the trained
models beside Garg et al.'s baselines (their Fig. 2 and 4), one panel per function class."""

from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from jaxlab.reporting import Figure, ReportContext, Section, ok_runs, table
from jaxlab.results import split_metric

CLASS_COLUMN = "task__function_class"
STYLES = {
    "least_squares": "--",
    "lasso": "-.",
    "knn": ":",
    "averaging": (0, (3, 1, 1, 1)),
    "tree": (0, (5, 2)),
    "relu_net": (0, (5, 2)),
}


def final_curves(ctx: ReportContext) -> pd.DataFrame:
    """The final-step rows of `nse` (the model) and `baseline_nse` of the runs that finished ok, with a class
    column (`all` when the sweep has one class)."""
    df = ctx.df
    ok = {r["run"] for r in ok_runs(ctx)}
    last = df[df.metric == "nse"].step.max()
    sub = df[df.run.isin(ok) & (((df.metric == "nse") & (df.step == last)) | (df.metric == "baseline_nse"))]
    cls = sub[CLASS_COLUMN] if CLASS_COLUMN in sub.columns else pd.Series("all", index=sub.index)
    return sub.assign(function_class=cls.astype(str), n=sub["n"].astype(int))


def curves_section(ctx: ReportContext) -> Section | None:
    """The error curves (`error_curves.png`) and a table at n = d - 1, d and the last n."""
    if "n" not in ctx.df.columns or not ok_runs(ctx):
        return None
    curves = final_curves(ctx)
    classes = list(dict.fromkeys(curves.function_class))
    fig, axes = plt.subplots(1, len(classes), figsize=(4.2 * len(classes), 3.6), squeeze=False)
    d = ctx.cfg.task.n_dims
    rows = []
    for cls, ax in zip(classes, axes[0]):
        sub = curves[curves.function_class == cls]
        model = sub[sub.metric == "nse"].pivot_table(index="n", columns="run", values="value").sort_index()
        n, vals = model.index.to_numpy(), model.to_numpy(np.float64)
        med = np.median(vals, axis=1)
        ax.plot(n, med, lw=2, color="C0", label=f"transformer (median of {vals.shape[1]})")
        if vals.shape[1] > 1:
            lo, hi = np.quantile(vals, [0.1, 0.9], axis=1)
            ax.fill_between(n, lo, hi, color="C0", alpha=0.2, lw=0)
        base = sub[sub.metric == "baseline_nse"].groupby(["algorithm", "n"]).value.median()
        for i, algorithm in enumerate(dict.fromkeys(base.index.get_level_values(0))):
            b = base.loc[algorithm]
            ax.plot(b.index, b.to_numpy(), lw=1.5, ls=STYLES.get(algorithm, "-"), color=f"C{i + 1}", label=algorithm)
        ax.axvline(d, color="0.7", lw=0.8)
        ax.set_ylim(bottom=0.0, top=max(1.25, float(np.nanmax(med)) * 1.05))
        ax.set_xlabel("in-context examples n")
        ax.set_ylabel("normalized squared error")
        ax.set_title(cls)
        ax.legend(fontsize=7)
        for at in sorted({max(d - 1, 0), d, int(n.max())}):
            if at in model.index:
                at_base = {a: base.loc[(a, at)] for a in dict.fromkeys(base.index.get_level_values(0))}
                cells = ", ".join(f"{a} {v:.3g}" for a, v in at_base.items())
                row = model.loc[at].to_numpy(np.float64)
                rows.append([cls, at, f"{np.median(row):.3g} [{row.min():.3g}, {row.max():.3g}]", cells])
    name = ctx.save(fig, "error_curves.png")
    body = (
        "Normalized squared error (divided by d; by k for sparse linear, 1 for trees, as Garg et al. plot it) "
        "after n in-context examples, on the shared evaluation tasks: the trained models (median and "
        "min-max over seeds) and Garg et al.'s baselines fitted on the same n examples (least squares, 3-NN, "
        "averaging; LASSO for the sparse class; the matched learners: `tree`, a greedy sign-feature tree of the "
        "class's depth, for trees, `relu_net`, a 2-layer ReLU network fitted by Adam, for ReLU networks). The grey "
        "line marks n = d.\n\n" + table(["class", "n", "transformer, median [min, max]", "baselines"], rows)
    )
    caption = f"Error against the number of in-context examples (Garg et al. Fig. 2 and 4). {ctx.provenance()}"
    return Section("Error against the number of in-context examples", body, [Figure(name, caption)])


def cross_section(ctx: ReportContext) -> Section | None:
    """The dense-model control of the sparse claim (`function_classes_cross`): a table over n of the sparse and the
    linear-trained models' errors on the sparse program's evaluation tasks, and their paired difference."""
    by = {}  # (trained, n, seed) -> value
    for key, value in ctx.summary.get("reference", {}).items():
        name, p = split_metric(key)
        if name == "cross_nse" and p.get("tasks") == "sparse_linear" and value is not None:
            by[str(p["trained"]), int(p["n"]), int(p["model_seed"])] = float(value)
    seeds = sorted({s for t, _, s in by if t == "linear"} & {s for t, _, s in by if t == "sparse_linear"})
    if not seeds:
        return None
    rows = []
    for n in sorted({n for _, n, _ in by}):
        own = np.array([by.get(("sparse_linear", n, s), np.nan) for s in seeds])
        dense = np.array([by.get(("linear", n, s), np.nan) for s in seeds])
        diff = own - dense
        rows.append([n, np.nanmedian(own), np.nanmedian(dense), np.nanmedian(diff), np.nanmin(diff), np.nanmax(diff)])
    body = (
        "The control for `sparse_below_least_squares`: the final models trained on sparse linear functions and on "
        "dense linear functions (same seeds, size and steps) scored on the same sparse evaluation tasks (the sparse "
        f"program's; error normalized by k), medians over the {len(seeds)} seeds with both, and the paired "
        "difference sparse - dense (claim `sparse_model_beats_dense_model_on_sparse_tasks` reads it at n = d - 1).\n\n"
        + table(["n", "sparse-trained", "linear-trained", "difference, median", "min", "max"], rows)
    )
    return Section("Control: the dense model on sparse tasks", body)


def sections(ctx: ReportContext) -> list[Section]:
    """The experiment's report sections (`Experiment.report`)."""
    return [s for s in (curves_section(ctx), cross_section(ctx)) if s is not None]
