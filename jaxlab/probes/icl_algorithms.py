"""Learning algorithms an in-context learner is compared with (von Oswald et al. 2023; Akyürek et al. 2023).

Every predictor works on ONE task (vmap over tasks): a context x_ND, y_NO and M query inputs
x_MD give predictions [M, O]. Weights are written W [O, D] (y = W x).

  gd         K steps of gradient descent from W = 0 with learning rate eta on
             L(W) = 1/(2N) sum_i ||W x_i - y_i||^2, computed the way the constructed recurrent
             linear self-attention computes it: per step, for every token j (context and query)
               r_j <- r_j - (eta/N) sum_i (x_i . x_j) r_i      (y entries; the query's starts at 0)
               x_j <- x_j - gamma sum_i (x_i . x_j) x_i         (GD++ only, gamma > 0)
             and the prediction is -r_query. With gamma = 0, r_i = y_i - W_k x_i and -r_q = W_k x_q.
  averaging  W = (1/N) sum_i y_i x_i^T  (one GD step with eta = 1)
  ridge      W = Y^T X (X^T X + lam I)^-1
  ols        W = Y^T pinv(X)^T, the minimum-norm least-squares solution (exact OLS when N >= D)
  knn        the mean of the y of the k nearest context inputs (Euclidean; Akyürek et al. use k = 3)

`fit_linear` is the least-squares fit without intercept used by the implicit linear weight
difference (ILWD, Akyürek et al. Sec. 4.1): w_hat(f) = argmin_w sum_m (f(x'_m) - w . x'_m)^2.
"""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp

ALGORITHMS = ("gd", "ridge", "ols", "knn", "averaging")

Predictor = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def _check(x_ND: jax.Array, y_NO: jax.Array, x_MD: jax.Array) -> None:
    chex.assert_rank([x_ND, y_NO, x_MD], 2)
    chex.assert_equal_shape_prefix([x_ND, y_NO], 1)
    chex.assert_equal_shape_suffix([x_ND, x_MD], 1)


def gd_predict(
    x_ND: jax.Array,
    y_NO: jax.Array,
    x_MD: jax.Array,
    eta: jax.Array | float,
    n_steps: int = 1,
    gamma: jax.Array | float = 0.0,
) -> jax.Array:
    """K = n_steps steps of GD (GD++ when gamma > 0) from W = 0; see the module docstring."""
    _check(x_ND, y_NO, x_MD)
    n = x_ND.shape[0]
    eta = jnp.asarray(eta, jnp.float32)
    gamma = jnp.asarray(gamma, jnp.float32)

    def step(carry, _):
        xc, r, xq, rq = carry
        gram_NN = xc @ xc.T
        gram_MN = xq @ xc.T
        new = (
            xc - gamma * gram_NN @ xc,
            r - (eta / n) * gram_NN @ r,
            xq - gamma * gram_MN @ xc,
            rq - (eta / n) * gram_MN @ r,
        )
        return new, None

    init = (x_ND, y_NO, x_MD, jnp.zeros((x_MD.shape[0], y_NO.shape[1]), y_NO.dtype))
    (_, _, _, rq), _ = jax.lax.scan(step, init, None, length=n_steps)
    return -rq


def averaging_predict(x_ND: jax.Array, y_NO: jax.Array, x_MD: jax.Array) -> jax.Array:
    _check(x_ND, y_NO, x_MD)
    w_DO = x_ND.T @ y_NO / x_ND.shape[0]
    return x_MD @ w_DO


def ridge_predict(x_ND: jax.Array, y_NO: jax.Array, x_MD: jax.Array, lam: jax.Array | float) -> jax.Array:
    _check(x_ND, y_NO, x_MD)
    D = x_ND.shape[1]
    w_DO = jnp.linalg.solve(x_ND.T @ x_ND + lam * jnp.eye(D), x_ND.T @ y_NO)
    return x_MD @ w_DO


def ols_predict(x_ND: jax.Array, y_NO: jax.Array, x_MD: jax.Array) -> jax.Array:
    _check(x_ND, y_NO, x_MD)
    return x_MD @ (jnp.linalg.pinv(x_ND) @ y_NO)


def knn_predict(x_ND: jax.Array, y_NO: jax.Array, x_MD: jax.Array, k: int = 3) -> jax.Array:
    _check(x_ND, y_NO, x_MD)
    if not 1 <= k <= x_ND.shape[0]:
        raise ValueError(f"knn: k must be in [1, N={x_ND.shape[0]}], got {k}")
    d2_MN = jnp.sum((x_MD[:, None, :] - x_ND[None, :, :]) ** 2, axis=-1)
    _, idx_MK = jax.lax.top_k(-d2_MN, k)
    return jnp.mean(y_NO[idx_MK], axis=1)


def predictor(
    name: str, *, eta: jax.Array | float = 1.0, n_steps: int = 1, gamma: jax.Array | float = 0.0,
    ridge_lambda: float = 0.1, knn_k: int = 3,
) -> Predictor:  # fmt: skip
    """The predictor `name` (one of ALGORITHMS) as f(x_ND, y_NO, x_MD) -> [M, O]."""
    if name == "gd":
        return lambda x, y, q: gd_predict(x, y, q, eta, n_steps, gamma)
    if name == "averaging":
        return averaging_predict
    if name == "ridge":
        return lambda x, y, q: ridge_predict(x, y, q, ridge_lambda)
    if name == "ols":
        return ols_predict
    if name == "knn":
        return lambda x, y, q: knn_predict(x, y, q, knn_k)
    raise ValueError(f"unknown algorithm {name!r} (allowed: {', '.join(ALGORITHMS)})")


def fit_linear(x_MD: jax.Array, f_MO: jax.Array) -> jax.Array:
    """Least-squares weights [D, O] of f on x without intercept: pinv(x) f."""
    chex.assert_rank([x_MD, f_MO], 2)
    return jnp.linalg.pinv(x_MD) @ f_MO


__all__ = [
    "ALGORITHMS",
    "averaging_predict",
    "fit_linear",
    "gd_predict",
    "knn_predict",
    "ols_predict",
    "predictor",
    "ridge_predict",
]
