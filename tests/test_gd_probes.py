"""GD-equivalence and algorithm probes against straightforward NumPy computations, and vmapped over 64 runs."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.config import ModelConfig
from jaxlab.models import Transformer
from jaxlab.models.gd import gd_params, lsa_products
from jaxlab.probes import gd_equivalence as ge
from jaxlab.probes import icl_algorithms as alg
from jaxlab.probes.cosine import VON_OSWALD_EPS, cosine
from jaxlab.tasks.batch import Batch

D, N, B, M = 3, 6, 48, 5


def make_batch(seed: int, b: int = B, n: int = N, scale: float = 1.0) -> Batch:
    rng = np.random.default_rng(seed)
    x = scale * rng.uniform(-0.5, 0.5, size=(b, n + 1, D))
    w = rng.normal(size=(b, D))
    y = np.einsum("bd,bnd->bn", w, x)
    inputs = np.concatenate([x, y[..., None]], -1)
    inputs[:, -1, -1] = 0.0
    targets = np.zeros((b, n + 1, 1))
    targets[:, -1, 0] = y[:, -1]
    mask = np.zeros((b, n + 1))
    mask[:, -1] = 1.0
    return Batch(jnp.asarray(inputs, jnp.float32), jnp.asarray(targets, jnp.float32), jnp.asarray(mask, jnp.float32))


def np_split(batch):
    a = np.asarray(batch.inputs, np.float64)
    return a[:, :-1, :D], a[:, :-1, D:], a[:, -1, :D], np.asarray(batch.targets, np.float64)[:, -1]


CFG = ModelConfig(
    n_layers=1, n_heads=1, d_model=D + 1, attention="linear", mask="context_keys", d_mlp=0, layernorm=False,
    use_bias=False, read_in="identity", readout="neg_y_block", d_input=D + 1, d_output=1, max_len=N + 1,
)  # fmt: skip
MODEL = Transformer(CFG)


def apply(params, inputs):
    return MODEL.apply({"params": params}, inputs)


@jax.jit
def _init(key):
    return MODEL.init(key, jnp.zeros((1, N + 1, D + 1)))["params"]


def random_params(seed: int, scale: float = 1.0):
    return jax.tree_util.tree_map(lambda w: scale * w, _init(jax.random.key(seed)))


gd_params_jit = jax.jit(gd_params, static_argnums=(0, 1))


# -- algorithms ------------------------------------------------------------------------------------
def all_predictions(x, y, q):
    return {
        "averaging": alg.averaging_predict(x, y, q),
        "ridge": alg.ridge_predict(x, y, q, 0.3),
        "ols": alg.ols_predict(x, y, q),
        "knn": alg.knn_predict(x, y, q, min(3, x.shape[-2])),
        "gd1": alg.gd_predict(x, y, q, 1.0),
    }


def test_baseline_algorithms_match_numpy():
    rng = np.random.default_rng(0)
    for n in (8, 2):  # over- and under-determined (min-norm) contexts
        x, y, q = rng.normal(size=(2, n, D)), rng.normal(size=(2, n, 1)), rng.normal(size=(2, M, D))
        want = {
            "averaging": np.stack([qi @ (xi.T @ yi / n) for xi, yi, qi in zip(x, y, q)]),
            "ridge": np.stack(
                [qi @ np.linalg.solve(xi.T @ xi + 0.3 * np.eye(D), xi.T @ yi) for xi, yi, qi in zip(x, y, q)]
            ),
            "ols": np.stack([qi @ np.linalg.lstsq(xi, yi, rcond=None)[0] for xi, yi, qi in zip(x, y, q)]),
            "knn": np.stack(
                [
                    [yi[np.argsort(((xi - qj) ** 2).sum(1))[: min(3, n)]].mean(0) for qj in qi]
                    for xi, yi, qi in zip(x, y, q)
                ]
            ),
        }
        # the NumPy (float64, batched over tasks) path and the JAX path (one task, vmapped)
        got_np = all_predictions(x, y, q)
        got_jax = jax.jit(jax.vmap(all_predictions))(*(jnp.asarray(v, jnp.float32) for v in (x, y, q)))
        for name, value in want.items():
            np.testing.assert_allclose(got_np[name], value, rtol=1e-9, atol=1e-10, err_msg=name)
            # float32: measured max |error| 7.1e-7 (ols, n = 8), at most 0.06 of this tolerance
            np.testing.assert_allclose(got_jax[name], value, rtol=1e-5, atol=1e-5, err_msg=name)
        # averaging is one GD step with eta = 1
        np.testing.assert_allclose(got_np["gd1"], want["averaging"], rtol=1e-12)
    w = rng.normal(size=(D, 1))
    np.testing.assert_allclose(alg.fit_linear(q[0], q[0] @ w), w, rtol=1e-9)


def test_gd_lr_line_search_finds_the_closed_form_optimum():
    x, y, xq, yq = np_split(make_batch(1, b=256))
    # one GD step: y_hat = eta * a with a = (1/N) sum_i y_i x_i . x_q, so eta* = sum a y / sum a^2
    a = np.einsum("bn,bnd,bd->b", y[..., 0], x, xq) / N
    eta_star = (a * yq[:, 0]).sum() / (a * a).sum()
    loss_star = 0.5 * np.mean((eta_star * a - yq[:, 0]) ** 2)
    args = [jnp.asarray(v, jnp.float32) for v in (x, y, xq, yq)]

    @jax.jit
    def fits(x, y, xq, yq):
        eta, loss = ge.fit_gd_lr(x, y, xq, yq)
        eta2, loss2 = ge.fit_gd_lr(x, y, xq, yq, n_steps=2)
        pp = ge.fit_gd_plus_plus(x, y, xq, yq, 2, eta2, n_grid=7, rounds=3, max_tasks=128)
        return eta, loss, eta2, loss2, pp, ge.gd_loss(pp[0], x, y, xq, yq, 2, pp[1])

    eta, loss, eta2, loss2, (eta_pp, gamma_pp, loss_pp), loss_pp_check = fits(*args)
    assert float(eta) == pytest.approx(eta_star, rel=1e-3)
    assert float(loss) == pytest.approx(loss_star, rel=1e-5)
    # a 2-step fit is a different rate, and GD++ (gamma >= 0) is at least as good as 2-step GD
    assert float(loss2) < float(loss) and abs(float(eta2) - float(eta)) > 1e-2
    assert float(loss_pp) <= float(loss2) + 1e-7 and float(gamma_pp) >= 0.0
    assert float(loss_pp) == pytest.approx(float(loss_pp_check), rel=1e-6)


def _np_gdpp_loss(eta: float, gamma: float, x, y, xq, yq, n_steps: int = 2) -> float:
    """K steps of GD++ written out in NumPy (float64): per step every token's residual r_j -= (eta/N)
    sum_i (x_i . x_j) r_i and input x_j -= gamma sum_i (x_i . x_j) x_i; the prediction is -r_query."""
    n = x.shape[1]
    xc, r, q, rq = x, y[..., 0], xq, np.zeros(len(x))
    for _ in range(n_steps):
        g, gq = np.einsum("bid,bjd->bij", xc, xc), np.einsum("bd,bjd->bj", q, xc)
        xc, r, q, rq = (
            xc - gamma * np.einsum("bij,bjd->bid", g, xc),
            r - (eta / n) * np.einsum("bij,bj->bi", g, r),
            q - gamma * np.einsum("bj,bjd->bd", gq, xc),
            rq - (eta / n) * np.einsum("bj,bj->b", gq, r),
        )
    return float(0.5 * np.mean((-rq - yq[:, 0]) ** 2))


def test_gd_plus_plus_fit_finds_the_narrow_valley_at_large_n():
    """At N = 50 (d = 10, x ~ U(-0.5, 0.5)) 2-step GD++'s loss is a narrow valley in (eta, gamma): the
    fit must reach at least the loss at gamma = 0.056 with eta refitted on a fine grid (the value von
    Oswald et al. report at N = 50), which a coarse first grid (n_grid = 11) missed on these tasks
    (gamma 0.037, loss 3.3 times higher)."""
    rng = np.random.default_rng(3)
    b, n, d = 256, 50, 10
    x, xq = rng.uniform(-0.5, 0.5, (b, n, d)), rng.uniform(-0.5, 0.5, (b, d))
    w = rng.normal(size=(b, d))
    y, yq = np.einsum("bnd,bd->bn", x, w)[..., None], np.einsum("bd,bd->b", xq, w)[:, None]
    args = [jnp.asarray(v, jnp.float32) for v in (x, y, xq, yq)]

    @jax.jit
    def fit(x, y, xq, yq):  # centred on the fitted 2-step GD rate, as `fit_gd_reference` does
        return ge.fit_gd_plus_plus(x, y, xq, yq, 2, ge.fit_gd_lr(x, y, xq, yq, 2)[0])

    eta_pp, gamma_pp, loss_pp = fit(*args)
    at_paper = min(_np_gdpp_loss(eta, 0.056, x, y, xq, yq) for eta in np.geomspace(10, 30, 41))
    assert float(loss_pp) <= at_paper * 1.001
    assert float(loss_pp) == pytest.approx(_np_gdpp_loss(float(eta_pp), float(gamma_pp), x, y, xq, yq), rel=1e-3)
    assert 0.045 < float(gamma_pp) < 0.07


def test_log_grid_minimizer_on_a_known_function():
    f = lambda t: (jnp.log(t[0]) - 1.0) ** 2 + (t[1] - 0.02) ** 2
    theta, loss = jax.jit(lambda: ge.minimize_log_grid(f, [1e-3, 1e-4], [1e3, 1.0], 21, 6))()
    np.testing.assert_allclose(theta, [np.e, 0.02], rtol=1e-3)
    assert float(loss) < 1e-8


# -- one model against the reference ---------------------------------------------------------------
@pytest.fixture(scope="module")
def reference():
    batch = make_batch(2)
    x_probe = jnp.asarray(np.random.default_rng(3).uniform(-0.5, 0.5, size=(B, M, D)), jnp.float32)
    return batch, ge.make_reference(batch, D, 1, x_probe_BMD=x_probe, ridge_lambda=0.1, knn_k=3)


def metrics(params, batch, ref):
    out = ge.equivalence_metrics(apply, params, batch, ref, D, probe_batch_size=16)
    out["interp_loss"] = ge.interp_loss(CFG, params, batch, ref["gd"]["eta"], N)
    return out


one_run_metrics = jax.jit(metrics)  # one compiled program shared by the tests below


def numpy_lsa(params, batch):
    """Prediction and d prediction / d x_q of a one-layer LSA from its products, in NumPy."""
    a, b = (np.asarray(m[0, 0], np.float64) for m in lsa_products(params, CFG))
    e = np.asarray(batch.inputs, np.float64)
    ctx, q = e[:, :-1], e[:, -1]
    score = np.einsum("bd,de,bne->bn", q, a, ctx)
    v_y = ctx @ b[:, -1]  # [B, N]
    pred = -np.einsum("bn,bn->b", score, v_y)
    sens = -np.einsum("de,bne,bn->bd", a[:D], ctx, v_y)
    return pred, sens


def test_metrics_match_numpy_for_a_random_lsa(reference):
    batch, ref = reference
    params = random_params(4)
    got = one_run_metrics(params, batch, ref)
    pred, sens = numpy_lsa(params, batch)
    x, y, xq, yq = np_split(batch)
    eta = float(ref["gd"]["eta"])
    w_gd = eta / N * np.einsum("bn,bnd->bd", y[..., 0], x)
    pred_gd = np.einsum("bd,bd->b", w_gd, xq)
    cos = (
        sens
        / (np.linalg.norm(sens, axis=1, keepdims=True) + 1e-8)
        * w_gd
        / (np.linalg.norm(w_gd, axis=1, keepdims=True) + 1e-8)
    ).sum(1)
    np.testing.assert_allclose(got["preds_diff"], np.mean(np.abs(pred - pred_gd)), rtol=1e-3, atol=1e-7)
    np.testing.assert_allclose(got["model_cos"], cos.mean(), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(got["model_diff"], np.linalg.norm(sens - w_gd, axis=1).mean(), rtol=1e-3, atol=1e-7)
    ridge_w = np.stack([np.linalg.solve(xi.T @ xi + 0.1 * np.eye(D), xi.T @ yi[:, 0]) for xi, yi in zip(x, y)])
    np.testing.assert_allclose(
        got["spd_ridge"], np.mean((pred - np.einsum("bd,bd->b", ridge_w, xq)) ** 2), rtol=1e-3, atol=1e-8
    )
    np.testing.assert_allclose(got["spd_gd"], np.mean((pred - pred_gd) ** 2), rtol=1e-3, atol=1e-8)
    # the LSA is linear in x_q, so its implicit weights are exactly its sensitivity
    np.testing.assert_allclose(got["ilwd_gd"], np.mean(np.sum((sens - w_gd) ** 2, axis=1)), rtol=1e-3, atol=1e-8)
    np.testing.assert_allclose(got["ilwd_ridge"], np.mean(np.sum((sens - ridge_w) ** 2, axis=1)), rtol=1e-3, atol=1e-8)
    # interpolated model: products averaged with GD's after rescaling by beta (von Oswald et al. A.3)
    a, b = (np.asarray(m[0, 0], np.float64) for m in lsa_products(params, CFG))
    beta = np.mean(np.diag(a)[:D])
    a_gd = np.diag([1.0] * D + [0.0])
    b_gd = np.diag([0.0] * D + [-eta / N])
    a_i, b_i = (a / beta + a_gd) / 2, (b * beta + b_gd) / 2
    e = np.asarray(batch.inputs, np.float64)
    pred_i = -np.einsum("bd,de,bne,bn->b", e[:, -1], a_i, e[:, :-1], e[:, :-1] @ b_i[:, -1])
    np.testing.assert_allclose(got["interp_loss"], 0.5 * np.mean((pred_i - yq[:, 0]) ** 2), rtol=1e-3)


def test_gd_itself_is_equivalent_to_gd(reference):
    batch, ref = reference
    eta = ref["gd"]["eta"]
    got = one_run_metrics(gd_params_jit(CFG, N, eta), batch, ref)
    assert float(got["model_cos"]) == pytest.approx(1.0, abs=1e-5)
    for name in ("preds_diff", "model_diff", "spd_gd", "ilwd_gd"):
        assert float(got[name]) < 1e-5, name
    assert float(got["interp_loss"]) == pytest.approx(float(ref["gd"]["loss"]), rel=1e-4)
    # averaging is GD with eta = 1: its distance to GD is known in closed form
    x, y, xq, _ = np_split(batch)
    w = np.einsum("bn,bnd->bd", y[..., 0], x) / N
    assert float(got["spd_averaging"]) == pytest.approx(np.mean(((float(eta) - 1) * (w * xq).sum(1)) ** 2), rel=1e-3)
    # rescaling W_KQ by c and W_PV by 1/c changes neither the function nor the interpolated model
    p = gd_params_jit(CFG, N, eta)
    attn = p["blocks_0"]["attn"]
    scaled = {"blocks_0": {"attn": {"w_qkv": attn["w_qkv"].at[:, 0].multiply(5.0), "w_out": attn["w_out"] / 5.0}}}
    got_s = one_run_metrics(scaled, batch, ref)
    assert float(got_s["interp_loss"]) == pytest.approx(float(ref["gd"]["loss"]), rel=1e-4)
    assert float(got_s["model_cos"]) == pytest.approx(1.0, abs=1e-5)


def test_probes_over_64_runs_in_one_vectorized_call(reference):
    batch, ref = reference
    stacked = jax.jit(jax.vmap(_init))(jax.random.split(jax.random.key(7), 64))
    assert jax.tree_util.tree_leaves(stacked)[0].shape[0] == 64
    # the model is traced a fixed number of times whatever the number of runs: no per-run loop
    traced = []

    def counted(params, inputs):
        traced.append(jax.tree_util.tree_leaves(params)[0].shape)
        return apply(params, inputs)

    def counted_metrics(params, batch, ref):
        out = ge.equivalence_metrics(counted, params, batch, ref, D, probe_batch_size=16)
        out["interp_loss"] = ge.interp_loss(CFG, params, batch, ref["gd"]["eta"], N)
        return out

    many_fn = jax.jit(jax.vmap(counted_metrics, in_axes=(0, None, None)))
    many = many_fn(stacked, batch, ref)
    # traced once for the query predictions and once for the ILWD probes (a per-run Python loop
    # would trace it >= 64 times)
    assert len(traced) == 2, traced
    many_fn(stacked, batch, ref)
    assert len(traced) == 2  # compiled once: the second call runs the same program
    assert set(many) >= {"model_cos", "model_diff", "preds_diff", "interp_loss", *(f"spd_{a}" for a in alg.ALGORITHMS)}
    assert all(v.shape == (64,) for v in many.values())
    for r in (0, 17, 63):
        single = one_run_metrics(jax.tree_util.tree_map(lambda v: v[r], stacked), batch, ref)
        for k, v in single.items():
            np.testing.assert_allclose(many[k][r], v, rtol=1e-4, atol=1e-7, err_msg=k)
    assert len({round(float(v), 6) for v in many["model_cos"]}) > 60  # 64 different runs


def test_model_cos_is_von_oswalds_cosine_of_the_flattened_sensitivities():
    """model_cos = mean over tasks of (g / (||g|| + 1e-8)) . (g_GD / (||g_GD|| + 1e-8)), g flattened."""
    rng = np.random.default_rng(0)
    sens, gd_sens = rng.normal(size=(10, 2, 4)), rng.normal(size=(10, 2, 4))
    preds = np.zeros((10, 2))
    got = ge._gd_comparison(jnp.asarray(preds), jnp.asarray(sens), {"preds": preds, "sens": gd_sens}, "")
    a, b = sens.reshape(10, -1), gd_sens.reshape(10, -1)
    na = np.linalg.norm(a, axis=1, keepdims=True) + 1e-8
    nb = np.linalg.norm(b, axis=1, keepdims=True) + 1e-8
    assert float(got["model_cos"]) == pytest.approx(np.mean(np.sum(a / na * b / nb, axis=1)), rel=1e-5)
    same = ge._gd_comparison(jnp.asarray(preds), jnp.asarray(sens), {"preds": preds, "sens": 3.0 * sens}, "")
    assert float(same["model_cos"]) == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(cosine(a, -a, eps=VON_OSWALD_EPS), -1.0, atol=1e-6)


def test_a_k_step_reference_also_compares_with_one_gd_step_at_its_own_rate():
    batch = make_batch(3, b=256)
    ref = ge.make_reference(batch, D, n_steps=2, ridge_lambda=0.3)
    x, y, xq, yq = np_split(batch)
    # one GD step from W = 0: y_hat = eta * a, a = (1/N) sum_i y_i x_i . x_q; its optimal rate in closed form
    a = np.einsum("bn,bnd,bd->b", y[..., 0], x, xq) / N
    eta_star = (a * yq[:, 0]).sum() / (a * a).sum()
    assert float(ref[ge.ONE_STEP_GD]["eta"]) == pytest.approx(eta_star, rel=1e-3)
    np.testing.assert_allclose(ref["alg_preds"][ge.ONE_STEP_GD][:, 0], eta_star * a, rtol=2e-3, atol=1e-6)
    # the K-step `gd` is a different predictor; a one-step reference has no gd1
    assert np.abs(ref["alg_preds"]["gd"] - ref["alg_preds"][ge.ONE_STEP_GD]).max() > 1e-3
    assert ge.ONE_STEP_GD not in ge.make_reference(batch, D, n_steps=1)["alg_preds"]
