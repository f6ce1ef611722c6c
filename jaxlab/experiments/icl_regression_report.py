"""Report sections of icl-regression: jaxlab's measurements beside what the papers show, curves over
training, the comparison with other algorithms, OOD.

Everything is read from the run directory (summary.json and metrics.parquet), so `jaxlab report DIR`
rebuilds it. Grid sweeps (several programs) get one row per grid point. The verdicts are not
written here: the Claims table at the top of every report carries them (`icl_regression_claims`,
`jaxlab.claims`); the tables below describe the measurements.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import jax
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from jaxlab.experiments.icl_regression_claims import PAPER_GDPP_GAMMA, parse_ood
from jaxlab.models.gd import gd_products, lsa_products
from jaxlab.probes.gd_equivalence import ONE_STEP_GD
from jaxlab.probes.icl_algorithms import ALGORITHMS
from jaxlab.reporting import Figure, ReportContext, Section, fmt, point_columns, quantile_curves, spread, table
from jaxlab.train.restore import load_group

# the sensitivity cosine marked on the curves (the claims' bar, `icl_regression_claims.COS_BAR`)
BAR_MODEL_COS = 0.99

Stat = Callable[[dict[str, float]], float | None]


def _get(name: str) -> Stat:
    return lambda final: final.get(name)


def _diff(metric: str, control: str) -> Stat:
    def stat(final: dict[str, float]) -> float | None:
        if final.get(metric) is None or final.get(control) is None:
            return None
        return final[metric] - final[control]

    return stat


def _relative(final: dict[str, float], metric: str, control: str) -> float | None:
    if final.get(metric) is None or not final.get(control):
        return None
    return (final[metric] - final[control]) / final[control]


# (quantity, what the paper shows, how jaxlab measures it); von Oswald et al. 2023 unless noted.
# The paper gives these as curves (Fig. 2), not numbers.
SINGLE_LAYER = [
    ("trained model loss `eval_loss` (shared set)", "equal to GD's (Fig. 2, curves)", _get("eval_loss")),
    ("GD loss `gd_loss` (shared set, fitted eta)", "—", _get("gd_loss")),
    (
        "`fresh_eval_loss - fresh_gd_loss` (each seed's own fresh set)",
        "≈ 0 (Fig. 2: the curves overlap)",
        _diff("fresh_eval_loss", "fresh_gd_loss"),
    ),
    ("`eval_loss - gd_loss` (shared set)", "≈ 0", _diff("eval_loss", "gd_loss")),
    ("`model_cos`", "approaches 1 (Fig. 2)", _get("model_cos")),
    ("`model_diff`", "small, decreasing in training (Fig. 2)", _get("model_diff")),
    ("`preds_diff`", "small, decreasing in training (Fig. 2)", _get("preds_diff")),
    ("`interp_loss`", "equal to the trained and GD losses (Fig. 2)", _get("interp_loss")),
]
CLAIMS: dict[str, list[tuple[str, str, Stat]]] = {
    "paper": SINGLE_LAYER,
    "quick": SINGLE_LAYER,
    "ood": SINGLE_LAYER,
    "context": [
        ("trained model loss `eval_loss`", "N = 10: equal to GD's (Fig. 2)", _get("eval_loss")),
        ("GD loss `gd_loss`", "— (jaxlab's expectation, not a paper claim: lower with larger N)", _get("gd_loss")),
        (
            "`fresh_eval_loss - fresh_gd_loss`",
            "N = 10: ≈ 0 (Fig. 2)",
            _diff("fresh_eval_loss", "fresh_gd_loss"),
        ),
        ("`model_cos`", "N = 10: approaches 1 (Fig. 2)", _get("model_cos")),
    ],
    "recurrent": [
        ("trained K-layer loss `eval_loss`", "below K-step GD, close to GD++ (Fig. 3)", _get("eval_loss")),
        ("K-step GD loss `gd_loss`", "above the trained model (Fig. 3)", _get("gd_loss")),
        ("K-step GD++ loss `gdpp_loss`", "close to the trained model (Fig. 3)", _get("gdpp_loss")),
        (
            "`fresh_eval_loss - fresh_gdpp_loss`",
            "≈ 0 (Fig. 3)",
            _diff("fresh_eval_loss", "fresh_gdpp_loss"),
        ),
        ("`model_cos` (vs GD)", "lower than vs GD++", _get("model_cos")),
        ("`model_cos_gdpp` (vs GD++)", "high, the better match (Fig. 3)", _get("model_cos_gdpp")),
        ("`interp_loss`", "≈ trained model loss (tied layers)", _get("interp_loss")),
    ],
    "deep": [
        ("trained K-layer loss `eval_loss`", "below K-step GD, at or below GD++ (Sec. 4)", _get("eval_loss")),
        ("K-step GD loss `gd_loss`", "above the trained model", _get("gd_loss")),
        ("K-step GD++ loss `gdpp_loss`", "at or above the trained model (Sec. 4)", _get("gdpp_loss")),
        (
            "`fresh_eval_loss - fresh_gdpp_loss`",
            "<= 0 (Sec. 4)",
            _diff("fresh_eval_loss", "fresh_gdpp_loss"),
        ),
        ("`model_cos_gdpp` (vs GD++)", "—", _get("model_cos_gdpp")),
    ],
    "recurrent-context": [
        ("trained 2-layer loss `eval_loss`", "close to GD++ at every N (Sec. 4)", _get("eval_loss")),
        ("2-step GD++ loss `gdpp_loss`", "close to the trained model (Sec. 4)", _get("gdpp_loss")),
        (
            "`(fresh_eval_loss - fresh_gdpp_loss) / fresh_gdpp_loss`",
            "≈ 0 (Sec. 4)",
            lambda final: _relative(final, "fresh_eval_loss", "fresh_gdpp_loss"),
        ),
        ("`model_cos_gdpp` (vs GD++)", "high (Sec. 4)", _get("model_cos_gdpp")),
        ("`model_cos` (vs GD)", "lower than vs GD++", _get("model_cos")),
        ("GD++'s fitted `gdpp_gamma`", "0.179 / 0.099 / 0.056 at N = 10 / 25 / 50", _get("gdpp_gamma")),
        ("the trained model's `model_gamma`", "— (GD++'s gamma, if the model is GD++)", _get("model_gamma")),
    ],
    "softmax-mlp": [
        ("trained model loss `eval_loss`", "at or below 2-step GD++ (Sec. 4)", _get("eval_loss")),
        ("2-step GD++ loss `gdpp_loss`", "at or above the trained model (Sec. 4)", _get("gdpp_loss")),
        (
            "`(fresh_eval_loss - fresh_gdpp_loss) / fresh_gdpp_loss`",
            "<= 0 (Sec. 4)",
            lambda final: _relative(final, "fresh_eval_loss", "fresh_gdpp_loss"),
        ),
        ("2-step GD loss `gd_loss`", "above the trained model", _get("gd_loss")),
        ("`model_cos_gdpp` (vs GD++)", "—", _get("model_cos_gdpp")),
    ],
    # von Oswald et al.'s notebook constructed_token_setup.ipynb, note 3 above its Config cell ("a
    # minimum of 2 heads"): the claims softmax_* of icl_regression_claims
    "softmax": [
        ("trained model loss `eval_loss` (shared set)", "—", _get("eval_loss")),
        ("GD loss `gd_loss` (shared set)", "—", _get("gd_loss")),
        (
            "`(fresh_eval_loss - fresh_gd_loss) / fresh_gd_loss`",
            "2 heads needed for good performance with GD (notebook remark, no number)",
            lambda final: _relative(final, "fresh_eval_loss", "fresh_gd_loss"),
        ),
        ("`model_cos`", "2 heads needed for alignment with GD (notebook remark, no number)", _get("model_cos")),
    ],
}


def _ref_value(ref: dict[str, float], name: str, group: str) -> float | None:
    """A reference value of the run, or of the program whose label is part of the group's label."""
    if name in ref:
        return ref[name]
    for key, value in ref.items():
        if key.startswith(f"{name}[") and all(part.strip() in group for part in key[len(name) + 1 : -1].split(",")):
            return value
    return None


def _groups(runs: list[dict[str, Any]]) -> list[tuple[str, list[dict[str, Any]]]]:
    by: dict[str, list[dict[str, Any]]] = {}
    for r in runs:
        if r["status"] == "ok":
            by.setdefault(json.dumps(r["hparams"], sort_keys=True), []).append(r)
    return [(", ".join(f"{k}={v}" for k, v in json.loads(k).items()) or "all runs", v) for k, v in by.items()]


def _first_reached(ctx: ReportContext, runs: list[dict[str, Any]]) -> str:
    """': first evaluation step with model_cos >= 0.99: median [min, max]' over `runs` (plateaus show)."""
    df = ctx.df[(ctx.df.metric == "model_cos") & ctx.df.run.isin([r["run"] for r in runs])]
    if df.empty:
        return ""
    first = df[df.value >= BAR_MODEL_COS].groupby("run").step.min()
    never = len(runs) - len(first)
    text = f": first evaluation step with `model_cos` >= {BAR_MODEL_COS}: {spread(first.tolist())}"
    return text + (f" ({never} runs never)" if never else "")


def evaluation_sets_text(summary: dict[str, Any]) -> str:
    """The evaluation sets and their own sampling errors (empty for runs without the fresh sets)."""
    ref = summary.get("reference", {})
    runs = [r for r in summary["runs"] if r["status"] == "ok"]
    fresh = [r["final"].get("fresh_gd_loss") for r in runs]
    if not any(v is not None for v in fresh):
        return ""
    col = lambda key: spread([r["final"].get(key) for r in runs])
    shared = f"`gd_loss` = {fmt(ref.get('gd_loss'))}" + (
        f" ± {fmt(ref['gd_loss_se'])} (standard error over its tasks)" if "gd_loss_se" in ref else ""
    )
    return (
        "Evaluation sets. The curves, `model_cos`, `preds_diff` and `interp_loss` use one shared set for "
        f"every seed: {shared}. After training each seed is also evaluated on its own fresh set of the "
        f"same size: GD's loss there {col('fresh_gd_loss')}, its standard error {col('fresh_gd_loss_se')}; "
        f"standard error of the paired model-minus-GD difference {col('fresh_diff_se')} "
        "(median [min, max] over seeds). The loss claims are read on the fresh sets."
    )


def comparison_section(ctx: ReportContext) -> Section:
    """Report section: the final values of the preset's claims' quantities per group beside what the papers show, the
    evaluation sets and the fitted references."""
    claims = CLAIMS.get(ctx.cfg.preset, SINGLE_LAYER)
    groups = _groups(ctx.summary["runs"])
    header = ["quantity", "what the paper shows", *[f"jaxlab: {g}" for g, _ in groups]]
    rows = [[q, paper, *[spread([stat(r["final"]) for r in runs]) for _, runs in groups]] for q, paper, stat in claims]
    body = (
        "jaxlab's values are the final values over the runs that did not diverge: median [min, max]. "
        "The verdicts are in the Claims table at the top.\n\n" + table(header, rows)
    )
    lines = [f"- {g}{reached}" for g, runs in groups if (reached := _first_reached(ctx, runs))]
    if lines:
        body += "\n\n" + "\n".join(lines)
    sets = evaluation_sets_text(ctx.summary)
    if sets:
        body += "\n\n" + sets
    ref = ctx.summary.get("reference", {})
    if ref:
        body += "\n\nFitted references: " + ", ".join(
            f"`{k}` = {fmt(v)}" for k, v in sorted(ref.items()) if k.startswith(("gd", "gdpp"))
        )
    gamma = gamma_text(ref)
    if gamma:
        body += "\n\n" + gamma
    return Section("jaxlab's measurements beside what the papers show", body)


def gamma_text(ref: dict[str, float]) -> str:
    """GD++'s fitted gamma of every program beside the paper's at the same N (empty without GD++)."""
    fitted = {k: v for k, v in sorted(ref.items()) if k.startswith("gdpp_gamma")}
    if not fitted:
        return ""
    paper = ", ".join(f"N = {n}: {g}" for n, g in PAPER_GDPP_GAMMA.items())
    ours = ", ".join(f"`{k}` = {fmt(v)}" for k, v in fitted.items())
    return (
        f"GD++'s gamma (jaxlab: fitted jointly with eta by a log-grid search on the shared evaluation set): {ours}; "
        f"the paper's (as issue 20 quotes von Oswald et al. 2023, Sec. 4): {paper}. Both are fitted GD++ "
        "parameters, not read off the trained transformer: in the authors' code GD++ is the constructed "
        "recurrent GD layer whose eta and gamma are trained by Adam on fresh tasks (src/train.py "
        "`pre_train_gd_hps`). These runs' N is `task.n_context` (10 unless swept)."
    )


def context_section(ctx: ReportContext) -> Section | None:
    """Report section for a sweep of the context length N with GD++ (the `recurrent-context` preset): per N,
    GD++'s fitted gamma beside the paper's, the trained models' own gamma (`model_gamma`), the losses and
    the alignment with GD++. None unless task.n_context is swept and GD++ was fitted."""
    if not any(k == "task.n_context" for k, _ in ctx.cfg.sweep.grid):
        return None
    ref = ctx.summary.get("reference", {})
    rows = []
    for g, runs in _groups(ctx.summary["runs"]):
        n = next((r["hparams"].get("task.n_context") for r in runs), None)
        fitted = _ref_value(ref, "gdpp_gamma", g)
        if n is None or fitted is None:
            continue
        col = lambda stat: spread([stat(r["final"]) for r in runs])
        rows.append(
            [n, fmt(PAPER_GDPP_GAMMA.get(int(n))), fmt(fitted), col(_get("model_gamma")),
             fmt(_ref_value(ref, "gdpp_lr", g)), fmt(_ref_value(ref, "gdpp_loss", g)), col(_get("eval_loss")),
             col(lambda f: _relative(f, "fresh_eval_loss", "fresh_gdpp_loss")), col(_get("model_cos_gdpp"))]
        )  # fmt: skip
    if not rows:
        return None
    header = [
        "N", "paper's GD++ gamma", "jaxlab GD++ gamma (fitted)", "trained model's gamma `model_gamma`",
        "GD++ eta", "GD++ loss (shared set)", "model `eval_loss`", "(model - GD++) / GD++ (fresh sets)",
        "`model_cos_gdpp`",
    ]  # fmt: skip
    body = (
        "Per context length N: GD++'s gamma, fitted with eta on the shared evaluation set of that N, beside "
        "the paper's (as issue 20 quotes von Oswald et al. 2023, Sec. 4; in the authors' code a GD++ "
        "parameter trained by Adam, not read off the transformer), and the trained models' own gamma "
        "`model_gamma` = -a b (a, b the mean x-block diagonals of W_KQ and W_PV: the x_j <- (I - gamma X X^T) "
        "x_j that the tied layer applies). Runs: median [min, max] over the seeds. The verdicts are in the "
        "Claims table at the top.\n\n" + table(header, rows)
    )
    return Section("Context length N: GD++'s gamma and the trained models'", body)


def algorithms_section(ctx: ReportContext) -> Section | None:
    """Report section: SPD and ILWD to GD, one-step GD, averaging, ridge and kNN (Akyürek et al.); None when no run
    measured them."""
    groups = _groups(ctx.summary["runs"])
    names = [a for a in (*ALGORITHMS, ONE_STEP_GD) if any(f"spd_{a}" in r["final"] for _, runs in groups for r in runs)]
    if not names:
        return None
    ref = ctx.summary.get("reference", {})
    rows = []
    for g, runs in groups:
        for a in names:
            rows.append(
                [g, a, _ref_value(ref, f"{a}_loss", g), spread([r["final"].get(f"spd_{a}") for r in runs]),
                 spread([r["final"].get(f"ilwd_{a}") for r in runs])]
            )  # fmt: skip
    body = (
        "Akyürek et al. (2023) compare in-context learners with learning algorithms by the squared "
        "prediction difference (SPD) and the implicit linear weight difference (ILWD). They report "
        "that small models sit closest to one GD step and large ones to OLS (noiseless data). jaxlab's "
        "expectation, which no claim tests: von Oswald et al.'s single LSA layer is closest to `gd`. "
        "`gd` is the fitted "
        "K-step GD (K = the number of layers), `gd1` one GD step with its own fitted rate (K > 1 only), "
        "`averaging` one GD step with eta = 1, `ridge` uses probe.ridge_lambda (with probe.ridge_matched the "
        "noise-matched noise_std^2 / weight_scale^2), `knn` k = probe.knn_k. Final values, median [min, max] "
        "over runs.\n\n" + table(["runs", "algorithm", "algorithm's own loss", "spd", "ilwd"], rows)
    )
    figs = [f for f in [_akyurek_figure(ctx, names)] if f is not None]
    return Section("Comparison with other learning algorithms (Akyürek et al. 2023)", body, figs)


def _point_frames(ctx: ReportContext) -> list[tuple[str, pd.DataFrame]]:
    cols = point_columns(ctx.df)
    if not cols:
        return [("", ctx.df)]
    out = []
    for key, sub in ctx.df.groupby(cols, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        out.append((", ".join(f"{c}={v}" for c, v in zip(cols, key)), sub))
    return out


def _curve_figure(ctx: ReportContext) -> Figure | None:
    metrics = set(ctx.df.metric)
    if "model_cos" not in metrics:
        return None
    frames = _point_frames(ctx)
    fig, axes = plt.subplots(len(frames), 2, figsize=(11, 3.8 * len(frames)), squeeze=False)
    for (label, sub), (ax_l, ax_c) in zip(frames, axes):
        for name, color in (("eval_loss", "C0"), ("gd_loss", "C1"), ("interp_loss", "C2"), ("gdpp_loss", "C3")):
            if name in metrics:
                quantile_curves(ax_l, sub, name, label=name, color=color, show_runs=False)
        ax_l.set_yscale("log")
        # interp_loss of a run whose W_KQ has a near-zero diagonal explodes (it divides by beta);
        # keep the axis on the trained and GD losses and let such bands leave the plot.
        levels = sub[sub.metric.isin(["eval_loss", "gd_loss"])].groupby(["metric", "step"]).value.median()
        if not levels.empty and np.all(levels > 0):
            ax_l.set_ylim(0.8 * levels.min(), 3.0 * levels.max())
        ax_l.set_xlabel("optimizer step")
        ax_l.set_ylabel("0.5 * squared error")
        ax_l.set_title(f"losses {label}".strip())
        ax_l.legend(fontsize=8)
        for name, color in (("model_cos", "C0"), ("model_cos_gdpp", "C3")):
            if name in metrics:
                quantile_curves(ax_c, sub, name, label=name, color=color)
        ax_c.axhline(BAR_MODEL_COS, color="gray", lw=0.8, ls="--")
        ax_c.set_ylim(max(-0.05, ax_c.get_ylim()[0]), 1.01)
        ax_c.set_xlabel("optimizer step")
        ax_c.set_ylabel("cosine of d y_hat / d x_query")
        ax_c.set_title(f"alignment with GD {label}".strip())
        ax_c.legend(fontsize=8)
    name = ctx.save(fig, "gd_equivalence.png")
    return Figure(
        name,
        "Left: loss of the trained models, of GD with the fitted rate, of the interpolated model (and of "
        "GD++) over training, median and 10-90% band over runs. Right: model_cos, every run faint, "
        f"median bold; dashed: {BAR_MODEL_COS}. {ctx.provenance()}",
    )


def _akyurek_figure(ctx: ReportContext, names: Sequence[str]) -> Figure | None:
    frames = _point_frames(ctx)
    fig, axes = plt.subplots(len(frames), 2, figsize=(11, 3.6 * len(frames)), squeeze=False)
    for (label, sub), (ax_s, ax_i) in zip(frames, axes):
        for i, a in enumerate(names):
            quantile_curves(ax_s, sub, f"spd_{a}", label=a, color=f"C{i}", show_runs=False)
            quantile_curves(ax_i, sub, f"ilwd_{a}", label=a, color=f"C{i}", show_runs=False)
        for ax, what in ((ax_s, "spd"), (ax_i, "ilwd")):
            ax.set_yscale("log")
            ax.set_xlabel("optimizer step")
            ax.set_ylabel(what)
            ax.set_title(f"{what} to each algorithm {label}".strip())
            ax.legend(fontsize=8)
    name = ctx.save(fig, "algorithms.png")
    return Figure(
        name,
        f"SPD and ILWD of the trained models to each algorithm over training (median, 10-90% band). {ctx.provenance()}",
    )


def ood_section(ctx: ReportContext) -> Section | None:
    """Report section: loss against the input scale alpha, the trained models and GD; None without `ood_*` metrics."""
    df = ctx.df[ctx.df.metric.str.startswith("ood_")]
    if df.empty:
        return None
    frames = _point_frames(ctx)
    fig, axes = plt.subplots(1, len(frames), figsize=(5.5 * len(frames), 3.8), squeeze=False)
    rows = []
    for (label, sub), ax in zip(frames, axes[0]):
        sub = sub[sub.metric.str.startswith("ood_")]
        if "alpha" in sub.columns and sub["alpha"].notna().all():  # metric ood_eval_loss, column alpha
            sub = sub.assign(who=sub.metric.str[4:-5], alpha=sub["alpha"].astype(float))
        else:  # a run directory from before metric parameters: ood_eval_loss_a050
            parsed = [parse_ood(m) for m in sub.metric]
            sub = sub.assign(who=[p[0] for p in parsed], alpha=[p[1] for p in parsed])
        model = sub[sub.who == "eval"].pivot_table(index="alpha", columns="run", values="value")
        gd = sub[sub.who == "gd"].groupby("alpha").value.median()
        alphas = model.index.to_numpy()
        vals = model.to_numpy(dtype=np.float64)
        ax.plot(alphas, np.median(vals, axis=1), lw=2, color="C0", label="trained model (median)")
        if vals.shape[1] > 1:
            lo, hi = np.quantile(vals, [0.1, 0.9], axis=1)
            ax.fill_between(alphas, lo, hi, color="C0", alpha=0.2, lw=0)
        ax.plot(gd.index, gd.to_numpy(), lw=2, ls="--", color="C1", label="GD (rate fitted at alpha = 1)")
        ax.set_yscale("log")
        ax.set_xlabel("input scale alpha (x ~ U(-alpha/2, alpha/2))")
        ax.set_ylabel("0.5 * squared error")
        ax.set_title(f"out of distribution {label}".strip())
        ax.legend(fontsize=8)
        for a, m, g in zip(alphas, np.median(vals, axis=1), gd.reindex(alphas).to_numpy()):
            rows.append([label or "all runs", a, m, g])
    name = ctx.save(fig, "ood.png")
    body = (
        "von Oswald et al. (Fig. 2, right) report that the trained LSA layer and GD degrade alike when "
        "the inputs are scaled by alpha at test time (both were fitted at alpha = 1).\n\n"
        + table(["group", "alpha", "trained model (median)", "GD"], rows)
    )
    return Section(
        "Out-of-distribution input scale",
        body,
        [
            Figure(
                name,
                f"Final loss vs input scale alpha: trained models (median, 10-90% band) and GD. {ctx.provenance()}",
            )
        ],
    )


def _scaled(m: np.ndarray) -> np.ndarray:
    """A matrix divided by its largest absolute entry (the construction is the trained product up to scale)."""
    top = np.max(np.abs(m))
    return m / top if top > 0 else m


def _program_label(ctx: ReportContext, cfg: Any) -> str:
    """The group label ("key=value, ...") of a program config's swept values (for `_ref_value`)."""
    parts = []
    for key, _ in ctx.cfg.sweep.grid:
        node = cfg
        for attr in key.split("."):
            node = getattr(node, attr, None)
        parts.append(f"{key}={node}")
    return ", ".join(parts)


def weights_section(ctx: ReportContext) -> Section | None:
    """von Oswald et al.'s weight figure: the trained products W_KQ = W_q W_k^T and W_PV = W_v W_out of
    the first run of the first program beside the constructed layer's, each scaled to its largest
    entry, and the median over runs of the cosine between trained and constructed products. One
    linear head only: one layer against the GD layer (fitted rate), tied layers (K > 1) against the
    GD++ layer (fitted eta, gamma) of the same program."""
    cfg = ctx.cfg.resolve()
    if ctx.experiment is None or cfg.model.attention != "linear" or cfg.model.n_heads != 1:
        return None
    layers = [v for k, vs in ctx.cfg.sweep.grid if k == "model.n_layers" for v in vs] or [cfg.model.n_layers]
    if any(n > 1 for n in layers) and not cfg.model.tie_layers:
        return None
    try:
        group = load_group(ctx.experiment, ctx.run_dir, 0)
    except Exception as err:  # a run without its checkpoints still gets the rest of its report
        return Section("Weights", f"Not available: the final checkpoint could not be read ({err}).")
    model_cfg = group.train.cfg.model
    label = _program_label(ctx, group.train.cfg)
    ref = ctx.summary.get("reference", {})
    multi = model_cfg.n_layers > 1
    eta = _ref_value(ref, "gdpp_lr" if multi else "gd_lr", label)
    gamma = _ref_value(ref, "gdpp_gamma", label) if multi else None
    if eta is None or (multi and gamma is None):
        return None
    a_RLHDD, b_RLHDD = jax.vmap(lambda p: lsa_products(p, model_cfg))(group.state.params)
    a_gd, b_gd = (np.asarray(m) for m in gd_products(model_cfg, group.train.cfg.task.n_context, eta, gamma))
    a_R = np.asarray(a_RLHDD[:, 0, 0]).reshape(len(a_RLHDD), -1)
    b_R = np.asarray(b_RLHDD[:, 0, 0]).reshape(len(b_RLHDD), -1)
    cos = lambda x_R, g: x_R @ g.ravel() / (np.linalg.norm(x_R, axis=1) * np.linalg.norm(g) + 1e-30)
    # (A, B) and (-A, -B) are the same function: each run's pair is signed to agree with GD's W_KQ
    sign = np.where(cos(a_R, a_gd) < 0, -1.0, 1.0)
    cos_a, cos_b = sign * cos(a_R, a_gd), sign * cos(b_R, b_gd)
    name = "GD++" if multi else "GD"
    fig, axes = plt.subplots(2, 2, figsize=(8, 7))
    shown = [
        (sign[0] * np.asarray(a_RLHDD[0, 0, 0]), "trained W_KQ (run 0)"),
        (a_gd, f"{name} construction W_KQ"),
        (sign[0] * np.asarray(b_RLHDD[0, 0, 0]), "trained W_PV (run 0)"),
        (b_gd, f"{name} construction W_PV"),
    ]
    for ax, (m, title) in zip(axes.ravel(), shown):
        im = ax.imshow(_scaled(m), cmap="RdBu_r", vmin=-1, vmax=1)
        ax.set_title(title, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
        fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04)
    filename = "weights.png"
    ctx.save(fig, filename)
    which = (
        f"the constructed GD++ layer ({label or 'the first program'}: tied over its {model_cfg.n_layers} layers, "
        f"fitted eta = {fmt(eta)}, gamma = {fmt(gamma)}; W_PV's x block is -gamma I, von Oswald et al. Sec. 4)"
        if multi
        else "the constructed GD layer with the fitted rate (von Oswald et al. 2023, Fig. 2 and Sec. 3)"
    )
    body = (
        f"The trained layer's products (row convention: A = W_q W_k^T, B = W_v W_out) beside those of {which}. "
        f"Cosine between trained and constructed products over the runs{' of that program' if multi else ''}, "
        f"median [min, max]: W_KQ {spread(cos_a.tolist())}, W_PV {spread(cos_b.tolist())}. The products equal "
        "the construction up to a scale (which the cosine ignores) when the trained layer is the construction; "
        "(W_KQ, W_PV) and (-W_KQ, -W_PV) compute the same function, so each run's pair is signed to agree with "
        "the construction's W_KQ."
    )
    caption = f"Each matrix divided by its largest absolute entry (colour scale -1 to 1). {ctx.provenance()}"
    return Section("Weights", body, [Figure(filename, caption)])


def sections(ctx: ReportContext) -> list[Section]:
    """The experiment's report sections (`Experiment.report`): one note when the GD probes were off."""
    if "model_cos" not in set(ctx.df.metric):
        return [Section("GD equivalence", "The GD probes were off for this run (probe.gd_probes = false).")]
    out = [comparison_section(ctx)]
    fig = _curve_figure(ctx)
    if fig is not None:
        out.append(Section("GD equivalence over training", figures=[fig]))
    for s in (context_section(ctx), weights_section(ctx), algorithms_section(ctx), ood_section(ctx)):
        if s is not None:
            out.append(s)
    return out
