"""Probes of in-context autoregressive learning and the positional attention, against NumPy loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.config import ModelConfig
from jaxlab.models import Transformer
from jaxlab.probes import autoregressive as pr
from jaxlab.tasks import autoregressive as ar
from jaxlab.tasks import sample

D, T, B = 4, 6, 32
TASK = ar.Config(n_dims=D, seq_len=T, w_kind="commuting", conjugate=True, basis_seed=2, s0="sphere")


def f64(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), jax.device_get(tree))


def np_gd(s, eta):
    """y_hat_t = Gamma_t s_t, Gamma_t = eta sum_{t'=1}^{t} s_t' s_{t'-1}^T, written as loops."""
    out = np.zeros_like(s)
    for b in range(s.shape[0]):
        for t in range(s.shape[1]):
            gamma = np.zeros((s.shape[2], s.shape[2]))
            for u in range(1, t + 1):
                gamma += np.outer(s[b, u], s[b, u - 1])
            out[b, t] = eta * gamma @ s[b, t]
    return out


def gd_params(eta, d):
    """A one-head linear transformer on tokens (s_t, s_{t-1}, 0) that computes one GD step exactly:
    q = s_t, k = s_{t-1}, v = s_t, written by W_O into the zero block times eta."""
    Dm = 3 * d
    w_qkv = np.zeros((Dm, 3, 1, d), np.float32)
    w_qkv[:d, 0, 0] = np.eye(d)
    w_qkv[d : 2 * d, 1, 0] = np.eye(d)
    w_qkv[:d, 2, 0] = np.eye(d)
    w_out = np.zeros((1, d, Dm), np.float32)
    w_out[0, :, 2 * d :] = eta * np.eye(d)
    return {"blocks_0": {"attn": {"w_qkv": jnp.asarray(w_qkv), "w_out": jnp.asarray(w_out)}}}


def lsa_config(**kw):
    base = dict(attention="linear", mask="causal", layernorm=False, use_bias=False, read_in="identity")
    base.update(readout="y_block", d_head=D, d_model=3 * D, d_input=3 * D, d_output=D, max_len=T)
    return ModelConfig(**{**base, **kw})


@pytest.fixture(scope="module")
def setup():
    """The batch, the fitted reference, and every probe of the exact GD transformer: one program."""
    model = Transformer(lsa_config())
    eta = 0.37
    params = gd_params(eta, D)
    probes = pr.probe_directions(jax.random.key(1), 2 * D, D)

    @jax.jit
    def run(key):
        batch = sample(key, TASK, B)
        ref = pr.make_reference(batch, TASK)
        apply = lambda p, x: model.apply({"params": p}, x)
        predict = lambda x: apply(params, x)
        s = ar.observed_states(TASK, batch.inputs)
        gd_fixed = lambda x: pr.gd_predictions(ar.observed_states(TASK, x), eta)
        w_rep = jnp.repeat(batch.aux["w"], probes.shape[0], axis=0)  # w_hat_errors' sequences are (task, probe)
        true_w = lambda x: jnp.einsum("bij,btj->bti", w_rep, ar.observed_states(TASK, x))
        return {
            "batch": batch,
            "ref": ref,
            "model_preds": predict(batch.inputs),
            "gd_preds": pr.gd_predictions(s, eta),
            "sens": pr.last_state_sensitivity(gd_fixed, TASK, batch.inputs)[1],
            "metrics": pr.equivalence_metrics(apply, params, batch, {**ref, "preds": gd_fixed(batch.inputs)}, TASK),
            "metrics_fitted": pr.equivalence_metrics(apply, params, batch, ref, TASK),
            "c_off": pr.c_offblock_ratio(params, TASK),
            "fractions": pr.block_fractions(params, TASK),
            "angles": pr.block_angles(pr.block_products(params, TASK)[0], TASK),
            "w_err_true": pr.w_hat_errors(true_w, TASK, batch.inputs, batch.aux["w"], probes, (1, 3, T - 1)),
            "w_err_gd": pr.w_hat_errors(gd_fixed, TASK, batch.inputs, batch.aux["w"], probes, (1, 3, T - 1)),
            "lags": pr.lag_weights(batch.targets, s),
            "probes": probes,
        }

    return eta, f64(run(jax.random.key(4)))


def test_gd_predictor_model_and_numpy_agree(setup):
    eta, r = setup
    s = r["batch"].inputs[..., :D]
    expected = np_gd(s, eta)
    np.testing.assert_allclose(r["gd_preds"], expected, atol=1e-5)
    np.testing.assert_allclose(r["model_preds"], expected, atol=1e-5)  # the token layout and readout
    # the exact GD transformer: zero distance, unit cosine, the same loss as GD, block-diagonal C, no rotation
    m = r["metrics"]
    assert m["preds_diff"] < 1e-5 and m["model_cos"] == pytest.approx(1.0, abs=1e-5)
    gd_loss_fixed = 0.5 * np.mean(np.sum((expected - r["batch"].targets) ** 2, -1))
    assert m["eval_loss"] == pytest.approx(gd_loss_fixed, rel=1e-5)
    assert r["c_off"] < 1e-6 and np.abs(r["angles"]).max() < 1e-6
    assert r["fractions"]["kq_cur_prev"] == pytest.approx(1.0) and r["fractions"]["vo_cur"] == pytest.approx(1.0)


def test_fitted_eta_is_the_least_squares_optimum(setup):
    _, r = setup
    b = r["batch"]
    g = np_gd(b.inputs[..., :D], 1.0)
    eta = np.sum(g * b.targets) / np.sum(g * g)  # the loss is quadratic in eta: closed form
    loss = 0.5 * np.mean(np.sum((eta * g - b.targets) ** 2, -1))
    # L(eta') = L* + curv (eta' - eta)^2 / 2: a line search on the float32 loss cannot tell apart the
    # etas whose losses differ from L* by a few ulps, |eta' - eta| <= sqrt(2 k eps L* / curv) (k = 16)
    curv = np.mean(np.sum(g * g, -1))
    tol = np.sqrt(2 * 16 * np.finfo(np.float32).eps * loss / curv)
    assert tol < 2e-3 * eta  # the bound itself is tight enough to test something
    assert abs(r["ref"]["eta"] - eta) <= tol
    assert r["ref"]["loss"] == pytest.approx(loss, rel=1e-5)
    fitted = r["ref"]["eta"] * g  # per-position losses are not stationary in eta: use the fitted one
    np.testing.assert_allclose(r["ref"]["loss_t"], 0.5 * np.mean(np.sum((fitted - b.targets) ** 2, -1), 0), rtol=1e-5)
    assert r["metrics_fitted"]["gd_loss"] == pytest.approx(loss, rel=1e-5)


def np_pos_eta(s: np.ndarray, y: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """One GD step with eta_t = sum_b <g, y> / sum_b |g|^2 at each t over the masked tasks (0 where g is 0)."""
    g = np_gd(s, 1.0)
    out = np.zeros_like(g)
    for t in range(s.shape[1]):
        den = sum(mask[b, t] * g[b, t] @ g[b, t] for b in range(s.shape[0]))
        num = sum(mask[b, t] * g[b, t] @ y[b, t] for b in range(s.shape[0]))
        out[:, t] = (num / den if den > 0 else 0.0) * g[:, t]
    return out


def np_state_norm(s: np.ndarray) -> np.ndarray:
    """One GD step's update scaled to ||s_t|| (0 where the update is 0)."""
    g = np_gd(s, 1.0)
    out = np.zeros_like(g)
    for b in range(s.shape[0]):
        for t in range(s.shape[1]):
            n = np.linalg.norm(g[b, t])
            out[b, t] = g[b, t] * np.linalg.norm(s[b, t]) / n if n > 0 else 0.0
    return out


def np_direction_oracle(s: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each target's projection on one GD step's update g (0 where g is 0)."""
    g = np_gd(s, 1.0)
    out = np.zeros_like(g)
    for b in range(s.shape[0]):
        for t in range(s.shape[1]):
            gg = g[b, t] @ g[b, t]
            out[b, t] = (g[b, t] @ y[b, t]) / gg * g[b, t] if gg > 0 else 0.0
    return out


def test_gd_baseline_controls_match_numpy(setup):
    """The controls of the single eta (per-position eta, update scaled to ||s_t||) and the bound of any rescaled
    update against loops: their losses in the reference, their predictions on awkward inputs (a masked-out
    task, a large scale, t = 0); the bound is below every rescaling of the update."""
    _, r = setup
    b = r["batch"]
    s, y, mask = b.inputs[..., :D], b.targets, b.loss_mask
    half = lambda p: float(np.sum(0.5 * np.sum((p - y) ** 2, -1) * mask) / np.sum(mask))
    assert r["ref"]["loss_pos_eta"] == pytest.approx(half(np_pos_eta(s, y, mask)), rel=1e-5)
    assert r["ref"]["loss_state_norm"] == pytest.approx(half(np_state_norm(s)), rel=1e-5)
    assert r["ref"]["loss_direction_oracle"] == pytest.approx(half(np_direction_oracle(s, y)), rel=1e-5)
    assert r["ref"]["loss_pos_eta"] <= r["ref"]["loss"] * (1 + 1e-6)  # one eta is one of the per-position choices
    bound = r["ref"]["loss_direction_oracle"] * (1 - 1e-6)  # below every rescaling of the update
    assert bound <= r["ref"]["loss_pos_eta"] and bound <= r["ref"]["loss_state_norm"]
    rng = np.random.default_rng(0)
    s2 = rng.normal(size=(3, 5, 2)) * 1e3  # a large scale
    y2 = rng.normal(size=(3, 5, 2))
    m2 = np.ones((3, 5))
    m2[1] = 0.0  # a task left out of the fit
    got = np.asarray(pr.gd_position_eta_predictions(jnp.asarray(s2), jnp.asarray(y2), jnp.asarray(m2)), np.float64)
    np.testing.assert_allclose(got, np_pos_eta(s2, y2, m2), rtol=1e-4, atol=1e-12)
    assert not np.any(got[:, 0])  # no context at t = 0: no update
    unit = np.asarray(pr.gd_state_norm_predictions(jnp.asarray(s2)), np.float64)
    np.testing.assert_allclose(unit, np_state_norm(s2), rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(unit[:, 1:], axis=-1), np.linalg.norm(s2[:, 1:], axis=-1), rtol=1e-5)
    oracle = np.asarray(pr.gd_direction_oracle_predictions(jnp.asarray(s2), jnp.asarray(y2)), np.float64)
    np.testing.assert_allclose(oracle, np_direction_oracle(s2, y2), rtol=1e-4, atol=1e-9)
    residual = y2 - oracle  # orthogonal to the update where there is one
    g2 = np_gd(s2, 1.0)
    assert np.abs(np.sum(residual[:, 1:] * g2[:, 1:], -1)).max() <= 1e-4 * np.abs(g2).max() * np.abs(y2).max()
    # homogeneous of degree 1 in the states, whatever the step size's scale
    half_scale = np.asarray(pr.gd_state_norm_predictions(jnp.asarray(s2 / 2)), np.float64)
    np.testing.assert_allclose(half_scale, unit / 2, rtol=1e-4, atol=1e-6)


def test_last_state_sensitivity_of_gd_is_its_jacobian(setup):
    eta, r = setup
    s = r["batch"].inputs[..., :D]
    for b in range(4):
        gamma = sum(np.outer(s[b, u], s[b, u - 1]) for u in range(1, T - 1))
        # d/ds [eta (gamma + s s_prev^T) s] = eta (gamma + s s_prev^T + (s_prev . s) I)
        jac = eta * (gamma + np.outer(s[b, -1], s[b, -2]) + np.dot(s[b, -2], s[b, -1]) * np.eye(D))
        np.testing.assert_allclose(r["sens"][b], jac, atol=1e-5)


def test_w_hat_is_exact_for_the_true_map_and_matches_numpy_for_gd(setup):
    eta, r = setup
    assert np.abs(r["w_err_true"]).max() < 1e-5
    b, x = r["batch"], r["probes"]
    s, w = b.inputs[..., :D], b.aux["w"]
    for j, t in enumerate((1, 3, T - 1)):
        for i in range(3):
            gamma = sum((np.outer(s[i, u], s[i, u - 1]) for u in range(1, t)), np.zeros((D, D)))
            # the probe x_m replaces s_t, so the t' = t term is x_m s_{t-1}^T
            y = np.stack([eta * (gamma + np.outer(xm, s[i, t - 1])) @ xm for xm in x])
            w_hat = np.linalg.lstsq(x, y, rcond=None)[0].T
            err = np.linalg.norm(w_hat - w[i]) / np.linalg.norm(w[i])
            assert r["w_err_gd"][i, j] == pytest.approx(err, rel=1e-4, abs=1e-5)


def test_lag_weights_match_numpy_lstsq(setup):
    _, r = setup
    s, y = r["batch"].inputs[..., :D], r["batch"].targets
    cols = np.stack([s[:, 1 - k : T - k].reshape(-1) for k in range(2)], -1)
    coef = np.linalg.lstsq(cols, y[:, 1:].reshape(-1), rcond=None)[0]
    np.testing.assert_allclose(r["lags"], coef, rtol=1e-4, atol=1e-5)


def test_offblock_ratio_superdiag_mass_and_head_cosines_against_numpy():
    rs = np.random.default_rng(0)
    c = rs.standard_normal((D, D)).astype(np.float32)
    p = np.asarray(ar.basis(TASK), np.float64)
    rot = np.kron(np.eye(2), [[np.cos(0.4), -np.sin(0.4)], [np.sin(0.4), np.cos(0.4)]])
    probs = rs.random((3, T, T))
    probs = np.tril(probs) / np.tril(probs).sum(-1, keepdims=True)
    w_qkv = rs.standard_normal((5, 3, 3, 2)).astype(np.float32)
    w_out = rs.standard_normal((3, 2, 5)).astype(np.float32)
    params = {"blocks_0": {"attn": {"w_qkv": w_qkv, "w_out": w_out}}}

    @jax.jit
    def probes(c, rot_task, probs, params):
        return (
            pr.offblock_ratio(c, TASK),
            pr.offblock_ratio(rot_task, TASK),
            pr.block_angles(rot_task, TASK),
            pr.superdiag_mass(probs),
            pr.head_cosines(params),
        )

    off, off_rot, angles, mass_, hcos = f64(probes(c, (p @ rot @ p.T).astype(np.float32), probs, params))
    m = p.T @ c @ p
    on = (np.arange(D)[:, None] // 2) == (np.arange(D)[None, :] // 2)
    assert off == pytest.approx(np.sqrt((m[~on] ** 2).sum() / (m**2).sum()), rel=1e-5)
    # a rotation-block matrix in the task basis is block-diagonal there, and its angles read back
    assert off_rot < 1e-5
    np.testing.assert_allclose(angles, [0.4, 0.4], atol=1e-5)
    mass = np.mean([probs[h, t, t] + probs[h, t, t - 1] for h in range(3) for t in range(1, T)])
    assert float(pr.last_row_diagonal(probs)) == pytest.approx(np.mean([probs[h, T - 1, T - 1] for h in range(3)]))
    assert mass_ == pytest.approx(mass, rel=1e-5)
    vecs = [np.concatenate([w_qkv[:, :, h].ravel(), w_out[h].ravel()]) for h in range(3)]
    cos = [
        abs(vecs[i] @ vecs[j]) / np.linalg.norm(vecs[i]) / np.linalg.norm(vecs[j])
        for i in range(3)
        for j in range(3)
        if i != j
    ]
    assert hcos == pytest.approx(np.mean(cos), rel=1e-5)


def test_positional_attention_matches_a_numpy_loop():
    Dm, H, Dh, n = 4, 2, 3, 5
    cfg = ModelConfig(
        attention="positional", mask="causal", n_heads=H, d_head=Dh, layernorm=False, use_bias=False,
        read_in="identity", readout="y_block", d_model=Dm, d_input=Dm, d_output=2, max_len=n + 2,
    )  # fmt: skip
    model = Transformer(cfg)

    @jax.jit
    def run(key):
        x = jax.random.normal(key, (3, n, Dm))
        params = model.init(jax.random.key(1), x)["params"]
        return x, params, model.apply({"params": params}, x), pr.positional_matrices(params, n)

    x, params, out, probs = f64(run(jax.random.key(0)))
    a = params["blocks_0"]["attn"]
    wq, wk, wv, wo, pos = a["w_qkv"][:, 0], a["w_qkv"][:, 1], a["w_qkv"][:, 2], a["w_out"], a["pos_embed"]
    xs = np.asarray(x, np.float64)
    expected = np.zeros_like(xs)
    for b in range(3):
        for t in range(n):
            acc = np.zeros(Dm)
            for h in range(H):
                logits = np.array([(pos[t] @ wq[:, h]) @ (pos[u] @ wk[:, h]) for u in range(t + 1)])
                soft = np.exp(logits - logits.max())
                soft /= soft.sum()
                for u in range(t + 1):
                    score = (xs[b, t] @ wq[:, h]) @ (xs[b, u] @ wk[:, h])
                    acc += score * soft[u] * (xs[b, u] @ wv[:, h]) @ wo[h]
            expected[b, t] = xs[b, t] + acc
    np.testing.assert_allclose(out, expected[..., -2:], rtol=1e-4, atol=1e-5)
    # the positional matrices the probes read are those softmaxes
    np.testing.assert_allclose(probs.sum(-1), 1.0, atol=1e-5)
    assert np.all(np.triu(probs, 1) == 0)
