"""representation-dissimilarity on its smoke sweep (GeLU/SoLU x shortcut 0/1, 1 layer, 2 seeds): one
shared run; its cross-program analyses against NumPy recomputations and invariances."""

import dataclasses
import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import jax
import numpy as np
import pandas as pd
import pytest
from _runs import run_cfg

from jaxlab import claims, results
from jaxlab.claims import NotApplicable, check
from jaxlab.errors import ConfigError
from jaxlab.experiments import representation_dissimilarity_analysis as rda
from jaxlab.experiments import representation_dissimilarity_claims as rdc
from jaxlab.experiments.representation_dissimilarity_analysis import (
    asymmetry,
    pair_values,
    point_of,
    representations,
)
from jaxlab.experiments.representation_dissimilarity_report import asymmetry_summary
from jaxlab.registry import get_experiment
from jaxlab.reporting import write_report_of
from jaxlab.results import metric_name
from jaxlab.tasks import modsum

KEYS = (
    "stitch_penalty[sender=gelu,receiver=solu,layer={l}]",
    "stitch_penalty[sender=solu,receiver=gelu,layer={l}]",
    "asymmetry_index[layer={l}]",
    "gen_penalty[sender=a,receiver=b,layer={l}]",
    "asymmetry_index",
    "cka_within_mean",
    "cka_gelu_solu_mean",
    "generalization_gap_layer",
    "id_acc_group_a",
    "id_acc_group_b",
    "ood_acc_group_a",
    "ood_acc_group_b",
)


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    out = tmp_path_factory.mktemp("dissim")
    result = run_cfg(get_experiment("representation-dissimilarity").preset("smoke"), out, progress=False, quiet=True)
    return result, result.summary["reference"]


def test_summary_keys_and_report(sweep):
    result, ref = sweep
    n_layers = result.groups[0].train.cfg.model.n_layers
    for key in KEYS:
        for layer in range(n_layers + 1):
            assert np.isfinite(ref[key.format(l=layer)]), key
    assert 0 <= ref["generalization_gap_layer"] <= n_layers
    for k in ("id_acc_group_a", "ood_acc_group_b", "cka_within_mean", "cka_gelu_solu_mean"):
        assert 0.0 <= ref[k] <= 1.0
    report = (result.run_dir / "report.md").read_text()
    assert "Stitching: GeLU vs SoLU" in report and "asymmetry_index" in report and "CKA matrices" in report
    assert (result.run_dir / "cka_heatmaps.png").exists() and (result.run_dir / "stitching_penalty.png").exists()


def test_stitching_values_are_consistent(sweep):
    result, ref = sweep
    L = result.groups[0].train.cfg.model.n_layers
    # asymmetry_index pairs the same two models in both directions, over all pairs: its mean equals
    # the difference of the two direction means, averaged over layers 1..L
    pen = lambda sender, receiver, l: ref[metric_name("stitch_penalty", sender=sender, receiver=receiver, layer=l)]
    diff = [pen("solu", "gelu", l) - pen("gelu", "solu", l) for l in range(1, L + 1)]
    np.testing.assert_allclose(ref["asymmetry_index"], np.mean(diff), rtol=1e-5, atol=1e-7)
    # hook 0 is the token + position embedding: an injective linear image of [one-hot token,
    # one-hot position] (16 - 1 affine dims <= d_model 16), so least squares maps any model's
    # embedding exactly onto any other's: the penalty there is ~0 for every pair, same family or not
    g, s = "gelu_w16_d1_s0", "solu_w16_d1_s0"
    stitch = lambda a, b, l, name="stitch": ref[metric_name(name, sender=a, receiver=b, layer=l)]
    for a, b in ((g, s), (s, g), (g, g), (s, s)):
        assert abs(stitch(a, b, 0, "stitch_init")) < 1e-3, (a, b, stitch(a, b, 0, "stitch_init"))
        # training may then go below 0 (the affine layer adds capacity to a 20-step model, as the
        # stitching docstring says), never above the exact start
        assert stitch(a, b, 0) < 1e-3, (a, b, stitch(a, b, 0))
    # where the start is already ~0, the stitch's few Adam steps at batch 32 move the held-out penalty only by
    # SGD noise, never far above 0
    for a, b in ((g, s), (s, g), (g, g), (s, s)):
        for l in range(L + 1):
            assert stitch(a, b, l) < 0.05, (a, b, l)


def test_helpers_against_numpy():
    pen = np.arange(2 * 3 * 2, dtype=float).reshape(2, 3, 2)
    np.testing.assert_array_equal(pair_values(pen, False), pen.reshape(6, 2))
    sq = np.arange(3 * 3 * 2, dtype=float).reshape(3, 3, 2)
    kept = pair_values(sq, True)
    assert kept.shape == (6, 2) and not any((kept == sq[i, i]).all(1).any() for i in range(3))
    rng = np.random.default_rng(0)
    gs, sg = rng.normal(size=(2, 3, 2)), rng.normal(size=(3, 2, 2))  # [Rg, Rs, H] and [Rs, Rg, H]
    asym = asymmetry(gs, sg)  # [gelu i, solu j]: sg[j, i] - gs[i, j]
    assert asym.shape == (2, 3, 2)
    want = np.array([[[sg[j, i, h] - gs[i, j, h] for h in range(2)] for j in range(3)] for i in range(2)])
    np.testing.assert_array_equal(asym, want)
    # the raw index is described, never judged: the verdict is the claim's
    text = asymmetry_summary({"asymmetry_index": 1.0, "asymmetry_index_std": 0.1, "asymmetry_index_n": 4})
    assert "same-family" in text and "reproduc" not in text.lower()
    with pytest.raises(ConfigError, match="probe.stitch_steps"):
        cfg = get_experiment("representation-dissimilarity").preset("smoke")
        cfg.with_overrides({"probe.stitch_steps": -1}).probe.validate()


def _numpy_cka(x, y):
    x = x - x.mean(0)
    y = y - y.mean(0)
    return np.linalg.norm(y.T @ x) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def test_cka_and_accuracies_against_numpy(sweep):
    result, ref = sweep
    by_tag = {point_of(o).tag: o for o in result.groups}
    gelu, solu = by_tag["gelu_w16_d1_s0"], by_tag["solu_w16_d1_s0"]
    cfg = gelu.group.cfg
    inputs = modsum.sample(
        jax.random.key(cfg.train.eval_seed + 2), dataclasses.replace(cfg.task, shortcut=0.0), cfg.probe.n_cka
    ).inputs
    g = np.asarray(representations(gelu, inputs), np.float64)  # [R, H, N, D]
    s = np.asarray(representations(solu, inputs), np.float64)
    within = np.mean([_numpy_cka(g[r, 0], g[r, 1]) for r in range(g.shape[0])])
    np.testing.assert_allclose(ref["cka_within[model=gelu_w16_d1_s0,layer_a=0,layer_b=1]"], within, rtol=1e-3)
    np.testing.assert_allclose(ref["cka_within[model=gelu_w16_d1_s0,layer_a=1,layer_b=1]"], 1.0, rtol=1e-4)
    across = np.mean([_numpy_cka(g[i, 1], s[j, 1]) for i in range(2) for j in range(2)])
    np.testing.assert_allclose(ref["cka_gelu_solu_mean"], across, rtol=1e-3)
    # group accuracies are the final id/ood accuracies of the shortcut (a) and clean (b) GeLU groups
    a = by_tag["gelu_w16_d1_s1"]
    np.testing.assert_allclose(ref["id_acc_group_a"], a.history["id_acc"][:, -1].mean(), rtol=1e-6)
    np.testing.assert_allclose(ref["ood_acc_group_b"], gelu.history["ood_acc"][:, -1].mean(), rtol=1e-6)


CLAIM_FIELDS = {
    "id", "claim", "paper_ref", "paper_value", "statistic", "control", "median", "ci_low", "ci_high",
    "n_seeds", "rule", "verdict", "reason",
}  # fmt: skip


def test_smoke_summary_has_claims_deviations_and_per_seed_penalties(sweep):
    result, ref = sweep
    summary = result.summary
    entries = summary["claims"]
    assert [e["id"] for e in entries] == [c.id for c in rdc.CLAIMS]
    for entry in entries:
        assert CLAIM_FIELDS <= set(entry), CLAIM_FIELDS - set(entry)
        assert check(entry) is None, check(entry)
    by_id = {e["id"]: e for e in entries}
    assert by_id["solu_gelu_asymmetry"]["n_seeds"] == 2  # models per family (the bootstrap's units)
    L = result.groups[0].train.cfg.model.n_layers
    assert by_id["stitching_localizes_generalization"]["verdict"] == "untested"  # shortcut 1, one block
    assert by_id["cka_block_structure"]["verdict"] == "untested"  # one block
    assert summary["deviations"] and all(isinstance(d, str) and d for d in summary["deviations"])
    # the stopping rule's budget: whole windows, at most the maximum; the doubled-budget pairs average back
    probe = result.groups[0].group.cfg.probe
    seeds = result.groups[0].group.cfg.sweep.seeds
    for layer in range(L + 1):
        fam = dict(sender="gelu", receiver="solu", layer=layer)
        used = ref[metric_name("stitch_penalty_steps_used", **fam)]
        most = ref[metric_name("stitch_penalty_steps_used_max", **fam)]
        assert probe.stitch_window <= used <= most <= probe.stitch_steps and most % probe.stitch_window == 0
        per = [
            ref[metric_name("stitch_penalty_double_pair", **fam, sender_seed=i, receiver_seed=j)]
            for i in seeds
            for j in seeds
        ]
        np.testing.assert_allclose(np.mean(per), ref[metric_name("stitch_penalty_double", **fam)], rtol=1e-5)
    assert not any(k.startswith("gen_penalty[sender=b,receiver=a") for k in ref)  # B -> A: not stitched
    # the per-pair penalties average back to the means over model pairs; no model into itself
    seeds = result.groups[0].group.cfg.sweep.seeds
    for fam, same in ((dict(sender="gelu", receiver="solu"), False), (dict(sender="solu", receiver="solu"), True)):
        for layer in range(L + 1):
            pairs = [(i, j) for i in seeds for j in seeds if not (same and i == j)]
            at = lambda i, j: metric_name("stitch_penalty_pair", **fam, layer=layer, sender_seed=i, receiver_seed=j)
            per = [ref[at(i, j)] for i, j in pairs]
            want = ref[metric_name("stitch_penalty", **fam, layer=layer)]
            np.testing.assert_allclose(np.mean(per), want, rtol=1e-5, atol=1e-7)
    self_pair = "stitch_penalty_pair[sender=solu,receiver=solu,layer=0,sender_seed={i},receiver_seed={i}]"
    assert not any(self_pair.format(i=i) in ref for i in seeds)
    report = (result.run_dir / "report.md").read_text()
    assert report.index("## Claims") < report.index("## Stitching: GeLU vs SoLU")
    assert "REPRODUCES" not in report and "excess into GeLU" in report and "## Stitch budget" in report


def _reference(seeds, H, rng, legacy=False):
    """Reference keys `{metric}_pair[sender=x,receiver=y,layer=h,sender_seed=i,receiver_seed=j]` of random penalties
    [senders, receivers, H] (a model is never stitched into itself), plus keys to ignore; `legacy`: the names of run
    directories written before metric parameters, `{name}_l{h}_from{i}_to{j}`. `values` is keyed by those names."""
    directions = {
        "stitch_penalty_solu_to_gelu": ("stitch_penalty", "solu", "gelu"),
        "stitch_penalty_gelu_to_gelu": ("stitch_penalty", "gelu", "gelu"),
        "stitch_penalty_gelu_to_solu": ("stitch_penalty", "gelu", "solu"),
        "stitch_penalty_solu_to_solu": ("stitch_penalty", "solu", "solu"),
        "gen_penalty_a_to_b": ("gen_penalty", "a", "b"),
        "gen_penalty_b_to_b": ("gen_penalty", "b", "b"),
    }

    def key(name, h, i=None, j=None):
        metric, sender, receiver = directions[name]
        if legacy:
            return f"{name}_l{h}" if i is None else f"{name}_l{h}_from{i}_to{j}"
        if i is None:
            return metric_name(metric, sender=sender, receiver=receiver, layer=h)
        return metric_name(f"{metric}_pair", sender=sender, receiver=receiver, layer=h, sender_seed=i, receiver_seed=j)

    n = len(seeds)
    values = {name: rng.uniform(0.0, 1.0, size=(n, n, H)) for name in directions}
    ref = {}
    for name in directions:
        same = name.endswith(("gelu_to_gelu", "solu_to_solu", "b_to_b"))
        for a, i in enumerate(seeds):
            for b, j in enumerate(seeds):
                if not (same and a == b):
                    ref.update({key(name, h, i, j): float(values[name][a, b, h]) for h in range(H)})
    ignored = "stitch[x->y]_l1" if legacy else "stitch[sender=x,receiver=y,layer=1]"
    ref.update({key(name, h): 9.0 for name in directions for h in range(H)} | {ignored: 9.0, "ref_depth": 3.0})
    return ref, values


def _off_diagonal_mean(m):
    return m[~np.eye(m.shape[0], dtype=bool)].mean()


@pytest.mark.parametrize("legacy", [False, True], ids=["names", "older_names"])
def test_claim_statistics_against_numpy(legacy):
    rng = np.random.default_rng(1)
    seeds, H = (3, 7, 11, 12, 20), 4  # hooks 0..3: a 3-block model
    ref, v = _reference(seeds, H, rng, legacy)
    assert ("stitch_penalty_gelu_to_solu_l1_from3_to7" in ref) == legacy

    def excess(cross, same, h):
        return v[cross][:, :, h].mean() - _off_diagonal_mean(v[same][:, :, h])

    want = np.mean(
        [
            excess("stitch_penalty_solu_to_gelu", "stitch_penalty_gelu_to_gelu", h)
            - excess("stitch_penalty_gelu_to_solu", "stitch_penalty_solu_to_solu", h)
            for h in (1, 2, 3)  # hooks past the embeddings
        ]
    )
    est, lo, hi, n = rdc.asymmetry_interval([], ref)
    assert n == 5 and est == pytest.approx(want) and lo <= est <= hi
    loc = excess("gen_penalty_a_to_b", "gen_penalty_b_to_b", 3) - excess("gen_penalty_a_to_b", "gen_penalty_b_to_b", 1)
    est, lo, hi, n = rdc.localization_interval([], ref)
    assert n == 5 and est == pytest.approx(loc) and lo <= est <= hi
    # a model drawn twice in a resample does not pair with its copy
    (same,) = rdc.same_mean(np.arange(9.0).reshape(3, 3), np.array([[0, 0, 2]]))
    assert same == pytest.approx(np.mean([2.0, 2.0, 6.0, 6.0]))
    # vectorized over resamples: each row as the direct loop gives it, missing pairs (NaN) left out
    pen = rng.normal(size=(5, 5))
    pen[1, 3] = pen[4, 0] = np.nan
    rows = rng.integers(0, 5, size=(50, 5))
    rows[0] = 2  # one model drawn five times: no pair of distinct models, NaN
    cols = rng.integers(0, 5, size=(50, 5))
    for i, j, cross, same in zip(rows, cols, rdc.cross_mean(pen, rows, cols), rdc.same_mean(pen, rows)):
        want_cross = [pen[a, b] for a in i for b in j if np.isfinite(pen[a, b])]
        want_same = [pen[a, b] for a in i for b in i if a != b and np.isfinite(pen[a, b])]
        assert cross == pytest.approx(np.mean(want_cross))
        assert same == pytest.approx(np.mean(want_same)) if want_same else np.isnan(same)
    # a summary without per-pair keys, or one hook past the embeddings: untested, not a number
    with pytest.raises(NotApplicable):
        rdc.asymmetry_interval([], {"asymmetry_index": 0.5})
    one_block = {k: x for k, x in ref.items() if (rdc.parse_dissimilarity_metric(k) or ("", {}))[1].get("layer", 0) < 2}
    assert len(one_block) < len(ref)
    with pytest.raises(NotApplicable):
        rdc.localization_interval([], one_block)


def test_which_presets_can_test_which_claim():
    exp = get_experiment("representation-dissimilarity")
    quick, smoke = exp.preset("quick"), exp.preset("smoke")
    by_id = {c.id: c for c in rdc.CLAIMS}
    assert by_id["solu_gelu_asymmetry"].untested(quick) is None
    assert "shortcut = 1" in by_id["stitching_localizes_generalization"].untested(smoke)
    partial = quick.derive(
        "partial",
        sweep=dataclasses.replace(
            quick.sweep,
            grid=(("model.activation", ("gelu", "solu")), ("task.shortcut", (0.0, 0.9)), ("model.n_layers", (2,))),
        ),
    )
    assert by_id["stitching_localizes_generalization"].untested(partial) is None
    # the quick preset's groups both use their inputs (shortcut 0.5) and its models have 4 blocks
    assert by_id["stitching_localizes_generalization"].untested(quick) is None
    assert by_id["cka_block_structure"].untested(quick) is None
    assert "fewer than three hooks" in by_id["cka_block_structure"].untested(partial)
    assert quick.probe.stitch_tol > 0 and quick.probe.stitch_budget_check
    assert any("twice the budget" in d for d in rdc.deviations(quick))
    assert any(
        "no budget check" in d for d in rdc.deviations(quick.with_overrides({"probe.stitch_budget_check": False}))
    )


def test_per_pair_penalties_leave_out_self_pairs_and_diverged_runs():
    def group(seeds, diverged_at):
        return SimpleNamespace(runs=[], group=SimpleNamespace(seeds=seeds), diverged_at=np.asarray(diverged_at))

    a, b = group((0, 1, 2), [-1, 40, -1]), group((0, 1, 2), [-1, -1, -1])  # run of seed 1 of A diverged
    pen = np.arange(3 * 3 * 2, dtype=float).reshape(3, 3, 2)
    out: dict = {}
    rda._per_pair(out, "x", pen, a, b, same=False, sender="p", receiver="q")
    at = "x_pair[sender=p,receiver=q,layer={l},sender_seed={i},receiver_seed={j}]"
    assert {k for k in out if "layer=0" in k} == {at.format(l=0, i=i, j=j) for i in (0, 2) for j in (0, 1, 2)}
    assert out[at.format(l=1, i=2, j=1)] == pen[2, 1, 1]
    out = {}
    rda._per_pair(out, "y", pen, b, b, same=True)
    at = "y_pair[layer={l},sender_seed={i},receiver_seed={j}]"
    assert {k for k in out if "layer=0" in k} == {
        at.format(l=0, i=i, j=j) for i in range(3) for j in range(3) if i != j
    }


def _legacy_name(key):
    """`key` as run directories written before metric parameters named it (`stitch_penalty_gelu_to_solu_l1`)."""
    p = rdc.parse_dissimilarity_metric(key)
    if p is None or p[0] == "cka_run" or "_steps_used" in p[0] or "_double" in p[0]:
        return key  # no older form: measured only since the stopping rule and the per-run CKA
    base, q = p
    if base in ("cka_within", "cka_across"):
        tags = q["model"] if base == "cka_within" else f"{q['model_a']}|{q['model_b']}"
        return f"{base}[{tags}]_l{q['layer_a']}_l{q['layer_b']}"
    std, pair = base.endswith("_std"), "_pair" in base
    base = base.removesuffix("_std").removesuffix("_pair")
    suffix = f"_l{q['layer']}" + (f"_from{q['sender_seed']}_to{q['receiver_seed']}" if pair else "") + "_std" * std
    if base in ("stitch", "stitch_init"):
        return f"stitch[{q['sender']}->{q['receiver']}]" + "_init" * (base == "stitch_init") + suffix
    if base == "asymmetry_index":
        return base + suffix
    return f"{base}_{q['sender']}_to_{q['receiver']}" + suffix


def test_metric_names_and_the_older_form():
    both = {
        ("stitch_penalty", (("sender", "gelu"), ("receiver", "solu"), ("layer", 1))): (
            "stitch_penalty[sender=gelu,receiver=solu,layer=1]",
            "stitch_penalty_gelu_to_solu_l1",
        ),
        ("stitch_penalty_std", (("sender", "solu"), ("receiver", "solu"), ("layer", 0))): (
            "stitch_penalty_std[sender=solu,receiver=solu,layer=0]",
            "stitch_penalty_solu_to_solu_l0_std",
        ),
        (
            "stitch_penalty_pair",
            (("sender", "gelu"), ("receiver", "gelu"), ("layer", 2), ("sender_seed", 3), ("receiver_seed", 11)),
        ): (
            "stitch_penalty_pair[sender=gelu,receiver=gelu,layer=2,sender_seed=3,receiver_seed=11]",
            "stitch_penalty_gelu_to_gelu_l2_from3_to11",
        ),
        ("gen_penalty", (("sender", "a"), ("receiver", "b"), ("layer", 3))): (
            "gen_penalty[sender=a,receiver=b,layer=3]",
            "gen_penalty_a_to_b_l3",
        ),
        ("asymmetry_index", (("layer", 1),)): ("asymmetry_index[layer=1]", "asymmetry_index_l1"),
        ("asymmetry_index_std", (("layer", 1),)): ("asymmetry_index_std[layer=1]", "asymmetry_index_l1_std"),
        ("stitch", (("sender", "gelu_w16_d1_s0"), ("receiver", "solu_w16_d1_s0.5"), ("layer", 0))): (
            "stitch[sender=gelu_w16_d1_s0,receiver=solu_w16_d1_s0.5,layer=0]",
            "stitch[gelu_w16_d1_s0->solu_w16_d1_s0.5]_l0",
        ),
        ("stitch_init_std", (("sender", "gelu_w16_d1_s0"), ("receiver", "gelu_w16_d1_s1"), ("layer", 1))): (
            "stitch_init_std[sender=gelu_w16_d1_s0,receiver=gelu_w16_d1_s1,layer=1]",
            "stitch[gelu_w16_d1_s0->gelu_w16_d1_s1]_init_l1_std",
        ),
        ("cka_within", (("model", "gelu_w16_d1_s0"), ("layer_a", 0), ("layer_b", 1))): (
            "cka_within[model=gelu_w16_d1_s0,layer_a=0,layer_b=1]",
            "cka_within[gelu_w16_d1_s0]_l0_l1",
        ),
        (
            "cka_across",
            (("model_a", "gelu_w16_d1_s0"), ("model_b", "solu_w16_d1_s0"), ("layer_a", 2), ("layer_b", 0)),
        ): (
            "cka_across[model_a=gelu_w16_d1_s0,model_b=solu_w16_d1_s0,layer_a=2,layer_b=0]",
            "cka_across[gelu_w16_d1_s0|solu_w16_d1_s0]_l2_l0",
        ),
    }
    for (base, params), names in both.items():
        for name in names:
            assert rdc.parse_dissimilarity_metric(name) == (base, dict(params)), name
            assert rdc.current_name(name) == names[0]
        assert _legacy_name(names[0]) == names[1]
    kept = ("asymmetry_index", "asymmetry_index_n", "cka_within_mean", "id_acc_group_a", "more_loss_wide",
            "more_stitched_loss_narrow_to_wide_std", "generalization_gap_layer", "ref_depth", "stitch[gelu->solu]",
            "stitch_penalty[sender=gelu,layer=1.5]", "stitch_penalty[sender=gelu,layer=-1]",
            "stitch_penalty[sender=1,layer=1]", "stitch_penalty[head=1,layer=1]")  # fmt: skip
    for name in kept:
        assert rdc.parse_dissimilarity_metric(name) is None, name
        assert rdc.current_name(name) == name


def test_tables_have_the_parameter_columns(sweep):
    """The tidy table (per-run metrics, none measured at a hook) has no packed suffix; the reference, split as the
    tidy tables split metric names, has one column per parameter and no packed suffix either."""
    result, ref = sweep
    df = results.load(result.run_dir)
    assert {"id_acc", "ood_acc"} <= set(df.metric) and not df.metric.str.contains(r"_l\d|\[").any()
    table = pd.DataFrame({"metric": list(ref), "value": list(ref.values())})
    split = results.split_metric_column(table)
    keys = ("sender", "receiver", "layer", "sender_seed", "receiver_seed", "model", "model_a", "model_b", "layer_a")
    assert set(keys) <= set(split.columns)
    assert not split.metric.str.contains(r"_l\d+(?:_|$)|\[|_from\d").any(), sorted(set(split.metric))
    assert {"stitch_penalty", "stitch_penalty_pair", "stitch", "gen_penalty", "cka_within", "cka_across"} <= set(
        split.metric
    )
    L = result.groups[0].train.cfg.model.n_layers
    rows = split[(split.metric == "stitch_penalty") & (split.sender == "gelu") & (split.receiver == "solu")]
    assert sorted(rows.layer) == list(range(L + 1))
    np.testing.assert_array_equal(
        rows.sort_values("layer").value,
        [ref[f"stitch_penalty[sender=gelu,receiver=solu,layer={l}]"] for l in range(L + 1)],
    )
    assert split.loc[split.metric == "asymmetry_index", "layer"].isna().sum() == 1  # the plain mean over hooks


def test_report_and_claims_read_a_run_directory_with_the_older_names(sweep, tmp_path):
    result, ref = sweep
    exp = get_experiment("representation-dissimilarity")
    new, old = tmp_path / "new" / result.run_dir.name, tmp_path / "old" / result.run_dir.name
    shutil.copytree(result.run_dir, new)
    shutil.copytree(result.run_dir, old)
    summary = json.loads((old / "summary.json").read_text())
    summary["reference"] = {_legacy_name(k): v for k, v in summary["reference"].items()}
    assert (
        "stitch_penalty_gelu_to_solu_l1" in summary["reference"]
        and "cka_within[gelu_w16_d1_s0]_l0_l1" in (summary["reference"])
    )
    renamed = rdc.current_names(summary["reference"])
    assert list(renamed) == list(ref)
    np.testing.assert_array_equal(list(renamed.values()), list(ref.values()))
    (old / "summary.json").write_text(json.dumps(summary))
    write_report_of(new, exp)
    write_report_of(old, exp)
    # the experiment's sections (the generic "Reference values" table lists the names as they are)
    part = lambda text: text[text.index("## Stitching: GeLU vs SoLU") : text.index("## Metric definitions")]
    new_text = part((new / "report.md").read_text()).replace(str(new), "RUN")
    old_text = part((old / "report.md").read_text()).replace(str(old), "RUN")
    assert "excess into GeLU" in new_text and "## CKA matrices" in new_text and new_text == old_text
    assert json.loads((old / "summary.json").read_text())["claims"] == result.summary["claims"]


def test_stored_reproduction_reevaluates_to_its_claims():
    """docs/reproductions/representation-dissimilarity/summary.json gives its stored medians and verdicts when its
    claims are evaluated again, and so does its reference in the older names (where a metric has one)."""
    path = Path(__file__).parents[1] / "docs" / "reproductions" / "representation-dissimilarity" / "summary.json"
    stored = json.loads(path.read_text())
    exp = get_experiment("representation-dissimilarity")
    # the preset with the stored run's own grid and seeds (what decides which claims it can test)
    grid: dict = {}
    for run in stored["runs"]:
        for key, value in run["hparams"].items():
            values = grid.setdefault(key, [])
            if value not in values:
                values.append(value)
    seeds = tuple(sorted({run["seed"] for run in stored["runs"]}))
    sweep = dataclasses.replace(
        exp.preset(stored["preset"]).sweep, seeds=seeds, grid=tuple((k, tuple(v)) for k, v in grid.items())
    )
    cfg = exp.preset(stored["preset"]).derive(stored["preset"], sweep=sweep)
    older = {_legacy_name(k): v for k, v in stored["reference"].items()}
    assert rdc.current_names(older) == rdc.current_names(stored["reference"])
    for reference in (stored["reference"], older):
        entries = claims.evaluate(exp.claims, cfg, stored["runs"], reference)
        assert [e["id"] for e in entries] == [e["id"] for e in stored["claims"]]
        for got, want in zip(entries, stored["claims"]):
            assert got["verdict"] == want["verdict"], got["id"]
            if want["median"] is None:
                assert got["median"] is None, got["id"]
            else:
                assert got["median"] == pytest.approx(want["median"], rel=1e-12), got["id"]
                assert (got["ci_low"], got["ci_high"]) == pytest.approx((want["ci_low"], want["ci_high"]), rel=1e-12)


def test_block_structure_statistic_against_hand_values():
    """CKA that only decays with depth distance has no block contrast at any boundary; two blocks of hooks
    {1, 2} and {3, 4} (CKA 0.9 within, c across) give 0.9 - c at the boundary the other half of the seeds picks."""
    H = 4
    toeplitz = np.array([[0.8 ** abs(i - j) for j in range(H)] for i in range(H)])
    for k in range(1, H):
        assert rdc.block_contrast(toeplitz, k) == pytest.approx(0.0, abs=1e-12)

    def blocks(across):
        m = np.full((H, H), across)
        m[:2, :2] = m[2:, 2:] = 0.9
        np.fill_diagonal(m, 1.0)
        return m

    # boundary 2: distance 1 is the only one with pairs in a block ((1,2), (3,4)) and across ((2,3))
    assert rdc.block_contrast(blocks(0.3), 2) == pytest.approx(0.6)
    # boundary 1: distance 1 within (2,3) 0.3, (3,4) 0.9 vs across (1,2) 0.9; distance 2 within (2,4) vs (1,3)
    assert rdc.block_contrast(blocks(0.3), 1) == pytest.approx(((0.3 + 0.9) / 2 - 0.9 + 0.0) / 2)
    assert rdc.best_boundary(blocks(0.3)) == 2
    seeds = (3, 5, 8, 9, 12)
    reference = {"asymmetry_index": 0.1}
    for family, base in (("gelu", 0.3), ("solu", 0.2)):
        for s_ in seeds:
            full = np.eye(H + 1)
            full[1:, 1:] = blocks(base + 0.01 * s_)
            full[0, 1:] = full[1:, 0] = 0.5  # hook 0, the embeddings: left out
            for i in range(H + 1):
                for j in range(H + 1):
                    key = metric_name("cka_run", model=family, model_seed=s_, layer_a=i, layer_b=j)
                    reference[key] = float(full[i, j])
    values = rdc.block_structure_values([], reference)
    # one value per seed: the mean of its GeLU and SoLU runs' contrasts (the bootstrap is over seeds)
    want = [np.mean([0.9 - (base + 0.01 * s_) for base in (0.3, 0.2)]) for s_ in seeds]
    np.testing.assert_allclose(sorted(values), sorted(want))
    with pytest.raises(NotApplicable):
        rdc.block_structure_values([], {"asymmetry_index": 0.1})


def test_budget_check_against_numpy():
    """Doubled-budget penalties that add 0.1 nats to every SoLU -> GeLU pair move the asymmetry statistic by exactly
    0.1 and leave the localization statistic where it was."""
    rng = np.random.default_rng(2)
    ref, _ = _reference((0, 1, 2), 3, rng)  # hooks 0..2: two past the embeddings, as localization needs
    for key, value in list(ref.items()):
        parsed = rdc.parse_dissimilarity_metric(key)
        if parsed is not None and parsed[0].endswith("_pair"):
            bump = 0.1 if (parsed[1]["sender"], parsed[1]["receiver"]) == ("solu", "gelu") else 0.0
            ref[metric_name(parsed[0].replace("_pair", "_double_pair"), **parsed[1])] = value + bump
    checks = {c.claim: c for c in rdc.budget_checks(ref)}
    assert set(checks) == {"solu_gelu_asymmetry", "stitching_localizes_generalization"}
    asym, loc = checks["solu_gelu_asymmetry"], checks["stitching_localizes_generalization"]
    assert asym.shift == pytest.approx((0.1, 0.1, 0.1))
    assert asym.effect[0] == pytest.approx(rdc.asymmetry_interval([], ref)[0])
    assert asym.passes == (abs(asym.effect[0]) > 0.1)
    assert loc.shift == pytest.approx((0.0, 0.0, 0.0), abs=1e-12) and loc.passes == (loc.effect[0] != 0.0)
    assert rdc.budget_checks({k: v for k, v in ref.items() if "_double" not in k}) == []
