"""Representational similarity analysis (Kriegeskorte, Mur & Bandettini 2008).

The representational dissimilarity matrix (RDM) of X [n, d] has entries
  "correlation": 1 - Pearson r between the feature vectors x_i and x_j (Kriegeskorte et al.'s default),
  "euclidean":   ||x_i - x_j||_2;
RSA is the Pearson or Spearman correlation between the upper triangles (i < j) of the RDMs of X
and Y. Spearman ranks ties by their average rank, as scipy.stats.spearmanr does. An example whose
features are all equal has no correlation with anything; its correlation-RDM entries are 1 (r = 0),
counted as "constant_example"; an example is constant when its features vary by less than 4 eps
sqrt(d) (in the norm of the deviations from their mean) relative to its own largest |feature|, so
rescaling single examples (to which the correlation RDM is invariant) changes nothing. A constant RDM
(e.g. a constant representation) gives RSA 0, counted as "constant_input". Euclidean distances are
summed from explicit differences x_i - x_j (`jaxlab.metrics._common.explicit_squared_distances`), so
tight clusters far from the origin keep their within-cluster distances.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlab.errors import ConfigError
from jaxlab.metrics._common import HIGHEST, check_pair, difference_block_floats, eps, metric, unit_max_rows
from jaxlab.metrics.knn import euclidean_squared_distances

METHODS = ("pearson", "spearman")
DISSIMILARITIES = ("correlation", "euclidean")


def rdm_upper(x: jax.Array, dissimilarity: str) -> tuple[jax.Array, jax.Array]:
    """(upper triangle [n (n - 1) / 2] of the RDM of x [n, d], whether some example had constant features).

    "euclidean": ||x_i - x_j|| from explicit differences; "correlation": 1 - r_ij with r_ij the
    Pearson correlation of the rows x_i, x_j, each row first divided by its own max |x_i|.
    """
    n, d = x.shape
    iu = jnp.triu_indices(n, 1)
    if dissimilarity == "euclidean":
        return jnp.sqrt(euclidean_squared_distances(x)[iu]), jnp.bool_(False)
    x = unit_max_rows(x)  # per-example scale: flatness is relative to it
    xr = x - jnp.mean(x, axis=1, keepdims=True)
    xr = xr - jnp.mean(xr, axis=1, keepdims=True)
    norms = jnp.sqrt(jnp.sum(xr * xr, axis=1))
    flat = norms <= 4.0 * eps() * jnp.sqrt(d)
    xr = jnp.where(flat[:, None], 0.0, xr / jnp.where(flat, 1.0, norms)[:, None])
    r = jnp.clip(jnp.matmul(xr, xr.T, precision=HIGHEST), -1.0, 1.0)
    return (1.0 - r)[iu], jnp.any(flat)


def average_ranks(v: jax.Array) -> jax.Array:
    """Ranks 1..m of v, ties sharing their average rank."""
    s = jnp.sort(v)
    lo = jnp.searchsorted(s, v, side="left")
    hi = jnp.searchsorted(s, v, side="right")
    return (lo + hi + 1).astype(v.dtype) / 2.0


def pearson(a: jax.Array, b: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(Pearson r of two vectors, whether both have nonzero variance)."""
    a = a - jnp.mean(a)
    a = a - jnp.mean(a)
    b = b - jnp.mean(b)
    b = b - jnp.mean(b)
    na, nb = jnp.sqrt(jnp.sum(a * a)), jnp.sqrt(jnp.sum(b * b))
    ok = (na > 0) & (nb > 0)
    an, bn = a / jnp.where(ok, na, 1.0), b / jnp.where(ok, nb, 1.0)
    return jnp.where(ok, jnp.sum(an * bn), 0.0), ok


def _memory(n: int, d1: int, d2: int) -> int:
    """Floats one pair works in: RDMs and ranks (n x n), inputs, one block of differences per side."""
    return 10 * n * n + 4 * n * (d1 + d2) + difference_block_floats(n, d1, d2)


@metric(symmetric=True, memory=_memory)
def rsa(
    x: jax.Array, y: jax.Array, method: str = "pearson", dissimilarity: str = "correlation"
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Correlation (`method` pearson | spearman) between the upper triangles of the RDMs of x and y, in [-1, 1].

    RDM entries by `dissimilarity` (correlation | euclidean); see the module docstring. Needs
    n x n memory and, for spearman, a sort of n (n - 1) / 2 values.
    """
    check_pair("rsa", x, y, 3)
    if method not in METHODS:
        raise ConfigError("rsa: method", f"unknown value {method!r}", METHODS)
    if dissimilarity not in DISSIMILARITIES:
        raise ConfigError("rsa: dissimilarity", f"unknown value {dissimilarity!r}", DISSIMILARITIES)
    a, flat_x = rdm_upper(x, dissimilarity)
    b, flat_y = rdm_upper(y, dissimilarity)
    if method == "spearman":
        a, b = average_ranks(a) / a.shape[0], average_ranks(b) / b.shape[0]
    r, ok = pearson(a, b)
    return jnp.clip(r, -1.0, 1.0), {"constant_input": ~ok, "constant_example": ok & (flat_x | flat_y)}
