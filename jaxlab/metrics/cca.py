"""Canonical correlation analysis and its summaries: CCA, SVCCA (Raghu et al. 2017), PWCCA (Morcos et al. 2018).

Canonical correlations of centered X [n, d1], Y [n, d2] are the singular values of Qx^T Qy, where
Qx, Qy are orthonormal bases of the column spaces of X and Y (Björck & Golub 1973). The bases come
from thin SVDs of X and Y themselves, never from covariance matrices, so float32 keeps the accuracy
of the data (forming X^T X would square the condition number). Directions whose singular value is
below max(n, d) * eps * s_max (numpy's matrix_rank rule) are dropped: a rank-deficient
representation has rank(X) canonical directions, and correlations beyond min(rank X, rank Y) are 0
(counted as "rank_deficient" when rank < min(n - 1, d)). When rank X + rank Y > n - 1 the two
spaces must intersect and some correlations are trivially 1 (counted as "trivial_correlations"):
CCA needs many more examples than features.

SVCCA: keep the leading singular directions of each side that explain a fraction `keep` of its
variance (the smallest k with sum_{i<k} s_i^2 >= keep * sum_i s_i^2), then the mean of the
min(kx, ky) canonical correlations of the reduced representations.

PWCCA: with canonical variates h_i = Qx u_i of X (unit norm; u_i the left singular vectors of
Qx^T Qy) and neurons z_j (columns of centered X),
  alpha_i = sum_j |<h_i, z_j>|,  PWCCA(X, Y) = sum_i alpha_i rho_i / sum_i alpha_i,
over the min(rank X, rank Y) canonical pairs (Morcos et al. 2018, Eq. 2-3). It is asymmetric: the
weights come from X. Morcos et al.'s released code weights by whichever side has fewer neurons;
call `pwcca(smaller, larger)` to match it.

Constant inputs give correlations 0 (and SVCCA = PWCCA = 0).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlab import linalg
from jaxlab.errors import ConfigError
from jaxlab.metrics._common import HIGHEST, center, check_pair, eps, metric, safe_div


def _svd_memory(n: int, d1: int, d2: int) -> int:
    return 6 * n * (d1 + d2) + 4 * (d1 + d2) ** 2


def _basis(xc: jax.Array, keep: float | jax.Array | None = None) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(orthonormal basis [n, k] with dropped columns zeroed, kept mask [k], numerical rank)."""
    n, d = xc.shape
    u, s, _ = linalg.svd(xc)
    rank_mask = s > max(n, d) * eps() * s[0]
    mask = rank_mask
    if keep is not None:
        var = jnp.where(rank_mask, s * s, 0.0)
        cum = jnp.cumsum(var)
        frac = cum / jnp.where(cum[-1] > 0, cum[-1], 1.0)
        needed = 1 + jnp.sum(frac < keep)
        mask = mask & (jnp.arange(s.shape[0]) < needed)
    return u * mask, mask, jnp.sum(rank_mask)


def _flags(n: int, dx: int, dy: int, rx: jax.Array, ry: jax.Array, cx: jax.Array, cy: jax.Array) -> dict:
    const = cx | cy
    return {
        "constant_input": const,
        "rank_deficient": ~const & ((rx < min(n - 1, dx)) | (ry < min(n - 1, dy))),
        "trivial_correlations": ~const & (rx + ry > n - 1),
    }


def _correlations(qx: jax.Array, qy: jax.Array) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(U, rho descending in [0, 1], V^T) of Qx^T Qy."""
    u, rho, vt = linalg.svd(jnp.matmul(qx.T, qy, precision=HIGHEST))
    return u, jnp.clip(rho, 0.0, 1.0), vt


@metric(symmetric=True, memory=_svd_memory)
def cca(x: jax.Array, y: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Canonical correlations [min(n, d1, d2)] of x [n, d1] and y [n, d2], descending, in [0, 1].

    Singular values of Qx^T Qy for orthonormal bases of the centered column spaces (Hotelling
    1936; computed as in Björck & Golub 1973). Entries beyond min(rank x, rank y) are 0.
    """
    check_pair("cca", x, y, 2)
    (xc, cx), (yc, cy) = center(x), center(y)
    qx, _, rx = _basis(xc)
    qy, _, ry = _basis(yc)
    _, rho, _ = _correlations(qx, qy)
    return rho, _flags(x.shape[0], x.shape[1], y.shape[1], rx, ry, cx, cy)


@metric(symmetric=True, memory=_svd_memory)
def svcca(x: jax.Array, y: jax.Array, keep: float = 0.99) -> tuple[jax.Array, dict[str, jax.Array]]:
    """SVCCA (Raghu et al. 2017): mean canonical correlation after keeping the top-`keep`-variance SVD directions.

    With kx (ky) the fewest leading singular directions of centered x (y) whose squared singular
    values sum to >= keep of the total, SVCCA = (1/m) sum_{i<m} rho_i, m = min(kx, ky), rho the
    canonical correlations of the reduced representations. In [0, 1]; constant inputs give 0.
    """
    check_pair("svcca", x, y, 2)
    if isinstance(keep, (int, float)) and not 0.0 < keep <= 1.0:
        raise ConfigError("svcca: keep", f"must be in (0, 1], got {keep!r}")
    (xc, cx), (yc, cy) = center(x), center(y)
    qx, mx, rx = _basis(xc, keep)
    qy, my, ry = _basis(yc, keep)
    _, rho, _ = _correlations(qx, qy)
    m = jnp.minimum(jnp.sum(mx), jnp.sum(my))
    top = jnp.arange(rho.shape[0]) < m
    value = safe_div(jnp.sum(jnp.where(top, rho, 0.0)), m.astype(rho.dtype), m > 0)
    return value, _flags(x.shape[0], x.shape[1], y.shape[1], rx, ry, cx, cy)


@metric(symmetric=False, memory=_svd_memory)
def pwcca(x: jax.Array, y: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Projection-weighted CCA (Morcos, Raghu & Bengio 2018), weights from x's neurons; in [0, 1].

    sum_i alpha_i rho_i / sum_i alpha_i with alpha_i = sum_j |<h_i, z_j>| (h_i: x's unit-norm
    canonical variates, z_j: x's centered neurons). Asymmetric (see the module docstring).
    Constant inputs give 0.
    """
    check_pair("pwcca", x, y, 2)
    (xc, cx), (yc, cy) = center(x), center(y)
    qx, _, rx = _basis(xc)
    qy, _, ry = _basis(yc)
    u, rho, _ = _correlations(qx, qy)
    h = jnp.matmul(qx, u, precision=HIGHEST)  # [n, m] canonical variates of x
    alpha = jnp.sum(jnp.abs(jnp.matmul(h.T, xc, precision=HIGHEST)), axis=1)
    alpha = jnp.where(jnp.arange(rho.shape[0]) < jnp.minimum(rx, ry), alpha, 0.0)
    total = jnp.sum(alpha)
    value = safe_div(jnp.sum(alpha * rho), total, total > 0)
    return value, _flags(x.shape[0], x.shape[1], y.shape[1], rx, ry, cx, cy)
