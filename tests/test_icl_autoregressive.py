"""icl-autoregressive end to end: one smoke run, its summary keys and their internal consistency."""

import json

import numpy as np
import pytest

from jaxlab.cli import main
from jaxlab.errors import ConfigError
from jaxlab.experiments import icl_autoregressive as iar
from jaxlab.registry import get_experiment

EXP = get_experiment("icl-autoregressive")
FINAL_KEYS = (
    "eval_loss",
    "gd_loss",
    "model_cos",
    "preds_diff",
    "c_offblock_ratio",
    "p_superdiag_mass",
    "w_hat_rel_err",
)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ar"
    assert main(["run", "icl-autoregressive", "--preset", "smoke", "--out", str(out), "--quiet"]) == 0
    return out


def test_smoke_summary_has_the_issue_keys_and_consistent_values(smoke_run):
    summary = json.loads((smoke_run / "summary.json").read_text())
    cfg = EXP.preset("smoke")
    T = cfg.task.seq_len
    assert iar.positions(cfg) == tuple(range(T))  # every position is reported at this size
    ref = summary["reference"]
    gd_t = np.array([ref[f"gd_loss_t{t:02d}"] for t in range(T)])
    assert ref["gd_loss"] == pytest.approx(gd_t.mean(), rel=1e-5)  # loss = mean over positions
    assert ref["gd_loss_t00"] == pytest.approx(0.5, rel=0.05)  # GD predicts 0 at t = 0: 0.5 ||s_1||^2
    assert ref["gd_w_hat_err_t00"] == pytest.approx(1.0, abs=1e-5)  # ... so its W_hat is 0
    assert len(summary["runs"]) == 2
    for run in summary["runs"]:
        final = run["final"]
        assert set(FINAL_KEYS) <= set(final)
        assert final["p_superdiag_mass"] is None  # NaN: no positional attention in the augmented model
        assert final["gd_loss"] == pytest.approx(ref["gd_loss"], rel=1e-6)
        loss_t = np.array([final[f"loss_t{t:02d}"] for t in range(T)])
        assert final["eval_loss"] == pytest.approx(loss_t.mean(), rel=1e-4)
        assert final["w_hat_rel_err"] == final[f"w_hat_err_t{T - 1:02d}"]
        assert -1.0 <= final["model_cos"] <= 1.0 and 0.0 <= final["c_offblock_ratio"] <= 1.0
        assert final["kq_cur_prev"] + final["kq_cur_cur"] + final["kq_prev_cur"] + final[
            "kq_prev_prev"
        ] == pytest.approx(1.0, abs=1e-5)
        assert final["vo_cur"] + final["vo_prev"] == pytest.approx(1.0, abs=1e-5)
        assert final["preds_diff"] > 0 and final["lag1_ratio"] == pytest.approx(
            final["lag1_weight"] / final["lag0_weight"]
        )
    report = (smoke_run / "report.md").read_text()
    assert "## Trained model vs one GD step" in report and "## Learned structure" in report
    assert (smoke_run / "by_position.png").is_file() and (smoke_run / "gd_comparison.png").is_file()


def test_presets_and_bad_settings():
    pe = EXP.preset("pe-only")
    assert pe.model.attention == "positional" and dict(pe.sweep.grid)["task.mu"] == (50.0, 100.0, 200.0, 300.0)
    assert pe.task.n_dims == 2 and pe.task.seq_len == 30 and pe.task.encoding == "repeated"
    orth = EXP.preset("augmented-orthogonal")
    assert (orth.task.n_dims, orth.task.seq_len, orth.task.w_kind) == (5, 50, "haar")
    assert EXP.preset("paper").task == EXP.preset("augmented-commuting").task
    cfg = EXP.preset("smoke")
    with pytest.raises(ConfigError, match="probe.max_positions"):
        cfg.set("probe.max_positions", 1)
    with pytest.raises(ConfigError, match="probe.w_hat_probes"):
        iar.check_config(cfg.set("probe.w_hat_probes", 2))
    with pytest.raises(ConfigError, match="model.n_layers"):
        iar.check_config(cfg.set("model.n_layers", 2))
