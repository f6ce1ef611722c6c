"""icl-regression with the GD probes: end to end on the smoke preset, and every preset's construction."""

import json

import jax
import numpy as np
import pytest
from _runs import run_cfg

from jaxlab import results
from jaxlab.errors import ConfigError
from jaxlab.experiments import icl_regression as ir
from jaxlab.probes import gd_equivalence as ge
from jaxlab.probes.icl_algorithms import ALGORITHMS
from jaxlab.registry import get_experiment, load_run_group
from jaxlab.train import plan_groups
from jaxlab.train.engine import seed_keys

EXP = get_experiment("icl-regression")
FINAL_KEYS = {
    "eval_loss", "gd_loss", "gd_lr", "model_cos", "model_diff", "preds_diff", "interp_loss",
    *(f"spd_{a}" for a in ALGORITHMS), *(f"ilwd_{a}" for a in ALGORITHMS),
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
        assert FINAL_KEYS <= set(final), FINAL_KEYS - set(final)
        assert final["gd_lr"] == pytest.approx(summary["reference"]["gd_lr"], rel=1e-6)
        assert final["eval_loss"] == pytest.approx(float(losses[i]), rel=1e-5)
        # the OOD curve at alpha = 1 is the evaluation set itself
        assert final["ood_eval_loss_a100"] == pytest.approx(final["eval_loss"], rel=1e-5)
        assert final["ood_gd_loss_a100"] == pytest.approx(final["gd_loss"], rel=1e-5)
        assert final["ood_gd_loss_a200"] > final["ood_gd_loss_a100"] > final["ood_gd_loss_a050"]
        assert -1.0 <= final["model_cos"] <= 1.0
    df = results.load(run_dir)
    cos = df[df.metric == "model_cos"].pivot_table(index="step", columns="seed", values="value")
    assert list(cos.index) == [0, 20, 40, 60, 80]
    assert np.all(cos.loc[80] > cos.loc[0] + 0.3)  # training aligns the model with GD
    assert set(df.metric) >= FINAL_KEYS
    report = (run_dir / "report.md").read_text()
    assert "the papers' numbers next to jaxlab's" in report and "about 0.2" in report
    n_ok = sum(r["final"]["model_cos"] >= 0.99 and abs(r["final"]["eval_loss"] - r["final"]["gd_loss"]) <= 0.01
               for r in summary["runs"])  # fmt: skip
    assert f"all runs: {n_ok}/2 runs have final `model_cos` >= 0.99" in report
    assert "first evaluation step with `model_cos` >= 0.99" in report
    for png in ("gd_equivalence.png", "algorithms.png", "ood.png"):
        assert (run_dir / png).is_file() and f"({png})" in report
    assert json.loads((run_dir / "config.json").read_text())["probe"]["gd_probes"] is True


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
        if name != "smoke":
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
        assert len(groups) == {"recurrent": 2, "softmax": 2, "context": 3}.get(name, 1)
        for group in groups:
            g = group.cfg.resolve()
            ir.check_probe_config(g)
            assert ir.interpolable(g) == (g.model.attention == "linear" and g.model.n_heads == 1)
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
        cfg.set("probe.ood_scales", "0.5,0.333")
    with pytest.raises(ConfigError, match="probe.ridge_lambda"):
        cfg.set("probe.ridge_lambda", "0")
    assert cfg.set("probe.ood_scales", "0.5,1.25").probe.ood_scales == (0.5, 1.25)
    assert [ir.scale_tag(a) for a in (0.5, 1.0, 2.0, 1.25)] == ["a050", "a100", "a200", "a125"]
