"""Cross-program analyses of representation-dissimilarity: stitching matrices, asymmetry, CKA,
generalization localization, more-is-better (definitions in the experiment's module docstring).

Input: the `GroupOutcome`s of a sweep (states with a leading run axis). Every stitching call is
`jaxlab.probes.stitching.stitch_runs` (all model pairs and hooks of two groups in one compiled
program); every CKA value comes from one `jaxlab.metrics.pairwise(linear_cka, ...)` call over all
representations of all runs of all groups.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from tqdm.auto import tqdm

from jaxlab.metrics import linear_cka, pairwise
from jaxlab.models import residual_hooks, run_with_cache
from jaxlab.probes.stitching import StitchConfig, stitch_runs
from jaxlab.results import metric_name
from jaxlab.tasks import modsum
from jaxlab.train.outcomes import finished_runs, run_seeds
from jaxlab.train.watchdog import progress


@dataclasses.dataclass(frozen=True)
class Point:
    """A point of the sweep grid: the MLP activation, the task's shortcut, the model width (d_model) and depth
    (n_layers)."""

    activation: str
    shortcut: float
    width: int
    depth: int

    @property
    def tag(self) -> str:
        """The group tag `{activation}_w{width}_d{depth}_s{shortcut}`."""
        return f"{self.activation}_w{self.width}_d{self.depth}_s{self.shortcut:g}"


def point_of(outcome: Any) -> Point:
    """The grid point of a group's outcome (from its config)."""
    cfg = outcome.group.cfg
    return Point(cfg.model.activation, float(cfg.task.shortcut), int(cfg.model.d_model), int(cfg.model.n_layers))


def stitch_config(probe: Any) -> StitchConfig:
    """The `StitchConfig` of the probe section's `stitch_*` fields (its other settings at their defaults)."""
    return StitchConfig(
        steps=probe.stitch_steps,
        lr=probe.stitch_lr,
        batch_size=probe.stitch_batch_size,
        fit_batch_size=probe.stitch_fit_batch_size,
        tol=probe.stitch_tol,
        window=probe.stitch_window,
        double=probe.stitch_budget_check,
    )


def _params(outcome: Any) -> Any:
    return outcome.state.params


def pair_design(ra: int, rb: int, same: bool, receivers: int) -> tuple[np.ndarray, np.ndarray]:
    """(sender indices, receiver indices) of the model pairs to stitch: every pair (a run never into itself when
    `same`) for receivers = 0 or receivers >= the pairs available; else each sender i into the `receivers`
    receivers i + o mod rb, o = 0, 1, ... (o = 1, 2, ... when `same`): a ring design in which every model is a
    sender and a receiver equally often (rb >= ra)."""
    if receivers <= 0 or receivers >= rb - int(same):
        ia, ib = (g.ravel() for g in np.meshgrid(np.arange(ra), np.arange(rb), indexing="ij"))
        keep = ia != ib if same else np.ones(ia.shape, bool)
        return ia[keep], ib[keep]
    offsets = np.arange(receivers) + int(same)
    ia = np.repeat(np.arange(ra), receivers)
    return ia, (ia + np.tile(offsets, ra)) % rb


def stitch_pair(
    a: Any, b: Any, scfg: StitchConfig, hooks: Sequence[str] | None = None, receivers: int = 0
) -> dict[str, np.ndarray]:
    """Runs of group a into runs of group b at every hook (the pairs of `pair_design`): penalty etc. [Ra, Rb, H]
    (numpy; NaN for a pair not stitched; a run into itself is never stitched when a is b); base_loss [Ra, Rb]."""
    pa, pb = _params(a), _params(b)
    ra = jax.tree_util.tree_leaves(pa)[0].shape[0]
    rb = jax.tree_util.tree_leaves(pb)[0].shape[0]
    ia, ib = pair_design(ra, rb, a is b, receivers)
    take = lambda tree, idx: jax.tree_util.tree_map(lambda x: x[idx], tree)
    r = stitch_runs(a.train, take(pa, ia), b.train, take(pb, ib), hooks, cfg=scfg, pairs="zip")
    out = {}
    for k in ("penalty", "init_penalty", "stitched_loss", "base_loss", "steps_used", "penalty_double"):
        v = np.asarray(getattr(r, k), np.float64)
        full = np.full((ra, rb, *v.shape[1:]), np.nan)
        full[ia, ib] = v
        out[k] = full
    return out


def _budget(
    out: dict[str, float], name: str, res: dict[str, np.ndarray], a: Any, b: Any, same: bool, **params: str
) -> None:
    """The budget the stopping rule used (`{name}_steps_used[**params,layer=l]`: mean over model pairs, `_max`: the
    most) and, with the budget check, every pair's penalty at twice that budget (`{name}_double_pair[...]`) and
    its mean over pairs (`{name}_double[...]`)."""
    used = pair_values(res["steps_used"].astype(np.float64), same)
    for layer in range(used.shape[1]):
        out[metric_name(f"{name}_steps_used", **params, layer=layer)] = float(np.nanmean(used[:, layer]))
        out[metric_name(f"{name}_steps_used_max", **params, layer=layer)] = float(np.nanmax(used[:, layer]))
    double = res["penalty_double"]
    if np.isfinite(double).any():
        _layer_stats(out, f"{name}_double", pair_values(double, same), **params)
        _per_pair(out, f"{name}_double", double, a, b, same, **params)


def pair_values(pen_RRH: np.ndarray, same: bool) -> np.ndarray:
    """[n_pairs, H]: every stitched (i, j) pair (finite at some hook), without i == j when a group is stitched into
    itself."""
    ra, rb = pen_RRH.shape[:2]
    keep = ~np.eye(ra, rb, dtype=bool) if same else np.ones((ra, rb), bool)
    vals = pen_RRH[keep]
    return vals[np.isfinite(vals.reshape(vals.shape[0], -1)).any(1)]


def _per_pair(
    out: dict[str, float], name: str, pen_RRH: np.ndarray, senders: Any, receivers: Any, same: bool, **params: str
) -> None:
    """`{name}_pair[**params,layer=l,sender_seed=i,receiver_seed=j]`: the penalty of sender seed i into receiver
    seed j at hook l, for every finite entry; a run stitched into itself and a run that diverged are left out (the
    claims read these keys, and resample models, not pairs: `representation_dissimilarity_claims`)."""
    s_seeds, s_ok = seeds_of(senders), ok_runs(senders)
    r_seeds, r_ok = seeds_of(receivers), ok_runs(receivers)
    for a, i in enumerate(s_seeds):
        for b, j in enumerate(r_seeds):
            if (same and a == b) or not (s_ok[a] and r_ok[b]):
                continue
            for layer in range(pen_RRH.shape[2]):
                if np.isfinite(pen_RRH[a, b, layer]):
                    key = metric_name(f"{name}_pair", **params, layer=layer, sender_seed=int(i), receiver_seed=int(j))
                    out[key] = float(pen_RRH[a, b, layer])


ok_runs = finished_runs  # [R] whether each run of a group finished without diverging
seeds_of = run_seeds  # the seeds of a group's runs, in the order of its state's run axis


def _layer_stats(out: dict[str, float], name: str, vals_PH: np.ndarray, **params: str) -> None:
    """`{name}[**params,layer=l]` and `{name}_std[**params,layer=l]`: mean and standard deviation over the rows
    (model pairs) at every hook l."""
    for layer in range(vals_PH.shape[1]):
        out[metric_name(name, **params, layer=layer)] = float(np.nanmean(vals_PH[:, layer]))
        out[metric_name(f"{name}_std", **params, layer=layer)] = float(np.nanstd(vals_PH[:, layer]))


def asymmetry(gs_RRH: np.ndarray, sg_RRH: np.ndarray) -> np.ndarray:
    """[Rg, Rs, H]: penalty(SoLU j -> GeLU i) - penalty(GeLU i -> SoLU j) for the same model pair."""
    return np.swapaxes(sg_RRH, 0, 1) - gs_RRH


def cka_positions(cfg: Any) -> np.ndarray:
    """The answer positions of the modsum task (`modsum.loss_positions`), where CKA reads the representations."""
    return np.asarray(modsum.loss_positions(cfg.task))


def representations(outcome: Any, inputs: jax.Array) -> jax.Array:
    """[R, H, N, D]: every run's residual stream at every hook at the answer positions of `inputs`."""
    train = outcome.train
    hooks = residual_hooks(train.cfg.model.n_layers, embeddings=True, name="pre")  # the stitching hooks
    pos = cka_positions(train.cfg)

    def one(params):
        _, cache = run_with_cache(train.model, params, inputs, names=hooks)
        stack = jax.numpy.stack([cache[h][:, pos] for h in hooks])  # [H, B, K, D]
        return stack.reshape(len(hooks), -1, stack.shape[-1])

    return jax.jit(jax.vmap(one))(_params(outcome))


def cka_matrix(outcomes: Sequence[Any], inputs: jax.Array) -> tuple[np.ndarray, list[tuple[int, int, int]]]:
    """The CKA of every pair of representations (group g, run r, hook h), one `pairwise` call.

    Returns ([M, M], index) with index[m] = (g, r, h)."""
    reps, index = [], []
    for g, o in enumerate(outcomes):
        acts = representations(o, inputs)
        for r in range(acts.shape[0]):
            for h in range(acts.shape[1]):
                reps.append(acts[r, h])
                index.append((g, r, h))
    return np.asarray(pairwise(linear_cka, reps)), index


def _rows(index, g):
    rows: dict[int, dict[int, int]] = {}
    for m, (gg, r, h) in enumerate(index):
        if gg == g:
            rows.setdefault(r, {})[h] = m
    return rows


def cka_within(matrix: np.ndarray, index, g: int) -> np.ndarray:
    """[H, H]: layer i vs layer j of the same run, mean over the runs of group g."""
    rows = _rows(index, g)
    mats = [matrix[np.ix_(list(hs.values()), list(hs.values()))] for hs in rows.values()]
    return np.mean(mats, axis=0)


def cka_runs(matrix: np.ndarray, index, g: int) -> dict[int, np.ndarray]:
    """{run r: [H, H]}: layer i vs layer j within each run of group g (the per-run matrices `cka_within`
    averages; the block-structure claim reads them)."""
    return {r: matrix[np.ix_(list(hs.values()), list(hs.values()))] for r, hs in _rows(index, g).items()}


def cka_across(matrix: np.ndarray, index, ga: int, gb: int) -> np.ndarray:
    """[Ha, Hb]: layer i of a run of ga vs layer j of a run of gb, mean over run pairs (r != r' if ga == gb)."""
    ra, rb = _rows(index, ga), _rows(index, gb)
    mats = [
        matrix[np.ix_(list(ha.values()), list(hb.values()))]
        for i, ha in ra.items()
        for j, hb in rb.items()
        if not (ga == gb and i == j)
    ]
    return np.mean(mats, axis=0)


def _store_matrix(out: dict[str, float], name: str, mat: np.ndarray, **params: str) -> None:
    """`{name}[**params,layer_a=i,layer_b=j]` for every entry of a layer x layer matrix."""
    for i in range(mat.shape[0]):
        for j in range(mat.shape[1]):
            out[metric_name(name, **params, layer_a=i, layer_b=j)] = float(mat[i, j])


def analyse(outcomes: Sequence[Any]) -> dict[str, float]:
    """Every cross-program result as flat reference scalars (see the experiment's docstring)."""
    outcomes = list(outcomes)
    by_point = {point_of(o): o for o in outcomes}
    cfg0 = outcomes[0].group.cfg
    probe = cfg0.probe
    scfg = stitch_config(probe)
    grid = dict(cfg0.sweep.grid)
    widths = sorted({p.width for p in by_point})
    depths = sorted({p.depth for p in by_point})
    ref_w = grid.get("model.d_model", (widths[0],))[0]
    ref_d = grid.get("model.n_layers", (depths[0],))[0]
    shortcuts = sorted({p.shortcut for p in by_point})
    clean, shortcut = shortcuts[0], shortcuts[-1]
    out: dict[str, float] = {"ref_width": float(ref_w), "ref_depth": float(ref_d)}

    jobs = []  # (label, A point, B point)
    for w in widths:
        for d in depths:
            g, s = Point("gelu", clean, w, d), Point("solu", clean, w, d)
            for a, b in ((g, s), (s, g), (g, g), (s, s)):
                if a in by_point and b in by_point:
                    jobs.append((f"{a.tag} -> {b.tag}", a, b))
    ga, gb = Point("gelu", shortcut, ref_w, ref_d), Point("gelu", clean, ref_w, ref_d)
    if shortcut != clean and ga in by_point and gb in by_point:
        jobs.append((f"{ga.tag} -> {gb.tag}", ga, gb))  # B -> A: no claim reads it, so it is not stitched

    results: dict[tuple[Point, Point], dict[str, np.ndarray]] = {}
    for k, (name, a, b) in enumerate(tqdm(jobs, desc="stitching", leave=False, disable=None)):
        res = stitch_pair(by_point[a], by_point[b], scfg, receivers=probe.stitch_receivers)
        progress(f"stitching job {k + 1} of {len(jobs)} ({name})")
        results[(a, b)] = res
        _layer_stats(out, "stitch", pair_values(res["penalty"], a == b), sender=a.tag, receiver=b.tag)
        _layer_stats(out, "stitch_init", pair_values(res["init_penalty"], a == b), sender=a.tag, receiver=b.tag)

    # -- the reference point: summary keys and the asymmetry ------------------------------------
    g, s = Point("gelu", clean, ref_w, ref_d), Point("solu", clean, ref_w, ref_d)
    for a, b in ((g, s), (s, g), (g, g), (s, s)):
        if (a, b) in results:
            pen = results[(a, b)]["penalty"]
            fam = {"sender": a.activation, "receiver": b.activation}
            _layer_stats(out, "stitch_penalty", pair_values(pen, a == b), **fam)
            _per_pair(out, "stitch_penalty", pen, by_point[a], by_point[b], a == b, **fam)
            _budget(out, "stitch_penalty", results[(a, b)], by_point[a], by_point[b], a == b, **fam)
    if (g, s) in results and (s, g) in results:
        asym = asymmetry(results[(g, s)]["penalty"], results[(s, g)]["penalty"])  # [Rg, Rs, H]
        per_pair = asym[..., 1:].mean(-1).ravel()
        per_pair = per_pair[np.isfinite(per_pair)]  # the pairs stitched in both directions
        out["asymmetry_index"] = float(per_pair.mean()) if per_pair.size else float("nan")
        out["asymmetry_index_std"] = float(per_pair.std())
        out["asymmetry_index_n"] = float(per_pair.size)
        out["asymmetry_index_frac_positive"] = float(np.mean(per_pair > 0))
        _layer_stats(out, "asymmetry_index", asym.reshape(-1, asym.shape[-1]))

    # -- generalization localization ----------------------------------------------------------
    if (ga, gb) in results:
        for key, o in (("a", by_point[ga]), ("b", by_point[gb])):
            for split in ("id", "ood"):
                acc = np.asarray(o.history[f"{split}_acc"])[:, -1]
                out[f"{split}_acc_group_{key}"] = float(acc.mean())
                out[f"{split}_acc_group_{key}_std"] = float(acc.std())
        ab = pair_values(results[(ga, gb)]["penalty"], False)
        _layer_stats(out, "gen_penalty", ab, sender="a", receiver="b")
        sa, sb = by_point[ga], by_point[gb]
        _per_pair(out, "gen_penalty", results[(ga, gb)]["penalty"], sa, sb, False, sender="a", receiver="b")
        _budget(out, "gen_penalty", results[(ga, gb)], sa, sb, False, sender="a", receiver="b")
        excess = np.nanmean(ab, 0)
        if (gb, gb) in results:
            bb = pair_values(results[(gb, gb)]["penalty"], True)
            _layer_stats(out, "gen_penalty", bb, sender="b", receiver="b")
            _per_pair(out, "gen_penalty", results[(gb, gb)]["penalty"], sb, sb, True, sender="b", receiver="b")
            _budget(out, "gen_penalty", results[(gb, gb)], sb, sb, True, sender="b", receiver="b")
            excess = excess - np.nanmean(bb, 0)
        out["generalization_gap_layer"] = float(np.argmax(excess))

    # -- more is better ---------------------------------------------------------------------------
    if len(widths) > 1:
        narrow, wide = Point("gelu", clean, widths[0], ref_d), Point("gelu", clean, widths[-1], ref_d)
        if narrow in by_point and wide in by_point:
            hook = [f"blocks.{ref_d // 2}.hook_resid_pre"]
            n_to_w = stitch_pair(by_point[narrow], by_point[wide], scfg, hook)
            w_to_n = stitch_pair(by_point[wide], by_point[narrow], scfg, hook)
            wide_loss, narrow_loss = n_to_w["base_loss"][0], w_to_n["base_loss"][0]  # [R] each, same eval batch
            out["more_hook_layer"] = float(ref_d // 2)
            out["more_loss_narrow"] = float(narrow_loss.mean())
            out["more_loss_wide"] = float(wide_loss.mean())
            for name, res in (("narrow_to_wide", n_to_w), ("wide_to_narrow", w_to_n)):
                v = res["stitched_loss"][..., 0].ravel()
                out[f"more_stitched_loss_{name}"] = float(v.mean())
                out[f"more_stitched_loss_{name}_std"] = float(v.std())
            # the fraction of pairs where the stitched model beats its bottom / top endpoint
            out["more_narrow_to_wide_beats_narrow"] = float(
                np.mean(n_to_w["stitched_loss"][..., 0] < narrow_loss[:, None])
            )
            out["more_wide_to_narrow_beats_narrow"] = float(
                np.mean(w_to_n["stitched_loss"][..., 0] < narrow_loss[None, :])
            )

    # -- CKA ----------------------------------------------------------------------------------------
    families = [o for o in outcomes if point_of(o).shortcut == clean]
    tags = [point_of(o) for o in families]
    task = dataclasses.replace(cfg0.task, shortcut=clean)
    key = jax.random.key(cfg0.train.eval_seed + 2)
    inputs = modsum.sample(key, task, probe.n_cka).inputs
    matrix, index = cka_matrix(families, inputs)
    same_layer = []
    for gi, p in enumerate(tags):
        _store_matrix(out, "cka_within", cka_within(matrix, index, gi), model=p.tag)
        if (p.width, p.depth) == (ref_w, ref_d):
            seeds, ok = seeds_of(families[gi]), ok_runs(families[gi])
            for r, mat in cka_runs(matrix, index, gi).items():
                if ok[r]:
                    _store_matrix(out, "cka_run", mat, model=p.activation, model_seed=int(seeds[r]))
        if len(families[gi].group.runs) > 1:
            m = cka_across(matrix, index, gi, gi)
            _store_matrix(out, "cka_across", m, model_a=p.tag, model_b=p.tag)
            same_layer.extend(np.diag(m)[1:])
    if same_layer:
        out["cka_within_mean"] = float(np.mean(same_layer))
    pos = {p: i for i, p in enumerate(tags)}
    across = []
    if g in pos and s in pos:
        across.append((g, s))
    if len(widths) > 1:
        across.append((Point("gelu", clean, widths[0], ref_d), Point("gelu", clean, widths[-1], ref_d)))
    if len(depths) > 1:
        across.append((Point("gelu", clean, ref_w, depths[0]), Point("gelu", clean, ref_w, depths[-1])))
    for a, b in across:
        if a in pos and b in pos:
            m = cka_across(matrix, index, pos[a], pos[b])
            _store_matrix(out, "cka_across", m, model_a=a.tag, model_b=b.tag)
            if (a, b) == (g, s):
                out["cka_gelu_solu_mean"] = float(np.mean(np.diag(m)[1:]))
    return out
