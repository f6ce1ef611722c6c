"""Mutual k-nearest-neighbour alignment (Huh, Cheung, Wang & Isola 2024, "The Platonic Representation Hypothesis").

With N_x(i) the k nearest neighbours of example i in X (itself excluded),

  mutual_knn(X, Y, k) = (1 / n) sum_i |N_x(i) ∩ N_y(i)| / k = (sum_i |N_x(i) ∩ N_y(i)|) / (n k),   in [0, 1],

1 when both representations order every example's neighbours the same way, about k / (n - 1) for
unrelated ones. The shared neighbours are counted as an integer and divided once, so the value
never leaves [0, 1]. Neighbours by cosine similarity of the (uncentered) feature vectors, as in Huh
et al.'s code which L2-normalizes features, or by Euclidean distance (`similarity="euclidean"`).

Numerics. Distances are summed from explicit differences, ||x_i - x_j||^2 = sum_f (x_if - x_jf)^2
(`explicit_squared_distances`), not expanded as ||x_i||^2 + ||x_j||^2 - 2 x_i.x_j: the expansion loses
everything below eps (||x_i||^2 + ||x_j||^2), so the neighbours inside a tight cluster far from the
origin would all tie. Cosine neighbours are ranked by ||u_i - u_j||^2 = 2 - 2 cos(x_i, x_j) of the unit
vectors u_i = x_i / ||x_i|| (the same order as the cosine, without losing 1 - cos below eps). The
differences are taken in blocks of rows, so the working memory is O(block n d) on top of the n x n
distances. Ties are broken towards the lower example index (jax.lax.top_k), so a constant
representation has index-ordered neighbours; it is counted as "constant_input". Zero vectors have
cosine 0 to all (distance 2 between unit vectors), to each other as well.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlab.errors import ConfigError
from jaxlab.metrics._common import (
    as_float,
    center,
    check_pair,
    difference_block_floats,
    explicit_squared_distances,
    max_abs,
    metric,
    pow2_at_least,
    unit_max_rows,
)

SIMILARITIES = ("cosine", "euclidean")


def pow2_scaled(x_ND: jax.Array) -> jax.Array:
    """x / 2^e with 2^(e - 1) <= max |x| < 2^e: entries below 1 in magnitude, and no rounding (a power of two)."""
    x = as_float(x_ND)
    return x / pow2_at_least(max_abs(x))


def euclidean_squared_distances(x_ND: jax.Array) -> jax.Array:
    """||x_i - x_j||^2 [n, n] of x / 2^e (see `pow2_scaled`) from explicit differences; all 0 for a constant x.

    x is constant when `jaxlab.metrics._common.center` says so (variation at rounding level only).
    """
    d2 = explicit_squared_distances(pow2_scaled(x_ND))
    return jnp.where(center(x_ND)[1], 0.0, d2)


def cosine_squared_distances(x_ND: jax.Array) -> jax.Array:
    """||u_i - u_j||^2 = 2 - 2 cos(x_i, x_j) [n, n] for u_i = x_i / ||x_i||; 2 where x_i or x_j is zero (cosine 0)."""
    x = unit_max_rows(x_ND)  # each row's max |x| becomes 1, so its norm neither over- nor underflows
    norms = jnp.sqrt(jnp.sum(x * x, axis=1))
    zero = norms == 0
    u = x / jnp.where(zero, 1.0, norms)[:, None]
    d2 = explicit_squared_distances(u)
    return jnp.where(zero[:, None] | zero[None, :], 2.0, d2)


def neighbour_mask(x: jax.Array, k: int, similarity: str) -> jax.Array:
    """[n, n] bool: mask[i, j] when j is one of the k nearest neighbours of i (j != i), ties to the lower index."""
    n = x.shape[0]
    if similarity == "cosine":
        d2 = cosine_squared_distances(x)
    else:
        d2 = euclidean_squared_distances(x)
    closeness = jnp.where(jnp.eye(n, dtype=bool), -jnp.inf, -d2)
    _, idx = jax.lax.top_k(closeness, k)
    return jnp.zeros((n, n), bool).at[jnp.arange(n)[:, None], idx].set(True)


def _memory(n: int, d1: int, d2: int) -> int:
    """Floats one pair works in: masks and distances (n x n), inputs, one block of differences per side."""
    return 8 * n * n + 4 * n * (d1 + d2) + difference_block_floats(n, d1, d2)


@metric(symmetric=True, memory=_memory)
def mutual_knn(x: jax.Array, y: jax.Array, k: int = 10, similarity: str = "cosine") -> tuple[jax.Array, dict]:
    """Shared k nearest neighbours of each example in x and y: sum_i |N_x(i) ∩ N_y(i)| / (n k), in [0, 1].

    Neighbours by cosine similarity or Euclidean distance (`similarity`); see the module docstring.
    """
    check_pair("mutual_knn", x, y, 2)
    n = x.shape[0]
    if not isinstance(k, int) or isinstance(k, bool) or not 1 <= k <= n - 1:
        raise ConfigError("mutual_knn: k", f"must be an integer in [1, n_examples - 1] = [1, {n - 1}], got {k!r}")
    if similarity not in SIMILARITIES:
        raise ConfigError("mutual_knn: similarity", f"unknown value {similarity!r}", SIMILARITIES)
    shared = jnp.sum(neighbour_mask(x, k, similarity) & neighbour_mask(y, k, similarity))  # integer count
    # XLA multiplies by a rounded 1 / (n k) instead of dividing: the full count is exactly 1, and
    # rounding cannot lift a smaller one above 1
    fraction = jnp.minimum(shared.astype(as_float(x).dtype) / (n * k), 1.0)
    value = jnp.where(shared == n * k, 1.0, fraction)
    return value, {"constant_input": center(x)[1] | center(y)[1]}
