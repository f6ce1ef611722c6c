"""The ID reader and the steering probe against straightforward NumPy computations."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.config import ModelConfig
from jaxlab.models import Transformer, init_params, residual_hooks, run_with_cache
from jaxlab.models.interventions import Intervention
from jaxlab.probes import steering


def np_pca(d):
    """First right singular vector of the (uncentered) differences, oriented by their mean."""
    _, s, vt = np.linalg.svd(d, full_matrices=False)
    v = vt[0] * (1.0 if d.mean(0) @ vt[0] >= 0 else -1.0)
    return v, s[0] ** 2 / np.sum(s**2)


def np_ridge_accuracy(x_fit, y_fit, x_test, y_test, lam):
    onehot = np.eye(2)[y_fit]
    xm, ym = x_fit.mean(0), onehot.mean(0)
    xc = x_fit - xm
    w = np.linalg.solve(xc.T @ xc + lam * np.eye(x_fit.shape[1]), xc.T @ (onehot - ym))
    pred = np.argmax((x_test - xm) @ w + ym, axis=1)
    return np.mean(pred == y_test)


def planted(rng, n, d, strength=1.0):
    u = rng.normal(size=d)
    u /= np.linalg.norm(u)
    coef = strength * (1.0 + 0.5 * rng.normal(size=n))
    return coef[:, None] * u + 0.6 * rng.normal(size=(n, d)), u


def test_pca_direction_and_explained_variance_match_numpy_svd():
    rng = np.random.default_rng(0)
    for strength in (2.0, 0.3):
        d, u = planted(rng, 300, 12, strength)
        v, ratio = steering.pca_direction(jnp.asarray(d, jnp.float32))
        v_np, ratio_np = np_pca(d)
        np.testing.assert_allclose(v, v_np, atol=1e-4)
        assert float(ratio) == pytest.approx(ratio_np, rel=1e-4)
        assert float(jnp.linalg.norm(v)) == pytest.approx(1.0, abs=1e-5)
    # a strong planted direction is found, and explains most of the variance
    d, u = planted(rng, 300, 12, 3.0)
    v, ratio = steering.pca_direction(jnp.asarray(d))
    # population ratio: (E[c^2] + s^2) / (E[c^2] + D s^2), c = 3 (1 + 0.5 g), s = 0.6, D = 12
    expected = (9 * 1.25 + 0.36) / (9 * 1.25 + 12 * 0.36)
    assert float(v @ u) > 0.99 and float(ratio) == pytest.approx(expected, abs=0.05)
    # sign-symmetrized PCA: flipping the sign of individual differences does not change v up to sign
    flips = rng.choice([-1.0, 1.0], size=(300, 1))
    v_flip, ratio_flip = steering.pca_direction(jnp.asarray(d * flips))
    assert abs(float(v_flip @ v)) == pytest.approx(1.0, abs=1e-5) and float(ratio_flip) == pytest.approx(float(ratio))


def test_id_score_and_mean_difference_direction_match_numpy():
    rng = np.random.default_rng(1)
    d, _ = planted(rng, 257, 9, 0.7)
    v_np, _ = np_pca(d[:128])
    v, _ = steering.pca_direction(jnp.asarray(d[:128]))
    score = steering.id_score(jnp.asarray(d[128:]), v)
    assert float(score) == pytest.approx(np.mean(d[128:] @ v_np > 0), abs=1e-6)  # same count of 129 (float32)
    m = steering.mean_diff_direction(jnp.asarray(d))
    np.testing.assert_allclose(m, d.mean(0) / np.linalg.norm(d.mean(0)), atol=1e-6)
    # pairs a layer does not tell apart (d = 0) count one half
    ties = np.concatenate([d[128:], np.zeros((40, 9))])
    ref = (np.sum(d[128:] @ v_np > 0) + 0.5 * 40) / len(ties)
    assert float(steering.id_score(jnp.asarray(ties), v)) == pytest.approx(ref, abs=1e-6)
    # an uninformative direction scores near chance
    noise = rng.normal(size=(4000, 9))
    assert abs(float(steering.id_score(jnp.asarray(noise), jnp.asarray(v_np))) - 0.5) < 0.03


def test_read_concept_matches_numpy_per_layer_and_vmaps_over_runs():
    rng = np.random.default_rng(2)
    L, N, D, n_fit = 3, 160, 10, 96
    base = rng.normal(size=(L, N, D))
    # layer 0: differences without a common direction; layers 1, 2: a planted direction, weak and strong
    shift = np.stack([0.3 * rng.normal(size=(N, D)), 0.5 * planted(rng, N, D)[0], 2.0 * planted(rng, N, D)[0]])
    h_on, h_off = base + shift, base
    r = steering.read_concept(jnp.asarray(h_on), jnp.asarray(h_off), n_fit, lam=0.1)
    for l in range(L):
        d = h_on[l] - h_off[l]
        v_np, ratio_np = np_pca(d[:n_fit])
        np.testing.assert_allclose(r.v_pca[l], v_np, atol=1e-4)
        assert float(r.ev_ratio[l]) == pytest.approx(ratio_np, rel=1e-4)
        assert float(r.id_score[l]) == pytest.approx(np.mean(d[n_fit:] @ v_np > 0))
        m = d[:n_fit].mean(0)
        assert float(r.id_score_mean_diff[l]) == pytest.approx(np.mean(d[n_fit:] @ m > 0))
        x_fit = np.concatenate([h_on[l, :n_fit], h_off[l, :n_fit]])
        y_fit = np.r_[np.ones(n_fit, int), np.zeros(n_fit, int)]
        x_test = np.concatenate([h_on[l, n_fit:], h_off[l, n_fit:]])
        y_test = np.r_[np.ones(N - n_fit, int), np.zeros(N - n_fit, int)]
        assert float(r.separability[l]) == pytest.approx(np_ridge_accuracy(x_fit, y_fit, x_test, y_test, 0.1))
    assert abs(float(r.id_score[0]) - 0.5) < 0.15 and float(r.id_score[2]) > 0.8
    assert float(r.separability[2]) > float(r.separability[1]) > float(r.separability[0])
    # runs x layers in one call
    stacked = jax.vmap(lambda a, b: steering.read_concept(a, b, n_fit, 0.1))(
        jnp.stack([jnp.asarray(h_on), jnp.asarray(h_off)]), jnp.stack([jnp.asarray(h_off), jnp.asarray(h_on)])
    )
    np.testing.assert_allclose(stacked.id_score[0], r.id_score)
    # swapping on and off flips the oriented direction and keeps the score
    np.testing.assert_allclose(stacked.v_pca[1], -r.v_pca, atol=1e-5)
    np.testing.assert_allclose(stacked.id_score[1], r.id_score)


# -- steering ---------------------------------------------------------------------------------------
HOOKS = ("h0", "h1")


def toy_apply(params, tokens, ivs):
    """Embedding -> hook h0 -> causal running mean mixed in -> hook h1 -> linear readout."""
    E, A, W = params

    def hook(name, x):
        for iv in ivs:
            if iv.hook == name:
                x = iv.apply(x)
        return x

    x0 = hook("h0", E[tokens])
    T = x0.shape[1]
    causal = jnp.tril(jnp.ones((T, T))) / jnp.arange(1, T + 1)[:, None]
    x1 = hook("h1", x0 + jnp.einsum("st,btd->bsd", causal, x0) @ A)
    return x1 @ W


def np_toy_mass(params, tokens, layer, vec, pos, mask):
    E, A, W = (np.asarray(p, np.float64) for p in params)
    x0 = E[tokens]
    if layer == 0:
        x0 = x0 + pos[None, :, None] * vec
    T = x0.shape[1]
    causal = np.tril(np.ones((T, T))) / np.arange(1, T + 1)[:, None]
    x1 = x0 + np.einsum("st,btd->bsd", causal, x0) @ A
    if layer == 1:
        x1 = x1 + pos[None, :, None] * vec
    logits = x1[:, -1] @ W
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    return (p @ mask).mean()


def test_steering_deltas_match_numpy_and_are_linear_for_small_alpha():
    rng = np.random.default_rng(4)
    V, D, T, N = 11, 6, 5, 13
    params = tuple(jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((V, D), (D, D), (D, V)))
    tokens = jnp.asarray(rng.integers(0, V, size=(N, T)))
    mask = jnp.asarray((np.arange(V) < 3).astype(np.float32))
    vectors = jnp.asarray(rng.normal(size=(2, D)), jnp.float32)
    alphas = jnp.asarray([0.0, 1e-3, 2e-3, 0.5, 1.0])
    apply_fn = functools.partial(toy_apply, params)
    for kind in steering.POSITIONS:
        pos = steering.position_mask(kind, T)
        deltas = np.asarray(steering.steering_deltas(apply_fn, tokens, HOOKS, vectors, alphas, pos, mask))
        assert deltas.shape == (2, 5)
        assert np.all(deltas[:, 0] == 0.0), "alpha = 0 changes nothing, exactly"
        for l in range(2):
            base = np_toy_mass(params, np.asarray(tokens), None, 0.0, np.asarray(pos), np.asarray(mask))
            for a in (3, 4):
                vec = float(alphas[a]) * np.asarray(vectors[l])
                ref = np_toy_mass(params, np.asarray(tokens), l, vec, np.asarray(pos), np.asarray(mask))
                assert deltas[l, a] == pytest.approx(ref - base, abs=2e-5)
            # linear in small alpha: delta(2 eps) = 2 delta(eps) to first order
            assert deltas[l, 2] == pytest.approx(2 * deltas[l, 1], rel=1e-2)
    # the running mean makes all-position steering differ from last-position steering at layer 0
    all_pos = steering.steering_deltas(apply_fn, tokens, HOOKS, vectors, alphas, steering.position_mask("all", T), mask)
    last = steering.steering_deltas(apply_fn, tokens, HOOKS, vectors, alphas, steering.position_mask("last", T), mask)
    assert abs(float(all_pos[0, -1] - last[0, -1])) > 1e-4


def test_effect_and_slope():
    alphas = jnp.asarray([0.25, 0.5, 1.0])
    deltas = jnp.asarray([[0.1, 0.22, 0.39], [0.0, -0.1, -0.2]])
    effect, slope = steering.effect_and_slope(alphas, deltas, 0.5)
    np.testing.assert_allclose(effect, [0.22, -0.1])
    ref = np.linalg.lstsq(np.asarray(alphas)[:, None], np.asarray(deltas).T, rcond=None)[0][0]
    np.testing.assert_allclose(slope, ref, rtol=1e-5)


def test_steering_a_transformer_vmaps_layers_exactly_as_single_hooks():
    cfg = ModelConfig(
        n_layers=2, n_heads=2, d_model=8, d_mlp=16, input="discrete", vocab_size=10, pos_encoding="learned", max_len=6
    )
    model = Transformer(cfg)
    rng = np.random.default_rng(5)
    tokens = jnp.asarray(rng.integers(0, 10, size=(4, 6)))
    params = init_params(model, jax.random.key(0), tokens)
    # the default reading points: after each block
    h_default, _ = steering.last_token_states(model, params, tokens)
    _, cache = run_with_cache(model, params, tokens, names=["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"])
    np.testing.assert_array_equal(h_default[1], cache["blocks.1.hook_resid_post"][:, -1])
    hooks = residual_hooks(2, embeddings=True)
    h, logits = steering.last_token_states(model, params, tokens, hooks)
    assert h.shape == (3, 4, 8) and logits.shape == (4, 10)
    np.testing.assert_array_equal(h[1:], h_default)
    np.testing.assert_allclose(logits, model.apply({"params": params}, tokens)[:, -1], atol=1e-6)

    def apply_fn(toks, ivs):
        return model.apply({"params": params}, toks, tuple(ivs))

    vectors = jnp.asarray(rng.normal(size=(3, 8)), jnp.float32)
    alphas = jnp.asarray([0.0, 0.7])
    mask = jnp.asarray((np.arange(10) < 2).astype(np.float32))
    pos = steering.position_mask("last", 6)
    deltas = jax.jit(lambda: steering.steering_deltas(apply_fn, tokens, hooks, vectors, alphas, pos, mask))()
    assert np.all(np.asarray(deltas[:, 0]) == 0.0)
    base = steering.marker_mass(apply_fn(tokens, []), mask).mean()
    for l, hook in enumerate(hooks):
        iv = Intervention(hook=hook, value=0.7 * vectors[l], positions=pos)
        single = steering.marker_mass(apply_fn(tokens, [iv]), mask).mean() - base
        assert float(deltas[l, 1]) == pytest.approx(float(single), abs=1e-6)
        # last-position steering leaves the earlier positions' outputs alone (causal mask)
        np.testing.assert_allclose(apply_fn(tokens, [iv])[:, :-1], apply_fn(tokens, [])[:, :-1], atol=1e-6)
    with pytest.raises(ValueError, match="positions"):
        steering.position_mask("middle", 6)


def test_steering_outcomes_loss_change_and_per_sequence_masks_match_single_interventions():
    rng = np.random.default_rng(6)
    V, D, T, N = 9, 5, 4, 7
    params = tuple(jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((V, D), (D, D), (D, V)))
    tokens = jnp.asarray(rng.integers(0, V, size=(N, T)))
    targets = jnp.asarray(rng.integers(0, V, size=(N, T)))
    mask_NV = jnp.asarray(np.eye(V)[rng.integers(0, V, size=N)], jnp.float32)  # one token per sequence
    vectors = jnp.asarray(rng.normal(size=(2, D)), jnp.float32)
    alphas = jnp.asarray([0.5, 1.0])
    apply_fn = functools.partial(toy_apply, params)
    pos = steering.position_mask("all", T)
    delta, harm = steering.steering_outcomes(apply_fn, tokens, HOOKS, vectors, alphas, pos, mask_NV, targets)

    def nll_and_mass(ivs):  # straightforward: one intervention, the loss over every position
        logits = np.asarray(apply_fn(tokens, ivs), np.float64)
        logp = logits - np.log(np.exp(logits).sum(-1, keepdims=True))
        nll = -np.take_along_axis(logp, np.asarray(targets)[..., None], -1).mean()
        p_last = np.exp(logp[:, -1])
        return nll, np.mean(np.sum(p_last * np.asarray(mask_NV), -1))

    nll0, mass0 = nll_and_mass([])
    for l, hook in enumerate(HOOKS):
        for a, alpha in enumerate(np.asarray(alphas)):
            nll, mass = nll_and_mass([Intervention(hook=hook, value=float(alpha) * vectors[l], positions=pos)])
            assert float(harm[l, a]) == pytest.approx(nll - nll0, abs=1e-5)
            assert float(delta[l, a]) == pytest.approx(mass - mass0, abs=1e-6)
    # without targets the loss change is zeros; a [V] mask gives steering_deltas' mass
    _, none = steering.steering_outcomes(apply_fn, tokens, HOOKS, vectors, alphas, pos, mask_NV)
    assert not np.asarray(none).any()
    shared = mask_NV[0]
    np.testing.assert_allclose(
        steering.steering_deltas(apply_fn, tokens, HOOKS, vectors, alphas, pos, shared),
        steering.steering_deltas(apply_fn, tokens, HOOKS, vectors, alphas, pos, jnp.tile(shared, (N, 1))),
        atol=1e-7,
    )


def test_steered_generation_matches_a_token_by_token_loop():
    rng = np.random.default_rng(7)
    V, D, T, N, G = 8, 5, 6, 4, 3
    params = tuple(jnp.asarray(rng.normal(size=s), jnp.float32) for s in ((V, D), (D, D), (D, V)))
    prompt = jnp.asarray(np.concatenate([rng.integers(0, V, size=(N, T - G)), np.zeros((N, G), int)], 1))
    vectors = jnp.asarray(3.0 * rng.normal(size=(2, D)), jnp.float32)
    noise = jax.random.gumbel(jax.random.key(0), (G, N, V))
    apply_fn = functools.partial(toy_apply, params)
    out = np.asarray(jax.jit(lambda: steering.steered_generation(apply_fn, prompt, G, HOOKS, vectors, noise))())
    assert out.shape == (3, N, T)
    lanes = [[]] + [[Intervention(hook=h, value=vectors[l], positions=jnp.ones(T))] for l, h in enumerate(HOOKS)]
    for lane, ivs in enumerate(lanes):
        toks = np.asarray(prompt).copy()
        for j in range(G):  # sample position t from the logits at t - 1, with the lane's shared noise
            t = T - G + j
            logits = np.asarray(apply_fn(jnp.asarray(toks), ivs))[:, t - 1]
            toks[:, t] = np.argmax(logits + np.asarray(noise[j]), -1)
        np.testing.assert_array_equal(out[lane], toks)
    np.testing.assert_array_equal(out[:, :, : T - G], np.broadcast_to(np.asarray(prompt)[:, : T - G], (3, N, T - G)))
    # zero vectors: every lane is the unsteered one (same noise)
    same = steering.steered_generation(apply_fn, prompt, G, HOOKS, jnp.zeros_like(vectors), noise)
    np.testing.assert_array_equal(same[1], same[0])
    with pytest.raises(ValueError, match="n_new"):
        steering.steered_generation(apply_fn, prompt, T, HOOKS, vectors, noise)
