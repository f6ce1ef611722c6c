"""Orthogonal Procrustes distance (Ding, Denain & Steinhardt 2021; Williams et al. 2021's shape metrics).

After centering and scaling both representations to unit Frobenius norm,

  d(X, Y) = min_Q ||X - Y Q||_F^2 over orthogonal Q = ||X||^2 + ||Y||^2 - 2 ||X^T Y||_* = 2 - 2 ||X^T Y||_*,

(Schönemann 1966: the optimal Q comes from the SVD of Y^T X), in [0, 2]; 0 iff X = Y Q. Widths may
differ: the smaller side is implicitly zero-padded, which the formula handles as it stands. When
n < min(d1, d2) the nuclear norm is taken of the [n, n]-sized product S_x U_x^T U_y S_y of the
thin SVDs (the same singular values), so no d1 x d2 matrix is formed.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlab import linalg
from jaxlab.metrics._common import HIGHEST, center, check_pair, metric, unit_frobenius


def nuclear_norm_of_cross(xn: jax.Array, yn: jax.Array) -> jax.Array:
    """||X^T Y||_* for X [n, d1], Y [n, d2]."""
    n, d1 = xn.shape
    d2 = yn.shape[1]
    if n < min(d1, d2):
        ux, sx, _ = linalg.svd(xn)
        uy, sy, _ = linalg.svd(yn)
        core = sx[:, None] * jnp.matmul(ux.T, uy, precision=HIGHEST) * sy[None, :]
        return jnp.sum(linalg.svdvals(core))
    return jnp.sum(linalg.svdvals(jnp.matmul(xn.T, yn, precision=HIGHEST)))


@metric(symmetric=True, memory=lambda n, d1, d2: 6 * n * (d1 + d2) + 4 * (d1 + d2) ** 2)
def procrustes_distance(x: jax.Array, y: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
    """2 - 2 ||X^T Y||_* of the centered, unit-Frobenius-norm x [n, d1], y [n, d2]; in [0, 2].

    0 for y = x Q (Q orthogonal, any isotropic scale and translation); see the module docstring.
    A constant side is the zero matrix after normalization, so the distance is 2 (nuclear norm 0).
    """
    check_pair("procrustes_distance", x, y, 2)
    (xc, cx), (yc, cy) = center(x), center(y)
    nuc = nuclear_norm_of_cross(unit_frobenius(xc), unit_frobenius(yc))
    return jnp.clip(2.0 - 2.0 * nuc, 0.0, 2.0), {"constant_input": cx | cy}
