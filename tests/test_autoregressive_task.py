"""The autoregressive task (Sander et al. 2024) against NumPy: W kinds, recurrence, encodings, errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab import rng
from jaxlab.errors import ConfigError
from jaxlab.tasks import autoregressive as ar
from jaxlab.tasks import sample, task_spec

B = 64
SETUPS = {
    "commuting": dict(w_kind="commuting", encoding="augmented"),
    "conjugated": dict(w_kind="commuting", conjugate=True, basis_seed=5, encoding="plain"),
    "unitary": dict(n_dims=2, w_kind="unitary", mu=50.0, s0="sphere", encoding="repeated"),
    "noisy": dict(n_dims=2, w_kind="unitary", mu=50.0, s0="sphere", encoding="plain", noise_std=0.1),
}


def config(name):
    return ar.Config(**{"n_dims": 4, "seq_len": 7, **SETUPS[name]})


@pytest.fixture(scope="module")
def batches():
    """Every setup's batch (and Haar draws) from ONE compiled program."""

    def draw_all(key):
        out = {name: sample(key, config(name), B) for name in SETUPS}
        out["conjugated_again"] = sample(key, config("conjugated"), B)
        with rng.rng_scope():
            out["haar"] = (ar.haar_orthogonal(key, 256, 3), rng.normal(key, (256, 3, 3)))
        return out

    res = jax.device_get(jax.jit(draw_all)(jax.random.key(3)))
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), res)


def draw(batches, name):
    return config(name), batches[name]


def test_commuting_w_are_block_rotations_that_commute_and_follow_the_recurrence(batches):
    cfg, b = draw(batches, "commuting")
    w, s = b.aux["w"], b.aux["s"]
    eye = np.eye(4)
    np.testing.assert_allclose(w @ np.swapaxes(w, 1, 2), np.broadcast_to(eye, w.shape), atol=1e-5)
    np.testing.assert_allclose(np.linalg.det(w), 1.0, atol=1e-5)  # rotations, not reflections
    # canonical basis: zero outside the 2x2 blocks; each block [[c, -s], [s, c]]
    off = np.ones((4, 4), bool)
    off[:2, :2] = off[2:, 2:] = False
    assert np.abs(w[:, off]).max() == 0.0
    np.testing.assert_allclose(w[:, 0, 0], w[:, 1, 1], atol=1e-6)
    np.testing.assert_allclose(w[:, 0, 1], -w[:, 1, 0], atol=1e-6)
    np.testing.assert_allclose(w[:5] @ w[5:10], w[5:10] @ w[:5], atol=1e-5)  # commute pairwise
    # angles look uniform on (0, 2 pi): the mean of cos and sin is ~0 (sd 1/sqrt(2 * 2B))
    theta = np.arctan2(w[:, 1, 0], w[:, 0, 0])
    assert abs(np.cos(theta).mean()) < 0.3 and abs(np.sin(theta).mean()) < 0.3
    # recurrence and fixed s_0
    np.testing.assert_allclose(s[:, 0], np.full((B, 4), 0.5), atol=1e-7)
    np.testing.assert_allclose(s[:, 1:], np.einsum("bij,btj->bti", w, s[:, :-1]), atol=1e-5)
    # augmented tokens (s_t, s_{t-1}, 0) and targets s_{t+1}
    x = b.inputs
    assert x.shape == (B, 7, 12) and b.targets.shape == (B, 7, 4)
    np.testing.assert_array_equal(x[:, :, :4], s[:, :7])
    np.testing.assert_array_equal(x[:, 1:, 4:8], s[:, :6])
    assert np.all(x[:, 0, 4:] == 0) and np.all(x[:, :, 8:] == 0)
    np.testing.assert_array_equal(b.targets, s[:, 1:8])
    np.testing.assert_array_equal(b.loss_mask, np.ones((B, 7)))
    assert task_spec(cfg).token_dim == 12 and task_spec(cfg).output_dim == 4


def test_conjugated_commuting_w_share_one_fixed_basis(batches):
    cfg, b = draw(batches, "conjugated")
    w = b.aux["w"]
    p = np.asarray(ar.basis(cfg), np.float64)
    np.testing.assert_allclose(p @ p.T, np.eye(4), atol=1e-5)
    inner = np.einsum("ji,bjk,kl->bil", p, w, p)  # P^T W P is block-diagonal
    assert np.abs(inner[:, :2, 2:]).max() < 1e-5 and np.abs(inner[:, 2:, :2]).max() < 1e-5
    assert np.abs(w[:, :2, 2:]).max() > 1e-2  # but W itself is not
    np.testing.assert_allclose(w[:5] @ w[5:10], w[5:10] @ w[:5], atol=1e-5)
    np.testing.assert_array_equal(w, batches["conjugated_again"].aux["w"])
    np.testing.assert_array_equal(b.inputs, b.aux["s"][:, :7])  # plain tokens


def test_haar_w_matches_numpy_qr_with_sign_correction(batches):
    w, g = batches["haar"]
    q, r = np.linalg.qr(g)
    expected = q * np.sign(np.diagonal(r, axis1=1, axis2=2))[:, None, :]
    np.testing.assert_allclose(w, expected, atol=1e-5)
    np.testing.assert_allclose(w @ np.swapaxes(w, 1, 2), np.broadcast_to(np.eye(3), w.shape), atol=1e-5)
    # Haar: E[W] = 0 and both determinants appear (plain QR without the correction is biased)
    assert np.abs(w.mean(0)).max() < 0.15
    det = np.linalg.det(w)
    assert 0.3 < np.mean(det > 0) < 0.7
    assert not np.allclose(w[:5] @ w[5:10], w[5:10] @ w[:5])


def test_unitary_angles_shrink_with_mu_and_sphere_s0_repeated_tokens(batches):
    cfg, b = draw(batches, "unitary")
    w, s = b.aux["w"], b.aux["s"]
    theta = np.arctan2(w[:, 1, 0], w[:, 0, 0])
    assert np.all(np.abs(theta) <= 2 * np.pi / 50 + 1e-6)  # lambda = exp(i theta / mu), theta in (0, 2 pi)
    np.testing.assert_allclose(np.linalg.norm(s[:, 0], axis=-1), 1.0, atol=1e-6)
    np.testing.assert_allclose(b.inputs, np.concatenate([s[:, :7], s[:, :7]], -1))
    np.testing.assert_allclose(np.linalg.norm(s, axis=-1), 1.0, atol=1e-5)  # orthogonal W keep the norm
    # noisy observations: tokens are s + noise, the clean states stay in aux
    _, bn = draw(batches, "noisy")
    resid = bn.inputs - bn.aux["s"][:, :7]
    assert 0.07 < resid.std() < 0.13
    np.testing.assert_allclose(bn.targets[:, :-1], bn.inputs[:, 1:])
    # set_state replaces every copy of s_t in the token
    x = np.ones((B, 2))
    out = np.asarray(ar.set_state(cfg, jnp.asarray(b.inputs), 3, jnp.asarray(x)))
    np.testing.assert_array_equal(out[:, 3], np.ones((B, 4)))
    np.testing.assert_array_equal(out[:, :3], b.inputs[:, :3])


@pytest.mark.parametrize(
    "field,value,match",
    [
        ("w_kind", "random", "task.w_kind"),
        ("encoding", "interleaved", "task.encoding"),
        ("n_dims", 3, "task.n_dims"),
        ("seq_len", 1, "task.seq_len"),
        ("s0", "zero", "task.s0"),
    ],
)
def test_bad_config_names_the_field(field, value, match):
    with pytest.raises(ConfigError, match=match):
        ar.Config(**{field: value})
