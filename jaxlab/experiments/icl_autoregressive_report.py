"""Report sections of icl-autoregressive: each measurement next to the claim of Sander et al. (ICML 2024)."""

from __future__ import annotations

import re
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from jaxlab.experiments.icl_autoregressive_claims import PE_ONLY_DIAGONAL
from jaxlab.reporting import Figure, ReportContext, Section, finals, fmt, ok_runs, quantile_curves, spread, table


def _cell(ctx: ReportContext, key: str) -> str:
    """median [min, max] of a final metric over the runs; n/a where it does not apply to the model."""
    return spread(finals(ctx, key), empty="n/a")


def _by_t(d: dict[str, Any], prefix: str) -> tuple[np.ndarray, np.ndarray]:
    pat = re.compile(rf"^{prefix}(\d+)(?:\[.*\])?$")
    items = sorted((int(m.group(1)), v) for k, v in d.items() if (m := pat.match(k)) and v is not None)
    return np.array([t for t, _ in items]), np.array([v for _, v in items], np.float64)


def _first(ctx: ReportContext, metric: str) -> np.ndarray:
    """[R] the metric at the first evaluation (step 0, before training) of every run; empty when not recorded."""
    sub = ctx.df[ctx.df.metric == metric]
    if sub.empty:
        return np.array([], np.float64)
    first = sub[sub.step == sub.step.min()]
    return first.groupby("run")["value"].last().to_numpy(np.float64)


def _ratio(ctx: ReportContext) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return finals(ctx, "eval_loss") / finals(ctx, "gd_loss")


def _loss_figure(
    ctx: ReportContext, right: tuple[str, ...], filename: str, model: str = "trained", log_loss: bool = False
) -> str:
    """Left: eval_loss (labelled `model`) against gd_loss over training, on a log scale with `log_loss`;
    right: the `right` metrics. Saved as `filename`."""
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    quantile_curves(axes[0], ctx.df, "eval_loss", label=f"{model} (eval_loss)")
    quantile_curves(axes[0], ctx.df, "gd_loss", label="one GD step (gd_loss)", show_runs=False)
    if log_loss:
        axes[0].set_yscale("log")
    axes[0].set_xlabel("optimizer step")
    axes[0].set_ylabel("loss")
    axes[0].legend(fontsize=8)
    for m in right:
        quantile_curves(axes[1], ctx.df, m, label=m)
    axes[1].set_xlabel("optimizer step")
    axes[1].legend(fontsize=8)
    return ctx.save(fig, filename)


def gd_start_section(ctx: ReportContext) -> Section:
    """Report section of the control that starts the full model at one GD step (`probe.start = "gd"`)."""
    rows = [
        ["model_cos (vs fitted GD)", spread(_first(ctx, "model_cos"), empty="n/a"), _cell(ctx, "model_cos")],
        [
            "trained loss / one-step-GD loss",
            spread(_first(ctx, "eval_loss") / _first(ctx, "gd_loss"), empty="n/a"),
            spread(_ratio(ctx), empty="n/a"),
        ],
        ["eval_loss", spread(_first(ctx, "eval_loss"), empty="n/a"), _cell(ctx, "eval_loss")],
        ["preds_diff", spread(_first(ctx, "preds_diff"), empty="n/a"), _cell(ctx, "preds_diff")],
        ["c_offblock_ratio", spread(_first(ctx, "c_offblock_ratio"), empty="n/a"), _cell(ctx, "c_offblock_ratio")],
        ["kq share query s_t / key s_{t'-1} (GD: 1)", "1", _cell(ctx, "kq_cur_prev")],
        ["vo share value s_t' (GD: 1)", "1", _cell(ctx, "vo_cur")],
        ["abs. angle of B's 2x2 blocks (GD: 0)", "0", _cell(ctx, "b_block_angle")],
    ]
    body = (
        "**The control.** augmented-commuting's training (the full linear-attention layer, d = 10, T = 20, "
        "commuting W, Adam lr 1e-2, same steps and seeds) started at one GD step: W_Q W_K^T's (s_t, s_{t'-1}) "
        "block I and W_V W_O's (s_t', prediction) block eta I with the eta fitted on the evaluation set, every other "
        "weight 0 (`probe.start = gd`). From a random start the same training reaches GD's loss (ratio 0.998) with "
        "model_cos 0.709 [0.658, 0.774] (docs/reproductions/icl-autoregressive). If the GD start stays at GD "
        "(model_cos >= 0.99) at the same loss, GD and the random start's solutions are distinct optima of equal "
        "loss; if it leaves GD for a lower loss, GD is not the full model's optimum. Verdicts: claims "
        "gd_start_stays_at_gd and gd_start_loss_no_worse.\n\n"
        "**Measured** (median [min, max] over runs):\n\n"
        + table(["quantity", "at the start (step 0)", "at the end"], rows)
    )
    name = _loss_figure(ctx, ("model_cos", "c_offblock_ratio"), "gd_comparison.png")
    caption = f"The GD-start control over training (median, 10-90% band). {ctx.provenance()}"
    return Section("Control: the full model started at one GD step", body, [Figure(name, caption)])


def fig5_section(ctx: ReportContext) -> Section:
    """Report section of augmented.py's model (biases, LayerNorm, read-out; preset paper-fig5): its loss against
    one GD step's, the only comparison the paper makes for Haar W (Fig. 5)."""
    rows = [
        ["trained loss / one-step-GD loss", spread(_ratio(ctx), empty="n/a")],
        ["eval_loss", _cell(ctx, "eval_loss")],
        ["gd_loss (eta fitted)", _cell(ctx, "gd_loss")],
        ["model_cos (vs fitted GD; reported, no claim: Haar W)", _cell(ctx, "model_cos")],
        ["preds_diff", _cell(ctx, "preds_diff")],
    ]
    reference = ctx.summary.get("reference", {})
    controls = [
        ("one GD step, eta fitted per position (gd_pos_eta_loss)", "gd_pos_eta_loss"),
        ("one GD step scaled to ||s_t|| (gd_state_norm_loss)", "gd_state_norm_loss"),
        ("bound: the target projected on one GD step's update (gd_direction_oracle_loss)", "gd_direction_oracle_loss"),
    ]
    for label, key in controls:
        value = reference.get(key)
        if value is not None:
            rows.append([label, fmt(value)])
            rows.append([f"trained loss / {key}", spread(finals(ctx, "eval_loss") / value, empty="n/a")])
    m = ctx.cfg.model
    where = (
        "where augmented.py's does, on the attention output"
        if m.layernorm and m.norm_position == "attn_out"
        else f"elsewhere (model.layernorm = {m.layernorm}, model.norm_position = {m.norm_position})"
    )
    body = (
        "**Paper (Sander et al. 2024, Fig. 5, augmented.py):** a one-layer linear-attention model with biases, "
        "LayerNorm on the attention output and a linear read-out, trained on augmented tokens with W ~ Haar O(5), "
        "T = 50, s_0 = ones / sqrt(5), Adam lr 1e-2, batch 1024; its loss is compared with the one-step-GD "
        "predictor's (for non-commuting W the paper compares losses only). This model's LayerNorm sits "
        f"{where} (Deviations). The model has no plain W_Q W_K^T / W_V W_O blocks, so the structure metrics are "
        "not measured; model_cos and preds_diff are functional and reported.\n\n"
        "**Controls of the GD baseline** (no training; the same evaluation sequences): gd_loss uses one eta at every "
        "position, while its update sums t terms, so one step size cannot suit early and late positions alike. "
        "Two one-step-GD predictors that lift that restriction: eta fitted per position, and the update scaled to "
        "the current state's norm (what a normalization of the attention output, such as this model's LayerNorm, "
        "can give with no step size fitted; ||s_{t+1}|| = ||s_t|| for orthogonal W). And a bound that is not a "
        "predictor: each target projected on one GD step's update (it reads the target), the lowest loss of one GD "
        "step with any step size, normalization or gain per task and position. A trained loss below the bound "
        "means the model does not predict along one GD step's update.\n\n"
        "**Measured** (median [min, max] over runs):\n\n" + table(["quantity", "value"], rows)
    )
    name = _loss_figure(ctx, ("model_cos",), "gd_comparison.png")
    caption = f"augmented.py's model against the fitted one-step GD (median, 10-90% band). {ctx.provenance()}"
    return Section("augmented.py's model (Fig. 5) vs one GD step", body, [Figure(name, caption)])


def gd_section(ctx: ReportContext) -> Section:
    """Report section: the trained model against the fitted one-step GD (table of final metrics and the curves
    `gd_comparison.png`)."""
    rows = [
        ["trained loss / one-step-GD loss", spread(_ratio(ctx), empty="n/a")],
        ["eval_loss", _cell(ctx, "eval_loss")],
        ["gd_loss (eta fitted)", _cell(ctx, "gd_loss")],
        ["model_cos (vs fitted GD)", _cell(ctx, "model_cos")],
        ["preds_diff", _cell(ctx, "preds_diff")],
        ["block_loss (B, A read off the model)", _cell(ctx, "block_loss")],
        ["block_model_cos (model vs its B, A read-off)", _cell(ctx, "block_model_cos")],
        ["abs. angle of B's 2x2 blocks (GD: 0)", _cell(ctx, "b_block_angle")],
        ["abs. angle of A^T's 2x2 blocks (GD: 0)", _cell(ctx, "a_block_angle")],
        ["kq share query s_t / key s_{t'-1} (GD: 1)", _cell(ctx, "kq_cur_prev")],
        ["kq share query s_t / key s_t' (backward: 1)", _cell(ctx, "kq_cur_cur")],
        ["vo share value s_t' (GD: 1)", _cell(ctx, "vo_cur")],
        ["vo share value s_{t'-1} (backward: 1)", _cell(ctx, "vo_prev")],
    ]
    if ctx.cfg.model.attention == "constrained_gd":
        return gd_form_section(ctx, rows)
    if getattr(ctx.cfg.probe, "start", "random") == "gd":
        return gd_start_section(ctx)
    body = (
        "**Paper (Sander et al. 2024, augmented tokens, commuting W):** the optimum of the constrained "
        "(A, B, P) parametrization implements one gradient step on L(W) = 1/2 sum ||s_t - W s_{t-1}||^2, "
        "i.e. y_hat_t = eta sum_{t'} s_t' s_{t'-1}^T s_t (Sec. 3). jaxlab trains the full linear-attention "
        "parametrization, so the values below describe that model; the verdicts are in the Claims table.\n\n"
        "**Measured** (median [min, max] over runs):\n\n"
        + table(["quantity", "value"], rows)
        + "\n\n**Hypothesis and its control.** A full-parametrization model can match "
        "GD's loss without GD's predictions: the block-structured predictors y_hat = c sum (s_t^T R s_{t'-1}) "
        "R s_t' with R a rotation inside every 2x2 plane of W (R commutes with W) are GD on the rotated start "
        "state R s_0, and within one plane their loss equals GD's; the backward estimator "
        "sum_{t'} F s_{t'-1} s_t'^T F s_t with a reflection F in each plane is another such predictor. Whether "
        "the trained models' lower model_cos comes from such optima is NOT established by these numbers. The "
        "control (preset constrained-gd-commuting, docs/reproductions/icl-autoregressive-constrained-gd): the Sec. 3 "
        "constrained form trained the same way does not reach GD either (claim gd_form_predictions_equal_gd), with "
        "B and A^T rotated by the same angle in every plane, so the full model's extra freedom is not the "
        "difference. The kq/vo shares and block angles describe the "
        "weights; block_loss and block_model_cos measure the forward (GD-shaped) part alone.\n"
    )
    name = _loss_figure(ctx, ("model_cos", "c_offblock_ratio"), "gd_comparison.png")
    caption = f"Trained model vs the fitted one-step GD over training (median, 10-90% band). {ctx.provenance()}"
    return Section("Trained model vs one GD step", body, [Figure(name, caption)])


def gd_form_section(ctx: ReportContext, rows: list[list[str]]) -> Section:
    """Report section of the control (`attention="constrained_gd"`): the Sec. 3 form trained as the full model."""
    rows = [r for r in rows if not r[0].startswith(("kq ", "vo "))]  # no (W_Q, W_K, W_V, W_O) to split
    body = (
        "**The control.** The Sec. 3 constrained form y_t = sum_{t'} (s_t^T B s_{t'-1}) A^T s_t' (B, A [d, d]), whose "
        "optimum the paper states is one GD step (B = I, A = eta I) for commuting W, trained exactly as the full "
        "model of augmented-commuting (same task, optimizer, steps and seeds). The full model's reading "
        "(docs/reproductions/icl-autoregressive): loss ratio 0.998, model_cos 0.709 [0.658, 0.774]. If this form "
        "reaches GD, the full model's extra freedom explains its non-GD predictions; if not, the constrained form "
        "has non-GD optima of (nearly) GD's loss as well. Block angles: the rotation angle of each 2x2 block of B "
        "and A^T (0 for GD; the rotated estimators c sum (s_t^T R s_{t'-1}) R s_t' with R a rotation in every plane "
        "of W have B and A^T rotated by the same angle).\n\n"
        "**Measured** (median [min, max] over runs):\n\n" + table(["quantity", "value"], rows)
    )
    fig, ax = plt.subplots(figsize=(6, 3.8))
    quantile_curves(ax, ctx.df, "model_cos", label="model_cos")
    quantile_curves(ax, ctx.df, "c_offblock_ratio", label="c_offblock_ratio")
    ax.set_xlabel("optimizer step")
    ax.legend(fontsize=8)
    name = ctx.save(fig, "gd_comparison.png")
    caption = f"The constrained_gd control over training (median, 10-90% band). {ctx.provenance()}"
    return Section("Control: the Sec. 3 constrained form vs one GD step", body, [Figure(name, caption)])


def is_pe_only(ctx: ReportContext) -> bool:
    """The PE-only setting (positional attention, unitary lambda = exp(i theta / mu))."""
    return ctx.cfg.model.attention == "positional" and ctx.cfg.task.w_kind == "unitary"


def structure_section(ctx: ReportContext) -> Section:
    """Report section: structure read off the trained weights (C off-block ratio, positional mass, lag fit, head
    cosines) beside the paper's."""
    # the extrapolation s_{t+1} ~ 2 s_t - s_{t-1} (lag ratio -1/2) is a slow-rotation limit: shown
    # beside the PE-only setting only; other models have no theory value for the lag fit
    lag_theory = "-1/2 (slow rotations: y_hat ~ 2 s_t - s_{t-1})" if is_pe_only(ctx) else "— (no theory value here)"
    rows = [
        [
            "c_offblock_ratio (C = B^T A off the 2x2 blocks)",
            "C block-diagonal (0) at the constrained optima (Sec. 3-4, Fig. 3)",
            _cell(ctx, "c_offblock_ratio"),
        ],
        [
            "p_superdiag_mass (positional model)",
            "the last two tokens only, for 2x2-rotation W (Fig. 3, constrained P)",
            _cell(ctx, "p_superdiag_mass"),
        ],
        ["lag1_ratio = a_1 / a_0 of y_hat ~ sum a_k s_{t-k}", lag_theory, _cell(ctx, "lag1_ratio")],
        [
            "head_cos (mean abs. cosine between heads)",
            "orthogonal heads (0) at the diagonal model's optimum (Sec. 4)",
            _cell(ctx, "head_cos"),
        ],
        ["p_top_sv_frac (positional spectrum)", "—", _cell(ctx, "p_top_sv_frac")],
    ]
    if ctx.cfg.model.n_heads > 1:
        rows.insert(
            4,
            [
                "head_cos at the start (step 0: random heads)",
                "the control for head_cos (random vectors are nearly orthogonal)",
                spread(_first(ctx, "head_cos"), empty="n/a"),
            ],
        )
    body = (
        "Structure read off the trained weights, beside the structure the paper derives for its constrained "
        "parametrizations (where one applies). For a 2x2 rotation by theta, s_{t+1} = 2 cos(theta) s_t - "
        "s_{t-1} exactly; for slow rotations (the PE-only setting, large mu) this is close to the extrapolation "
        "s_{t+1} ~ 2 s_t - s_{t-1}, whose lag ratio is -1/2. That value is jaxlab's reading of the "
        "trigonometric relation, not a number the paper reports, and it is shown only for the PE-only setting: "
        "for other models the lag fit has no theory value (with augmented tokens the prediction is not a fixed "
        "combination of s_t and s_{t-1}), and the ratio is unstable wherever a_0 is near 0. The residual stream adds "
        "s_t to the prediction, which the lag fit includes. Metrics that do not apply to the model are n/a.\n\n"
        + table(["quantity", "paper / theory (where it applies)", "measured: median [min, max]"], rows)
    )
    if is_pe_only(ctx):
        body += "\n\n" + pe_only_table(ctx)
    return Section("Learned structure", body)


def pe_only_table(ctx: ReportContext) -> str:
    """Per mu: the last row's diagonal P[T-1, T-1] and the mass on the last two tokens, beside pe_only.py's P."""
    rows = []
    runs = ok_runs(ctx)
    for mu in sorted({float(r["hparams"].get("task.mu", ctx.cfg.task.mu)) for r in runs}):
        at = [r["final"] for r in runs if float(r["hparams"].get("task.mu", ctx.cfg.task.mu)) == mu]
        diag = np.array([f.get("p_last_diag") for f in at if f.get("p_last_diag") is not None], np.float64)
        mass = np.array([f.get("p_superdiag_mass") for f in at if f.get("p_superdiag_mass") is not None], np.float64)
        paper = PE_ONLY_DIAGONAL.get(mu)
        rows.append([f"{mu:g}", "—" if paper is None else f"{paper:g}", spread(diag, empty="n/a"), spread(mass)])
    return (
        "P's last-row diagonal per mu beside pe_only.py's (a free signed P there; a softmax over positions here, "
        "so the numbers are different quantities of the same place in P):\n\n"
        + table(["mu", "pe_only.py P[T-1, T-1]", "P[T-1, T-1] (jaxlab)", "mass on the last two tokens"], rows)
    )


def position_section(ctx: ReportContext) -> Section:
    """Report section: loss and W_hat error by position, runs against one GD step (`by_position.png`)."""
    ref = ctx.summary.get("reference", {})
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
    for f in (r["final"] for r in ok_runs(ctx)):
        t, v = _by_t(f, "loss_t")
        axes[0].plot(t, v, color="C0", alpha=0.3, lw=0.8)
        t, v = _by_t(f, "w_hat_err_t")
        axes[1].plot(t, v, color="C0", alpha=0.3, lw=0.8)
    for ax, prefix in ((axes[0], "gd_loss_t"), (axes[1], "gd_w_hat_err_t")):
        t, v = _by_t(ref, prefix)
        if t.size:
            ax.plot(t, v, "k--", lw=1.5, label="one GD step")
        ax.plot([], [], color="C0", label="trained runs")
        ax.set_xlabel("position t (context length t + 1)")
        ax.legend(fontsize=8)
    axes[0].set_ylabel("loss at t")
    axes[1].set_ylabel("||W_hat_t - W||_F / ||W||_F")
    name = ctx.save(fig, "by_position.png")
    body = (
        "**Paper:** the model learns W in context, so its error falls with the context length t. "
        f"Final W_hat error at the last position: {_cell(ctx, 'w_hat_rel_err')} "
        f"(one GD step: {fmt(ref.get('gd_w_hat_rel_err', float('nan')))})."
    )
    caption = f"Loss and in-context W estimation error by position. {ctx.provenance()}"
    return Section("Loss and W estimation vs context length", body, [Figure(name, caption)])


def paper_optimum_text(ctx: ReportContext) -> str:
    """The control of constrained_optimum_is_gd: the paper's released (C, P) plugged into the model, no training
    (reference values paper_optimum_*, `probes.constrained_optimum.fixed_point_metrics`), beside the trained model;
    empty when the run did not compute it."""
    ref = ctx.summary.get("reference", {})
    if "paper_optimum_model_cos" not in ref:
        return ""
    paper_loss = ref["paper_optimum_loss"]
    with np.errstate(divide="ignore", invalid="ignore"):
        trained_vs_paper = finals(ctx, "eval_loss") / paper_loss
    rows = [
        ["model_cos (vs one GD step)", fmt(ref["paper_optimum_model_cos"]), _cell(ctx, "model_cos")],
        ["eval_loss", fmt(paper_loss), _cell(ctx, "eval_loss")],
        ["loss / one-step-GD loss", fmt(ref["paper_optimum_loss_ratio"]), spread(_ratio(ctx), empty="n/a")],
        ["trained loss / paper optimum's loss", "1", spread(trained_vs_paper, empty="n/a")],
        ["preds_diff (vs one GD step)", fmt(ref["paper_optimum_preds_diff"]), _cell(ctx, "preds_diff")],
    ]
    return (
        "\n\n**Control: the paper's optimum itself, no training.** The same model with orthogonal.py's released "
        "values plugged in (C = -1.289 blockdiag([[1, 1], [1, 1]]) as B^T A, head k < d / 2 carrying block k; "
        "P[t, t+1] = -0.776, P[t, t] = +0.388, every other entry of P 0; c x P[t, t+1] = 1.0003 as released), "
        "scored on the same evaluation sequences against the same fitted one-step GD. If its model_cos is as far "
        "below issue 21's 0.99 as the trained model's, the bar conflicts with the paper's own solution (which "
        "predicts s_{t+2} from the last two tokens, not by one GD step over the context):\n\n"
        + table(["quantity", "paper's optimum (no training)", "trained (median [min, max])"], rows)
    )


def constrained_section(ctx: ReportContext) -> Section:
    """Report section of the constrained (A, B, P) model: the learned C and P beside orthogonal.py's, the
    gauge-invariant products, the comparison with one GD step, and their curves (`constrained.png`)."""
    paper_cos = ctx.summary.get("reference", {}).get("paper_optimum_model_cos")
    paper_cos = "" if paper_cos is None else f"; the paper's optimum itself: {fmt(paper_cos)} (control below)"
    rows = [
        ["C block, diagonal entries (gauge P[t, t+1] < 0)", "-1.289", _cell(ctx, "c_block_diag")],
        ["C block, anti-diagonal entries", "-1.289", _cell(ctx, "c_block_anti")],
        ["C off the 2x2 blocks (fraction of the norm)", "0", _cell(ctx, "c_offblock_ratio")],
        ["P[t, t+1] (jaxlab's P[u, u])", "-0.776", _cell(ctx, "p_next")],
        ["P[t, t] (jaxlab's P[u, u-1])", "+0.388", _cell(ctx, "p_prev")],
        ["share of abs(P) on older tokens", "< 1e-6 per entry", _cell(ctx, "p_other_frac")],
        ["c x P[t, t+1] (gauge-invariant)", "1.000", _cell(ctx, "cp_next")],
        ["P[t, t] / P[t, t+1] (gauge-invariant)", "-0.5", _cell(ctx, "p_prev_ratio")],
        ["eval_loss", "0 (exact recurrence)", _cell(ctx, "eval_loss")],
        ["gd_loss (one GD step, eta fitted)", "—", _cell(ctx, "gd_loss")],
        ["trained loss / one-step-GD loss", "—", spread(_ratio(ctx), empty="n/a")],
        ["model_cos (vs one GD step)", "issue 21's bar: >= 0.99" + paper_cos, _cell(ctx, "model_cos")],
    ]
    body = (
        "**Paper (Sander et al. 2024, Sec. 4, Fig. 3 right; orthogonal.py):** the constrained model "
        "y_t = sum_{t'} P[t, t'] s_t' sum_j C_ji s_{t-1},j s_t',j (diagonal heads, C = B^T A, a free signed P) "
        "optimized on 2x2-rotation W reaches C = -1.289 [[1, 1], [1, 1]] on the blocks, P[t, t+1] = -0.776, "
        "P[t, t] = +0.388: the exact recurrence s_{t+2} = 2 cos(theta) s_{t+1} - s_t from the last two tokens. "
        "The loss is unchanged by (C, P) -> (g C, P / g), so the raw values are the optimizer's (gradient flow "
        "keeps ||A||^2 - ||P||^2 from the initialization); the products are the loss's.\n\n"
        "**Measured** (median [min, max] over runs):\n\n"
        + table(["quantity", "paper (orthogonal.py)", "measured"], rows)
        + paper_optimum_text(ctx)
    )
    right = ("cp_next", "p_prev_ratio", "p_other_frac", "model_cos")
    name = _loss_figure(ctx, right, "constrained.png", model="constrained model", log_loss=True)
    caption = f"The constrained model over training (median, 10-90% band). {ctx.provenance()}"
    return Section("Constrained (A, B, P) model vs the paper and one GD step", body, [Figure(name, caption)])


def sections(ctx: ReportContext) -> list[Section]:
    """The experiment's report sections (`Experiment.report`); none when no run finished ok."""
    if not ok_runs(ctx):
        return []
    if ctx.cfg.model.attention == "constrained":
        return [constrained_section(ctx), position_section(ctx)]
    m = ctx.cfg.model
    if m.use_bias or m.layernorm or m.readout != "y_block":  # augmented.py's model: functional metrics only
        return [fig5_section(ctx), position_section(ctx)]
    return [gd_section(ctx), structure_section(ctx), position_section(ctx)]
