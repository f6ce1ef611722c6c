"""Report sections of representation-dissimilarity: stitching curves and asymmetry verdict,
generalization localization, more-is-better, CKA heatmaps.

Everything is read from summary.json's `reference` (written by `after_sweep`); "± x" is the
standard deviation over model pairs (stitching) or seeds (accuracy).
"""

from __future__ import annotations

import re

import matplotlib.pyplot as plt
import numpy as np

from jaxlab.reporting import Figure, ReportContext, Section, fmt, table

DIRECTIONS = ("gelu_to_solu", "solu_to_gelu", "gelu_to_gelu", "solu_to_solu")
_CKA = re.compile(r"^(cka_(?:within|across))\[(?P<tags>[^\]]+)\]_l(?P<i>\d+)_l(?P<j>\d+)$")


def _layers(ref: dict, name: str) -> list[int]:
    return sorted(int(m.group(1)) for k in ref if (m := re.fullmatch(rf"{name}_l(\d+)", k)))


def _curve(ref: dict, name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ls = _layers(ref, name)
    return (
        np.asarray(ls),
        np.asarray([ref[f"{name}_l{l}"] for l in ls]),
        np.asarray([ref.get(f"{name}_l{l}_std", np.nan) for l in ls]),
    )


def asymmetry_verdict(ref: dict) -> str:
    """One plain sentence: does penalty(SoLU -> GeLU) > penalty(GeLU -> SoLU) hold, beyond the spread?"""
    if "asymmetry_index" not in ref:
        return "The asymmetry was not measured (the sweep needs both activations without the shortcut)."
    a, sd, n = ref["asymmetry_index"], ref["asymmetry_index_std"], int(ref["asymmetry_index_n"])
    se = sd / np.sqrt(max(n, 1))
    frac = ref.get("asymmetry_index_frac_positive", 0.0)
    head = (
        f"asymmetry_index = {fmt(a)} nats (std over {n} model pairs {fmt(sd)}, s.e. {fmt(se)}; "
        f"{round(frac * n)} of {n} pairs > 0)"
    )
    if a > 2 * se and a > 0:
        return head + ": the paper's asymmetry REPRODUCES here (SoLU -> GeLU costs more than GeLU -> SoLU)."
    if a < -2 * se:
        return head + ": the asymmetry is REVERSED here (GeLU -> SoLU costs more), unlike the paper."
    return (
        head + ": NO asymmetry beyond the seed spread (|index| < 2 s.e.); the paper's finding does not reproduce here."
    )


def stitching_section(ctx: ReportContext) -> Section:
    ref = ctx.summary.get("reference", {})
    fig, ax = plt.subplots(figsize=(6, 3.6))
    rows = []
    for d in DIRECTIONS:
        ls, mean, sd = _curve(ref, f"stitch_penalty_{d}")
        if ls.size:
            ax.errorbar(ls, mean, yerr=sd, marker="o", capsize=3, label=d.replace("_to_", " -> "))
            rows.append([d.replace("_to_", " -> ")] + [f"{fmt(m)} ± {fmt(s)}" for m, s in zip(mean, sd)])
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("hook l (0: embeddings, L: after the last block)")
    ax.set_ylabel("stitching penalty (nats)")
    ax.legend(fontsize=8)
    n_h = max((len(r) - 1 for r in rows), default=0)
    body = (
        "Affine stitching (least-squares init, then Adam on the receiver's task loss) of every run's "
        "residual stream at hook l into every run of the other family, at the reference point "
        f"(width {fmt(ref.get('ref_width'))}, depth {fmt(ref.get('ref_depth'))}); same-family rows pair "
        "different seeds only. Mean ± std over model pairs.\n\n"
        + table(["A -> B"] + [f"l={l}" for l in range(n_h)], rows)
        + "\n\n**Verdict.** "
        + asymmetry_verdict(ref)
        + " Brown et al. report that stitching SoLU into GeLU is costlier than the reverse."
    )
    figs = [Figure(ctx.save(fig, "stitching_penalty.png"), "Stitching penalty per hook. " + ctx.provenance())]
    return Section("Stitching: GeLU vs SoLU", body, figs)


def generalization_section(ctx: ReportContext) -> Section | None:
    ref = ctx.summary.get("reference", {})
    if "generalization_gap_layer" not in ref:
        return None
    acc = [
        [grp, f"{fmt(ref[f'id_acc_group_{k}'])} ± {fmt(ref[f'id_acc_group_{k}_std'])}",
         f"{fmt(ref[f'ood_acc_group_{k}'])} ± {fmt(ref[f'ood_acc_group_{k}_std'])}"]
        for k, grp in (("a", "A (trained with the shortcut)"), ("b", "B (trained without)"))
    ]  # fmt: skip
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for name, label in (
        ("gen_penalty_a_to_b", "A -> B"),
        ("gen_penalty_b_to_a", "B -> A"),
        ("gen_penalty_b_to_b", "B -> B (seeds)"),
    ):
        ls, mean, sd = _curve(ref, name)
        if ls.size:
            ax.errorbar(ls, mean, yerr=sd, marker="o", capsize=3, label=label)
    ax.axhline(0, color="k", lw=0.5)
    ax.set_xlabel("hook l")
    ax.set_ylabel("stitching penalty (nats)")
    ax.legend(fontsize=8)
    id_gap = abs(ref["id_acc_group_a"] - ref["id_acc_group_b"])
    ood_gap = abs(ref["ood_acc_group_a"] - ref["ood_acc_group_b"])
    body = (
        "Group A (GeLU, trained on data where the hint token names the answer) and group B (trained with "
        "the hint randomized) on the in-distribution test set (hint holds) and the shifted one (hint is "
        "noise). Accuracy at the answer positions, mean ± std over seeds:\n\n"
        + table(["group", "ID acc", "OOD acc"], acc)
        + f"\n\nID gap {fmt(100 * id_gap, 3)} points, OOD gap {fmt(100 * ood_gap, 3)} points. Stitching A's stream "
        "into B (on B's shortcut-free task) per hook localizes where A stops carrying what B needs; the "
        f"largest excess over the B -> B seed baseline is at hook l = {int(ref['generalization_gap_layer'])}. "
        "ID accuracy alone does not separate the groups."
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
    ref = ctx.summary.get("reference", {})
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
    ref = ctx.summary.get("reference", {})
    mats: dict[tuple[str, str], dict[tuple[int, int], float]] = {}
    for k, v in ref.items():
        if m := _CKA.match(k):
            mats.setdefault((m.group(1), m.group("tags")), {})[(int(m.group("i")), int(m.group("j")))] = v
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
    fig.savefig(ctx.run_dir / "cka_heatmaps.png", dpi=110)
    plt.close(fig)
    return Section("CKA matrices", body, [Figure("cka_heatmaps.png", "Layer x layer linear CKA. " + ctx.provenance())])


def sections(ctx: ReportContext) -> list[Section]:
    out = [stitching_section(ctx)]
    for make in (generalization_section, more_section, cka_section):
        sec = make(ctx)
        if sec is not None:
            out.append(sec)
    return out
