"""representation-dissimilarity on its smoke sweep (GeLU/SoLU x shortcut 0/1, 1 layer, 2 seeds): one
shared run; its cross-program analyses against NumPy recomputations and invariances."""

import dataclasses
from types import SimpleNamespace

import jax
import numpy as np
import pytest
from _runs import run_cfg

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
from jaxlab.tasks import modsum

KEYS = (
    "stitch_penalty_gelu_to_solu_l{l}",
    "stitch_penalty_solu_to_gelu_l{l}",
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
    diff = [
        ref[f"stitch_penalty_solu_to_gelu_l{l}"] - ref[f"stitch_penalty_gelu_to_solu_l{l}"] for l in range(1, L + 1)
    ]
    np.testing.assert_allclose(ref["asymmetry_index"], np.mean(diff), rtol=1e-5, atol=1e-7)
    # hook 0 is the token + position embedding: an injective linear image of [one-hot token,
    # one-hot position] (16 - 1 affine dims <= d_model 16), so least squares maps any model's
    # embedding exactly onto any other's: the penalty there is ~0 for every pair, same family or not
    g, s = "gelu_w16_d1_s0", "solu_w16_d1_s0"
    for a, b in ((g, s), (s, g), (g, g), (s, s)):
        assert abs(ref[f"stitch[{a}->{b}]_init_l0"]) < 1e-3, (a, b, ref[f"stitch[{a}->{b}]_init_l0"])
        # training may then go below 0 (the affine layer adds capacity to a 20-step model, as the
        # stitching docstring says), never above the exact start
        assert ref[f"stitch[{a}->{b}]_l0"] < 1e-3, (a, b, ref[f"stitch[{a}->{b}]_l0"])
    # where the least-squares start leaves room (clean GeLU into the shortcut-trained GeLU group at the
    # last hook: init penalty ~0.3 nats), training the stitch recovers a large part of it; where the start is already ~0, 20 Adam steps at
    # batch 32 move the held-out penalty only by SGD noise (pair std ~0.03 nats), never far above 0
    cross = f"stitch[{g}->gelu_w16_d1_s1]"
    assert ref[f"{cross}_init_l{L}"] > 0.1
    assert ref[f"{cross}_l{L}"] < 0.8 * ref[f"{cross}_init_l{L}"]
    for a, b in ((g, s), (s, g), (g, g), (s, s)):
        for l in range(L + 1):
            assert ref[f"stitch[{a}->{b}]_l{l}"] < 0.05, (a, b, l)


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
    np.testing.assert_allclose(ref["cka_within[gelu_w16_d1_s0]_l0_l1"], within, rtol=1e-3)
    np.testing.assert_allclose(ref["cka_within[gelu_w16_d1_s0]_l1_l1"], 1.0, rtol=1e-4)
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
    assert by_id["stitching_localizes_generalization"]["verdict"] == "untested"  # shortcut 1, one block
    assert by_id["cka_block_structure"]["verdict"] == "untested"
    assert summary["deviations"] and all(isinstance(d, str) and d for d in summary["deviations"])
    # the per-pair penalties average back to the means over model pairs; no model into itself
    L = result.groups[0].train.cfg.model.n_layers
    seeds = result.groups[0].group.cfg.sweep.seeds
    for name, same in (("stitch_penalty_gelu_to_solu", False), ("stitch_penalty_solu_to_solu", True)):
        for layer in range(L + 1):
            pairs = [(i, j) for i in seeds for j in seeds if not (same and i == j)]
            per = [ref[f"{name}_l{layer}_from{i}_to{j}"] for i, j in pairs]
            np.testing.assert_allclose(np.mean(per), ref[f"{name}_l{layer}"], rtol=1e-5, atol=1e-7)
    assert not any(f"stitch_penalty_solu_to_solu_l0_from{i}_to{i}" in ref for i in seeds)
    report = (result.run_dir / "report.md").read_text()
    assert report.index("## Claims") < report.index("## Stitching: GeLU vs SoLU")
    assert "REPRODUCES" not in report and "excess into GeLU" in report


def _reference(seeds, H, rng):
    """Reference keys `{name}_l{h}_from{i}_to{j}` of random penalties [senders, receivers, H] (a model is
    never stitched into itself), plus keys to ignore."""
    names = (
        "stitch_penalty_solu_to_gelu", "stitch_penalty_gelu_to_gelu", "stitch_penalty_gelu_to_solu",
        "stitch_penalty_solu_to_solu", "gen_penalty_a_to_b", "gen_penalty_b_to_b",
    )  # fmt: skip
    n = len(seeds)
    values = {name: rng.uniform(0.0, 1.0, size=(n, n, H)) for name in names}
    ref = {}
    for name in names:
        same = name.endswith(("gelu_to_gelu", "solu_to_solu", "b_to_b"))
        for a, i in enumerate(seeds):
            for b, j in enumerate(seeds):
                if not (same and a == b):
                    ref.update({f"{name}_l{h}_from{i}_to{j}": float(values[name][a, b, h]) for h in range(H)})
    ref.update({f"{name}_l{h}": 9.0 for name in names for h in range(H)} | {"stitch[x->y]_l1": 9.0, "ref_depth": 3.0})
    return ref, values


def _off_diagonal_mean(m):
    return m[~np.eye(m.shape[0], dtype=bool)].mean()


def test_claim_statistics_against_numpy():
    rng = np.random.default_rng(1)
    seeds, H = (3, 7, 11, 12, 20), 4  # hooks 0..3: a 3-block model
    ref, v = _reference(seeds, H, rng)

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
    same = rdc.same_mean(np.arange(9.0).reshape(3, 3), np.array([0, 0, 2]))
    assert same == pytest.approx(np.mean([2.0, 2.0, 6.0, 6.0]))
    # a summary without per-pair keys, or one hook past the embeddings: untested, not a number
    with pytest.raises(NotApplicable):
        rdc.asymmetry_interval([], {"asymmetry_index": 0.5})
    one_block = {k: x for k, x in ref.items() if "_l2_" not in k and "_l3_" not in k}
    with pytest.raises(NotApplicable):
        rdc.localization_interval([], one_block)


def test_which_presets_can_test_which_claim():
    exp = get_experiment("representation-dissimilarity")
    quick, paper = exp.preset("quick"), exp.preset("paper")
    by_id = {c.id: c for c in rdc.CLAIMS}
    assert by_id["solu_gelu_asymmetry"].untested(quick) is None
    assert "shortcut = 1" in by_id["stitching_localizes_generalization"].untested(paper)
    partial = quick.derive(
        "partial",
        sweep=dataclasses.replace(
            quick.sweep,
            grid=(("model.activation", ("gelu", "solu")), ("task.shortcut", (0.0, 0.9)), ("model.n_layers", (2,))),
        ),
    )
    assert by_id["stitching_localizes_generalization"].untested(partial) is None
    assert "too few" in by_id["cka_block_structure"].untested(quick)
    assert any("0.19 / 0.035 / 0.023" in d for d in rdc.deviations(quick))


def test_per_pair_penalties_leave_out_self_pairs_and_diverged_runs():
    def group(seeds, diverged_at):
        return SimpleNamespace(runs=[], group=SimpleNamespace(seeds=seeds), diverged_at=np.asarray(diverged_at))

    a, b = group((0, 1, 2), [-1, 40, -1]), group((0, 1, 2), [-1, -1, -1])  # run of seed 1 of A diverged
    pen = np.arange(3 * 3 * 2, dtype=float).reshape(3, 3, 2)
    out: dict = {}
    rda._per_pair(out, "x", pen, a, b, same=False)
    assert {k for k in out if k.startswith("x_l0")} == {f"x_l0_from{i}_to{j}" for i in (0, 2) for j in (0, 1, 2)}
    assert out["x_l1_from2_to1"] == pen[2, 1, 1]
    out = {}
    rda._per_pair(out, "y", pen, b, b, same=True)
    assert {k for k in out if k.startswith("y_l0")} == {
        f"y_l0_from{i}_to{j}" for i in range(3) for j in range(3) if i != j
    }
