"""icl-autoregressive's new presets: the GD start (the control of augmented-commuting), augmented.py's model
(paper-fig5: biases, LayerNorm, read-out; functional metrics only) and the 64-head non-augmented setting."""

import jax
import numpy as np
import pandas as pd
import pytest

from jaxlab.errors import ConfigError
from jaxlab.experiments import icl_autoregressive as iar
from jaxlab.experiments import icl_autoregressive_claims as iac
from jaxlab.experiments import icl_autoregressive_report as report
from jaxlab.registry import get_experiment
from jaxlab.reporting import ReportContext
from jaxlab.tasks import autoregressive as ar

EXP = get_experiment("icl-autoregressive")


def _gd_by_loops(s_BTD: np.ndarray, eta: float) -> np.ndarray:
    """y_t = eta sum_{t' <= t} (s_t . s_{t'-1}) s_t' with s_{-1} = 0, written as loops."""
    B, T, d = s_BTD.shape
    out = np.zeros_like(s_BTD)
    for b in range(B):
        for t in range(T):
            for u in range(1, t + 1):
                out[b, t] += eta * float(s_BTD[b, t] @ s_BTD[b, u - 1]) * s_BTD[b, u]
    return out


def _start(train, cfg, seed: int):
    """(evaluation data, the predictions on it, the evaluation metrics) at a run's initial parameters, in one
    compiled program."""

    @jax.jit
    def go(key):
        params = train.init(key).params
        data = iar.eval_data(train)
        return data, train.apply(params, data["batch"].inputs), iar.make_evaluate(cfg)(train, params, data)

    return go(jax.random.key(seed))


def test_gd_start_predicts_one_gd_step_before_training():
    cfg = EXP.preset("gd-start-smoke").resolve()
    train = EXP.make_train(cfg)
    assert isinstance(train, iar.GDStartTrain)
    data, preds, metrics = jax.device_get(_start(train, cfg, 3))
    batch, eta = data["batch"], float(data["ref"]["eta"])
    want = _gd_by_loops(np.asarray(ar.observed_states(cfg.task, batch.inputs)), eta)
    np.testing.assert_allclose(preds, want, rtol=1e-5, atol=1e-6)
    assert float(metrics["model_cos"]) == pytest.approx(1.0, abs=1e-6)
    assert float(metrics["eval_loss"]) == pytest.approx(float(metrics["gd_loss"]), rel=1e-5)
    assert float(metrics["c_offblock_ratio"]) == pytest.approx(0.0, abs=1e-6)
    # a random start is not GD: the option, not the preset's sizes, makes the difference
    plain = EXP.make_train(EXP.preset("smoke"))
    assert type(plain) is not iar.GDStartTrain


def test_gd_start_and_fig5_settings_are_checked():
    with pytest.raises(ConfigError, match="probe.start"):
        EXP.preset("smoke").set("probe.start", "zero")
    with pytest.raises(ConfigError, match="probe.start"):  # no GD construction in augmented.py's model
        iar.check_config(EXP.preset("fig5-smoke").set("probe.start", "gd"))
    with pytest.raises(ConfigError, match="probe.start"):
        iar.check_config(EXP.preset("non-augmented").set("probe.start", "gd"))
    with pytest.raises(ConfigError, match="model.use_bias"):
        iar.check_config(EXP.preset("constrained-smoke").set("model.use_bias", True))


def test_fig5_model_is_augmented_pys_and_measures_the_loss_only():
    cfg = EXP.preset("fig5-smoke").resolve()
    fig5 = EXP.preset("paper-fig5")
    p = iac.AUGMENTED_PY
    assert (fig5.task.n_dims, fig5.task.seq_len, fig5.task.w_kind, fig5.task.s0) == (5, 50, "haar", "fixed")
    assert (fig5.train.batch_size, fig5.train.steps, fig5.optim.lr) == (p["batch_size"], p["steps"], p["lr"])
    m = fig5.model
    assert m.use_bias and m.layernorm and m.readout == "linear" and m.d_head == 15 and m.n_heads == 1
    assert m.norm_position == "attn_out" and not m.final_norm  # augmented.py: x + LN(Attn(x)), no final norm
    assert not iar.is_plain(cfg)
    data, preds, out = jax.device_get(_start(EXP.make_train(cfg), cfg, 0))
    assert "c_offblock_ratio" not in out and "head_cos" not in out  # no plain blocks to read
    batch = data["batch"]
    want = np.mean(0.5 * np.sum((preds - np.asarray(batch.targets)) ** 2, axis=-1))
    assert float(out["eval_loss"]) == pytest.approx(want, rel=1e-5)


def test_new_presets_test_their_claims_only():
    presets = {n: EXP.preset(n) for n in EXP.presets}
    untested = {n: {c.id: c.untested(cfg) for c in iac.CLAIMS} for n, cfg in presets.items()}
    gd_claims = ("gd_start_stays_at_gd", "gd_start_loss_no_worse")
    for name, u in untested.items():
        start = presets[name].probe.start == "gd"
        assert all((u[c] is None) == (start and presets[name].task.w_kind == "commuting") for c in gd_claims)
        assert u["non_augmented_heads_orthogonal"]  # the full heads cannot test the diagonal theorem
    gd = untested["augmented-commuting-gd-start"]
    assert gd["augmented_loss_equals_gd"] and gd["full_model_predictions_equal_gd"]  # the start decides them
    assert untested["paper-fig5"]["augmented_loss_equals_gd"] is None
    assert "plain" in untested["paper-fig5"]["full_model_predictions_equal_gd"]
    assert "gauge" in untested["non-augmented-64"]["non_augmented_heads_orthogonal"]
    runs = [{"seed": s, "hparams": {}, "status": "ok", "final": {"eval_loss": v, "gd_loss": 2.0}} for s, v in
            enumerate((1.9, 2.1, 2.0))]  # fmt: skip
    # one claim reads the loss ratio (the paper's "the losses meet"); no second rule reads it again
    assert [c.id for c in iac.CLAIMS if c.values is iac.loss_ratio] == [
        "augmented_loss_equals_gd",
        "gd_start_loss_no_worse",
    ]
    claim = next(c for c in iac.CLAIMS if c.id == "augmented_loss_equals_gd")
    assert claim.values(runs, {}) == pytest.approx([0.95, 1.05, 1.0])
    devs = iac.deviations(presets["paper-fig5"])
    assert any("on the attention output as augmented.py" in d for d in devs) and any(
        "init_scale = 1/3" in d for d in devs
    )
    assert not any("attention INPUT" in d for d in devs)
    assert any("attention INPUT" in d for d in iac.deviations(presets["paper-fig5"].set("model.norm_position", "pre")))
    assert any("start (the control)" in d for d in iac.deviations(presets["augmented-commuting-gd-start"]))
    na = presets["non-augmented-64"]
    assert (na.model.n_heads, na.model.d_head, na.task.n_dims, na.task.w_kind) == (64, 10, 5, "haar")
    assert any("no residual" in d for d in iac.deviations(na))


def test_fig5_section_sets_the_trained_loss_beside_the_gd_controls(tmp_path):
    """augmented.py's section reads the two controls of the single eta from the summary's reference and gives
    the trained loss over each, per run (median [min, max])."""
    cfg = EXP.preset("paper-fig5")
    losses = (0.09, 0.1, 0.11)
    runs = [
        {"seed": s, "hparams": {}, "status": "ok", "final": {"eval_loss": v, "gd_loss": 0.22, "model_cos": 0.5}}
        for s, v in enumerate(losses)
    ]
    reference = {"gd_loss": 0.22, "gd_pos_eta_loss": 0.125, "gd_state_norm_loss": 0.11, "gd_direction_oracle_loss": 0.1}
    df = pd.DataFrame(
        [{"run": r, "step": st, "metric": m, "value": 0.5} for r in range(3) for st in (0, 10) for m in
         ("eval_loss", "gd_loss", "model_cos")]
    )  # fmt: skip
    summary = {"runs": runs, "reference": reference, "command": "jaxlab run icl-autoregressive --preset paper-fig5"}
    body = report.fig5_section(ReportContext(tmp_path, cfg, summary, df, experiment=EXP)).body
    rows = {line.split(" | ")[0].lstrip("| "): line.split(" | ")[1].rstrip(" |") for line in body.splitlines()
            if line.startswith("| ")}  # fmt: skip
    assert rows["one GD step, eta fitted per position (gd_pos_eta_loss)"] == "0.125"
    assert rows["trained loss / gd_pos_eta_loss"] == "0.8 [0.72, 0.88]"
    assert rows["one GD step scaled to ||s_t|| (gd_state_norm_loss)"] == "0.11"
    assert rows["trained loss / gd_state_norm_loss"] == "0.9091 [0.8182, 1]"
    assert rows["bound: the target projected on one GD step's update (gd_direction_oracle_loss)"] == "0.1"
    assert rows["trained loss / gd_direction_oracle_loss"] == "1 [0.9, 1.1]"
    # a run directory written before the controls existed: no rows for them
    old = {**summary, "reference": {"gd_loss": 0.22}}
    assert "gd_state_norm_loss" not in report.fig5_section(ReportContext(tmp_path, cfg, old, df, experiment=EXP)).body
