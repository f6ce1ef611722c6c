"""Report sections of instruction-clustering: ARI per (position, layer, evaluation set) and accuracy over
training, ARI against accuracy, the final clustering by cell, and the ablations by cell with each position's
causal test and its interval.

The per-cell metrics are `ari[layer=3,position=sep_input,set=seen]` (metric `ari`, columns `layer`, `position`
and `set` in the tidy table)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from jaxlab.experiments.instruction_clustering_claims import CONSTANT_AT_EMBEDDING, EVAL_SETS, at_position, cell_metric
from jaxlab.reporting import Figure, ReportContext, Section, finals, finite_median_ci, fmt, quantile_curves, table
from jaxlab.stats import pearson


def _min(values: np.ndarray) -> str:
    v = values[np.isfinite(values)]
    return fmt(float(v.min()), 3) if v.size else "—"


def _mean_std(values: np.ndarray) -> str:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return "—"
    return f"{fmt(float(v.mean()), 3)} ± {fmt(float(v.std(ddof=1)) if v.size > 1 else 0.0, 2)}"


def _median_ci(values: np.ndarray) -> str:
    med, lo, hi = finite_median_ci(values)
    if not np.isfinite(med):
        return "—"
    return f"{fmt(med, 3)} [{fmt(lo, 3)}, {fmt(hi, 3)}]"


def _cells(df: pd.DataFrame) -> tuple[list[str], list[int], list[str]]:
    """(positions in probe order, layers, evaluation sets) of the table's ARI rows."""
    if not {"layer", "position", "set"} <= set(df.columns):
        return [], [], []
    sub = df[df.metric == "ari"]
    positions = list(dict.fromkeys(str(p) for p in sub.position.dropna()))
    layers = sorted(int(layer) for layer in sub.layer.dropna().unique())
    sets = [s for s in EVAL_SETS if s in set(sub.set.dropna().astype(str))]
    return positions, layers, sets


def _training_figure(ctx: ReportContext, positions: list[str], layers: list[int], sets: list[str]) -> Figure:
    df = ctx.df
    fig, axes = plt.subplots(
        len(sets), len(positions), figsize=(3.3 * len(positions), 2.4 * len(sets)), squeeze=False, sharey=True
    )
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(layers)))
    for row, eval_set in enumerate(sets):
        for col, position in enumerate(positions):
            ax = axes[row, col]
            at = df[(df.position == position) & (df.set == eval_set)]
            for layer, color in zip(layers, colors):
                quantile_curves(ax, at[at.layer == layer], "ari", label=f"layer {layer}", color=color, show_runs=False)
            shuffled = at[at.metric == "ari_shuffled"]
            if not shuffled.empty:
                quantile_curves(ax, shuffled.assign(metric="floor"), "floor", label="shuffled labels (all layers)",
                                color="grey", show_runs=False)  # fmt: skip
            quantile_curves(ax, df, f"acc_{eval_set}", label=f"acc_{eval_set}", color="black", show_runs=False)
            if ctx.cfg.train.eval_schedule == "log":
                ax.set_xscale("symlog", linthresh=1.0)
            ax.set_ylim(-0.1, 1.05)
            ax.set_title(f"{eval_set}, `{position}`", fontsize=9)
            if row == len(sets) - 1:
                ax.set_xlabel("optimizer step")
            if col == 0:
                ax.set_ylabel("ARI / accuracy")
    axes[0, 0].legend(fontsize=6, ncol=2)
    name = ctx.save(fig, "clustering_over_training.png")
    return Figure(
        name,
        "k-means ARI of the hidden states against the task labels at each layer (0 = embedding), per evaluation set "
        f"(rows) and probe position (columns), with the shuffled-label floor and the set's accuracy: median and "
        f"10-90% band over {ctx.summary['n_runs']} runs. {ctx.provenance()}",
    )


def ari_acc_pairs(df: pd.DataFrame, summary: Mapping[str, Any], positions: tuple[str, ...]) -> tuple[np.ndarray, ...]:
    """(seen-set ARI at each run's best cell, acc_seen, run) over every checkpoint of every ok run; `positions`
    is probe.positions (best_position indexes it)."""
    ari, acc, run = [], [], []
    for r in summary["runs"]:
        f = r["final"]
        if r["status"] != "ok" or f.get("best_layer") is None or f.get("best_position") is None:
            continue
        sub = df[df.run == r["run"]]
        position = positions[int(f["best_position"])]
        cell = (sub.metric == "ari") & (sub.layer == int(f["best_layer"])) & (sub.position == position)
        a = sub[cell & (sub.set == "seen")].set_index("step").value
        b = sub[sub.metric == "acc_seen"].set_index("step").value
        steps = a.index.intersection(b.index)
        ari.append(a.loc[steps].to_numpy())
        acc.append(b.loc[steps].to_numpy())
        run.append(np.full(len(steps), r["run"]))
    if not ari:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    return np.concatenate(ari), np.concatenate(acc), np.concatenate(run)


def _correlation_section(ctx: ReportContext) -> Section:
    ari, acc, run = ari_acc_pairs(ctx.df, ctx.summary, ctx.cfg.probe.positions)
    per_run = finals(ctx, "ari_acc_corr")
    pooled = pearson(ari, acc)
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.scatter(ari, acc, c=run, cmap="tab10", s=10, alpha=0.7)
    ax.set_xlabel("seen-set ARI at the run's best cell")
    ax.set_ylabel("acc_seen")
    ax.set_title(f"checkpoints x runs: pooled Pearson r = {fmt(pooled, 3)}")
    name = ctx.save(fig, "ari_vs_accuracy.png")
    body = (
        "Pearson correlation between the best cell's ARI and the seen accuracy: per run over its checkpoints "
        f"`ari_acc_corr` = {_mean_std(per_run)} (mean ± std over runs, min {_min(per_run)}); "
        f"pooled over all {ari.size} (checkpoint, run) pairs r = {fmt(pooled, 3)}. Both series rise over "
        "training, so a shared trend alone makes these positive; the `ari_tracks_accuracy` claim uses the r of "
        "their first differences over the checkpoints, `ari_acc_diff_corr` = "
        f"{_mean_std(finals(ctx, 'ari_acc_diff_corr'))}. Accuracy on unseen strings "
        f"{_mean_std(finals(ctx, 'acc_unseen_strings'))}, on held-out grammars "
        f"{_mean_std(finals(ctx, 'acc_unseen_distributions'))}, on held-out input sequences "
        f"{_mean_std(finals(ctx, 'acc_unseen_inputs'))} (— where the task holds none out: a random table's answer to "
        "an unseen input cannot be inferred).\n\n"
        + table(
            ["onset", "mean ± std (steps)", "runs reaching it"],
            [
                [m, _mean_std(finals(ctx, m)), int(np.isfinite(finals(ctx, m)).sum())]
                for m in ("ari_onset_step", "acc_onset_step")
            ],
        )
    )
    caption = (
        f"Seen-set ARI at the best cell against seen accuracy, one point per checkpoint and run. {ctx.provenance()}"
    )
    return Section("Clustering goes with instruction following", body, [Figure(name, caption)])


def _cell_table(ctx: ReportContext, positions: list[str], layers: list[int], sets: list[str]) -> Section:
    rows = []
    for position in positions:
        for layer in layers:
            ari = [_mean_std(finals(ctx, cell_metric("ari", layer, position, s))) for s in sets]
            floor = _mean_std(finals(ctx, cell_metric("ari_shuffled", layer, position, "seen")))
            rest = [_mean_std(finals(ctx, cell_metric(m, layer, position, "seen"))) for m in ("nmi", "silhouette")]
            rows.append([f"`{position}`", layer, *ari, floor, *rest])
    best_p, best_l = finals(ctx, "best_position"), finals(ctx, "best_layer")
    counts: dict[str, int] = {}
    for p, layer in zip(best_p, best_l):
        if np.isfinite(p) and np.isfinite(layer):
            key = f"`{ctx.cfg.probe.positions[int(p)]}` block {int(layer)}"
            counts[key] = counts.get(key, 0) + 1
    body = (
        "Final values, mean ± std over runs. Best cell (highest final seen-set ARI over the blocks) per run: "
        + ", ".join(f"{k}: {v} runs" for k, v in counts.items())
        + ".\n\n"
        + table(
            ["position", "layer", *(f"ARI {s}" for s in sets), "ARI seen, shuffled labels", "NMI", "silhouette"],
            rows,
        )
    )
    return Section("Final clustering by position and layer", body)


def _ablation_section(ctx: ReportContext, positions: list[str], layers: list[int]) -> Section:
    rows = []
    for position in positions:
        for layer in layers:
            values = [
                finals(ctx, cell_metric(m, layer, position))
                for m in (
                    "position_ablation_acc_drop",
                    "random_position_ablation_acc_drop",
                    "ablation_acc_drop",
                    "random_ablation_acc_drop",
                    "swap_acc_drop",
                    "swap_follow_rate",
                )
            ]
            if values[0].size == 0 or not np.isfinite(values[0]).any():
                continue
            rows.append([f"`{position}`", layer, *(_mean_std(v) for v in values)])
    tests = []
    for position in positions:
        drop = finals(ctx, at_position("position_ablation_acc_drop_test_layer", position))
        rand = finals(ctx, at_position("random_position_ablation_acc_drop_test_layer", position))
        layer = finals(ctx, at_position("test_layer", position))
        if not np.isfinite(layer).any():
            tests.append([f"`{position}`", "none (no layer can change a scored prediction)", "—", "—", "—"])
            continue
        used = {int(v): int(np.sum(layer == v)) for v in np.unique(layer[np.isfinite(layer)])}
        tests.append(
            [
                f"`{position}`",
                ", ".join(f"{k} ({v} runs)" for k, v in used.items()),
                _median_ci(drop),
                _median_ci(rand),
                _median_ci(drop - rand),
            ]
        )
    test_p = finals(ctx, "test_position")
    where = ", ".join(
        f"`{ctx.cfg.probe.positions[int(p)]}` layer {int(layer)}"
        for p, layer in zip(test_p, finals(ctx, "test_layer"))
        if np.isfinite(p)
    )
    body = (
        "The residual stream of one layer is changed and the seen accuracy measured again. At cell (position p, "
        "layer l) the cluster subspace is the span of the centred task centroids of the layer-l states at p (rank "
        "n_tasks - 1). At p only: that subspace projected out at p alone, and its control, random directions of "
        "the same rank at p alone; everywhere: the same projection at every position about each position's mean "
        "(it acts on the instruction tokens too, so it does not localize the clusters at p), and its random "
        "control; swap: the state at p replaced by another task's centroid (a follow rate at the rate at which two "
        "tasks' outputs coincide means the outputs did not change). At a cell whose ARI is near its shuffled-label "
        "floor the task centroids differ only by sampling noise, and their span lies in whatever the state encodes "
        "(at `last_input`, layer 0, the input token itself), so a drop there is not evidence of a task code.\n\n"
        "Each position's test, at its own layer of highest final seen-set ARI among those where a projection at p "
        "can change a scored prediction (after the last block it changes only p's own prediction, unscored unless p "
        "is `sep_output`; the embedding at a separator is the same in every sequence): median [95% bootstrap CI "
        "over seeds] of the accuracy drop. The `clusters_used` claim reads the position and layer with the highest "
        f"ARI of these, per run: {where or '—'}.\n\n"
        + table(["position", "test layer", "cluster drop at p", "random drop at p", "cluster minus random"], tests)
        + "\n\nEvery cell, mean ± std over runs:\n\n"
        + table(
            [
                "position",
                "layer",
                "cluster, at p only",
                "random, at p only",
                "cluster, everywhere",
                "random, everywhere",
                "swap drop",
                "swap follows new task",
            ],
            rows,
        )
    )
    if not rows:
        return Section("Causal check: removing the clusters", body)
    fig, axes = plt.subplots(1, len(positions), figsize=(4.2 * len(positions), 3.4), squeeze=False, sharey=True)
    for ax, position in zip(axes[0], positions):
        for offset, (metric, label) in enumerate(
            [
                ("position_ablation_acc_drop", "cluster, at p"),
                ("random_position_ablation_acc_drop", "random, at p"),
                ("ablation_acc_drop", "cluster, everywhere"),
                ("random_ablation_acc_drop", "random, everywhere"),
            ]
        ):
            vals = [finals(ctx, cell_metric(metric, layer, position)) for layer in layers]
            ax.bar(
                np.asarray(layers) + (offset - 1.5) * 0.2,
                [np.nanmean(v) if np.isfinite(v).any() else 0.0 for v in vals],
                0.2,
                yerr=[np.nanstd(v) if np.isfinite(v).any() else 0.0 for v in vals],
                label=label,
            )
        ax.set_title(f"`{position}`", fontsize=9)
        ax.set_xlabel("layer")
    axes[0, 0].set_ylabel("accuracy drop")
    axes[0, 0].legend(fontsize=6)
    name = ctx.save(fig, "ablation_by_layer.png")
    caption = f"Accuracy drop per position and layer (mean, std over runs). {ctx.provenance()}"
    return Section("Causal check: removing the clusters", body, [Figure(name, caption)])


def paper_note(positions: tuple[str, ...]) -> str:
    """What the paper reports, and what this setup can and cannot compare with it (the verdicts are in
    the Claims table)."""
    note = (
        "Wu & Varshney (2024) report, for a 6-layer causal transformer trained from scratch on their synthetic "
        "instruction-following data, that the ARI of k-means clusters of hidden states against task identity "
        "rises over training until it saturates, on a training and a validation set, that deeper layers cluster "
        "more than the embedding layer (which stays flat), and that the clustering helps the model handle unseen "
        "instances; they give these as curves, without numbers we could quote. Here ARI is computed at "
        f"{', '.join(f'`{p}`' for p in positions)}, at every layer, on the seen, validation and held-out "
        "instruction sets, each with a shuffled-label floor. "
    )
    constant = [p for p in positions if p in CONSTANT_AT_EMBEDDING]
    if constant:
        note += (
            f"At {', '.join(f'`{p}`' for p in constant)} the embedding-layer state is the same for every sequence, so "
            "layer 0's flat ARI of 0 there is a property of the position, not a finding. "
        )
    return note + "The causal ablation is jaxlab's addition: the paper reports no intervention."


def sections(ctx: ReportContext) -> list[Section]:
    """The experiment's report sections (`Experiment.report`): clustering over training, the ARI-accuracy
    correlation, the per-cell table and the ablations; none without per-cell clustering metrics."""
    positions, layers, sets = _cells(ctx.df)
    if not layers or not positions:
        return []
    positions = [p for p in ctx.cfg.probe.positions if p in positions]
    return [
        Section(
            "Clustering over training", paper_note(tuple(positions)), [_training_figure(ctx, positions, layers, sets)]
        ),
        _correlation_section(ctx),
        _cell_table(ctx, positions, layers, sets),
        _ablation_section(ctx, positions, layers),
    ]
