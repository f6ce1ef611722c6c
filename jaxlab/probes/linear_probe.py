"""Closed-form ridge probes on representations: regression, and classification by one-hot regression.

For features X [n, F] and targets Y [n, K], with x-bar and y-bar the training means,
  W = argmin ||(X - x-bar) W - (Y - y-bar)||^2 + lam ||W||^2 = (Xc^T Xc + lam I)^-1 Xc^T Yc,
  b = y-bar - x-bar W.
When n < F the dual form W = Xc^T (Xc Xc^T + lam I)^-1 Yc gives the same W with an n x n system.
The system is solved through the eigendecomposition G = V diag(e) V^T of the Gram matrix, with e
clipped at 0: (G + lam I)^-1 = V diag(1 / (max(e, 0) + lam)) V^T. A Cholesky solve fails (NaN) when
rounding in forming G exceeds lam, as for the nearly rank-deficient token embeddings stitched at
layer 0 with a relative ridge of 1e-6; the clipped spectrum keeps every pivot >= lam.
Classification (as in linear-probe practice, e.g. Alain & Bengio 2016 with a squared loss): fit
one-hot targets, predict the arg-max. Everything is jit- and vmap-compatible (no Python branches
on values), so one call probes many runs, layers or checkpoints.
"""

from __future__ import annotations

import chex
import jax
import jax.numpy as jnp

from jaxlab import linalg


def ridge_fit(x_NF: jax.Array, y_NK: jax.Array, lam: float | jax.Array = 1e-3) -> tuple[jax.Array, jax.Array]:
    """Ridge weights W [F, K] and intercept b [K] (see the module docstring); `lam` > 0."""
    chex.assert_rank([x_NF, y_NK], 2)
    chex.assert_equal_shape_prefix([x_NF, y_NK], 1)
    x = x_NF.astype(jnp.float32)
    y = y_NK.astype(jnp.float32)
    x_mean, y_mean = x.mean(0), y.mean(0)
    xc, yc = x - x_mean, y - y_mean
    n, f = x.shape
    if n >= f:
        w = _ridge_solve(xc.T @ xc, xc.T @ yc, lam)
    else:
        w = xc.T @ _ridge_solve(xc @ xc.T, yc, lam)
    return w, y_mean - x_mean @ w


def _ridge_solve(gram_MM: jax.Array, rhs_MK: jax.Array, lam: float | jax.Array) -> jax.Array:
    """(G + lam I)^-1 rhs for a symmetric positive semi-definite G, via its clipped spectrum."""
    e, v = linalg.eigh(gram_MM)
    return v @ ((v.T @ rhs_MK) / (jnp.maximum(e, 0.0) + lam)[:, None])


def linear_predict(x_NF: jax.Array, w: jax.Array, b: jax.Array) -> jax.Array:
    """x W + b [N, K]: the prediction of a linear map fitted by `ridge_fit`. (Not
    `icl_algorithms.ridge_predict`, the ridge algorithm's in-context prediction.)"""
    return x_NF.astype(jnp.float32) @ w + b


def r2_score(y_true_NK: jax.Array, y_pred_NK: jax.Array) -> jax.Array:
    """1 - sum (y - y_hat)^2 / sum (y - mean y)^2, pooled over outputs."""
    resid = jnp.sum((y_true_NK - y_pred_NK) ** 2)
    total = jnp.sum((y_true_NK - y_true_NK.mean(0)) ** 2)
    return 1.0 - resid / jnp.maximum(total, 1e-12)


def ridge_regression_probe(
    x_train: jax.Array, y_train: jax.Array, x_test: jax.Array, y_test: jax.Array, lam: float | jax.Array = 1e-3
) -> jax.Array:
    """Held-out R^2 of a ridge probe from x to continuous targets y ([n] or [n, K])."""
    y_train = y_train.reshape(y_train.shape[0], -1)
    y_test = y_test.reshape(y_test.shape[0], -1)
    w, b = ridge_fit(x_train, y_train, lam)
    return r2_score(y_test, linear_predict(x_test, w, b))


def ridge_classifier_scores(
    x_train: jax.Array, labels_train: jax.Array, x_test: jax.Array, n_classes: int, lam: float | jax.Array = 1e-3
) -> jax.Array:
    """Scores [n_test, n_classes] of the one-hot ridge classifier (arg-max is the prediction)."""
    onehot = jax.nn.one_hot(labels_train, n_classes)
    w, b = ridge_fit(x_train, onehot, lam)
    return linear_predict(x_test, w, b)


def ridge_classifier_accuracy(
    x_train: jax.Array,
    labels_train: jax.Array,
    x_test: jax.Array,
    labels_test: jax.Array,
    n_classes: int,
    lam: float | jax.Array = 1e-3,
) -> jax.Array:
    """Held-out accuracy in [0, 1] of the one-hot ridge classifier."""
    scores = ridge_classifier_scores(x_train, labels_train, x_test, n_classes, lam)
    return jnp.mean(jnp.argmax(scores, -1) == labels_test)
