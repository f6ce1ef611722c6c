"""Learning algorithms an in-context learner is compared with (von Oswald et al. 2023; Akyürek et al. 2023).

Every predictor takes a context x [..., N, D], y [..., N, O] and query inputs q [..., M, D] and
returns predictions [..., M, O]; leading axes are tasks. They run on NumPy arrays (float64, on the
host) or on JAX arrays (jit/vmap-compatible): the array type of x decides. Weights are W [O, D].

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

With JAX inputs the solves and pseudo-inverses go through `jaxlab.linalg` (one matrix per LAPACK
call on a CPU, which cannot deadlock XLA's thread pool); with NumPy inputs through `numpy.linalg`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax.numpy as jnp
import numpy as np

from jaxlab import linalg

ALGORITHMS = ("gd", "ridge", "ols", "knn", "averaging")

Predictor = Callable[[Any, Any, Any], Any]


def _xp(x: Any) -> Any:
    return np if isinstance(x, np.ndarray) else jnp


def _solve(a: Any, b: Any) -> Any:
    return np.linalg.solve(a, b) if isinstance(a, np.ndarray) else linalg.solve(a, b)


def _pinv(a: Any) -> Any:
    return np.linalg.pinv(a) if isinstance(a, np.ndarray) else linalg.pinv(a)


def _t(a: Any) -> Any:
    return _xp(a).swapaxes(a, -1, -2)


def _check(x: Any, y: Any, q: Any) -> None:
    if x.ndim < 2 or y.ndim != x.ndim or q.ndim != x.ndim:
        raise ValueError(f"expected x [..., N, D], y [..., N, O], q [..., M, D]; got {x.shape}, {y.shape}, {q.shape}")
    if x.shape[-2] != y.shape[-2] or x.shape[-1] != q.shape[-1]:
        raise ValueError(f"shapes do not match: x {x.shape}, y {y.shape}, q {q.shape}")


def gd_predict(x: Any, y: Any, q: Any, eta: Any, n_steps: int = 1, gamma: Any = 0.0) -> Any:
    """K = n_steps steps of GD (GD++ when gamma > 0) from W = 0; see the module docstring."""
    _check(x, y, q)
    xp = _xp(x)
    n = x.shape[-2]
    xc, r, xq = x, y, q
    rq = xp.zeros((*q.shape[:-1], y.shape[-1]), dtype=y.dtype)
    for _ in range(n_steps):
        gram_NN = xc @ _t(xc)
        gram_MN = xq @ _t(xc)
        xc, r, xq, rq = (
            xc - gamma * (gram_NN @ xc),
            r - (eta / n) * (gram_NN @ r),
            xq - gamma * (gram_MN @ xc),
            rq - (eta / n) * (gram_MN @ r),
        )
    return -rq


def averaging_predict(x: Any, y: Any, q: Any) -> Any:
    """Averaging: predictions q W^T [..., M, O] with W = (1/N) sum_i y_i x_i^T (one GD step with eta = 1)."""
    _check(x, y, q)
    return q @ (_t(x) @ y / x.shape[-2])


def ridge_predict(x: Any, y: Any, q: Any, lam: float) -> Any:
    """The ridge algorithm's prediction at q from the context alone (no intercept; module docstring).
    (Fitting a ridge probe on representations is `linear_probe.ridge_fit` / `linear_predict`.)"""
    _check(x, y, q)
    xp = _xp(x)
    gram = _t(x) @ x + lam * xp.eye(x.shape[-1], dtype=x.dtype)
    return q @ _solve(gram, _t(x) @ y)


def ols_predict(x: Any, y: Any, q: Any) -> Any:
    """OLS: predictions q W^T [..., M, O] with W = Y^T pinv(X)^T, the minimum-norm least-squares fit of the context."""
    _check(x, y, q)
    return q @ (_pinv(x) @ y)


def knn_predict(x: Any, y: Any, q: Any, k: int = 3) -> Any:
    """k nearest neighbours: the mean y of the k context inputs nearest to each query (Euclidean); ValueError unless 1
    <= k <= N."""
    _check(x, y, q)
    if not 1 <= k <= x.shape[-2]:
        raise ValueError(f"knn: k must be in [1, N={x.shape[-2]}], got {k}")
    xp = _xp(x)
    d2_MN = xp.sum((q[..., :, None, :] - x[..., None, :, :]) ** 2, axis=-1)
    idx_MK = xp.argsort(d2_MN, axis=-1)[..., :k]
    y_MKO = xp.take_along_axis(y[..., None, :, :], idx_MK[..., None], axis=-2)
    return xp.mean(y_MKO, axis=-2)


def predictor(
    name: str, *, eta: Any = 1.0, n_steps: int = 1, gamma: Any = 0.0, ridge_lambda: float = 0.1, knn_k: int = 3
) -> Predictor:
    """The predictor `name` (one of ALGORITHMS) as f(x, y, q) -> predictions."""
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


def fit_linear(x: Any, f: Any) -> Any:
    """Least-squares weights [..., D, O] of f [..., M, O] on x [..., M, D], without intercept."""
    return _pinv(x) @ f


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
