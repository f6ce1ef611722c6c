"""Mutual k-nearest-neighbour alignment (Huh, Cheung, Wang & Isola 2024, "The Platonic Representation Hypothesis").

With N_x(i) the k nearest neighbours of example i in X (itself excluded),

  mutual_knn(X, Y, k) = (1 / n) sum_i |N_x(i) ∩ N_y(i)| / k,   in [0, 1],

1 when both representations order every example's neighbours the same way, about k / (n - 1) for
unrelated ones. Neighbours by cosine similarity of the (uncentered) feature vectors, as in Huh et
al.'s code which L2-normalizes features, or by Euclidean distance (`similarity="euclidean"`).
Ties are broken towards the lower example index (jax.lax.top_k), so a constant representation has
index-ordered neighbours; it is counted as "constant_input". Zero vectors have cosine 0 to all.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlab.errors import ConfigError
from jaxlab.metrics._common import HIGHEST, as_float, center, check_pair, max_abs, metric
from jaxlab.metrics.cka import squared_distances

SIMILARITIES = ("cosine", "euclidean")


def neighbour_mask(x: jax.Array, k: int, similarity: str) -> jax.Array:
    """[n, n] bool: mask[i, j] when j is one of the k nearest neighbours of i (j != i)."""
    x = as_float(x)
    n = x.shape[0]
    if similarity == "cosine":
        amax = max_abs(x)
        x = x / jnp.where(amax > 0, amax, 1.0)
        norms = jnp.sqrt(jnp.sum(x * x, axis=1, keepdims=True))
        xn = x / jnp.where(norms > 0, norms, 1.0)
        sim = jnp.matmul(xn, xn.T, precision=HIGHEST)
    else:
        sim = -squared_distances(center(x)[0])[0]
    sim = jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, sim)
    _, idx = jax.lax.top_k(sim, k)
    return jnp.zeros((n, n), bool).at[jnp.arange(n)[:, None], idx].set(True)


@metric(symmetric=True, memory=lambda n, d1, d2: 8 * n * n + 4 * n * (d1 + d2))
def mutual_knn(x: jax.Array, y: jax.Array, k: int = 10, similarity: str = "cosine") -> tuple[jax.Array, dict]:
    """Mean fraction of shared k nearest neighbours of each example in x and y, in [0, 1] (see the module docstring)."""
    check_pair("mutual_knn", x, y, 2)
    n = x.shape[0]
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n - 1:
        raise ConfigError("mutual_knn: k", f"must be an integer in [1, n_examples - 1] = [1, {n - 1}], got {k!r}")
    if similarity not in SIMILARITIES:
        raise ConfigError("mutual_knn: similarity", f"unknown value {similarity!r}", SIMILARITIES)
    shared = jnp.sum(neighbour_mask(x, k, similarity) & neighbour_mask(y, k, similarity), axis=1)
    value = jnp.mean(shared.astype(as_float(x).dtype)) / k
    return value, {"constant_input": center(x)[1] | center(y)[1]}
