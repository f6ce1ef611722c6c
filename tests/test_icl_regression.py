"""icl-regression with the GD probes: end to end on the smoke preset, and every preset's construction."""

import json
import math

import jax
import numpy as np
import pytest
from _runs import run_cfg

from jaxlab import claims, results
from jaxlab.config import SweepConfig
from jaxlab.errors import ConfigError
from jaxlab.experiments import icl_regression as ir
from jaxlab.experiments import icl_regression_claims as irc
from jaxlab.models.gd import gd_products
from jaxlab.probes import gd_equivalence as ge
from jaxlab.probes.icl_algorithms import ALGORITHMS
from jaxlab.registry import get_experiment, load_run_group
from jaxlab.reporting import spread
from jaxlab.train import plan_groups
from jaxlab.train.engine import seed_keys

EXP = get_experiment("icl-regression")
FINAL_KEYS = {
    "eval_loss", "gd_loss", "gd_lr", "model_cos", "model_diff", "preds_diff", "interp_loss",
    *(f"spd_{a}" for a in ALGORITHMS), *(f"ilwd_{a}" for a in ALGORITHMS),
}  # fmt: skip
FRESH_KEYS = {"fresh_eval_loss", "fresh_gd_loss", "fresh_eval_loss_se", "fresh_gd_loss_se", "fresh_diff_se"}
CLAIM_FIELDS = {
    "id", "claim", "paper_ref", "paper_value", "statistic", "control", "median", "ci_low", "ci_high", "n_seeds",
    "rule", "verdict", "reason",
}  # fmt: skip


@pytest.fixture(scope="module")
def probed_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "smoke-probes"
    cfg = EXP.preset("smoke").set("probe.gd_probes", True)
    return cfg, run_cfg(cfg, out, progress=False)


def test_smoke_with_probes_records_every_metric_and_the_report(probed_run):
    cfg, result = probed_run
    summary, run_dir = result.summary, result.run_dir
    train = result.groups[0].train
    batch = ir.eval_data(train)["batch"]
    # the fitted GD rate is the optimum of GD's loss on the evaluation set; for one step it has a
    # closed form: y_hat = eta * a with a = (1/N) sum_i y_i x_i . x_q, so eta* = sum a y / sum a^2
    e = np.asarray(batch.inputs, np.float64)
    d, n = cfg.task.n_dims, cfg.task.n_context
    x, y, xq, yq = e[:, :-1, :d], e[:, :-1, d], e[:, -1, :d], np.asarray(batch.targets, np.float64)[:, -1, 0]
    a = np.einsum("bn,bnd,bd->b", y, x, xq) / n
    eta = (a * yq).sum() / (a * a).sum()
    assert summary["reference"]["gd_lr"] == pytest.approx(eta, rel=1e-3)
    assert summary["reference"]["gd_loss"] == pytest.approx(0.5 * np.mean((eta * a - yq) ** 2), rel=1e-4)
    # eval_loss of the probes is the engine's loss of the final parameters
    losses = jax.jit(jax.vmap(train.loss, in_axes=(0, None)))(result.groups[0].state.params, batch)
    for i, run in enumerate(summary["runs"]):
        final = run["final"]
        assert FINAL_KEYS | FRESH_KEYS <= set(final), FINAL_KEYS | FRESH_KEYS - set(final)
        assert final["gd_lr"] == pytest.approx(summary["reference"]["gd_lr"], rel=1e-6)
        assert final["eval_loss"] == pytest.approx(float(losses[i]), rel=1e-5)
        # the OOD curve at alpha = 1 is the evaluation set itself
        assert final["ood_eval_loss[alpha=1.0]"] == pytest.approx(final["eval_loss"], rel=1e-5)
        assert final["ood_gd_loss[alpha=1.0]"] == pytest.approx(final["gd_loss"], rel=1e-5)
        assert final["ood_gd_loss[alpha=2.0]"] > final["ood_gd_loss[alpha=1.0]"] > final["ood_gd_loss[alpha=0.5]"]
        assert -1.0 <= final["model_cos"] <= 1.0
    df = results.load(run_dir)
    cos = df[df.metric == "model_cos"].pivot_table(index="step", columns="seed", values="value")
    assert list(cos.index) == [0, 20, 40, 60, 80]
    assert np.all(cos.loc[80] > cos.loc[0] + 0.3)  # training aligns the model with GD
    assert set(df.metric) >= FINAL_KEYS
    # the input scale is a column of the tidy table, not a part of the metric's name
    ood = df[df.metric == "ood_gd_loss"]
    assert sorted(ood.alpha.unique()) == [0.5, 1.0, 2.0] and df[df.metric == "eval_loss"].alpha.isna().all()
    assert list(df.columns[-3:]) == ["metric", "alpha", "value"]
    report = (run_dir / "report.md").read_text()
    assert "## jaxlab's measurements beside what the papers show" in report
    assert report.index("## Claims") < report.index("## Deviations from the paper's setup") < report.index("## Setup")
    assert "all runs: first evaluation step with `model_cos` >= 0.99" in report
    assert "Evaluation sets." in report and "standard error over its tasks" in report
    for png in ("gd_equivalence.png", "algorithms.png", "ood.png", "weights.png"):
        assert (run_dir / png).is_file() and f"({png})" in report
    # the weights section: cosines of the trained products with the construction's, from the raw
    # parameters in NumPy (A = W_q W_k^T, B = W_v W_out of the one head), signed to agree on A
    a_gd, b_gd = (np.asarray(m, np.float64).ravel() for m in gd_products(cfg.resolve().model, n, eta))
    attn = result.groups[0].state.params["blocks_0"]["attn"]
    w_qkv, w_out = np.asarray(attn["w_qkv"], np.float64), np.asarray(attn["w_out"], np.float64)
    cos_a, cos_b = [], []
    for i in range(len(summary["runs"])):
        a = (w_qkv[i, :, 0, 0] @ w_qkv[i, :, 1, 0].T).ravel()
        b = (w_qkv[i, :, 2, 0] @ w_out[i, 0]).ravel()
        ca = a @ a_gd / np.linalg.norm(a) / np.linalg.norm(a_gd)
        cos_a.append(abs(ca))
        cos_b.append(np.sign(ca) * (b @ b_gd) / np.linalg.norm(b) / np.linalg.norm(b_gd))
    assert f"W_KQ {spread(cos_a)}, W_PV {spread(cos_b)}" in report
    assert json.loads((run_dir / "config.json").read_text())["probe"]["gd_probes"] is True


def test_the_fresh_evaluation_sets_are_per_seed_and_their_losses_and_errors_are_right(probed_run):
    """fresh_*: each seed's model and GD (the shared set's rate) on the seed's own fresh tasks."""
    cfg, result = probed_run
    summary, group = result.summary, result.groups[0]
    train, params = group.train, group.state.params
    seeds = np.array([r["seed"] for r in summary["runs"]])
    keys = ir.fresh_eval_keys(train, seeds)
    eta = summary["reference"]["gd_lr"]
    shared = ir.eval_data(train)["batch"]
    d = cfg.task.n_dims
    for i, run in enumerate(summary["runs"]):
        final = run["final"]
        batch = train.sample(keys[i], cfg.train.eval_batch_size)
        assert not np.allclose(np.asarray(batch.inputs), np.asarray(shared.inputs))  # not the shared set
        one = jax.tree_util.tree_map(lambda a, i=i: a[i], params)
        assert final["fresh_eval_loss"] == pytest.approx(float(train.loss(one, batch)), rel=1e-5)
        # GD with the rate fitted on the shared set, and the standard errors over the tasks, in NumPy
        e = np.asarray(batch.inputs, np.float64)
        x, y, xq = e[:, :-1, :d], e[:, :-1, d], e[:, -1, :d]
        yq = np.asarray(batch.targets, np.float64)[:, -1, 0]
        gd_t = 0.5 * (eta * np.einsum("bn,bnd,bd->b", y, x, xq) / cfg.task.n_context - yq) ** 2
        model_t = 0.5 * (np.asarray(train.apply(one, batch.inputs), np.float64)[:, -1, 0] - yq) ** 2
        se = lambda v: np.std(v, ddof=1) / math.sqrt(v.size)
        assert final["fresh_gd_loss"] == pytest.approx(gd_t.mean(), rel=1e-4)
        assert final["fresh_gd_loss_se"] == pytest.approx(se(gd_t), rel=1e-3)
        assert final["fresh_diff_se"] == pytest.approx(se(model_t - gd_t), rel=1e-3)
    a, b = (np.asarray(train.sample(k, 8).inputs) for k in keys)
    assert not np.allclose(a, b)  # every seed has its own tasks
    # the shared set's own sampling error of GD's loss
    e = np.asarray(shared.inputs, np.float64)
    x, y, xq = e[:, :-1, :d], e[:, :-1, d], e[:, -1, :d]
    yq = np.asarray(shared.targets, np.float64)[:, -1, 0]
    gd_t = 0.5 * (eta * np.einsum("bn,bnd,bd->b", y, x, xq) / cfg.task.n_context - yq) ** 2
    want = np.std(gd_t, ddof=1) / math.sqrt(gd_t.size)
    assert summary["reference"]["gd_loss_se"] == pytest.approx(want, rel=1e-3)


def test_smoke_summary_has_the_claims_and_deviations(probed_run):
    cfg, result = probed_run
    summary = result.summary
    entries = summary["claims"]
    assert [c["id"] for c in entries] == [c.id for c in irc.CLAIMS]
    for entry in entries:
        assert CLAIM_FIELDS <= set(entry), CLAIM_FIELDS - set(entry)
        assert claims.check(entry) is None
    by_id = {c["id"]: c for c in entries}
    for cid in ("one_layer_loss_equals_gd", "one_layer_predictions_match_gd", "one_layer_sensitivities_match_gd",
                "interpolation_keeps_loss", "ood_degrades_like_gd"):  # fmt: skip
        # one layer, 2 seeds: tested, and too few seeds to decide
        assert by_id[cid]["n_seeds"] == 2 and by_id[cid]["verdict"] == "inconclusive", by_id[cid]
    for k in irc.RECURRENT_K:
        for cid in (f"recurrent_matches_gdpp_k{k}", f"recurrent_loss_equals_gdpp_k{k}", f"recurrent_beats_gd_k{k}",
                    f"untied_matches_or_beats_gdpp_k{k}"):  # fmt: skip
            assert by_id[cid]["verdict"] == "untested" and "one layer" in by_id[cid]["reason"]
    devs = summary["deviations"]
    assert devs and all(isinstance(d, str) and d for d in devs)
    assert devs == irc.deviations(cfg)
    assert any("`task.n_dims` = 3 (paper: 10)" in d for d in devs)
    assert any("ONE shared set" in d for d in devs)


def test_which_presets_test_which_claims():
    untested = lambda name, cid: {c.id: c for c in irc.CLAIMS}[cid].untested(EXP.preset(name))
    for name in ("paper", "quick", "ood", "context"):
        assert untested(name, "one_layer_loss_equals_gd") is None
        assert untested(name, "recurrent_matches_gdpp_k2") is not None
        assert untested(name, "untied_matches_or_beats_gdpp_k2") is not None
    for k in (2, 3):
        assert untested("recurrent", f"recurrent_loss_equals_gdpp_k{k}") is None
        assert untested("deep", f"untied_matches_or_beats_gdpp_k{k}") is None
        assert "`deep` preset" in untested("recurrent", f"untied_matches_or_beats_gdpp_k{k}")
        assert "`recurrent` preset" in untested("deep", f"recurrent_matches_gdpp_k{k}")
    assert "multi-layer" in untested("recurrent", "one_layer_sensitivities_match_gd")
    assert "softmax" in untested("softmax", "one_layer_loss_equals_gd")
    assert "probe.gd_probes" in untested("smoke", "one_layer_loss_equals_gd")
    assert irc.deviations(EXP.preset("paper"))[0].startswith("evaluation:")  # the paper preset is the paper's
    assert any("`model.attention` = softmax" in d for d in irc.deviations(EXP.preset("softmax")))


def _record(seed: int, hparams: dict | None = None, **final: float) -> dict:
    return {"seed": seed, "hparams": hparams or {}, "status": "ok", "final": final}


def test_single_layer_statistics_against_numpy():
    """Relative loss gaps, the prediction gap, the OOD gap; N = 10 kept where N is swept."""
    rng = np.random.default_rng(0)
    model, gd, preds, cos = (
        rng.uniform(0.2, 0.22, 6),
        rng.uniform(0.2, 0.22, 6),
        rng.uniform(0, 0.05, 6),
        rng.uniform(0.9, 1, 6),
    )
    fields = lambda m, g, p, c: dict(fresh_eval_loss=m, fresh_gd_loss=g, gd_loss=g, preds_diff=p, model_cos=c)
    runs = [_record(s, {"task.n_context": 10}, **fields(*v)) for s, v in enumerate(zip(model, gd, preds, cos))]
    runs += [_record(s, {"task.n_context": 25}, **fields(5.0, 1.0, 5.0, 0.0)) for s in range(6)]  # ignored: N != 10
    by_id = {c.id: c for c in irc.CLAIMS}
    got = by_id["one_layer_loss_equals_gd"].values(runs, {})
    np.testing.assert_allclose(got, (model - gd) / gd, rtol=1e-12)
    got = by_id["one_layer_predictions_match_gd"].values(runs, {})
    np.testing.assert_allclose(got, preds / np.sqrt(2 * gd), rtol=1e-12)
    np.testing.assert_allclose(by_id["one_layer_sensitivities_match_gd"].values(runs, {}), cos)
    # OOD: the signed relative gap of largest magnitude over alpha != 1 (alpha = 1 is ignored)
    m, g = rng.uniform(0.1, 1, (6, 3)), rng.uniform(0.1, 1, (6, 3))
    alphas, tags = (0.5, 1.0, 2.0), ("050", "100", "200")
    ood = [
        _record(s, **{irc.ood_metric("eval", a): m[s, j] for j, a in enumerate(alphas)},
                **{irc.ood_metric("gd", a): g[s, j] for j, a in enumerate(alphas)})
        for s in range(6)
    ]  # fmt: skip
    legacy = [  # run directories written before metric parameters
        _record(s, **{f"ood_eval_loss_a{t}": m[s, j] for j, t in enumerate(tags)},
                **{f"ood_gd_loss_a{t}": g[s, j] for j, t in enumerate(tags)})
        for s in range(6)
    ]  # fmt: skip
    rel = (m - g) / g
    rel[:, 1] = 0.0
    want = rel[np.arange(6), np.argmax(np.abs(rel), axis=1)]
    np.testing.assert_allclose(by_id["ood_degrades_like_gd"].values(ood, {}), want, rtol=1e-12)
    np.testing.assert_allclose(by_id["ood_degrades_like_gd"].values(legacy, {}), want, rtol=1e-12)
    assert irc.ood_metric("eval", 0.5) == "ood_eval_loss[alpha=0.5]"
    assert irc.parse_ood("ood_gd_loss[alpha=0.333]") == ("gd", 0.333) and irc.parse_ood("eval_loss") is None


def test_multi_layer_statistics_read_each_k_per_seed():
    rng = np.random.default_rng(1)
    cos, model, pp, gd = (rng.uniform(0.5, 1.0, (5, 2)) for _ in range(4))
    runs = [
        _record(s, {"model.n_layers": k}, model_cos_gdpp=cos[s, i], fresh_eval_loss=model[s, i],
                fresh_gdpp_loss=pp[s, i], fresh_gd_loss=gd[s, i])
        for s in range(5) for i, k in enumerate((2, 3))
    ]  # fmt: skip
    by_id = {c.id: c for c in irc.CLAIMS}
    for i, k in enumerate((2, 3)):
        np.testing.assert_allclose(by_id[f"recurrent_matches_gdpp_k{k}"].values(runs, {}), cos[:, i])
        rel_pp, rel_gd = (model[:, i] - pp[:, i]) / pp[:, i], (model[:, i] - gd[:, i]) / gd[:, i]
        np.testing.assert_allclose(by_id[f"recurrent_loss_equals_gdpp_k{k}"].values(runs, {}), rel_pp, rtol=1e-12)
        np.testing.assert_allclose(by_id[f"untied_matches_or_beats_gdpp_k{k}"].values(runs, {}), rel_pp, rtol=1e-12)
        np.testing.assert_allclose(by_id[f"recurrent_beats_gd_k{k}"].values(runs, {}), rel_gd, rtol=1e-12)
    assert math.isnan(irc.farthest_from_zero([0.1, math.nan])) and irc.farthest_from_zero([0.1, -0.3]) == -0.3


def test_the_probes_run_on_a_restored_checkpoint_as_a_library(probed_run):
    """`jaxlab.probes` on a run directory's final checkpoint give the summary's final values."""
    cfg, result = probed_run
    group = load_run_group(result.run_dir)
    data = ir.eval_data(group.train)
    probe = jax.vmap(
        lambda p: ge.equivalence_metrics(group.train.apply, p, data["batch"], data["ref"], cfg.task.n_dims, 64),
    )
    got = jax.device_get(jax.jit(probe)(group.state.params))
    assert set(got) >= {"eval_loss", "model_cos", *(f"ilwd_{a}" for a in ALGORITHMS)}
    for i, run in enumerate(result.summary["runs"]):
        for name, values in got.items():
            assert values.shape == (len(result.summary["runs"]),)
            assert float(values[i]) == pytest.approx(run["final"][name], rel=1e-4, abs=1e-7), name


TINY = {
    "task.n_dims": 3,
    "train.steps": 2,
    "train.batch_size": 8,
    "train.eval_every": 1,
    "train.eval_batch_size": 16,
    "probe.ilwd_points": 4,
    "probe.probe_batch_size": 8,
}


def test_every_preset_builds_and_validates():
    """Every preset's configs: the published settings, the groups they split into, the probes they get."""
    for name in sorted(EXP.presets):
        cfg = EXP.preset(name)
        assert cfg.preset == name and cfg.experiment == "icl-regression"
        if name in ("depth", "depth-noisy"):  # Akyürek et al.'s setup: d = 8, x ~ N(0, I), N = 2d
            t = cfg.task
            assert (t.n_dims, t.input_dist, t.n_context, cfg.model.attention) == (8, "normal", 16, "softmax")
            assert cfg.probe.ridge_matched and cfg.model.d_mlp > 0
        elif name != "smoke":
            t = cfg.task
            published = (10, "uniform", 1.0, 1.0, 0.0)
            assert (t.n_dims, t.input_dist, t.input_scale, t.weight_scale, t.noise_std) == published
            assert cfg.train.eval_batch_size >= 10_000 and cfg.probe.gd_probes
            assert (cfg.optim.name, cfg.optim.lr, cfg.optim.b1, cfg.optim.b2) == ("adamw", 1e-3, 0.9, 0.98)
        if name == "paper":
            assert (cfg.task.n_context, cfg.train.steps, cfg.train.batch_size, len(cfg.sweep.seeds)) == (
                10,
                5000,
                2048,
                8,
            )
            assert (cfg.model.attention, cfg.model.mask, cfg.model.init_scale, cfg.optim.clip_norm) == (
                "linear", "context_keys", 0.002, 0.001,
            )  # fmt: skip
        groups = plan_groups(cfg.with_overrides({**TINY, "probe.gd_probes": True}))
        assert len(groups) == {
            "recurrent": 2,
            "deep": 2,
            "softmax": 2,
            "context": 3,
            "recurrent-context": 3,
            "depth": 4,
            "depth-noisy": 2,
        }.get(name, 1)
        for group in groups:
            g = group.cfg.resolve()
            ir.check_probe_config(g)
            one_block = g.model.n_layers == 1 or g.model.tie_layers  # the construction has one W_KQ, W_PV
            assert ir.interpolable(g) == (g.model.attention == "linear" and g.model.n_heads == 1 and one_block)
            assert ir.n_gd_steps(g) == g.model.n_layers
        if name == "context":
            assert sorted(gr.cfg.task.n_context for gr in groups) == [10, 25, 50]
        if name == "ood":
            assert min(cfg.probe.ood_scales) == 0.5 and max(cfg.probe.ood_scales) == 2.0


def test_recurrent_preset_probes_trace_with_gd_plus_plus():
    """One preset traced end to end (its first group, K = 2 tied layers): GD++ and interpolation keys."""
    group = plan_groups(EXP.preset("recurrent").with_overrides({**TINY, "probe.gd_probes": True}))[0]
    train = EXP.make_train(group.cfg)
    assert train.cfg.model.n_layers == 2
    state = jax.eval_shape(train.init, seed_keys([0])[0])
    data = ir.eval_data(train)  # real, tiny: the reference is computed eagerly
    metrics = jax.eval_shape(train.evaluate, state.params, data)
    assert FINAL_KEYS <= set(metrics)
    assert {"model_cos_gdpp", "gdpp_loss", "gdpp_gamma"} <= set(metrics)
    # GD++ is fitted jointly and is at least as good as 2-step GD on the evaluation set
    assert float(data["ref"]["gdpp"]["loss"]) <= float(data["ref"]["gd"]["loss"]) + 1e-7
    # the fresh evaluation sets get GD++ too
    params = jax.vmap(train.init)(seed_keys([0, 1])).params
    fresh = ir.fresh_losses(train, params, ir.fresh_eval_keys(train, np.array([0, 1])), data["ref"]["gd"],
                            data["ref"]["gdpp"])  # fmt: skip
    assert set(fresh) == FRESH_KEYS | {"fresh_gdpp_loss", "fresh_gdpp_loss_se", "fresh_gdpp_diff_se"}
    assert all(v.shape == (2,) and np.all(np.isfinite(v)) for v in fresh.values())


@pytest.mark.parametrize(
    ("key", "value", "field"),
    [
        ("probe.knn_k", 7, "probe.knn_k"),
        ("probe.ilwd_points", 2, "probe.ilwd_points"),
        ("task.layout", "interleaved", "task.layout"),
    ],
)
def test_probe_settings_that_cannot_work_are_refused_by_name(key, value, field):
    cfg = EXP.preset("smoke").with_overrides({"probe.gd_probes": True, key: value})
    with pytest.raises(ConfigError, match=field):
        EXP.make_train(plan_groups(cfg)[0].cfg)


def test_probe_config_validation():
    cfg = EXP.preset("smoke")
    with pytest.raises(ConfigError, match="probe.ood_scales"):
        cfg.set("probe.ood_scales", "0.5,-1")
    with pytest.raises(ConfigError, match="probe.ood_scales"):
        cfg.set("probe.ood_scales", "0.5,inf")
    with pytest.raises(ConfigError, match="probe.ridge_lambda"):
        cfg.set("probe.ridge_lambda", "0")
    assert cfg.set("probe.ood_scales", "0.5,1.25").probe.ood_scales == (0.5, 1.25)
    assert cfg.set("probe.ood_scales", "0.333").probe.ood_scales == (0.333,)  # any scale: its own metric column


def _flat(tree: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in tree.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def test_multi_layer_deviations_list_every_setting_changed_from_the_paper_preset():
    """The deviations say a multi-layer preset "changes only the lines listed": every config value that
    differs from the paper preset (bar the preset's name, its sweep, the layers the line describes and
    the evaluation settings, which do not change training) is a `PAPER` key, listed."""
    paper = _flat(EXP.preset("paper").to_dict())
    assert irc.PAPER["model.init_scale"] == EXP.preset("paper").model.init_scale
    for name in sorted(EXP.presets):
        cfg = EXP.preset(name)
        if all(n == 1 for n in irc.swept_values(cfg, "model.n_layers")) or cfg.model.attention != "linear":
            continue  # (the depth presets follow Akyürek et al., and their deviations say so)
        changed = {
            k for k, v in _flat(cfg.to_dict()).items()
            if paper.get(k) != v and not k.startswith(("sweep.", "probe.", "train.eval_"))
            and k not in ("preset", "model.tie_layers", "model.n_layers")
        }  # fmt: skip
        devs = irc.deviations(cfg)
        assert changed and changed <= set(irc.PAPER), changed - set(irc.PAPER)
        for key in changed:
            assert any(d.startswith(f"`{key}` = ") for d in devs), key
    assert any(
        d.startswith("`model.init_scale` = 0.001 (paper: 0.002)") for d in irc.deviations(EXP.preset("recurrent"))
    )
    decayed = EXP.preset("recurrent-context").set("optim.schedule", "cosine")  # the stored lr-decay control
    assert "`optim.schedule` = cosine (paper: constant)" in irc.deviations(decayed)


def test_softmax_head_claims_pair_the_seeds_across_head_counts():
    """The notebook's softmax remark: 1 head's fresh relative gap minus 2 heads', per seed; at 2 heads
    the relative gap and model_cos. Seeds missing at one head count are dropped from the pairing."""
    rng = np.random.default_rng(2)
    model, gd, cos = rng.uniform(0.2, 0.3, (6, 2)), rng.uniform(0.2, 0.22, (6, 2)), rng.uniform(0.9, 1, (6, 2))
    runs = [
        _record(s, {"model.n_heads": h}, fresh_eval_loss=model[s, i], fresh_gd_loss=gd[s, i], model_cos=cos[s, i])
        for s in range(6) for i, h in enumerate((1, 2)) if not (s == 5 and h == 1)
    ]  # fmt: skip
    by_id = {c.id: c for c in irc.CLAIMS}
    rel = (model - gd) / gd
    np.testing.assert_allclose(by_id["softmax_one_head_short_of_two"].values(runs, {}), (rel[:, 0] - rel[:, 1])[:5])
    np.testing.assert_allclose(by_id["softmax_two_heads_loss_equals_gd"].values(runs, {}), rel[:, 1], rtol=1e-12)
    np.testing.assert_allclose(by_id["softmax_two_heads_sensitivities_match_gd"].values(runs, {}), cos[:, 1])
    # the softmax preset tests them; the linear presets do not, and say where they are tested
    for cid in ("softmax_one_head_short_of_two", "softmax_two_heads_loss_equals_gd",
                "softmax_two_heads_sensitivities_match_gd"):  # fmt: skip
        assert by_id[cid].untested(EXP.preset("softmax")) is None
        assert by_id[cid].paper_value is None and "constructed_token_setup.ipynb" in by_id[cid].paper_ref
        for name in ("paper", "recurrent", "context", "ood"):
            assert "softmax preset" in by_id[cid].untested(EXP.preset(name))
    one_head = EXP.preset("softmax").derive("one-head", sweep=SweepConfig(seeds=(0, 1)))  # n_heads 1, not swept
    assert "model.n_heads" in by_id["softmax_one_head_short_of_two"].untested(one_head)


def test_the_noise_matched_ridge_is_the_posterior_mean_rate():
    cfg = EXP.preset("depth-noisy")
    assert cfg.probe.ridge_matched and ir.ridge_lambda(cfg) == pytest.approx(0.5**2 / 1.0**2)
    scaled = cfg.with_overrides({"task.weight_scale": 2.0})
    assert ir.ridge_lambda(scaled) == pytest.approx(0.25 / 4.0)
    assert ir.ridge_lambda(EXP.preset("depth")) == ir.RIDGE_FLOOR  # noiseless: OLS up to rounding
    assert ir.ridge_lambda(EXP.preset("paper")) == EXP.preset("paper").probe.ridge_lambda


def test_depth_claims_compare_algorithms_at_the_shallowest_and_deepest_model():
    rng = np.random.default_rng(4)
    spd = {a: rng.uniform(0.1, 1.0, (5, 4)) for a in ("gd", "gd1", "ridge", "ols", "knn", "averaging")}
    runs = []
    for s in range(5):
        for i, k in enumerate((1, 2, 4, 8)):
            final = {f"spd_{a}": v[s, i] for a, v in spd.items() if not (a == "gd1" and k == 1)}
            runs.append(_record(s, {"model.n_layers": k}, **final))
    by_id = {c.id: c for c in irc.CLAIMS}
    shallow = spd["gd"][:, 0] - np.minimum(spd["ridge"][:, 0], spd["ols"][:, 0])
    np.testing.assert_allclose(by_id["shallow_model_closest_to_gd"].values(runs, {}), shallow)
    deep = np.minimum(spd["ridge"][:, 3], spd["ols"][:, 3]) - np.minimum(spd["gd"][:, 3], spd["gd1"][:, 3])
    np.testing.assert_allclose(by_id["deep_model_closest_to_ridge_or_ols"].values(runs, {}), deep)
    others = np.min([spd[a][:, 3] for a in ("gd", "gd1", "ols", "knn", "averaging")], axis=0)
    np.testing.assert_allclose(
        by_id["noisy_deep_model_closest_to_matched_ridge"].values(runs, {}), spd["ridge"][:, 3] - others
    )
    untested = lambda name, cid: by_id[cid].untested(EXP.preset(name))
    assert untested("depth", "shallow_model_closest_to_gd") is None
    assert untested("depth", "noisy_deep_model_closest_to_matched_ridge") is not None
    assert untested("depth-noisy", "noisy_deep_model_closest_to_matched_ridge") is None
    assert "noiseless" in untested("depth-noisy", "deep_model_closest_to_ridge_or_ols")
    for name in ("paper", "recurrent", "softmax"):
        assert untested(name, "shallow_model_closest_to_gd") is not None
    assert untested("depth", "softmax_mlp_matches_or_beats_gdpp") is None
    assert untested("softmax", "softmax_mlp_matches_or_beats_gdpp") is not None
