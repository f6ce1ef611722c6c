import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.probes.linear_probe import (
    linear_predict,
    r2_score,
    ridge_classifier_accuracy,
    ridge_fit,
    ridge_regression_probe,
)


def np_ridge(x, y, lam):
    xm, ym = x.mean(0), y.mean(0)
    xc, yc = x - xm, y - ym
    w = np.linalg.solve(xc.T @ xc + lam * np.eye(x.shape[1]), xc.T @ yc)
    return w, ym - xm @ w


@pytest.mark.parametrize(("n", "f"), [(200, 10), (12, 40)])  # n >= f: the primal (F x F) solve; n < f: the dual
def test_ridge_matches_numpy_primal_and_dual(n, f):
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(n, f)), rng.normal(size=(n, 3))
    w, b = ridge_fit(jnp.asarray(x), jnp.asarray(y), 0.5)
    w_ref, b_ref = np_ridge(x, y, 0.5)
    # measured max |error| 6e-8 (w) and 1e-7 (b), both branches; a doubled ridge moves w by >= 3.7e-4
    np.testing.assert_allclose(w, w_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, b_ref, rtol=1e-5, atol=1e-6)


def test_probes_recover_linear_structure_and_vmap():
    rng = np.random.default_rng(1)
    w_true = rng.normal(size=(8, 2))
    x = rng.normal(size=(3, 300, 8))
    y = x @ w_true + 0.01 * rng.normal(size=(3, 300, 2))
    r2 = jax.vmap(lambda a, t: ridge_regression_probe(a[:200], t[:200], a[200:], t[200:], 1e-3))(
        jnp.asarray(x), jnp.asarray(y)
    )
    assert r2.shape == (3,) and np.all(np.asarray(r2) > 0.99)
    labels = rng.integers(0, 4, size=(3, 300))
    means = 2.0 * rng.normal(size=(4, 8))
    xc = means[labels] + rng.normal(size=(3, 300, 8))
    acc = jax.vmap(lambda a, lab: ridge_classifier_accuracy(a[:200], lab[:200], a[200:], lab[200:], 4))(
        jnp.asarray(xc), jnp.asarray(labels)
    )
    assert acc.shape == (3,) and np.all(np.asarray(acc) > 0.9)
    noise_labels = rng.integers(0, 4, size=(300,))
    chance = ridge_classifier_accuracy(
        jnp.asarray(x[0, :200]), noise_labels[:200], jnp.asarray(x[0, 200:]), noise_labels[200:], 4
    )
    assert float(chance) < 0.45
    assert float(r2_score(jnp.asarray(y[0]), jnp.asarray(y[0]))) == pytest.approx(1.0)


def test_ridge_fit_on_a_rank_deficient_gram_with_a_tiny_ridge_is_finite_and_fits():
    """Few distinct rows (token embeddings at layer 0) far from the origin and a relative ridge of 1e-6,
    as model stitching uses: the Gram matrix is singular to rounding, where a Cholesky solve gives NaN."""
    rng = np.random.default_rng(3)
    rows = rng.standard_normal((4, 16)) * 3 + 50.0
    x = rows[rng.integers(0, 4, 512)].astype(np.float32)
    y = (x @ rng.standard_normal((16, 5))).astype(np.float32)
    xc = x.astype(np.float64) - x.mean(0)
    lam = 1e-6 * np.sum(xc * xc) / 16
    w, b = ridge_fit(jnp.asarray(x), jnp.asarray(y), lam)
    assert np.all(np.isfinite(w)) and np.all(np.isfinite(b))
    w64 = np.linalg.solve(xc.T @ xc + lam * np.eye(16), xc.T @ (y - y.mean(0)))
    pred64 = xc @ w64 + y.mean(0)
    pred = np.asarray(linear_predict(jnp.asarray(x), w, b), np.float64)
    np.testing.assert_allclose(pred, pred64, atol=1e-3 * np.abs(pred64).max())
