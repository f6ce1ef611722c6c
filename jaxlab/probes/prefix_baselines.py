"""Garg et al.'s baselines at every prefix length (Garg, Tsipras, Liang & Valiant 2022, "What Can
Transformers Learn In-Context?"; code github.com/dtsip/in-context-learning, `src/models.py`, commit
3383371, cited as models.py:LINE).

Given the examples x [B, N, d], y [B, N] of B tasks, every function returns pred [B, N] where
pred[:, i] is the algorithm's prediction of y_i at x_i fitted on the examples 0..i-1 alone; with
no example (i = 0) every algorithm predicts 0, as Garg's do (`torch.zeros_like(ys[:, 0])`,
models.py:147-148, 190-191, 220-221, 259). Prefixes have static shapes: the fit for prefix i sees
all N examples with those at j >= i masked (zeroed rows, which leave the least-squares, ridge and
LASSO fits unchanged, or infinitely far neighbours), so all prefixes of all tasks are computed
at once and everything is jit/vmap-able.

  least_squares  w_i = pinv(X_i) y_i, the minimum-norm least-squares fit of the prefix (exact OLS
                 once i >= d and X_i has full rank); Garg: `torch.linalg.lstsq` (models.py:196-200).
  ridge          w_i = (X_i^T X_i + lam I)^-1 X_i^T y_i (not one of Garg's baselines; with
                 w ~ N(0, I) and noise N(0, s^2), lam = s^2 is the posterior mean, the Bayes
                 predictor of noisy_linear).
  lasso          w_i = argmin_w 1/(2i) ||y_i - X_i w||^2 + alpha ||w||_1, no intercept: scikit-learn's
                 `Lasso(alpha, fit_intercept=False)` as Garg fit it (models.py:268-276), alpha in
                 {1, 0.1, 0.01, 0.001, 0.0001} (models.py:45; their plots show 0.01, plot_utils.py:25).
                 Solved by FISTA (Beck & Teboulle 2009) with step 1/L, L the largest eigenvalue of
                 X_i^T X_i / i, gradient-based adaptive restart (O'Donoghue & Candès 2015) and
                 continuation: LASSO_STAGES stages of n_iter / LASSO_STAGES iterations each, with alpha
                 decreasing geometrically from max_j |X_i^T y_i / i|_j (where w = 0 is the solution)
                 to alpha, each started from the last. A fixed number of iterations, not a tolerance:
                 on Garg's sparse problems (d = 20, k = 3, N = 40, float32) the default LASSO_ITERS
                 = 5000 reaches scikit-learn's solution (tol 1e-12) within 3e-5 in the predictions for
                 alpha >= 0.01; alpha = 0.001 needs about 10000 (under-determined prefixes converge
                 slowest). At alpha = 0.0001 scikit-learn itself does not converge there.
  knn            the mean of the y_j of the k nearest x_j (Euclidean), j < i, k = min(i, 3) (Garg's
                 `NNModel(n_neighbors=3)`, uniform weights, models.py:33, 152-167); ties go to the
                 earlier example.
  averaging      w_i = (1/i) sum_{j<i} y_j x_j (models.py:226-228).

`normalized_error` is Garg's normalized squared error: the mean over tasks of (pred - y)^2 / norm at
every position, norm = d for linear regression and relu_2nn, k for sparse_linear, 1 for decision
trees (plot_utils.py:97-102; `function_classes.error_normalizer`).

The pseudo-inverses, solves and eigenvalues go through `jaxlab.linalg` (one matrix per LAPACK call on
a CPU, which cannot deadlock XLA's thread pool).
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from jaxlab import linalg
from jaxlab.probes.icl_algorithms import ols_predict, ridge_predict

ALGORITHMS = ("least_squares", "ridge", "lasso", "knn", "averaging")
# Garg's baselines per function class (models.py:29-77), the ones this module has
GARG_BASELINES: dict[str, tuple[str, ...]] = {
    "linear": ("least_squares", "knn", "averaging"),
    "noisy_linear": ("least_squares", "knn", "averaging"),
    "sparse_linear": ("least_squares", "knn", "averaging", "lasso"),
    "relu_2nn": ("least_squares", "knn", "averaging"),
    "decision_tree": ("least_squares", "knn", "averaging"),
}
GARG_LASSO_ALPHAS = (1.0, 0.1, 0.01, 0.001, 0.0001)
LASSO_ALPHA = 0.01
LASSO_ITERS = 5000
LASSO_STAGES = 5
KNN_K = 3
RIDGE_LAMBDA = 1.0


def _check(x_BND: jax.Array, y_BN: jax.Array) -> None:
    if x_BND.ndim != 3 or y_BN.ndim != 2 or x_BND.shape[:2] != y_BN.shape:
        raise ValueError(f"expected x [B, N, d] and y [B, N], got {x_BND.shape} and {y_BN.shape}")


def prefix_mask(n: int, dtype: jnp.dtype = jnp.float32) -> jax.Array:
    """[N, N]: m[i, j] = 1 where j < i, the examples prefix i is fitted on."""
    i = jnp.arange(n)
    return (i[None, :] < i[:, None]).astype(dtype)


def _masked(x_BND: jax.Array, y_BN: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(x [B, N(i), N(j), d], y [B, N(i), N(j), 1]): the examples of prefix i, rows j >= i zeroed."""
    m_IJ = prefix_mask(x_BND.shape[1], x_BND.dtype)
    return x_BND[:, None] * m_IJ[None, :, :, None], (y_BN[:, None] * m_IJ[None])[..., None]


def _exclusive_cumsum(a: jax.Array, axis: int = 1) -> jax.Array:
    """sum over j < i along `axis` (0 at i = 0)."""
    c = jnp.cumsum(a, axis=axis)
    return jnp.concatenate(
        [jnp.zeros_like(lax.slice_in_dim(c, 0, 1, axis=axis)), lax.slice_in_dim(c, 0, -1, axis=axis)], axis
    )


def _counts(n: int, dtype: jnp.dtype) -> jax.Array:
    """[N]: max(i, 1), the number of examples of prefix i (1 at i = 0, where every sum is 0)."""
    return jnp.maximum(jnp.arange(n), 1).astype(dtype)


@jax.jit
def least_squares_prefix(x_BND: jax.Array, y_BN: jax.Array) -> jax.Array:
    """pred [B, N]: the minimum-norm least-squares fit w_i = pinv(X_i) y_i of the examples before i, at x_i."""
    _check(x_BND, y_BN)
    xm, ym = _masked(x_BND, y_BN)
    return ols_predict(xm, ym, x_BND[:, :, None, :])[..., 0, 0]


@jax.jit
def ridge_prefix(x_BND: jax.Array, y_BN: jax.Array, lam: float | jax.Array = RIDGE_LAMBDA) -> jax.Array:
    """pred [B, N]: ridge w_i = (X_i^T X_i + lam I)^-1 X_i^T y_i on the examples before i (lam > 0), at x_i."""
    _check(x_BND, y_BN)
    xm, ym = _masked(x_BND, y_BN)
    return ridge_predict(xm, ym, x_BND[:, :, None, :], lam)[..., 0, 0]


@jax.jit
def averaging_prefix(x_BND: jax.Array, y_BN: jax.Array) -> jax.Array:
    """pred [B, N]: x_i . w_i with w_i = (1/i) sum_{j<i} y_j x_j (0 at i = 0)."""
    _check(x_BND, y_BN)
    w_BND = _exclusive_cumsum(y_BN[..., None] * x_BND) / _counts(x_BND.shape[1], x_BND.dtype)[None, :, None]
    return jnp.einsum("bnd,bnd->bn", x_BND, w_BND)


@partial(jax.jit, static_argnames=("k",))
def knn_prefix(x_BND: jax.Array, y_BN: jax.Array, k: int = KNN_K) -> jax.Array:
    """pred [B, N]: the mean y of the min(i, k) examples j < i nearest to x_i (Euclidean; 0 at i = 0)."""
    _check(x_BND, y_BN)
    if k < 1:
        raise ValueError(f"knn: k must be >= 1, got {k}")
    B, N, _ = x_BND.shape
    k = min(k, N)
    d2_BIJ = jnp.sum((x_BND[:, :, None, :] - x_BND[:, None, :, :]) ** 2, axis=-1)
    m_IJ = prefix_mask(N, jnp.bool_)
    d2_BIJ = jnp.where(m_IJ[None], d2_BIJ, jnp.inf)
    _, idx_BIK = lax.top_k(-d2_BIJ, k)  # ties: the lower index first
    valid_BIK = (idx_BIK < jnp.arange(N)[None, :, None]).astype(y_BN.dtype)
    y_BIK = jnp.take_along_axis(y_BN[:, None, :], idx_BIK, axis=2)
    return jnp.sum(y_BIK * valid_BIK, -1) / jnp.maximum(jnp.sum(valid_BIK, -1), 1.0)


def _soft(z: jax.Array, t: jax.Array) -> jax.Array:
    return jnp.sign(z) * jnp.maximum(jnp.abs(z) - t, 0.0)


def lasso_solve(
    gram_PDD: jax.Array, xty_PD: jax.Array, alpha: float | jax.Array, n_iter: int = LASSO_ITERS
) -> jax.Array:
    """w [P, d] minimizing 1/2 w^T G w - b^T w + alpha ||w||_1 for every problem p (G = X^T X / n and
    b = X^T y / n give scikit-learn's LASSO objective); FISTA with restart and continuation (module
    docstring), `n_iter` iterations in all (at least LASSO_STAGES)."""
    if n_iter < LASSO_STAGES:
        raise ValueError(f"lasso: n_iter must be >= {LASSO_STAGES}, got {n_iter}")
    dtype = xty_PD.dtype
    alpha = jnp.asarray(alpha, dtype)
    lmax_P = linalg.eigh(gram_PDD)[0][..., -1]
    lip_P = jnp.where(lmax_P > 0, lmax_P * (1 + 1e-5), 1.0)  # w stays 0 when G = 0 (no example)
    amax_P = jnp.maximum(jnp.max(jnp.abs(xty_PD), axis=-1), alpha)
    ratio_P = jnp.where(amax_P > 0, alpha / jnp.where(amax_P > 0, amax_P, 1.0), 1.0)
    per_stage = n_iter // LASSO_STAGES
    last_stage = n_iter - per_stage * (LASSO_STAGES - 1)

    def run_stage(w_PD: jax.Array, a_P: jax.Array, n: int) -> jax.Array:
        thr_P1 = (a_P / lip_P)[:, None]

        def step(_: int, carry: tuple[jax.Array, jax.Array, jax.Array]) -> tuple[jax.Array, jax.Array, jax.Array]:
            w, v, t = carry
            grad = jnp.einsum("pij,pj->pi", gram_PDD, v) - xty_PD
            w_new = _soft(v - grad / lip_P[:, None], thr_P1)
            t_new = (1.0 + jnp.sqrt(1.0 + 4.0 * t * t)) / 2.0
            restart = jnp.sum((v - w_new) * (w_new - w), axis=-1) > 0
            momentum = jnp.where(restart, 0.0, (t - 1.0) / t_new)
            t_new = jnp.where(restart, 1.0, t_new)
            return w_new, w_new + momentum[:, None] * (w_new - w), t_new

        t0 = jnp.ones(w_PD.shape[:1], dtype)
        return lax.fori_loop(0, n, step, (w_PD, w_PD, t0))[0]

    def stage(s: int, w_PD: jax.Array) -> jax.Array:
        a_P = amax_P * ratio_P ** ((s + 1) / LASSO_STAGES)
        return run_stage(w_PD, a_P, per_stage)

    w_PD = lax.fori_loop(0, LASSO_STAGES - 1, stage, jnp.zeros_like(xty_PD))
    return run_stage(w_PD, jnp.broadcast_to(alpha, amax_P.shape), last_stage)


@partial(jax.jit, static_argnames=("n_iter",))
def lasso_prefix(
    x_BND: jax.Array, y_BN: jax.Array, alpha: float | jax.Array = LASSO_ALPHA, n_iter: int = LASSO_ITERS
) -> jax.Array:
    """pred [B, N]: x_i . w_i, w_i the LASSO fit argmin 1/(2i) ||y_i - X_i w||^2 + alpha ||w||_1 of the
    examples before i (scikit-learn's objective, no intercept; 0 at i = 0), by `lasso_solve`."""
    _check(x_BND, y_BN)
    B, N, d = x_BND.shape
    n_I = _counts(N, x_BND.dtype)[None, :, None]
    gram_BIDD = _exclusive_cumsum(x_BND[..., :, None] * x_BND[..., None, :]) / n_I[..., None]
    xty_BID = _exclusive_cumsum(y_BN[..., None] * x_BND) / n_I
    w_PD = lasso_solve(gram_BIDD.reshape(B * N, d, d), xty_BID.reshape(B * N, d), alpha, n_iter)
    return jnp.einsum("bnd,bnd->bn", x_BND, w_PD.reshape(B, N, d))


def prefix_predictions(
    name: str,
    x_BND: jax.Array,
    y_BN: jax.Array,
    *,
    ridge_lambda: float = RIDGE_LAMBDA,
    lasso_alpha: float = LASSO_ALPHA,
    lasso_iters: int = LASSO_ITERS,
    knn_k: int = KNN_K,
) -> jax.Array:
    """pred [B, N] of the algorithm `name` (one of ALGORITHMS) at every prefix length."""
    if name == "least_squares":
        return least_squares_prefix(x_BND, y_BN)
    if name == "ridge":
        return ridge_prefix(x_BND, y_BN, ridge_lambda)
    if name == "lasso":
        return lasso_prefix(x_BND, y_BN, lasso_alpha, n_iter=lasso_iters)
    if name == "knn":
        return knn_prefix(x_BND, y_BN, k=knn_k)
    if name == "averaging":
        return averaging_prefix(x_BND, y_BN)
    raise ValueError(f"unknown algorithm {name!r} (allowed: {', '.join(ALGORITHMS)})")


def normalized_error(pred_BN: jax.Array, y_BN: jax.Array, d: float | int) -> jax.Array:
    """[N]: Garg's normalized squared error, the mean over tasks of (pred - y)^2 / d at every position
    (d: the dimension for linear and relu_2nn tasks, k for sparse_linear, 1 for decision trees)."""
    return jnp.mean((pred_BN - y_BN) ** 2, axis=0) / d


def baseline_errors(
    x_BND: jax.Array,
    y_BN: jax.Array,
    algorithms: Sequence[str] = ("least_squares", "knn", "averaging"),
    *,
    normalizer: float | int | None = None,
    ridge_lambda: float = RIDGE_LAMBDA,
    lasso_alpha: float = LASSO_ALPHA,
    lasso_iters: int = LASSO_ITERS,
    knn_k: int = KNN_K,
) -> dict[str, jax.Array]:
    """algorithm -> its normalized error [N] at every prefix length (`normalized_error`, divided by
    `normalizer`, d = x.shape[-1] when None); the keyword arguments go to `prefix_predictions`."""
    norm = x_BND.shape[-1] if normalizer is None else normalizer
    kw = {"ridge_lambda": ridge_lambda, "lasso_alpha": lasso_alpha, "lasso_iters": lasso_iters, "knn_k": knn_k}
    return {name: normalized_error(prefix_predictions(name, x_BND, y_BN, **kw), y_BN, norm) for name in algorithms}


__all__ = [
    "ALGORITHMS",
    "GARG_BASELINES",
    "GARG_LASSO_ALPHAS",
    "KNN_K",
    "LASSO_ALPHA",
    "LASSO_ITERS",
    "LASSO_STAGES",
    "RIDGE_LAMBDA",
    "averaging_prefix",
    "baseline_errors",
    "knn_prefix",
    "lasso_prefix",
    "lasso_solve",
    "least_squares_prefix",
    "normalized_error",
    "prefix_mask",
    "prefix_predictions",
    "ridge_prefix",
]
