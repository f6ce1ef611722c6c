"""Report sections of representation-dissimilarity: stitching penalties against each receiver's
same-family baseline, generalization stitching per hook, more-is-better, CKA heatmaps.

Everything is read from summary.json's `reference` (written by `after_sweep`); "± x" is the
standard deviation over model pairs (stitching) or seeds (accuracy); "median [95% CI]" is over
receiver seeds. The verdicts are computed from the claims (`representation_dissimilarity_claims`)
and stand in the Claims table at the top of the report; these sections describe the numbers.
The reference is read with the names of metric parameters (`stitch_penalty[sender=gelu,receiver=solu,
layer=1]`); a run directory written before them (`stitch_penalty_gelu_to_solu_l1`) is renamed first
(`reference`, `representation_dissimilarity_claims.current_names`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import matplotlib.pyplot as plt
import numpy as np

from jaxlab.claims import model_bootstrap
from jaxlab.experiments import representation_dissimilarity_claims as _claims
from jaxlab.reporting import Figure, ReportContext, Section, fmt, table
from jaxlab.results import metric_name

DIRECTIONS = (("gelu", "solu"), ("solu", "gelu"), ("gelu", "gelu"), ("solu", "solu"))  # (sender, receiver)


def reference(ctx: ReportContext) -> dict[str, Any]:
    """summary.json's reference with the names of metric parameters, whichever form the run directory has."""
    return _claims.current_names(ctx.summary.get("reference", {}))


def _layers(ref: Mapping[str, Any], name: str, **params: str) -> list[int]:
    """The hooks l with a value `name[**params,layer=l]` in `ref`."""
    out = []
    for k in ref:
        p = _claims.parse_dissimilarity_metric(k)
        if p is not None and p[0] == name and set(p[1]) == {*params, "layer"}:
            if all(p[1][key] == v for key, v in params.items()):
                out.append(int(p[1]["layer"]))
    return sorted(out)


def _curve(ref: Mapping[str, Any], name: str, **params: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ls = _layers(ref, name, **params)
    return (
        np.asarray(ls),
        np.asarray([ref[metric_name(name, **params, layer=l)] for l in ls]),
        np.asarray([ref.get(metric_name(f"{name}_std", **params, layer=l), np.nan) for l in ls]),
    )


def interval(statistic: Any, sizes: dict[str, int]) -> str:
    """ "estimate [95% CI]" of a statistic of resampled model indices (`jaxlab.claims.model_bootstrap`)."""
    est, lo, hi, _ = model_bootstrap(statistic, sizes)
    return f"{fmt(est)} [{fmt(lo)}, {fmt(hi)}]"


def asymmetry_summary(ref: dict) -> str:
    """The raw asymmetry index in numbers, with what it leaves out (no verdict: the Claims table has it)."""
    if "asymmetry_index" not in ref:
        return "The raw asymmetry index was not measured (the sweep needs both activations without the shortcut)."
    a, sd, n = ref["asymmetry_index"], ref["asymmetry_index_std"], int(ref["asymmetry_index_n"])
    frac = ref.get("asymmetry_index_frac_positive", 0.0)
    return (
        f"Raw asymmetry_index = {fmt(a)} nats (mean of penalty(SoLU -> GeLU) - penalty(GeLU -> SoLU) over "
        f"{n} model pairs and hooks 1..L; std over pairs {fmt(sd)}; {round(frac * n)} of {n} pairs > 0). It "
        "does not subtract the receivers' same-family penalties, so a family that is harder to stitch into "
        "(a larger same-family penalty) moves it whatever the other family's representations are; the claim "
        "`solu_gelu_asymmetry` subtracts them (the table above; its verdict is in the Claims table)."
    )


def _excess_rows(ref: dict) -> tuple[list[list[str]], bool]:
    """Rows (hook, excess into GeLU, excess into SoLU, difference) and whether they have intervals."""
    into_gelu, into_solu, sizes = _claims.asymmetry_parts(ref)
    if into_gelu and into_solu and min(sizes.values()) >= 2:
        rows = []
        for h in (h for h in into_gelu if h in into_solu):
            g, s_ = into_gelu[h], into_solu[h]
            diff = interval(lambda idx, g=g, s_=s_: g(idx) - s_(idx), sizes)
            rows.append([str(h), interval(g, sizes), interval(s_, sizes), diff])
        return rows, True
    rows = []
    pen = lambda sender, receiver, h: ref[metric_name("stitch_penalty", sender=sender, receiver=receiver, layer=h)]
    for h in _layers(ref, "stitch_penalty", sender="solu", receiver="gelu"):
        try:
            eg = pen("solu", "gelu", h) - pen("gelu", "gelu", h)
            es = pen("gelu", "solu", h) - pen("solu", "solu", h)
        except KeyError:
            continue
        rows.append([str(h), fmt(eg), fmt(es), fmt(eg - es)])
    return rows, False


def budget_words(probe: Any) -> str:
    """The stitch training budget in words: the stopping rule or the fixed number of steps."""
    if getattr(probe, "stitch_tol", 0.0) > 0:
        return (
            f"Adam at lr {fmt(probe.stitch_lr)} until a {probe.stitch_window}-step window's mean training loss "
            f"improves on the previous one's by less than {fmt(probe.stitch_tol)} of it, at most "
            f"{probe.stitch_steps} steps"
        )
    return f"{probe.stitch_steps} Adam steps at lr {fmt(probe.stitch_lr)}"


def receivers_words(probe: Any) -> str:
    """Which runs each run is stitched into (`probe.stitch_receivers`), in words."""
    k = int(getattr(probe, "stitch_receivers", 0))
    if k <= 0:
        return "every run of the other family (and of its own, other seeds)"
    return (
        f"{k} runs of each receiving family (a ring: seed index i into i..i+{k - 1} of the other family, "
        f"i+1..i+{k} of its own, so every model sends and receives {k} times)"
    )


def _ci(est_lo_hi: tuple[float, float, float]) -> str:
    est, lo, hi = est_lo_hi
    return f"{fmt(est)} [{fmt(lo)}, {fmt(hi)}]"


def budget_section(ctx: ReportContext) -> Section | None:
    """Report section: the budget the stopping rule used per direction and hook, and the budget check of every
    stitching claim (its statistic at twice the budget); None when the run has neither."""
    ref = reference(ctx)
    rows = []
    directions = [(f"{a} -> {b}", "stitch_penalty", a, b) for a, b in DIRECTIONS]
    directions += [("A -> B", "gen_penalty", "a", "b"), ("B -> B", "gen_penalty", "b", "b")]
    for label, metric, sender, receiver in directions:
        hooks = _layers(ref, f"{metric}_steps_used", sender=sender, receiver=receiver)
        if not hooks:
            continue
        cells = []
        for h in hooks:
            key = dict(sender=sender, receiver=receiver, layer=h)
            used = f"{fmt(ref[metric_name(f'{metric}_steps_used', **key)])} / "
            used += fmt(ref[metric_name(f"{metric}_steps_used_max", **key)])
            double = ref.get(metric_name(f"{metric}_double", **key))
            shift = "" if double is None else f"; {fmt(double - ref[metric_name(metric, **key)])}"
            cells.append(used + shift)
        rows.append([label, *cells])
    checks = _claims.budget_checks(ref)
    if not rows and not checks:
        return None
    n_h = max((len(r) - 1 for r in rows), default=0)
    body = (
        f"Stitch training: {budget_words(ctx.cfg.probe)}. Per direction and hook: the steps the rule used (mean / "
        "most over model pairs) and, with the budget check, the mean penalty at twice each pair's budget minus "
        "the penalty at it (nats).\n\n" + table(["A -> B"] + [f"l={l}" for l in range(n_h)], rows)
    )
    if checks:
        check_rows = [[c.claim, _ci(c.effect), _ci(c.shift), "passes" if c.passes else "fails"] for c in checks]
        body += (
            "\n\nBudget check of the claims' statistics (rule, fixed before the runs: it passes when doubling the "
            "budget moves the statistic by less than the statistic itself, |shift| < |effect|; estimates with 95% "
            "bootstrap CIs over the models):\n\n"
            + table(["claim", "statistic at the budget", "at twice it minus at it", "check"], check_rows)
        )
    else:
        body += "\n\nNo budget check: probe.stitch_budget_check was off, or no claim's pairs were stitched."
    return Section("Stitch budget", body)


def stitching_section(ctx: ReportContext) -> Section:
    """Report section: the stitching penalty per hook, GeLU and SoLU into each other and into their own family
    (`stitching_penalty.png`), and the asymmetry."""
    ref = reference(ctx)
    probe = ctx.cfg.probe
    fig, ax = plt.subplots(figsize=(6, 3.6))
    rows = []
    for sender, receiver in DIRECTIONS:
        ls, mean, sd = _curve(ref, "stitch_penalty", sender=sender, receiver=receiver)
        if ls.size:
            ax.errorbar(ls, mean, yerr=sd, marker="o", capsize=3, label=f"{sender} -> {receiver}")
            rows.append([f"{sender} -> {receiver}"] + [f"{fmt(m)} ± {fmt(s)}" for m, s in zip(mean, sd)])
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("hook l (0: embeddings, L: after the last block)")
    ax.set_ylabel("stitching penalty (nats)")
    ax.legend(fontsize=8)
    n_h = max((len(r) - 1 for r in rows), default=0)
    excess, per_seed = _excess_rows(ref)
    how = (
        "means over model pairs [95% bootstrap CI over the models of each family, which pairs share]"
        if per_seed
        else "differences of the means over model pairs: this summary has no per-pair penalties (it was "
        "written before they were stored), so no interval"
    )
    body = (
        f"Affine stitching (least-squares init, then {budget_words(probe)} on the receiver's task loss) of every run's "
        f"residual stream at hook l into {receivers_words(probe)}, at the reference point "
        f"(width {fmt(ref.get('ref_width'))}, depth {fmt(ref.get('ref_depth'))}); same-family rows pair "
        "different seeds only. Mean ± std over model pairs (nats).\n\n"
        + table(["A -> B"] + [f"l={l}" for l in range(n_h)], rows)
        + "\n\nCross-family excess over the receiver's same-family penalty, per hook: into GeLU = "
        "pen(SoLU -> GeLU) - pen(GeLU -> GeLU), into SoLU = pen(GeLU -> SoLU) - pen(SoLU -> SoLU), and their "
        f"difference (> 0 is the paper's direction); {how}.\n\n"
        + table(["hook", "excess into GeLU", "excess into SoLU", "difference"], excess)
        + "\n\n"
        + asymmetry_summary(ref)
    )
    figs = [Figure(ctx.save(fig, "stitching_penalty.png"), "Stitching penalty per hook. " + ctx.provenance())]
    return Section("Stitching: GeLU vs SoLU", body, figs)


def generalization_section(ctx: ReportContext) -> Section | None:
    """Report section: the groups trained with and without the shortcut, their ID / OOD accuracy and the stitching
    penalties between them; None without them."""
    ref = reference(ctx)
    if "generalization_gap_layer" not in ref:
        return None
    acc = [
        [grp, f"{fmt(ref[f'id_acc_group_{k}'])} ± {fmt(ref[f'id_acc_group_{k}_std'])}",
         f"{fmt(ref[f'ood_acc_group_{k}'])} ± {fmt(ref[f'ood_acc_group_{k}_std'])}"]
        for k, grp in (("a", "A (trained with the shortcut)"), ("b", "B (trained without)"))
    ]  # fmt: skip
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for (sender, receiver), label in (
        (("a", "b"), "A -> B"),
        (("b", "a"), "B -> A"),  # run directories written before B -> A was dropped
        (("b", "b"), "B -> B (seeds)"),
    ):
        ls, mean, sd = _curve(ref, "gen_penalty", sender=sender, receiver=receiver)
        if ls.size:
            ax.errorbar(ls, mean, yerr=sd, marker="o", capsize=3, label=label)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("hook l")
    ax.set_ylabel("stitching penalty (nats)")
    ax.legend(fontsize=8)
    id_gap = abs(ref["id_acc_group_a"] - ref["id_acc_group_b"])
    ood_gap = abs(ref["ood_acc_group_a"] - ref["ood_acc_group_b"])
    chance = float(np.log(ctx.cfg.task.p))
    parts, sizes = _claims.localization_parts(ref)
    rows = []
    gen = lambda sender, receiver, h: ref.get(metric_name("gen_penalty", sender=sender, receiver=receiver, layer=h))
    for h in _layers(ref, "gen_penalty", sender="a", receiver="b"):
        ab, bb = gen("a", "b", h), gen("b", "b", h)
        excess = interval(parts[h], sizes) if h in parts and min(sizes.values()) >= 2 else "—"
        rows.append([str(h), fmt(ab), fmt(bb), excess])
    shortcuts = sorted(float(v) for v in dict(ctx.cfg.sweep.grid).get("task.shortcut", (ctx.cfg.task.shortcut,)))
    s_a = fmt(shortcuts[-1]) if shortcuts else "?"
    caveat = (
        f" Group A was trained with task.shortcut = {fmt(shortcuts[-1])}: the hint always names the answer, "
        "nothing makes A use the operands, and an A -> B penalty near the chance loss means B gets no usable "
        "operand information from A's stream at that hook. A contrast between hooks then compares chance with "
        "chance (the localization claim is untested for this preset)."
        if shortcuts and shortcuts[-1] >= 1.0
        else f" Group A was trained with task.shortcut = {s_a}: the hint is noise on the rest of its data, so "
        "both groups compute the sum from the operands and differ only in how much they also read the hint."
    )
    body = (
        f"Group A (GeLU, trained on data where the hint token names the answer with probability {s_a}) and "
        "group B (trained with the hint randomized) on the in-distribution test set (hint holds) and the "
        "shifted one (hint is noise). Accuracy at the answer positions, mean ± std over seeds:\n\n"
        + table(["group", "ID acc", "OOD acc"], acc)
        + f"\n\nID gap {fmt(100 * id_gap, 3)} points, OOD gap {fmt(100 * ood_gap, 3)} points. Stitching A's stream "
        "into B (on B's shortcut-free task) per hook, against B's other seeds stitched into B (means over model "
        "pairs, nats); the excess with its 95% bootstrap CI over the A and B models. The chance loss of the "
        f"task is ln p = {fmt(chance)} nats.\n\n"
        + table(["hook", "A -> B", "B -> B", "excess A -> B over B -> B"], rows)
        + "\n\nThe localization claim compares the excess between the last hook and hook 1 (Claims table)."
        + caveat
    )
    return Section(
        "Generalization localization",
        body,
        [
            Figure(
                ctx.save(fig, "generalization_stitching.png"),
                "Between-group stitching penalty per hook. " + ctx.provenance(),
            )
        ],
    )


def more_section(ctx: ReportContext) -> Section | None:
    """Report section: the narrow and wide GeLU families stitched into each other ('more is better'); None without
    them."""
    ref = reference(ctx)
    if "more_loss_wide" not in ref:
        return None
    pm = lambda k: f"{fmt(ref[k])} ± {fmt(ref[k + '_std'])}"
    rows = [
        ["narrow model alone", fmt(ref["more_loss_narrow"])],
        ["wide model alone", fmt(ref["more_loss_wide"])],
        ["narrow bottom -> wide top", pm("more_stitched_loss_narrow_to_wide")],
        ["wide bottom -> narrow top", pm("more_stitched_loss_wide_to_narrow")],
    ]  # fmt: skip
    body = (
        f"GeLU families of the smallest and largest width, stitched at hook l = {int(ref['more_hook_layer'])} "
        "(the lower half of the blocks of one, the upper half of the other); loss on the shortcut-free task (nats):\n\n"
        + table(["model", "loss"], rows)
        + "\n\nWide bottom -> narrow top beats the narrow model alone in "
        + f"{fmt(ref['more_wide_to_narrow_beats_narrow'])} of the model pairs "
        "(Bansal et al.'s 'more is better' predicts it does)."
    )
    return Section("More is better", body)


def cka_section(ctx: ReportContext) -> Section | None:
    """Report section: the layer x layer linear CKA matrices (`cka_heatmaps.png`); None without CKA values."""
    ref = reference(ctx)
    mats: dict[tuple[str, str], dict[tuple[int, int], float]] = {}
    for k, v in ref.items():
        p = _claims.parse_dissimilarity_metric(k)
        if p is None or p[0] not in ("cka_within", "cka_across"):
            continue
        q = p[1]
        tags = str(q["model"]) if p[0] == "cka_within" else f"{q['model_a']}|{q['model_b']}"
        mats.setdefault((p[0], tags), {})[(int(q["layer_a"]), int(q["layer_b"]))] = v
    if not mats:
        return None
    items = sorted(mats.items())
    cols = min(4, len(items))
    rows_n = int(np.ceil(len(items) / cols))
    fig, axes = plt.subplots(rows_n, cols, figsize=(3 * cols, 2.8 * rows_n), squeeze=False)
    for ax, ((kind, tags), entries) in zip(axes.ravel(), items):
        ni = max(i for i, _ in entries) + 1
        nj = max(j for _, j in entries) + 1
        mat = np.full((ni, nj), np.nan)
        for (i, j), v in entries.items():
            mat[i, j] = v
        im = ax.imshow(mat, vmin=0, vmax=1, cmap="viridis", origin="lower")
        ax.set_title(f"{kind[4:]}: {tags}".replace("|", " vs "), fontsize=7)
        ax.set_xlabel("layer", fontsize=7)
        ax.set_ylabel("layer", fontsize=7)
    for ax in axes.ravel()[len(items) :]:
        ax.axis("off")
    fig.colorbar(im, ax=axes.ravel().tolist(), shrink=0.7)
    body = (
        "Linear CKA between residual-stream hooks at the answer positions of shortcut-free sequences. "
        "'within': layer i vs layer j of the same run (mean over seeds); 'across': runs of two groups "
        "(different seeds when a group meets itself). "
        f"Same-layer CKA across seeds within a family (layers 1..L): {fmt(ref.get('cka_within_mean'))}; "
        f"GeLU vs SoLU: {fmt(ref.get('cka_gelu_solu_mean'))}."
    )
    body += block_structure_text(ref)
    fig.savefig(ctx.run_dir / "cka_heatmaps.png", dpi=110)
    plt.close(fig)
    return Section("CKA matrices", body, [Figure("cka_heatmaps.png", "Layer x layer linear CKA. " + ctx.provenance())])


def block_structure_text(ref: Mapping[str, Any]) -> str:
    """The block-structure contrast per family (claim `cka_block_structure`): the boundary each half of the seeds
    picks and the per-run contrasts; empty without per-run CKA matrices."""
    lines = []
    for family, by_seed in sorted(_claims.run_cka_matrices(ref).items()):
        seeds = sorted(by_seed)
        mats = [by_seed[s][1:, 1:] for s in seeds]
        if len(seeds) < 2 or mats[0].shape[0] < 3:
            continue
        boundary = _claims.best_boundary(np.nanmean(mats, axis=0))
        if boundary is None:
            continue
        contrasts = ", ".join(fmt(_claims.block_contrast(m, boundary)) for m in mats)
        lines.append(
            f"{family}: the mean matrix of all seeds puts the boundary between hooks {boundary} and {boundary + 1}; "
            f"per-run contrast there {contrasts}"
        )
    if not lines:
        return ""
    return (
        "\n\nBlock structure (hooks 1..L, two blocks; contrast = CKA within a block minus across the boundary at "
        "the same distance in depth; the claim picks each run's boundary on the other half of its family's "
        "seeds, these lines on all of them, for description):\n\n" + "\n".join(f"- {x}" for x in lines)
    )


def sections(ctx: ReportContext) -> list[Section]:
    """The experiment's report sections (`Experiment.report`): stitching, then those the sweep's grid allows."""
    out = [stitching_section(ctx)]
    for make in (budget_section, generalization_section, more_section, cka_section):
        sec = make(ctx)
        if sec is not None:
            out.append(sec)
    return out
