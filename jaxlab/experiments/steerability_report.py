"""Report sections of steerability: the concept language, readability and steerability heatmaps over
training, onsets, how much of each concept is learned (against the exact Bayes predictor,
`steerability_bayes`), the separability-steerability correlation, direction stability across the saved
checkpoint series, and the comparison with She et al. (2025).

Everything is read from the run directory (`ctx.df`, `ctx.summary`, the orbax checkpoints);
"median [min, max]" are over the runs that did not diverge. The per-concept metrics are
`id_score[concept=joy,layer=0]` (metric `id_score`, columns `concept` and `layer` in the tidy table);
a run directory written before metric parameters (`id_score_joy_l0`) is read too (`concept_form`,
`concept_finals`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

from jaxlab.experiments import steerability_bayes as bayes
from jaxlab.experiments import steerability_claims as claims
from jaxlab.experiments import steerability_effects as effects
from jaxlab.probes import steering
from jaxlab.probes.cosine import cosine
from jaxlab.reporting import Figure, ReportContext, Section, finals, fmt, ok_runs, spread, table
from jaxlab.results import metric_name
from jaxlab.tasks import concepts
from jaxlab.train.restore import checkpoint_indices, load_group_series


# -- metric names: both forms ----------------------------------------------------------------------
def concept_form(df: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """`df` (a tidy table) with the per-concept metrics of a run directory written before metric parameters
    (`id_score_joy_l0`, `sep_onset_step_joy`, `cos_joy_anger_l0`; `names`: the concepts) split as the tidy tables
    split `id_score[concept=joy,layer=0]`: metric `id_score`, columns `concept`, `layer` (`concept_a`,
    `concept_b`). A table without them is returned as it is."""
    parsed = {m: p for m in pd.unique(df.metric) if (p := claims.parse_concept_metric(m, names)) is not None}
    if not parsed:
        return df
    out = df.copy()
    legacy = out.metric.isin(list(parsed))
    for key in claims.CONCEPT_KEYS:
        if not any(key in params for _, params in parsed.values()):
            continue
        values = out.metric.map(lambda m, key=key: parsed[m][1].get(key) if m in parsed else None)
        kind = "float64" if key == "layer" else "string"
        old = out[key].astype(kind) if key in out.columns else pd.Series(None, index=out.index, dtype=kind)
        out[key] = old.where(~legacy, values.astype(kind))
    out.loc[legacy, "metric"] = out.loc[legacy, "metric"].map(lambda m: parsed[m][0])
    return out


def concept_finals(summary: Mapping[str, Any], names: Sequence[str]) -> dict[str, Any]:
    """`summary` with every run's per-concept finals named as `results.metric_name` names them
    (`sep_onset_step[concept=joy]`), whichever form the run directory has (`parse_concept_metric`)."""

    def renamed(final: Mapping[str, Any]) -> dict[str, Any]:
        out = {}
        for k, v in final.items():
            p = claims.parse_concept_metric(k, names)
            out[metric_name(p[0], **p[1]) if p is not None else k] = v
        return out

    return {**summary, "runs": [{**r, "final": renamed(r.get("final", {}))} for r in summary["runs"]]}


def history_grid(df: pd.DataFrame, name: str, concept: str, n_layers: int) -> tuple[np.ndarray, np.ndarray]:
    """(steps [n], values [R, n, L]) of the per-layer metric `name[concept=concept,layer=l]` from the tidy table
    (metric `name`, columns `concept` and `layer`; an older table is read too, `concept_form`)."""
    df = concept_form(df, [concept])
    layers = [float(l) for l in range(n_layers)]
    if not {"concept", "layer"} <= set(df.columns):
        raise KeyError(f"the table has no per-layer metrics of a concept (wanted {name!r} of {concept!r})")
    sub = df[(df.metric == name) & (df.concept == concept).fillna(False).astype(bool) & df.layer.isin(layers)]
    wide = sub.pivot_table(index=["run", "step"], columns="layer", values="value", aggfunc="last")[layers]
    runs = wide.index.get_level_values("run").unique()
    steps = np.asarray(sorted(wide.index.get_level_values("step").unique()))
    values = wide.to_numpy(np.float64).reshape(len(runs), len(steps), len(layers))
    return steps, values


def _at(name: str, concept: str) -> str:
    return metric_name(name, concept=concept)


# -- post hoc: the saved checkpoint series ---------------------------------------------------------
def checkpoint_directions(
    experiment: Any, run_dir: str | Path, group: int = 0, chunk: int = 4
) -> dict[str, np.ndarray]:
    """PCA directions and ID scores recomputed from every saved checkpoint of a run directory of
    `experiment` (steerability's `EXPERIMENT`, which rebuilds the run's programs).

    Returns steps [C], v [C, R, K, L, D] and id_score [C, R, K, L]: one program, vmapped over runs and
    layers, and over checkpoints in chunks of `chunk` (`lax.map(batch_size=...)` bounds the memory).
    """
    if experiment is None:
        raise ValueError("checkpoint_directions needs the run's experiment (ReportContext.experiment is None)")
    indices = checkpoint_indices(experiment, run_dir, group)
    if not indices:
        raise FileNotFoundError(f"no checkpoints of group {group} in {Path(run_dir) / 'checkpoints'}")
    series = load_group_series(experiment, run_dir, group, indices)
    train = series[0].train
    params_CR = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *(o.state.params for o in series))
    data = jax.jit(train.make_eval_batch)()  # one program, not one compilation per operation (6-7 s in the smoke test)
    n_fit, lam = train.cfg.probe.n_fit, train.cfg.probe.ridge_lam

    def read(params):
        def per_concept(on, off):
            h, _ = steering.last_token_states(train.model, params, jnp.concatenate([on, off]))
            r = steering.read_concept(h[:, : on.shape[0]], h[:, on.shape[0] :], n_fit, lam)
            return r.v_pca, r.id_score

        return jax.lax.map(lambda a: per_concept(*a), (data["on"], data["off"]))

    v, ids = jax.jit(lambda p: jax.lax.map(jax.vmap(read), p, batch_size=chunk))(params_CR)
    steps = np.asarray(train.eval_steps)[np.asarray(indices)]
    return {"steps": steps, "v": np.asarray(v), "id_score": np.asarray(ids)}


def direction_stability(v_CRKLD: np.ndarray) -> dict[str, np.ndarray]:
    """Signed cosines of oriented directions: successive checkpoints [C-1, R, K, L], to the last [C, R, K, L]."""
    v = jnp.asarray(v_CRKLD)
    return {
        "successive": np.asarray(cosine(v[1:], v[:-1])),
        "to_final": np.asarray(cosine(v, v[-1:])),
    }


# -- sections ----------------------------------------------------------------------------------------
def _heatmap_figure(ctx: ReportContext, name: str, label: str, vmin: float | None, vmax: float | None, cmap: str):
    names, L = ctx.cfg.task.names, ctx.cfg.model.n_layers
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.2), squeeze=False)
    for ax, c in zip(axes[0], names):
        steps, values = history_grid(ctx.df, name, c, L)
        med = np.nanmedian(values, axis=0).T  # [L, n]
        im = ax.imshow(med, origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap=cmap)
        ticks = np.unique(np.linspace(0, len(steps) - 1, min(6, len(steps))).round().astype(int))
        ax.set_xticks(ticks, [str(int(steps[i])) for i in ticks], fontsize=7)
        ax.set_yticks(range(L))
        ax.set_xlabel(f"checkpoint (optimizer step, {ctx.cfg.train.eval_schedule}-spaced)")
        ax.set_ylabel("layer (after block l)")
        ax.set_title(c)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label=label)
    filename = f"heatmap_{name}.png"
    fig.savefig(ctx.run_dir / filename, dpi=110, bbox_inches="tight")
    plt.close(fig)
    caption = (
        f"{label}: median over {ctx.summary['n_runs']} runs, per checkpoint (column) and residual layer (row). "
        "Computed on device at every evaluation step, which is the step of each checkpoint of the saved "
        f"{ctx.cfg.train.eval_schedule}-spaced series. {ctx.provenance()}"
    )
    return Figure(filename, caption)


def _onset_section(ctx: ReportContext) -> Section:
    task, probe = ctx.cfg.task, ctx.cfg.probe
    R = len(ok_runs(ctx))
    rows = []
    for k, c in enumerate(task.names):
        sep, steer = finals(ctx, _at("sep_onset_step", c)), finals(ctx, _at("steer_onset_step", c))
        reached = lambda xs: int(np.isfinite(xs).sum())
        rows.append(
            [
                c,
                task.freqs[k],
                task.strengths[k],
                f"{spread(sep, 'never')} ({reached(sep)}/{R})",
                f"{spread(steer, 'never')} ({reached(steer)}/{R})",
                spread(finals(ctx, _at("steer_effect", c))),
                spread(finals(ctx, _at("id_score", c))),
                spread(finals(ctx, _at("separability", c))),
                spread(finals(ctx, _at("concept_gap", c))),
            ]
        )
    header = [
        "concept",
        "freq",
        "strength",
        "separability onset",
        "steerability onset",
        "steer_effect (end)",
        "id_score (end)",
        "separability (end)",
        "concept_gap (end)",
    ]
    pair = f"{task.names[task.close_pair[0]]} / {task.names[task.close_pair[1]]}" if task.close_pair else "none"
    cooccur = task.language == "cooccur"
    unit = "token pairs" if cooccur else "markers"
    what = "its partner of the last start token" if cooccur else "its markers; the ideal model's gap is its strength"
    body = (
        f"Onset: the first checkpoint step at which the best layer's separability reaches "
        f"{probe.sep_threshold} (`probe.sep_threshold`) or its steering effect (probability mass moved to the "
        f"concept's markers at alpha = {probe.alpha_eval} x the layer's RMS norm, steering at "
        f"{probe.positions} positions) reaches {probe.steer_threshold} (`probe.steer_threshold`). "
        f"Cells: median [min, max] over runs (runs reaching it / runs); 'never' when no run does. "
        f"Close pair (sharing {task.n_shared} of {task.n_markers} {unit}): {pair}. `concept_gap`: the model's own "
        f"next-token mass on the concept ({what}) on the 'on' minus the 'off' stimuli.\n\n"
    )
    return Section("Onsets of separability and steerability", body + table(header, rows))


def _corr_section(ctx: ReportContext) -> Section:
    names, L = ctx.cfg.task.names, ctx.cfg.model.n_layers
    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    for c in names:
        _, sep = history_grid(ctx.df, "separability", c, L)
        _, steer = history_grid(ctx.df, "steer_effect", c, L)
        ax.scatter(sep.mean(-1).ravel(), steer.mean(-1).ravel(), s=8, alpha=0.5, label=c)
    ax.set_xlabel("separability (mean over layers)")
    ax.set_ylabel("steer_effect (mean over layers)")
    ax.legend(fontsize=7)
    filename = "sep_vs_steer.png"
    ctx.save(fig, filename)
    rows = [
        [c, spread(finals(ctx, _at("sep_steer_corr", c))), spread(finals(ctx, _at("sep_steer_diff_corr", c)))]
        for c in names
    ]
    rows.append(
        [
            "mean over concepts (sep_steer_corr, sep_steer_diff_corr)",
            spread(finals(ctx, "sep_steer_corr")),
            spread(finals(ctx, "sep_steer_diff_corr")),
        ]
    )
    body = (
        "Pearson correlation, over the checkpoints of one run, between the layer-mean separability and the "
        "layer-mean steering effect of a concept, and the same for their first differences over the checkpoints; "
        "median [min, max] over runs. Both series rise over training, so a shared trend alone makes the first r "
        "positive; the claim uses the second.\n\n" + table(["concept", "r", "r of first differences"], rows)
    )
    caption = f"Every (run, checkpoint) of every concept. {ctx.provenance()}"
    return Section("Separability vs steerability", body, [Figure(filename, caption)])


def _stability_section(ctx: ReportContext) -> Section:
    names, L = ctx.cfg.task.names, ctx.cfg.model.n_layers
    cache = ctx.run_dir / "checkpoint_directions.npz"
    try:
        if cache.exists():
            found = dict(np.load(cache))
        else:
            found = checkpoint_directions(ctx.experiment, ctx.run_dir)
            np.savez(cache, **found)
    except Exception as err:  # a run without its checkpoints still gets the rest of its report
        return Section("Direction stability", f"Not available: the checkpoint series could not be read ({err}).")
    stab = direction_stability(found["v"])
    steps = found["steps"]
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.2), squeeze=False)
    for k, (ax, c) in enumerate(zip(axes[0], names)):
        med = np.nanmedian(stab["successive"][:, :, k], axis=1).T  # [L, C-1]
        im = ax.imshow(med, origin="lower", aspect="auto", vmin=-1, vmax=1, cmap="RdBu_r")
        ticks = np.unique(np.linspace(0, len(steps) - 2, min(6, max(len(steps) - 1, 1))).round().astype(int))
        ax.set_xticks(ticks, [str(int(steps[i + 1])) for i in ticks], fontsize=7)
        ax.set_yticks(range(L))
        ax.set_xlabel("checkpoint step")
        ax.set_ylabel("layer")
        ax.set_title(c)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="cos(v_t, v_prev)")
    filename = "direction_stability.png"
    fig.savefig(ctx.run_dir / filename, dpi=110, bbox_inches="tight")
    plt.close(fig)
    # between concepts at the last checkpoint, per layer
    v_last = found["v"][-1]  # [R, K, L, D]
    rows = []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            cos = np.asarray(cosine(jnp.asarray(v_last[:, a]), jnp.asarray(v_last[:, b])))  # [R, L]
            rows.append([f"{names[a]} / {names[b]}", *(fmt(float(np.median(cos[:, l]))) for l in range(L))])
    # the in-training ID scores agree with the ones recomputed from the saved checkpoints
    diffs = []
    for k, c in enumerate(names):
        h_steps, values = history_grid(ctx.df, "id_score", c, L)
        idx = np.searchsorted(h_steps, steps)
        diffs.append(np.abs(values[:, idx] - np.moveaxis(found["id_score"][:, :, k], 0, 1)).max())
    body = (
        "Recomputed from the saved orbax checkpoint series (every evaluation step, `train.checkpoint_every=1`, "
        "`train.keep_checkpoints=0`). Directions are oriented (the mean on-minus-off difference projects "
        "positively), so cosines are signed: 1 = the same direction as at the previous checkpoint. The ID scores "
        "recomputed from the checkpoints agree with the on-device ones to "
        f"{fmt(float(max(diffs)))} (max abs difference).\n\nCosine between concepts' PCA directions at the last "
        "checkpoint (median over runs), per layer:\n\n" + table(["pair", *(f"l{l}" for l in range(L))], rows)
    )
    caption = f"Median over runs of the cosine between successive checkpoints' directions. {ctx.provenance()}"
    return Section("Direction stability", body, [Figure(filename, caption)])


def _median_final(ctx: ReportContext, key: str) -> float:
    vals = finals(ctx, key)
    vals = vals[np.isfinite(vals)]
    return float(np.median(vals)) if vals.size else float("nan")


def _paper_section(ctx: ReportContext) -> Section:
    task, L = ctx.cfg.task, ctx.cfg.model.n_layers
    names = task.names
    total = ctx.cfg.train.steps
    onsets = {c: _median_final(ctx, _at("steer_onset_step", c)) for c in names}
    lines = [
        "She et al. (2025; the LLM360 team at MBZUAI) apply their Intervention Detector to the released "
        "pretraining checkpoint series of LLM360's Amber and CrystalCoder models and report, qualitatively: (1) "
        "linear steerability emerges at intermediate training stages; (2) closely related concepts (anger, "
        "sadness) become steerable at distinct stages; (3) linear separability grows with training and correlates "
        "with steerability. The Claims table at the top tests each against a control with a rule; the medians "
        "over runs below describe the run:",
        "",
        "- (1) median steerability onset (step of "
        + fmt(total)
        + "): "
        + ", ".join(f"{c} {fmt(onsets[c])}" for c in names)
        + ".",
    ]
    rare = claims.rare_concepts(task)
    if rare:
        lines.append(
            "- The rare concept ("
            + ", ".join(f"{names[k]}, frequency {task.freqs[k]}" for k in rare)
            + ") gets less evidence because the preset makes it rare: an onset later than the others' follows "
            "from that input of the setup and is not a finding."
        )
    if task.close_pair:
        i, j = task.close_pair
        a, b = names[i], names[j]
        shared = "token pairs" if task.language == "cooccur" else "markers"
        lines.append(
            f"- (2) close pair {a} / {b} (shared {shared}; frequencies {task.freqs[i]} / {task.freqs[j]}, strengths "
            f"{task.strengths[i]} / {task.strengths[j]}): steerability onsets {fmt(onsets[a])} / {fmt(onsets[b])}, "
            f"separability onsets {fmt(_median_final(ctx, _at('sep_onset_step', a)))} / "
            f"{fmt(_median_final(ctx, _at('sep_onset_step', b)))}"
            + (
                "; the preset gives the pair different strengths, which alone can separate their onsets."
                if task.strengths[i] != task.strengths[j]
                else "."
            )
        )
    first_last = []
    for c in names:
        steps, sep = history_grid(ctx.df, "separability", c, L)
        med = np.nanmedian(sep.max(-1), axis=0)
        first_last.append(f"{c} {fmt(float(med[0]))} -> {fmt(float(med[-1]))}")
    lines.append(
        "- (3) best-layer separability, first -> last checkpoint (median): "
        + ", ".join(first_last)
        + f"; sep_steer_corr (median over runs) {fmt(_median_final(ctx, 'sep_steer_corr'))}, which a shared "
        "rise over training alone makes positive; of the first differences (the claim's statistic) "
        f"{fmt(_median_final(ctx, 'sep_steer_diff_corr'))}."
    )
    if task.language == "cooccur":
        design = (
            "A difference by design: these concepts are sets of token pairs over shared tokens, so telling them apart "
            "needs which b follows which start token; the probes read the state at a start token whose continuation "
            "depends on the concepts on. The embedding stream is not read: the reading token is the same in both "
            "members of a pair, so there is nothing to read there."
        )
    else:
        design = (
            "A difference by design: these concepts are lexical (marker tokens), so even a randomly initialized "
            "network's last-token state orders most stimulus pairs (ID scores well above 0.5 at step 0) and "
            "separates them partly; what training adds is the separability of on/off across different texts and, "
            "above all, the steerability. The embedding stream is not read: the reading token is the same in both "
            "members of a pair, so there is nothing to read there."
        )
    lines += ["", design]
    return Section("Comparison with the paper", "\n".join(lines))


def _language_section(task: concepts.ConceptsConfig) -> Section:
    """The concepts' frequencies, strengths and tokens (cooccur: their token pairs)."""
    chain = (
        f"{task.n_base} base tokens (Markov chain, {task.branching} successors each), sequences of {task.seq_len} "
        f"tokens, background rate {task.background}"
    )
    if task.language == "cooccur":
        pairs = concepts.feature_table(task)
        rows = [
            [c, task.freqs[k], task.strengths[k], " ".join(f"{a}>{b}" for a, b in pairs[k])]
            for k, c in enumerate(task.names)
        ]
        text = (
            f"Co-occurrence language (`task.language = cooccur`): {chain}. A concept is a set of token pairs "
            "(start token > the b token that follows it); every concept uses every start token, so which b follows "
            "which start token, not any single token, tells the concepts apart.\n\n"
        )
        return Section("The concept language", text + table(["concept", "frequency", "strength", "pairs"], rows))
    markers = concepts.marker_table(task)
    rows = [[c, task.freqs[k], task.strengths[k], " ".join(map(str, markers[k]))] for k, c in enumerate(task.names)]
    return Section(
        "The concept language",
        f"{chain}.\n\n" + table(["concept", "frequency", "strength", "marker tokens"], rows),
    )


def sections(ctx: ReportContext) -> list[Section]:
    """The experiment's report sections (`Experiment.report`): the concept language, the readability and steerability
    heatmaps, onsets, how much of each concept is learned, correlations, direction stability and the paper's
    findings. A run directory written before
    metric parameters is read in the form of the new one (`concept_form`, `concept_finals`)."""
    task = ctx.cfg.task
    ctx = dataclasses.replace(ctx, df=concept_form(ctx.df, task.names), summary=concept_finals(ctx.summary, task.names))
    intro = _language_section(task)
    figs = [
        _heatmap_figure(ctx, "id_score", "ID score (held-out pairs)", 0.5, 1.0, "viridis"),
        _heatmap_figure(ctx, "separability", "linear separability (ridge, held out)", 0.5, 1.0, "viridis"),
        _heatmap_figure(
            ctx, "steer_effect", f"steering effect at alpha={ctx.cfg.probe.alpha_eval}", None, None, "magma"
        ),
    ]
    heat = Section("Readability and steerability over training", figures=figs)
    return [
        intro,
        heat,
        _onset_section(ctx),
        bayes.learning_section(ctx),
        effects.onset_ci_section(ctx),
        effects.generation_section(ctx),
        effects.harm_section(ctx),
        _corr_section(ctx),
        _stability_section(ctx),
        _paper_section(ctx),
    ]
