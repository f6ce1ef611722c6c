"""Report sections of instruction-clustering: ARI per layer and accuracy over training, ARI against
accuracy, the final clustering by layer, and the ablation table.

The per-layer metrics are `ari[layer=3]` (metric `ari`, column `layer` in the tidy table); a run
directory written before metric parameters (`ari_layer_3`) is read too (`layer_form`, `layer_finals`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from jaxlab.experiments.instruction_clustering_claims import CONSTANT_AT_EMBEDDING, layer_metric, parse_layer_metric
from jaxlab.probes.clustering import CLUSTER_METRICS
from jaxlab.reporting import Figure, ReportContext, Section, finals, fmt, quantile_curves, table
from jaxlab.stats import pearson


def _min(values: np.ndarray) -> str:
    v = values[np.isfinite(values)]
    return fmt(float(v.min()), 3) if v.size else "—"


def layer_form(df: pd.DataFrame) -> pd.DataFrame:
    """`df` (a tidy table) with the per-layer metrics of a run directory written before metric parameters
    (`ari_layer_3`) split as the tidy tables split `ari[layer=3]`: metric `ari`, column `layer`. A table without
    them is returned as it is."""
    parsed = {m: p for m in pd.unique(df.metric) if (p := parse_layer_metric(m)) is not None}
    if not parsed:
        return df
    out = df.copy()
    legacy = out.metric.isin(list(parsed))
    layer = out["layer"].astype("float64") if "layer" in out.columns else pd.Series(np.nan, index=out.index)
    out["layer"] = layer.where(~legacy, out.metric.map(lambda m: float(parsed[m][1]) if m in parsed else np.nan))
    out.loc[legacy, "metric"] = out.loc[legacy, "metric"].map(lambda m: parsed[m][0])
    return out


def layer_finals(summary: Mapping[str, Any]) -> dict[str, Any]:
    """`summary` with every run's per-layer finals named as `layer_metric` names them (`ari[layer=3]`), whichever
    form the run directory has (`parse_layer_metric`)."""

    def renamed(final: Mapping[str, Any]) -> dict[str, Any]:
        return {layer_metric(*p) if (p := parse_layer_metric(k)) is not None else k: v for k, v in final.items()}

    return {**summary, "runs": [{**r, "final": renamed(r.get("final", {}))} for r in summary["runs"]]}


def _layers(df: pd.DataFrame) -> list[int]:
    if "layer" not in df.columns:
        return []
    return sorted(int(layer) for layer in df.loc[df.metric == "ari", "layer"].dropna().unique())


def _mean_std(values: np.ndarray) -> str:
    v = values[np.isfinite(values)]
    if v.size == 0:
        return "—"
    return f"{fmt(float(v.mean()), 3)} ± {fmt(float(v.std(ddof=1)) if v.size > 1 else 0.0, 2)}"


def _training_figure(ctx: ReportContext, layers: list[int]) -> Figure:
    df = ctx.df
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    colors = plt.cm.viridis(np.linspace(0, 0.9, len(layers)))
    for ax, kind in zip(axes, ("ari", "nmi")):
        for layer, color in zip(layers, colors):
            at_layer = df[df.layer == layer]
            quantile_curves(ax, at_layer, kind, label=f"{kind.upper()} layer {layer}", color=color, show_runs=False)
        for name, style in (("acc_seen", "-"), ("acc_unseen_strings", "--"), ("acc_unseen_distributions", ":")):
            quantile_curves(ax, df, name, label=name, color="black", show_runs=False)
            if ax.lines and name in set(df.metric):
                ax.lines[-1].set_linestyle(style)
        ax.set_xlabel("optimizer step")
        if ctx.cfg.train.eval_schedule == "log":
            ax.set_xscale("symlog", linthresh=1.0)
        ax.set_ylabel(f"{kind.upper()} / accuracy")
        ax.set_ylim(-0.05, 1.05)
        ax.set_title(f"{kind.upper()} per layer and accuracy: median, 10-90% band over {ctx.summary['n_runs']} runs")
        ax.legend(fontsize=6, ncol=2)
    name = ctx.save(fig, "clustering_over_training.png")
    return Figure(
        name,
        "Task clustering of the hidden states at each layer (0 = embedding) and output accuracy over training; "
        f"probe position `{ctx.cfg.probe.position}`. {ctx.provenance()}",
    )


def ari_acc_pairs(df: pd.DataFrame, summary: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(ARI at each run's best layer, acc_seen, run) over every checkpoint of every ok run (`df` in either form,
    `layer_form`)."""
    df = layer_form(df)
    ari, acc, run = [], [], []
    for r in summary["runs"]:
        if r["status"] != "ok" or "best_layer" not in r["final"]:
            continue
        sub = df[df.run == r["run"]]
        a = sub[(sub.metric == "ari") & (sub.layer == int(r["final"]["best_layer"]))].set_index("step").value
        b = sub[sub.metric == "acc_seen"].set_index("step").value
        steps = a.index.intersection(b.index)
        ari.append(a.loc[steps].to_numpy())
        acc.append(b.loc[steps].to_numpy())
        run.append(np.full(len(steps), r["run"]))
    if not ari:
        return np.zeros(0), np.zeros(0), np.zeros(0)
    return np.concatenate(ari), np.concatenate(acc), np.concatenate(run)


def _correlation_section(ctx: ReportContext) -> Section:
    ari, acc, run = ari_acc_pairs(ctx.df, ctx.summary)
    per_run = finals(ctx, "ari_acc_corr")
    pooled = pearson(ari, acc)
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    ax.scatter(ari, acc, c=run, cmap="tab10", s=10, alpha=0.7)
    ax.set_xlabel("ARI at the run's best layer")
    ax.set_ylabel("acc_seen")
    ax.set_title(f"checkpoints x runs: pooled Pearson r = {fmt(pooled, 3)}")
    name = ctx.save(fig, "ari_vs_accuracy.png")
    body = (
        "Pearson correlation between the best layer's ARI and the seen accuracy: per run over its checkpoints "
        f"`ari_acc_corr` = {_mean_std(per_run)} (mean ± std over runs, min {_min(per_run)}); "
        f"pooled over all {ari.size} (checkpoint, run) pairs r = {fmt(pooled, 3)}. Both series rise over "
        "training, so a shared trend alone makes these positive; the `ari_tracks_accuracy` claim uses the r of "
        "their first differences over the checkpoints, `ari_acc_diff_corr` = "
        f"{_mean_std(finals(ctx, 'ari_acc_diff_corr'))}.\n\n"
        + table(
            ["onset", "mean ± std (steps)", "runs reaching it"],
            [
                [m, _mean_std(finals(ctx, m)), int(np.isfinite(finals(ctx, m)).sum())]
                for m in ("ari_onset_step", "acc_onset_step")
            ],
        )
    )
    caption = f"ARI at the best layer against seen accuracy, one point per checkpoint and run. {ctx.provenance()}"
    return Section("Clustering goes with instruction following", body, [Figure(name, caption)])


def _layer_table(ctx: ReportContext, layers: list[int]) -> Section:
    rows = []
    for layer in layers:
        rows.append([layer, *(_mean_std(finals(ctx, layer_metric(m, layer))) for m in CLUSTER_METRICS)])
    best = finals(ctx, "best_layer")
    counts = {int(b): int(np.sum(best == b)) for b in np.unique(best[np.isfinite(best)])}
    body = (
        "Final values, mean ± std over runs (seen evaluation set, probe position "
        f"`{ctx.cfg.probe.position}`). Best layer (highest final ARI) per run: "
        + ", ".join(f"layer {k}: {v} runs" for k, v in counts.items())
        + ".\n\n"
        + table(["layer", "ARI", "NMI", "silhouette", "between/within variance"], rows)
    )
    return Section("Final clustering by layer", body)


def _ablation_section(ctx: ReportContext, layers: list[int]) -> Section:
    rows = []
    for layer in layers:
        drop = finals(ctx, layer_metric("ablation_acc_drop", layer))
        rand = finals(ctx, layer_metric("random_ablation_acc_drop", layer))
        if drop.size == 0 or not np.isfinite(drop).any():
            continue
        rows.append(
            [
                layer,
                _mean_std(drop),
                _mean_std(rand),
                _mean_std(finals(ctx, layer_metric("position_ablation_acc_drop", layer))),
                _mean_std(finals(ctx, layer_metric("random_position_ablation_acc_drop", layer))),
                _mean_std(finals(ctx, layer_metric("swap_acc_drop", layer))),
                _mean_std(finals(ctx, layer_metric("swap_follow_rate", layer))),
            ]
        )
    drop, rand = finals(ctx, "ablation_acc_drop"), finals(ctx, "random_ablation_acc_drop")
    ratio = float(np.nanmean(drop) / np.nanmean(rand)) if np.nanmean(rand) > 0 else float("inf")
    body = (
        "The residual stream of one layer is changed and the seen accuracy measured again. Cluster ablation: the "
        f"between-task directions found at `{ctx.cfg.probe.position}` (span of the centred task means, rank "
        "n_tasks - 1) projected out at every position, about each position's mean; random control: random "
        "directions of the same rank, likewise; at the position only: the cluster projection at "
        f"`{ctx.cfg.probe.position}` alone, and its control, random directions of the same rank there alone; "
        "swap: the state there replaced by another task's centroid (a follow rate at the rate at which two "
        "tasks' outputs coincide means the outputs did not change). The projection everywhere acts at every "
        "position, the instruction tokens included, so its drop does not localize the clusters at the probed "
        "position; the `clusters_used` claim uses the position-only pair, at each run's best layer among those "
        "where it can change a scored prediction (`test_layer`: after the last block the projection changes only "
        "the probed position's own prediction, unscored unless it is `sep_output`): drop "
        f"{_mean_std(finals(ctx, 'position_ablation_acc_drop_test_layer'))}, random there "
        f"{_mean_std(finals(ctx, 'random_position_ablation_acc_drop_test_layer'))}. At each run's best "
        f"layer: cluster ablation drop {_mean_std(drop)}, random control {_mean_std(rand)} (ratio of means "
        f"{fmt(ratio, 3)}), at the position only {_mean_std(finals(ctx, 'position_ablation_acc_drop'))}, random "
        f"there {_mean_std(finals(ctx, 'random_position_ablation_acc_drop'))}, swap drop "
        f"{_mean_std(finals(ctx, 'swap_acc_drop'))}, swapped outputs following the new task "
        f"{_mean_std(finals(ctx, 'swap_follow_rate'))}.\n\n"
        + table(
            [
                "layer",
                "cluster ablation drop",
                "random control drop",
                "at the position only",
                "random, at the position only",
                "swap drop",
                "swap follows new task",
            ],
            rows,
        )
    )
    if rows:
        fig, ax = plt.subplots(figsize=(6.5, 3.8))
        ls = [r[0] for r in rows]
        for offset, (metric, label) in enumerate(
            [
                ("ablation_acc_drop", "cluster ablation"),
                ("random_ablation_acc_drop", "random control"),
                ("swap_acc_drop", "centroid swap"),
            ]
        ):
            vals = [finals(ctx, layer_metric(metric, layer)) for layer in ls]
            ax.bar(
                np.asarray(ls) + (offset - 1) * 0.27,
                [np.nanmean(v) for v in vals],
                0.27,
                yerr=[np.nanstd(v) for v in vals],
                label=label,
            )
        ax.set_xlabel("layer")
        ax.set_ylabel("accuracy drop")
        ax.legend(fontsize=7)
        name = ctx.save(fig, "ablation_by_layer.png")
        caption = f"Accuracy drop per ablated layer (mean, std over runs). {ctx.provenance()}"
        return Section("Causal check: ablating the clusters", body, [Figure(name, caption)])
    return Section("Causal check: ablating the clusters", body)


def paper_note(position: str) -> str:
    """What the paper reports, and what this setup can and cannot compare with it (the verdicts are in
    the Claims table)."""
    note = (
        "Wu & Varshney (2024) report, for a 6-layer causal transformer trained from scratch on their synthetic "
        "instruction-following data, that the ARI of k-means clusters of hidden states against task identity "
        "rises over training until it saturates, on a training and a validation set, that deeper layers cluster "
        "more than the embedding layer (which stays flat), and that the clustering helps the model handle unseen "
        "instances; they give these as curves, without numbers we could quote. Here ARI is computed on the "
        "training-distribution evaluation set only; the held-out instruction sets give accuracy only. "
    )
    if position in CONSTANT_AT_EMBEDDING:
        note += (
            f"At the probed position `{position}` the embedding-layer state is the same for every sequence, so "
            "layer 0's flat ARI of 0 below is a property of the position, not a finding. "
        )
    return note + "The causal ablation is jaxlab's addition: the paper reports no intervention."


def sections(ctx: ReportContext) -> list[Section]:
    """The experiment's report sections (`Experiment.report`): clustering over training, the ARI-accuracy correlation,
    the per-layer table and the ablations; none without clustering metrics. A run directory written before metric
    parameters is read in the form of the new one (`layer_form`, `layer_finals`)."""
    ctx = dataclasses.replace(ctx, df=layer_form(ctx.df), summary=layer_finals(ctx.summary))
    layers = _layers(ctx.df)
    if not layers:
        return []
    return [
        Section("Clustering over training", paper_note(ctx.cfg.probe.position), [_training_figure(ctx, layers)]),
        _correlation_section(ctx),
        _layer_table(ctx, layers),
        _ablation_section(ctx, layers),
    ]
