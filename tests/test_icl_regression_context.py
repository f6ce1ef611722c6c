"""icl-regression beyond one layer: the `recurrent-context` and `softmax-mlp` presets, the trained model's
own GD++ gamma (`model_gamma`) and the claims per context length N. No training: constructed weights
and synthetic run records."""

import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd
import pytest

from jaxlab.experiments import icl_regression as ir
from jaxlab.experiments import icl_regression_claims as irc
from jaxlab.experiments.icl_regression_report import context_section
from jaxlab.models.gd import gd_params
from jaxlab.registry import get_experiment
from jaxlab.reporting import ReportContext

EXP = get_experiment("icl-regression")
BY_ID = {c.id: c for c in irc.CLAIMS}


def _tied_cfg():
    return EXP.preset("smoke").with_overrides({"model.n_layers": 2, "model.tie_layers": True, "probe.gd_probes": True})


def _x_update(params: dict, cfg, x_BND: np.ndarray) -> np.ndarray:
    """One tied layer's change of the context tokens' x blocks, computed in NumPy from the weights:
    sum_i (e_j W_q . e_i W_k) (e_i W_v W_out), the y entries zero."""
    d = cfg.task.n_dims
    attn = params["blocks_0"]["attn"]
    w_qkv, w_out = np.asarray(attn["w_qkv"], np.float64), np.asarray(attn["w_out"], np.float64)
    e = np.concatenate([x_BND, np.zeros((*x_BND.shape[:-1], 1))], axis=-1)
    q, k, v = (np.einsum("bnd,dhk->bnhk", e, w_qkv[:, i]) for i in range(3))
    scores = np.einsum("bjhk,bihk->bhji", q, k)
    out = np.einsum("bhji,bihk,hke->bje", scores, v, w_out)
    return out[..., :d]


def test_model_gamma_reads_gd_plus_plus_gamma_off_the_weights():
    """For GD++'s constructed layer the tied model's gamma is the construction's; the x update it implies,
    -gamma X X^T x_j, is the layer's own (NumPy forward pass), and (W_q c, W_out / c) keeps it."""
    cfg = _tied_cfg()
    model_cfg = cfg.resolve().model
    gammas = np.array([0.05, 0.179, 0.4])
    params_R = jax.vmap(lambda g: gd_params(model_cfg, cfg.task.n_context, 3.0, g))(jnp.asarray(gammas))
    np.testing.assert_allclose(ir.model_gamma(params_R, cfg), gammas, rtol=1e-5)
    # the layer's x update is -gamma X X^T x_j (context tokens, y = 0)
    x = np.random.default_rng(0).uniform(-0.5, 0.5, (2, cfg.task.n_context, cfg.task.n_dims))
    one = jax.tree_util.tree_map(lambda a: a[1], params_R)
    want = -gammas[1] * np.einsum("bid,bie,bje->bjd", x, x, x)
    np.testing.assert_allclose(_x_update(one, cfg, x), want, rtol=1e-4, atol=1e-7)
    # rescaling the score path by c and the value path by 1/c changes neither the function nor gamma
    c = 2.5
    scaled = jax.tree_util.tree_map(lambda a: a, params_R)
    attn = scaled["blocks_0"]["attn"]
    attn["w_qkv"] = attn["w_qkv"].at[:, :, 0].multiply(c)
    attn["w_out"] = attn["w_out"] / c
    np.testing.assert_allclose(ir.model_gamma(scaled, cfg), gammas, rtol=1e-5)
    assert ir.has_model_gamma(cfg) and not ir.has_model_gamma(EXP.preset("paper"))
    assert not ir.has_model_gamma(EXP.preset("softmax-mlp")) and not ir.has_model_gamma(EXP.preset("deep"))


def test_the_new_presets_and_which_claims_they_test():
    rc = EXP.preset("recurrent-context")
    assert rc.sweep.grid == (("task.n_context", (10, 25, 50)),) and len(rc.sweep.seeds) == 8
    assert (rc.model.n_layers, rc.model.tie_layers, rc.model.attention) == (2, True, "linear")
    # the recurrent preset's settings, K = 2, at the quick preset's length
    rec, quick = EXP.preset("recurrent"), EXP.preset("quick")
    assert (rc.model.init_scale, rc.optim.clip_norm) == (rec.model.init_scale, rec.optim.clip_norm)
    assert (rc.train.steps, rc.train.batch_size) == (quick.train.steps, quick.train.batch_size) == (600, 1024)
    sm = EXP.preset("softmax-mlp")
    m = sm.resolve().model
    assert (m.attention, m.n_heads, m.d_head, m.d_mlp, m.n_layers, m.tie_layers, m.layernorm) == (
        "softmax", 2, 11, 44, 2, False, False,
    )  # fmt: skip
    assert irc.constructed_tokens(sm) and not irc.constructed_tokens(EXP.preset("depth"))
    testable = lambda name: [c.id for c in irc.CLAIMS if c.untested(EXP.preset(name)) is None]
    assert testable("recurrent-context") == [
        *(f"recurrent_context_{w}_n{n}" for n in (10, 25, 50) for w in ("matches_gdpp", "loss_equals_gdpp")),
        "recurrent_context_gamma_falls_with_n",
    ]
    assert testable("softmax-mlp") == ["softmax_mlp_tokens_matches_or_beats_gdpp_k2"]
    # the per-K recurrent claims read one run per seed at K; with N swept the per-N claims apply instead
    assert "recurrent_context_" in BY_ID["recurrent_matches_gdpp_k2"].untested(rc)
    assert "softmax_mlp_tokens" in BY_ID["softmax_mlp_matches_or_beats_gdpp"].untested(sm)
    assert BY_ID["softmax_mlp_matches_or_beats_gdpp"].untested(EXP.preset("depth")) is None
    for name in ("recurrent", "context", "paper", "softmax", "depth"):
        assert "recurrent_context_gamma_falls_with_n" not in testable(name)
    devs = irc.deviations(sm)
    assert any("50,000 steps" in d for d in devs) and any("`model.d_mlp` = 44 (paper: 0)" in d for d in devs)
    assert any("Adam" in d for d in irc.deviations(rc))


def _record(seed: int, n: int, **final: float) -> dict:
    return {"seed": seed, "hparams": {"task.n_context": n}, "status": "ok", "final": final}


def test_claims_per_context_length_against_numpy():
    rng = np.random.default_rng(2)
    ns = irc.CONTEXT_LENGTHS
    cos, model, pp, gamma = (rng.uniform(0.1, 1.0, (6, len(ns))) for _ in range(4))
    runs = [
        _record(s, n, model_cos_gdpp=cos[s, i], fresh_eval_loss=model[s, i], fresh_gdpp_loss=pp[s, i],
                model_gamma=gamma[s, i])
        for i, n in enumerate(ns) for s in range(6)
    ]  # fmt: skip
    for i, n in enumerate(ns):
        np.testing.assert_allclose(BY_ID[f"recurrent_context_matches_gdpp_n{n}"].values(runs, {}), cos[:, i])
        got = BY_ID[f"recurrent_context_loss_equals_gdpp_n{n}"].values(runs, {})
        np.testing.assert_allclose(got, (model[:, i] - pp[:, i]) / pp[:, i], rtol=1e-12)
    # paired by seed: a seed missing at one N is dropped
    trend = BY_ID["recurrent_context_gamma_falls_with_n"].values(runs[1:], {})
    np.testing.assert_allclose(trend, gamma[1:, -1] - gamma[1:, 0])
    got = BY_ID["softmax_mlp_tokens_matches_or_beats_gdpp_k2"].values(runs[:6][::-1], {})
    np.testing.assert_allclose(got, (model[:, 0] - pp[:, 0]) / pp[:, 0], rtol=1e-12)
    # the paper's numbers the claim and the report quote
    assert irc.PAPER_GDPP_GAMMA[10] == 0.179 and "-0.123" in BY_ID["recurrent_context_gamma_falls_with_n"].paper_value
    # the rule asks for half the paper's fall: a gamma that does not move is not_reproduced, not inconclusive
    assert irc.GAMMA_FALL == pytest.approx(0.0615)
    trend_claim = BY_ID["recurrent_context_gamma_falls_with_n"]
    assert trend_claim.rule.decide(-0.0002, 0.0008) == "not_reproduced"
    assert (
        trend_claim.rule.decide(-0.1, -0.07) == "reproduced" and trend_claim.rule.decide(-0.1, -0.03) == "inconclusive"
    )


def test_the_context_section_puts_gd_plus_plus_gamma_beside_the_papers(tmp_path):
    cfg = EXP.preset("recurrent-context")
    runs = [
        {**_record(s, n, model_gamma=0.1 * s + n, eval_loss=1.0, fresh_eval_loss=1.1, fresh_gdpp_loss=1.0,
                   model_cos_gdpp=0.99), "run": i}
        for i, (n, s) in enumerate((n, s) for n in (10, 50) for s in range(3))
    ]  # fmt: skip
    ref = {"gdpp_gamma[task.n_context=10]": 0.177, "gdpp_gamma[task.n_context=50]": 0.0375}
    ctx = ReportContext(tmp_path, cfg, {"runs": runs, "reference": ref}, pd.DataFrame())
    rows = [
        line
        for line in context_section(ctx).body.splitlines()
        if line.startswith("| 10 |") or line.startswith("| 50 |")
    ]
    assert rows[0].startswith("| 10 | 0.179 | 0.177 | 10.1 [10, 10.2] |")
    assert rows[1].startswith("| 50 | 0.056 | 0.0375 | 50.1 [50, 50.2] |")
    assert context_section(ReportContext(tmp_path, EXP.preset("recurrent"), {"runs": runs}, pd.DataFrame())) is None
