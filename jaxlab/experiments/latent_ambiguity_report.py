"""Report sections of latent-ambiguity: languages, ICL curves, Jiang's first-letter metric, emergence, posterior
probe, bars.

Everything is read from the run directory (`ctx.df`, `ctx.summary`); "median [min, max]" are over
the seeds of one grid point. The metrics are `kl_truth[message=1,language=0]` (metric `kl_truth`,
columns `message`, `position`, `language` in the tidy table); a run directory written before metric
parameters (`kl_truth_m1_a0`, reference `ambiguity_a0`) is read too (`language_form`).
"""

from __future__ import annotations

from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from jaxlab.experiments.latent_ambiguity_claims import (
    BAYES_TOLERANCE,
    JIANG_ICL_KL,
    JIANG_MAX_M,
    current_names,
    language_metric,
    parse_language_metric,
)
from jaxlab.reporting import Figure, ReportContext, Section, fmt, point_columns, spread, table
from jaxlab.results import config_key

_COLUMNS = ("message", "position", "language")  # the metric parameters of the tidy table

# Jiang's labelled ambiguity of the languages the presets' grids mimic: (message_len, c) -> label.
CALIBRATED = {
    (8, 0.0): 0.0, (8, 0.0098): 0.065, (8, 0.0227): 0.157, (21, 0.0): 0.0, (21, 0.0269): 0.065, (21, 0.0485): 0.157,
}  # fmt: skip
BAR_KL_BAYES = BAYES_TOLERANCE


def language_form(df: pd.DataFrame) -> pd.DataFrame:
    """`df` (a tidy table) with the metrics of a run directory written before metric parameters (`kl_truth_m1_a0`,
    `kl_truth_pos3_a0`, `kl_bayes_mean_a0`) split as the tidy tables split `kl_truth[message=1,language=0]`: metric
    `kl_truth`, columns `message`, `position`, `language` (float, NaN where a metric has no such parameter); the
    columns are there, empty, when no metric has them. A table of the new form is returned with its columns."""
    parsed = {m: p for m in pd.unique(df.metric) if (p := parse_language_metric(m)) is not None}
    values = {key: {m: float(p[1][key]) for m, p in parsed.items() if key in p[1]} for key in _COLUMNS}
    out = df.copy()
    legacy = out.metric.isin(list(parsed))
    for key in _COLUMNS:
        old = out[key].astype("float64") if key in out.columns else pd.Series(np.nan, index=out.index)
        out[key] = old.where(~legacy, out.metric.map(values[key]).astype("float64"))
    out.loc[legacy, "metric"] = out.loc[legacy, "metric"].map(lambda m: parsed[m][0])
    return out


def final_frame(ctx: ReportContext) -> pd.DataFrame:
    """Final value of every metric of a language per run: run, seed, size, base, m, pos, a, value (m: the scored
    message, NaN for the per-position and per-language metrics; pos: the slot, NaN for the others)."""
    df = language_form(ctx.df).dropna(subset=["language"])
    keys = ["run", "metric", *_COLUMNS]
    last = df.sort_values("step").groupby(keys, as_index=False, dropna=False).last()
    last = last.rename(columns={"metric": "base", "message": "m", "position": "pos", "language": "a"})
    last["a"] = last["a"].astype(int)
    last["size"] = size_labels(last, ctx)
    return last


def size_columns(df: pd.DataFrame) -> list[str]:
    """The swept model columns of `df` (`model.*` grid keys): what tells the model sizes apart."""
    return [c for c in point_columns(df) if c.startswith(("model__", "model."))]


def size_labels(df: pd.DataFrame, ctx: ReportContext) -> pd.Series:
    """A model-size label per row of `df`: its swept model keys (`n_layers=2, d_model=64`), or the config's size when
    none is swept."""
    cols = size_columns(df)
    if not cols:
        m = ctx.cfg.model
        return pd.Series(f"{m.n_layers} layers, d {m.d_model}", index=df.index)
    name = lambda c: config_key(c).split(".", 1)[1]
    return df[cols].astype(str).agg(lambda r: ", ".join(f"{name(c)}={v}" for c, v in zip(cols, r)), axis=1)


def _reference(ctx: ReportContext) -> dict[str, Any]:
    """summary.json's reference, named as `language_metric` names it (either form of the run directory)."""
    return current_names(ctx.summary.get("reference", {}))


def _ambiguity_rows(ctx: ReportContext) -> list[int]:
    parsed = [parse_language_metric(k) for k in _reference(ctx)]
    return sorted(p[1]["language"] for p in parsed if p is not None and p[0] == "epsilon" and set(p[1]) == {"language"})


def languages_section(ctx: ReportContext) -> Section:
    """Report section: every language trained on, its ambiguity constants and its measured epsilon (± standard error),
    Jiang's label where calibrated."""
    ref = _reference(ctx)
    L, M = ctx.cfg.task.message_len, ctx.cfg.task.n_messages
    rows = []
    for a in _ambiguity_rows(ctx):
        c = ref.get(language_metric("ambiguity", a))
        label = CALIBRATED.get((L, round(c, 6))) if c is not None else None
        eps = f"{fmt(ref[language_metric('epsilon', a)])} ± {fmt(ref.get(language_metric('epsilon_se', a)))}"
        multi = " / ".join(fmt(ref.get(language_metric("epsilon", a, messages=m)), 3) for m in range(2, M + 1))
        jiang = ref.get(language_metric("epsilon_transitions", a))
        jiang_cell = (
            "—" if jiang is None else f"{fmt(jiang)} ± {fmt(ref.get(language_metric('epsilon_transitions_se', a)))}"
        )
        rows.append([a, c, ref.get(language_metric("first_letter_ambiguity", a)), label, eps, multi, jiang_cell])
    body = (
        "Measured ambiguity of every language trained on: epsilon = E_x[1 - max_theta p(theta | x)] over "
        "messages x, with the exact posterior (uniform prior), ± its Monte Carlo standard error; "
        f"epsilon_m for m = 2..{M} messages of one intention. Jiang's labelled ambiguity is shown for "
        "the constants the presets calibrated to it (`c` chosen so that the measured epsilon is close to "
        "his label). His own languages have a noise-free first letter, which names the intention: their "
        "measured epsilon is exactly 0 whatever the label. Jiang's own measure (last column; "
        "`latent_bayes.transition_ambiguity`) is the error rate of his arg-max classifier from the transitions "
        "alone, the first letter left out (generate_data.py): 0.065 / 0.157 at his epsilon 0.02 / 0.04.\n\n"
    )
    header = [
        "a", "ambiguity c", "first-letter c", "Jiang's label", "measured epsilon", "epsilon_m (m = 2..M)",
        "Jiang's measure",
    ]  # fmt: skip
    return Section("Languages", body + table(header, rows))


def icl_section(ctx: ReportContext, fin: pd.DataFrame) -> Section:
    """Report section: the ICL curves, KL against the number of demonstrations m per ambiguity (`icl_curves.png`),
    beside Jiang's reported values."""
    per_m = fin.dropna(subset=["m"])
    if per_m.empty:
        return Section("In-context learning", "No per-message metrics recorded.")
    amb = sorted(per_m.a.unique())
    fig, axes = plt.subplots(1, len(amb), figsize=(4.6 * len(amb), 3.6), squeeze=False)
    for ax, a in zip(axes[0], amb):
        sub = per_m[per_m.a == a]
        floor = sub[sub.base == "bayes_kl_truth"].groupby("m").value.median()
        ax.plot(floor.index, floor.values, "k--", lw=2, label="Bayes floor KL(truth||Bayes)")
        for size, s in sub.groupby("size"):
            for base, style in (("kl_truth", "-"), ("kl_bayes", ":")):
                curve = s[s.base == base].groupby("m").value
                line = ax.plot(
                    curve.median().index, curve.median().values, style, marker="o", ms=3, label=f"{base} {size}"
                )
                ax.fill_between(
                    curve.min().index, curve.min().values, curve.max().values, alpha=0.15, color=line[0].get_color()
                )
        ax.set_xlabel("demonstrations m")
        ax.set_ylabel("KL (nats)")
        ax.set_yscale("log")
        ax.set_title(f"a = {a}")
        ax.legend(fontsize=6)
    fig_name = ctx.save(fig, "icl_curves.png")
    ref = _reference(ctx)
    L = ctx.cfg.task.message_len
    last = int(per_m.m.max())
    ms = sorted({1, min(4, last), last})
    rows = []
    for a in amb:
        c = ref.get(language_metric("ambiguity", a))
        label = CALIBRATED.get((L, round(c, 6))) if c is not None else None
        sub = per_m[per_m.a == a]
        for size, s in sub.groupby("size"):
            cells = [a, label, size]
            for m in ms:
                truth = s[(s.base == "kl_truth") & (s.m == m)].value
                floor = s[(s.base == "bayes_kl_truth") & (s.m == m)].value
                cells += [spread(truth) if len(truth) else "—", fmt(floor.median()) if len(floor) else "—"]
            rows.append(cells)
    header = ["a", "Jiang's label", "model"]
    for m in ms:
        header += [f"KL(truth, model) m={m}", f"Bayes floor m={m}"]
    jiang_rows = [[f"{label:g}", *(fmt(v) for v in values)] for label, values in JIANG_ICL_KL.items()]
    t = ctx.cfg.task
    body = (
        "jaxlab's in-context learning: the KL from the truth (the distribution given the intention of the scored "
        "message) to the model's next-letter distribution, averaged over all letter positions of the message "
        "scored after m demonstrations, at the end of training (median, band min-max over seeds), with the exact "
        "Bayes predictor's own KL to the truth (the floor). 'Jiang's label' names the ambiguity his languages "
        "were calibrated to.\n\n"
        + table(header, rows)
        + "\n\nJiang's reported values (his ICL figure; the numbers of plot/plot3.py in his released code), "
        "for m = 1..4 prompts:\n\n"
        + table(["Jiang's ambiguity", "m=1", "m=2", "m=3", "m=4"], jiang_rows)
        + "\n\nThe two tables are not comparable, for two reasons. (1) The metric: Jiang's ICL.py scores only "
        "the first letter of the next message, against the uniform distribution over the letters of the current "
        "and the next intention (his chain's prediction); jaxlab averages every letter of the scored message "
        "against the truth given that message's intention. With his noise-free first letter the exact Bayes "
        "predictor's KL under his metric is ~0 for every m >= 1, so his curve measures his model's distance "
        "from the Bayes predictor. (2) The language: "
        f"this run's messages have {t.message_len} letters and its intention chain stays with {t.chain_stay:g} "
        f"(first letter {'noise-free' if t.first_letter_ambiguity == 0 else 'as ambiguous as the transitions'}); "
        "Jiang's have 21 letters (a first letter and 20 transitions), a chain that stays with 0.5, and a "
        "noise-free first letter. Both differences are listed in the deviations.\n\n"
    )
    return Section("In-context learning", body, [Figure(fig_name, f"ICL curves. {ctx.provenance()}")])


def _jiang_label(eps: float | None) -> float | None:
    """Jiang's labelled ambiguity (0, 0.065, 0.157) nearest a measured transition-only ambiguity, within 0.03."""
    if eps is None:
        return None
    label = min(JIANG_ICL_KL, key=lambda x: abs(x - eps))
    return label if abs(label - eps) < 0.03 else None


def first_letter_section(ctx: ReportContext, fin: pd.DataFrame) -> Section:
    """Report section: Jiang's first-letter ICL metric beside his reported KL at matched ambiguity, and the exact
    Bayes predictor under both metrics."""
    per_m = fin.dropna(subset=["m"])
    first = per_m[per_m.base == "kl_first_letter"]
    if first.empty:
        return Section("Jiang's ICL metric", "No first-letter metric recorded (run directory written before it).")
    ref = _reference(ctx)
    ms = [m for m in range(1, JIANG_MAX_M + 1) if m in set(first.m.astype(int))]
    rows = []
    for a in sorted(first.a.unique()):
        eps = ref.get(language_metric("epsilon_transitions", a))
        label = _jiang_label(eps)
        sub = per_m[per_m.a == a]
        for size, s in sub.groupby("size"):
            cells = [a, fmt(eps), size]
            cells += [spread(s[(s.base == "kl_first_letter") & (s.m == m)].value) for m in ms]
            rows.append(cells)
        bayes_first = [sub[(sub.base == "bayes_kl_first_letter") & (sub.m == m)].value.median() for m in ms]
        bayes_all = [sub[(sub.base == "bayes_kl_truth") & (sub.m == m)].value.median() for m in ms]
        rows.append([a, fmt(eps), "exact Bayes, first-letter metric", *(fmt(v, 3) for v in bayes_first)])
        rows.append([a, fmt(eps), "exact Bayes, all-letter metric", *(fmt(v, 3) for v in bayes_all)])
        closed = (ref.get(language_metric("bayes_kl_first_letter_exact", a)),
                  ref.get(language_metric("bayes_kl_truth_exact", a)))  # fmt: skip
        if closed[0] is not None:
            rows.append([a, fmt(eps), "exact Bayes, closed form (first / all letters)",
                         *([f"{fmt(closed[0], 3)} / {fmt(closed[1], 3)}"] * len(ms))])  # fmt: skip
        if label is not None:
            rows.append(
                [a, fmt(eps), f"Jiang (paper, ambiguity {label:g})", *(fmt(v) for v in JIANG_ICL_KL[label][: len(ms)])]
            )
    header = ["a", "measured ambiguity (Jiang's)", "predictor"] + [f"m={m}" for m in ms]
    body = (
        "Jiang's ICL metric (ICL.py), kl_first_letter[message=m]: after m messages of one intention and the "
        "delimiter, KL(target || model) for the next message's first letter, the target uniform over the letters "
        "of the current and the next intention (nats; median [min, max] over seeds, end of training). Beside it "
        "the exact Bayes predictor's KL on the same prompts under this metric (bayes_kl_first_letter) and under "
        "jaxlab's all-letter metric (bayes_kl_truth), their closed forms where the first letter is noise-free "
        "(`latent_bayes.noise_free_bayes_kls`), and Jiang's reported values at the matched ambiguity (his measure: "
        "the error rate of his transition-only arg-max classifier, reported as 'measured ambiguity').\n\n"
    )
    return Section("Jiang's ICL metric", body + table(header, rows))


def emergence_section(ctx: ReportContext) -> Section:
    """Report section: `kl_bayes_mean` over training by model size and ambiguity (`emergence.png`)."""
    df = language_form(ctx.df)
    mean = df[(df.metric == "kl_bayes_mean") & df.language.notna()].copy()
    if mean.empty:
        return Section("Emergence", "No kl_bayes_mean metric recorded.")
    mean["a"] = mean.language.astype(int)
    mean["size"] = size_labels(mean, ctx)
    amb = sorted(mean.a.unique())
    fig, axes = plt.subplots(1, len(amb) + 1, figsize=(4.6 * (len(amb) + 1), 3.6), squeeze=False)
    _by_size(axes[0][-1], ctx, mean)
    for ax, a in zip(axes[0], amb):
        for size, s in mean[mean.a == a].groupby("size"):
            g = s[s.step > 0].groupby("step").value
            line = ax.plot(g.median().index, g.median().values, marker="o", ms=3, label=size)
            ax.fill_between(g.min().index, g.min().values, g.max().values, alpha=0.15, color=line[0].get_color())
        ax.axhline(BAR_KL_BAYES, color="grey", lw=0.8, ls="--")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel("KL(Bayes || model), all messages")
        ax.set_title(f"a = {a}")
        ax.legend(fontsize=7)
    name = ctx.save(fig, "emergence.png")
    body = (
        "KL to the Bayes predictor over every letter position of the evaluation prompts, against training "
        "steps (data seen = steps x batch size), one line per model size (median, band min-max over seeds); "
        f"the last panel plots the final value against the parameter count; dashed: the {BAR_KL_BAYES} nats bar."
    )
    return Section("Emergence", body, [Figure(name, f"Emergence curves. {ctx.provenance()}")])


def _by_size(ax, ctx: ReportContext, mean: pd.DataFrame) -> None:
    """Final KL to Bayes against the parameter count, one line per language."""
    df = ctx.df
    sizes = df[df.metric == "n_params"].groupby("run").value.last()
    last = mean.sort_values("step").groupby("run").last()
    last["n_params"] = sizes.reindex(last.index)
    last = last.dropna(subset=["n_params"])
    if last.empty:
        ax.set_axis_off()
        return
    for a, s in last.groupby("a"):
        g = s.groupby("n_params").value
        line = ax.plot(g.median().index, g.median().values, marker="o", label=f"a = {a}")
        ax.fill_between(g.min().index, g.min().values, g.max().values, alpha=0.15, color=line[0].get_color())
    ax.axhline(BAR_KL_BAYES, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel("final KL(Bayes || model)")
    ax.set_title("end of training, by model size")
    ax.legend(fontsize=7)


def probe_and_position_section(ctx: ReportContext, fin: pd.DataFrame) -> Section:
    """Report section: the posterior probe's accuracy and R^2 per grid point, and the KLs by letter position
    (`kl_by_position.png`)."""
    rows = []
    for (a, size), s in fin[fin.base.str.startswith("posterior_probe")].groupby(["a", "size"]):
        acc = s[s.base == "posterior_probe_acc"].value
        r2 = s[s.base == "posterior_probe_r2"].value
        rows.append([a, size, spread(acc), spread(r2)])
    body = (
        "Ridge probe from the residual stream to the Bayes posterior over intentions (held-out half of the "
        "evaluation prompts): agreement of the arg-max intention, and R^2 of the posterior.\n\n"
        + table(["a", "model", "arg-max agreement", "R^2"], rows)
    )
    pos = fin.dropna(subset=["pos"])
    figures = []
    if not pos.empty:
        amb = sorted(pos.a.unique())
        fig, axes = plt.subplots(1, len(amb), figsize=(4.6 * len(amb), 3.4), squeeze=False)
        for ax, a in zip(axes[0], amb):
            sub = pos[pos.a == a]
            floor = sub[sub.base == "bayes_kl_truth"].groupby("pos").value.median()
            ax.plot(floor.index, floor.values, "k--", lw=2, label="Bayes floor KL(truth||Bayes)")
            for base, style in (("kl_truth", "-"), ("kl_bayes", ":")):
                for size, s in sub[sub.base == base].groupby("size"):
                    curve = s.groupby("pos").value.median()
                    ax.plot(curve.index, curve.values, style, marker=".", label=f"{base} {size}")
            ax.set_yscale("log")
            ax.set_xlabel("slot j in the message (0: first letter)")
            ax.set_ylabel("KL (nats), messages with m >= 1")
            ax.set_title(f"a = {a}")
            ax.legend(fontsize=6)
        figures.append(Figure(ctx.save(fig, "kl_by_position.png"), f"KL by position. {ctx.provenance()}"))
    return Section("Posterior probe and KL by position", body, figures)


def bars_section(ctx: ReportContext, fin: pd.DataFrame) -> Section:
    """Report section: the descriptive bars per grid point (KL to Bayes below the bar, KL to the truth decreasing in
    m, the Bayes floor)."""
    per_m = fin.dropna(subset=["m"])
    if per_m.empty:
        return Section("Bars", "No per-message metrics recorded.")
    last = int(per_m.m.max())
    rows = []
    for (a, size), s in per_m.groupby(["a", "size"]):
        kb = s[(s.base == "kl_bayes") & (s.m == last)].value
        t1 = s[(s.base == "kl_truth") & (s.m == 1)].groupby("run").value.first()
        tl = s[(s.base == "kl_truth") & (s.m == last)].groupby("run").value.first()
        f1 = s[(s.base == "bayes_kl_truth") & (s.m == 1)].value.median()
        fl = s[(s.base == "bayes_kl_truth") & (s.m == last)].value.median()
        decreases = bool(len(t1) and np.all(tl.values < t1.reindex(tl.index).values))
        rows.append(
            [a, size, spread(kb), "yes" if len(kb) and kb.max() < BAR_KL_BAYES else "no", spread(t1), spread(tl),
             f"{fmt(f1)} -> {fmt(fl)}", "yes" if decreases else "no"]
        )  # fmt: skip
    header = [
        "a", "model", f"KL(Bayes, model) m={last}", f"all seeds < {BAR_KL_BAYES}", "KL(truth, model) m=1",
        f"KL(truth, model) m={last}", f"Bayes floor m=1 -> {last}", "decreases for every seed",
    ]  # fmt: skip
    body = (
        "Descriptive checks per grid point (median [min, max] over its seeds; 'yes' when every seed passes, "
        "no interval). The verdicts are the Claims table's, computed with confidence intervals over seeds.\n\n"
    )
    return Section("Bars", body + table(header, rows))


def sections(ctx: ReportContext) -> list[Section]:
    """The experiment's report sections (`Experiment.report`)."""
    fin = final_frame(ctx)
    return [
        languages_section(ctx),
        bars_section(ctx, fin),
        icl_section(ctx, fin),
        first_letter_section(ctx, fin),
        emergence_section(ctx),
        probe_and_position_section(ctx, fin),
    ]
