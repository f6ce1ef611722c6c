"""Report sections of steerability about what steering does: onsets per concept with bootstrap intervals
(and against the first concept, the ablation's reading), steering scored on generations beside the
next-token mass, and the harm of steering on non-concept text over training.

Everything is read from the run directory (`ctx.df`, `ctx.summary`) in the metric-parameter form
(`steerability_report.sections` converts an older run directory first). Intervals are the 95%
percentile-bootstrap intervals of the median over runs (`jaxlab.claims.bootstrap_median_ci`, the
claims' own); an onset never reached counts as later than every checkpoint (censored), so a median
or bound that falls on such a run reads 'never'.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from jaxlab.claims import bootstrap_median_ci
from jaxlab.experiments import steerability_claims as claims
from jaxlab.reporting import ReportContext, Section, finals, finite_median_ci, fmt, ok_runs, spread, table
from jaxlab.results import metric_name


def censored_median_ci(values_R: np.ndarray, never: float) -> tuple[float, float, float]:
    """(median, ci_low, ci_high) over runs of a censored value (NaN: never reached), NaN ones counted as `never`
    (a value above every finite one, returned as it is where it decides a bound); all NaN without runs."""
    x = np.asarray(values_R, np.float64)
    if x.size == 0:
        return np.nan, np.nan, np.nan
    return bootstrap_median_ci(np.where(np.isnan(x), never, x))


def _cell(stat: tuple[float, float, float], never: float) -> str:
    """'median [low, high]' with `never` written as never."""
    show = lambda v: "never" if v >= never else fmt(float(v))
    return "—" if not np.isfinite(stat[0]) else f"{show(stat[0])} [{show(stat[1])}, {show(stat[2])}]"


def onset_ci_section(ctx: ReportContext) -> Section:
    """Per concept, the steering and separability onset steps (median over runs, 95% bootstrap CI), the onset gap
    to the first concept in evaluations, and the close pair's |gap| (the claims' statistic)."""
    task, total = ctx.cfg.task, ctx.cfg.train.steps
    never = float(2 * total)  # above every checkpoint step
    R = len(ok_runs(ctx))
    rows = []
    for c in task.names:
        steer = finals(ctx, metric_name("steer_onset_step", concept=c))
        sep = finals(ctx, metric_name("sep_onset_step", concept=c))
        gap = finals(ctx, metric_name("steer_onset_gap_vs_first", concept=c)) if c != task.names[0] else None
        gap_cell = "reference" if gap is None else _cell(finite_median_ci(gap), np.inf)
        rows.append(
            [
                c,
                _cell(censored_median_ci(steer, never), never),
                f"{int(np.isfinite(steer).sum())}/{R}",
                _cell(censored_median_ci(sep, never), never),
                f"{int(np.isfinite(sep).sum())}/{R}",
                gap_cell,
            ]
        )
    header = [
        "concept",
        "steering onset step",
        "reached",
        "separability onset step",
        "reached",
        f"steering onset minus {task.names[0]}'s (evaluations)",
    ]
    body = (
        f"Median over {R} runs [95% bootstrap CI of the median]; a run that never reaches the threshold counts as "
        "later than every checkpoint ('never'). The last column is the per-run gap to the first concept "
        f"({task.names[0]}), in evaluations (a concept never reached: one past the last), the ablation's reading: "
        "in a language whose concepts differ from the first in one property each, it says which property moves "
        "the onset.\n\n" + table(header, rows)
    )
    first = task.names[0]
    diff_rows = []
    for c in task.names[1:]:
        row = [c]
        for name in ("concept_gap", "separability", "steer_effect", "gen_effect"):
            paired = finals(ctx, metric_name(name, concept=c)) - finals(ctx, metric_name(name, concept=first))
            row.append(_cell(finite_median_ci(paired), np.inf))
        diff_rows.append(row)
    body += (
        f"\n\nAt the last checkpoint, each concept minus {first}, paired per run (median [95% bootstrap CI]): "
        "what the model learned of the concept (concept_gap: its next-token mass on vs off; separability, best "
        "layer) and how far steering moves it (steer_effect, gen_effect, best layer). Where no concept reaches an "
        "onset, these say which property of a concept sets how much of it is learned.\n\n"
        + table(["concept", "concept_gap", "separability", "steer_effect", "gen_effect"], diff_rows)
    )
    if task.close_pair:
        a, b = (task.names[k] for k in task.close_pair)
        pair_rows = [
            [f"{name} onset |{a} - {b}| (evaluations)", _cell(finite_median_ci(finals(ctx, key)), np.inf)]
            for name, key in (
                ("steering", "close_pair_steer_onset_absgap"),
                ("separability", "close_pair_sep_onset_absgap"),
            )
        ]
        pairs = claims.distant_pairs(task)
        note = ""
        if pairs:
            grid = ctx.cfg.train.eval_steps()
            onsets_KR = np.stack(
                [
                    claims.onset_indices(finals(ctx, metric_name("steer_onset_step", concept=c)), grid)
                    for c in task.names
                ]
            )
            distant_R = claims.median_pair_absgap(onsets_KR, pairs, len(grid))
            close_R = finals(ctx, "close_pair_steer_onset_absgap")
            names = ", ".join(f"{task.names[c]}-{task.names[d]}" for c, d in pairs)
            pair_rows += [
                [
                    f"control: steering onset |{a} or {b} - a concept sharing no feature with them, same frequency "
                    f"and strength| (evaluations; per run the median over {names})",
                    _cell(finite_median_ci(distant_R), np.inf),
                ],
                [
                    "steering onset |gap| of the close pair minus the control's, paired per run",
                    _cell(finite_median_ci(close_R - distant_R), np.inf),
                ],
            ]
            note = (
                " The control rows give how far apart the steering onsets of concepts that the language makes alike "
                "but that share nothing fall in these runs. They do not explain the close pair's |gap|: the pair's "
                f"steering scores count the same tokens for the {task.n_shared} of {task.n_markers} features they "
                "share, so the two onsets are largely one measurement (the claim is untested for that reason)."
            )
            if task.language == "cooccur":
                note += (
                    " The control concepts also differ from the pair in more than sharing: they use the pool's b "
                    "tokens, the pair fresh ones, and the pair's shared pairs occur whenever either concept is on."
                )
        body += "\n\nClose pair, per run." + note + "\n\n" + table(["statistic", "median [95% CI]"], pair_rows)
    return Section("Onsets with confidence intervals", body)


def generation_section(ctx: ReportContext) -> Section:
    """Steering scored two ways at the last checkpoint, best layer: next-token mass moved onto the concept
    (steer_effect) and the concept's rate in sampled continuations, steered minus unsteered (gen_effect)."""
    probe = ctx.cfg.probe
    rows = []
    for c in ctx.cfg.task.names:
        rows.append(
            [
                c,
                _cell(finite_median_ci(finals(ctx, metric_name("steer_effect", concept=c))), np.inf),
                _cell(finite_median_ci(finals(ctx, metric_name("gen_effect", concept=c))), np.inf),
                spread(finals(ctx, metric_name("gen_rate_unsteered", concept=c))),
            ]
        )
    body = (
        f"At the last checkpoint, best layer, median over runs [95% bootstrap CI]. steer_effect: next-token "
        f"probability mass moved onto the concept (alpha {probe.alpha_eval} x the layer's RMS norm). gen_effect: the "
        f"concept's rate in {probe.n_gen_tokens} tokens sampled after each of {probe.n_steer} non-concept prompts "
        "(markers: its markers per sampled token; cooccur: its pairs completed per sampled token), steered at every "
        "position minus unsteered, both lanes drawing with the same Gumbel noise (fixed keys). The unsteered rate "
        "is the last column (median [min, max]).\n\n"
        + table(["concept", "steer_effect (mass)", "gen_effect (rate)", "unsteered rate"], rows)
    )
    return Section("Steering on generations", body)


def harm_series(df: pd.DataFrame, names: Sequence[str], n_layers: int) -> tuple[np.ndarray, np.ndarray]:
    """(steps [n], loss change [R, n]): steer_loss_delta averaged over layers and concepts per run and checkpoint."""
    sub = df[(df.metric == "steer_loss_delta") & df.concept.isin(list(names)) & df.layer.isin(range(n_layers))]
    wide = sub.pivot_table(index="run", columns="step", values="value", aggfunc="mean")
    return np.asarray(wide.columns, np.float64), wide.to_numpy(np.float64)


def harm_section(ctx: ReportContext) -> Section:
    """The loss change on non-concept text under steering at every checkpoint (median over runs), and which
    checkpoints the claim counts as early."""
    try:
        steps, harm = harm_series(ctx.df, ctx.cfg.task.names, ctx.cfg.model.n_layers)
    except (AttributeError, KeyError):
        return Section("Harm of steering over training", "Not measured in this run directory.")
    if harm.size == 0:
        return Section("Harm of steering over training", "Not measured in this run directory.")
    early = claims.early_evaluations(steps, ctx.cfg.train.steps)
    rows = [
        [int(s), "early" if e else ("last" if i == len(steps) - 1 else ""), spread(harm[:, i])]
        for i, (s, e) in enumerate(zip(steps, early))
    ]
    body = (
        "Change of the next-token loss (nats) on non-concept text (the steered base sequences) when the concept's "
        f"direction is added at alpha {ctx.cfg.probe.alpha_eval} x the layer's RMS norm at every position, against "
        "the unsteered model at the same checkpoint; mean over layers and concepts, median [min, max] over runs. "
        "The claim `early_steering_hurts` compares the early checkpoints' mean (0 < step <= "
        f"{claims.MID_BAND[0]} of training) with the last one.\n\n"
        + table(["step", "", "loss change under steering"], rows)
    )
    return Section("Harm of steering over training", body)
