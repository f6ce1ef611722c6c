"""The constrained (A, B, P) attention of Sander et al. 2024 Sec. 4 (`model.attention="constrained"`): its outputs
against a NumPy loop, the released optimum (orthogonal.py) as an exact predictor, the gauge of (C, P), and which
expected loss the released closed forms (orthogonal.py, unitary.py) are, by Monte Carlo."""

import jax
import numpy as np
import pytest

from jaxlab.errors import ConfigError
from jaxlab.experiments import icl_autoregressive as iar
from jaxlab.models import Transformer
from jaxlab.probes import autoregressive as pr
from jaxlab.registry import get_experiment
from jaxlab.tasks import autoregressive as ar

EXP = get_experiment("icl-autoregressive")


def _setup(seed: int = 0):
    cfg = EXP.preset("constrained-smoke").resolve()  # d = 4, T = 6, s_0 = ones, commuting W, loss from t = 1
    model = Transformer(cfg.model)
    batch = ar.sample(jax.random.key(seed), cfg.task, 8)
    params = model.init(jax.random.key(seed + 1), batch.inputs)["params"]
    return cfg, model, batch, params


def _numpy_outputs(s, a, b, p):
    """y_u,i = sum_{t' <= u} P[u, t'] s_t',i sum_h a_h,i sum_j b_h,j s_{u-1},j s_t',j, s_{-1} = 0 (a plain loop)."""
    B, T, d = s.shape
    y = np.zeros((B, T, d))
    for n in range(B):
        for u in range(1, T):
            for tp in range(u + 1):
                for h in range(a.shape[0]):
                    score = np.sum(b[h] * s[n, u - 1] * s[n, tp])
                    y[n, u] += p[u, tp] * score * a[h] * s[n, tp]
    return y


def _set_params(params, a, b, p):
    attn = params["blocks_0"]["attn"]
    new = {"a": {"kernel": a}, "b": {"kernel": b}, "p": {"kernel": p}}
    return {**params, "blocks_0": {**params["blocks_0"], "attn": {**attn, **new}}}


def test_outputs_match_a_numpy_loop_and_the_task_masks_position_zero():
    cfg, model, batch, params = _setup()
    attn = jax.device_get(params["blocks_0"]["attn"])
    got = np.asarray(model.apply({"params": params}, batch.inputs))
    s = np.asarray(batch.aux["s"][:, : cfg.task.seq_len])
    want = _numpy_outputs(s, attn["a"]["kernel"], attn["b"]["kernel"], attn["p"]["kernel"])
    np.testing.assert_allclose(got, want, rtol=2e-4, atol=1e-5)
    np.testing.assert_allclose(s[:, 0], 1.0)  # s0 = "ones"
    assert np.all(np.asarray(batch.loss_mask[:, 0]) == 0) and np.all(np.asarray(batch.loss_mask[:, 1:]) == 1)


@pytest.mark.parametrize("c", [-1.289, 0.7])
def test_released_optimum_is_the_exact_recurrence_and_its_structure_reads_back(c):
    """C = c blockdiag([[1, 1], [1, 1]]), P[u, u] = 1 / c, P[u, u-1] = -1 / (2c): y_u = 2 cos(theta) s_u - s_{u-1}."""
    cfg, model, batch, params = _setup(3)
    d, T, H = cfg.task.n_dims, cfg.task.seq_len, cfg.model.n_heads
    a, b = np.zeros((H, d), np.float32), np.zeros((H, d), np.float32)
    for k in range(d // 2):  # head k carries block k: b_k . a_k^T = c ones(2, 2) on it
        b[k, 2 * k : 2 * k + 2], a[k, 2 * k : 2 * k + 2] = 1.0, c
    p = np.zeros((T, T), np.float32)
    p[np.arange(T), np.arange(T)] = 1.0 / c
    p[np.arange(1, T), np.arange(T - 1)] = -0.5 / c
    pred = np.asarray(model.apply({"params": _set_params(params, a, b, p)}, batch.inputs))
    np.testing.assert_allclose(pred[:, 1:], np.asarray(batch.targets[:, 1:]), atol=2e-5)
    for sign in (1.0, -1.0):  # (A, P) -> (-A, -P): the same model, the same gauge-fixed read-out
        got = jax.device_get(pr.constrained_structure(_set_params(params, sign * a, b, sign * p), cfg.task))
        g = -np.sign(1.0 / c)  # the paper's gauge: P[t, t+1] < 0
        assert got["c_block_diag"] == pytest.approx(g * c, rel=1e-6)
        assert got["c_block_anti"] == pytest.approx(g * c, rel=1e-6)
        assert got["p_next"] == pytest.approx(g / c, rel=1e-6) and got["p_next"] < 0
        assert got["p_prev"] == pytest.approx(-0.5 * g / c, rel=1e-6)
        assert got["cp_next"] == pytest.approx(1.0, rel=1e-6) and got["p_prev_ratio"] == pytest.approx(-0.5)
        assert got["p_other_frac"] == 0.0 and got["c_offblock_ratio"] == pytest.approx(0.0, abs=1e-7)


def test_gd_form_at_b_identity_a_eta_is_one_gd_step():
    """`attention="constrained_gd"` with B = I, A = eta I predicts as the GD learner of the probes."""
    cfg = EXP.preset("constrained-gd-commuting").set("task.n_dims", 4).set("task.seq_len", 5).resolve()
    model = Transformer(cfg.model)
    batch = ar.sample(jax.random.key(2), cfg.task, 8)
    params = model.init(jax.random.key(0), batch.inputs)["params"]
    d, eta = cfg.task.n_dims, 0.37
    attn = {"a": {"kernel": eta * np.eye(d, dtype=np.float32)}, "b": {"kernel": np.eye(d, dtype=np.float32)}}
    got = model.apply({"params": {"blocks_0": {"attn": attn}}}, batch.inputs)
    want = pr.gd_predictions(ar.observed_states(cfg.task, batch.inputs), eta)
    np.testing.assert_allclose(np.asarray(got), np.asarray(want), rtol=1e-5, atol=1e-6)
    b, a = pr.block_products({"blocks_0": {"attn": attn}}, cfg.task)
    assert (
        set(params["blocks_0"]["attn"]) == {"a", "b"} and np.allclose(b, np.eye(d)) and np.allclose(a, eta * np.eye(d))
    )


def test_loss_is_invariant_under_the_scale_gauge():
    cfg, model, batch, params = _setup(5)
    attn = jax.device_get(params["blocks_0"]["attn"])
    a, b, p = attn["a"]["kernel"], attn["b"]["kernel"], attn["p"]["kernel"]
    base = np.asarray(model.apply({"params": params}, batch.inputs))
    moved = model.apply({"params": _set_params(params, 2.5 * a, b / 0.5, p / 5.0)}, batch.inputs)
    np.testing.assert_allclose(np.asarray(moved), base, rtol=1e-4, atol=1e-6)


# -- the released closed forms, as functions of (C, p) for one position t: p = P[t, :t+2] --------------
def _unitary_py(C, p, d):
    return np.sum(p**2) * np.sum(C**2) + p[-2] ** 2 * np.sum(C.T @ C) - 2 * np.trace(C) * p[-1] + d


def _orthogonal_py(C, p, d):
    t1, t2 = np.sum(C.T @ C), np.sum(C**2)
    t3 = np.sum(C.sum(-1)[::2] * np.diag(C, 1)[::2] + C.sum(-1)[1::2] * np.diag(C, -1)[::2])
    t4 = np.sum(np.diag(C**2, 1)[::2]) + np.sum(np.diag(C**2, -1)[::2])
    q = np.append(p[:-2], p[-1])
    return (
        p[-2] ** 2 * t1
        + (np.sum(p**2) - p[-2] ** 2) * t2
        + 2 * t3 * (np.sum(p[-2] * p) - p[-2] ** 2)
        + (q.sum() ** 2 - np.sum(q**2)) * t4
        - 2 * np.trace(C) * p[-1]
        + d
    )


def _monte_carlo(states, C, p, t, conj):
    """mean ||y - s_{t+2}||^2 and its standard error, y_i = sum_t' p_t' s_t',i sum_j C_ij q_j s_t',j, q = s_t
    (conjugated for complex states): the model in the released scripts' indexing (query s_t, keys up to t+1)."""
    q = np.conj(states[:, t]) if conj else states[:, t]
    k = states[:, : t + 2]
    y = np.einsum("t,nti,nj,ntj,ij->ni", p, k, q, k, C)
    err = np.sum(np.abs(y - states[:, t + 2]) ** 2, axis=-1)
    return err.mean(), err.std() / np.sqrt(len(err))


def test_which_expected_loss_the_released_closed_forms_are():
    """unitary.py's closed form is the complex model's expected loss plus p[t, t]^2 ||C||_F^2; orthogonal.py's is not
    the real model's expected loss away from the optimum, but both vanish at the released optimum."""
    rng = np.random.default_rng(0)
    d, n, t = 4, 60_000, 2
    steps = np.arange(t + 3)[None, :, None]
    theta = rng.uniform(0, 2 * np.pi, (n, 1, d))
    cplx = np.exp(1j * theta * steps)  # lambda = exp(i theta), s_0 = 1
    C, p = rng.normal(size=(d, d)), rng.normal(size=t + 2)
    p[-2] = 1.0  # P[t, t]: the weight of the extra term
    mc, se = _monte_carlo(cplx, C, p, t, conj=True)
    assert abs(mc - (_unitary_py(C, p, d) - p[-2] ** 2 * np.sum(C**2))) < 5 * se
    assert p[-2] ** 2 * np.sum(C**2) > 20 * se  # the extra term is resolved by this sample
    ang = rng.uniform(0, 2 * np.pi, (n, 1, d // 2)) * steps
    real = np.empty((n, t + 3, d))
    real[..., 0::2], real[..., 1::2] = np.cos(ang) - np.sin(ang), np.sin(ang) + np.cos(ang)  # R(t theta) (1, 1)
    mc, se = _monte_carlo(real, C, p, t, conj=False)
    assert abs(mc - _orthogonal_py(C, p, d)) > 10 * se
    c = -1.289
    C_opt = np.kron(np.eye(d // 2), c * np.ones((2, 2)))
    p_opt = np.zeros(t + 2)
    p_opt[-1], p_opt[-2] = 1 / c, -0.5 / c
    assert _monte_carlo(real, C_opt, p_opt, t, conj=False)[0] < 1e-20
    assert abs(_orthogonal_py(C_opt, p_opt, d)) < 1e-12


def test_bad_settings_name_the_field():
    cfg = EXP.preset("constrained-smoke")
    with pytest.raises(ConfigError, match="task.loss_start"):
        cfg.set("task.loss_start", cfg.task.seq_len)
    with pytest.raises(ConfigError, match="task.encoding"):
        iar.check_config(cfg.set("task.encoding", "repeated"))
    with pytest.raises(ConfigError, match="model.attention"):
        cfg.set("model.attention", "diagonal")
