"""Centered kernel alignment (Kornblith, Norouzi, Lee & Hinton 2019), linear and RBF, biased and debiased.

For representations X [n, d1], Y [n, d2] of the same n examples with Gram matrices K, L [n, n]:

  CKA(K, L) = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)).

Biased estimator: HSIC(K, L) = tr(K H L H) / (n - 1)^2 with H = I - 11^T / n (Gretton et al. 2005).
For linear kernels K = X X^T of centered X this is ||X^T Y||_F^2 / (n - 1)^2, so linear CKA is

  ||X^T Y||_F^2 / (||X^T X||_F ||Y^T Y||_F),

computed in feature space (d x d products, no n x n Gram) when n >= d and in Gram space otherwise.

Debiased estimator: the unbiased HSIC U-statistic of Song et al. (2012),

  HSIC_u(K, L) = [tr(K~ L~) + 1^T K~ 1 1^T L~ 1 / ((n-1)(n-2)) - 2/(n-2) 1^T K~ L~ 1] / (n (n-3)),

K~ = K with its diagonal set to 0; equivalently the Frobenius inner product of the U-centered Gram
matrices of Székely & Rizzo (2014), as in Kornblith's notebook. For linear kernels of centered X
(K 1 = 0) it reduces to ||X^T Y||^2 - n/(n-2) diag(K).diag(L) + tr K tr L / ((n-1)(n-2)), all in
feature space. Debiased CKA can be negative (it estimates a population quantity that is 0 for
independent representations, with unbiased noise around it); its normalizers HSIC_u(K, K) are
non-negative in exact arithmetic. When rounding makes one of them <= 64 eps times the terms it is
the difference of (a representation with no U-centered structure), CKA is 0 and the event is
counted as "nonpositive_self_hsic"; no square root of a negative number is ever taken.

RBF kernel: K_ij = exp(-||x_i - x_j||^2 / (2 sigma^2)), sigma = threshold * sqrt(median of the
nonzero squared distances ||x_i - x_j||^2, i != j) (Kornblith et al. 2019, Sec. 4). Kornblith's
notebook takes the median over all n^2 entries, zeros on the diagonal included; this one excludes
zero distances, so duplicated examples do not shrink the bandwidth. The distances are summed from
explicit differences (`jaxlab.metrics._common.explicit_squared_distances`), so only identical
examples are at distance 0 and distances within a tight cluster far from the mean keep their
precision (the expansion ||x_i||^2 + ||x_j||^2 - 2 x_i.x_j would lose them); on the 2-core CPU
this costs 4-5x the expansion's time (n = 2000, d = 1024: about 2 s).

Constant inputs give CKA 0 (see `jaxlab.metrics._common`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlab.errors import ConfigError
from jaxlab.metrics._common import (
    HIGHEST,
    center,
    check_pair,
    difference_block_floats,
    eps,
    explicit_squared_distances,
    metric,
    safe_div,
    unit_frobenius,
)

SELF_HSIC_RTOL = 64.0  # in units of eps, relative to the terms HSIC_u(K, K) is the difference of


def _frob2(a: jax.Array) -> jax.Array:
    return jnp.sum(a * a)


def _cross_sq(xn: jax.Array, yn: jax.Array) -> jax.Array:
    """||X^T Y||_F^2 = <X X^T, Y Y^T>_F, in whichever space is smaller."""
    n, d1 = xn.shape
    d2 = yn.shape[1]
    if n * n <= d1 * d2:
        return jnp.sum(jnp.matmul(xn, xn.T, precision=HIGHEST) * jnp.matmul(yn, yn.T, precision=HIGHEST))
    return _frob2(jnp.matmul(xn.T, yn, precision=HIGHEST))


def debiased_linear_hsic(cross: jax.Array, diag_dot: jax.Array, tx: jax.Array, ty: jax.Array, n: int) -> jax.Array:
    """n (n - 3) HSIC_u for linear kernels of centered data (elementwise over any shape).

    cross = ||X^T Y||_F^2, diag_dot = diag(K) . diag(L) (per-example squared norms), tx = tr K, ty = tr L.
    """
    return cross - n / (n - 2.0) * diag_dot + tx * ty / ((n - 1.0) * (n - 2.0))


def self_hsic_ok(u_self: jax.Array, cross_self: jax.Array, d_self_sq: jax.Array, n: int) -> jax.Array:
    """Whether a debiased self term is positive beyond rounding of the terms it is the difference of."""
    scale = cross_self + n / (n - 2.0) * d_self_sq
    return u_self > SELF_HSIC_RTOL * eps() * scale


def _check_debiased(name: str, n: int, debiased: bool) -> None:
    if debiased and n < 4:
        raise ConfigError(f"{name}: x", f"debiased=True needs at least 4 examples (rows), got {n}")


@metric(symmetric=True, memory=lambda n, d1, d2: 4 * n * (d1 + d2) + 3 * min(n * n, (d1 + d2) ** 2))
def linear_cka(x: jax.Array, y: jax.Array, debiased: bool = False) -> tuple[jax.Array, dict[str, jax.Array]]:
    """Linear CKA of x [n, d1] and y [n, d2] in [0, 1] (debiased: in [-1, 1]); see the module docstring.

    ||X^T Y||_F^2 / (||X^T X||_F ||Y^T Y||_F) of the centered representations (Kornblith et al.
    2019, Eq. 5), or with the unbiased HSIC of Song et al. (2012) when `debiased`. Invariant to
    orthogonal transforms and isotropic scaling of either side, and to appending zero features.
    Constant inputs give 0.
    """
    check_pair("linear_cka", x, y, 4 if debiased else 2)
    n = x.shape[0]
    _check_debiased("linear_cka", n, debiased)
    (xc, cx), (yc, cy) = center(x), center(y)
    xn, yn = unit_frobenius(xc), unit_frobenius(yc)
    sxy, sxx, syy = _cross_sq(xn, yn), _cross_sq(xn, xn), _cross_sq(yn, yn)
    flags = {"constant_input": cx | cy}
    ok = ~(cx | cy)
    if not debiased:
        return safe_div(sxy, jnp.sqrt(sxx) * jnp.sqrt(syy), ok), flags
    dx, dy = jnp.sum(xn * xn, axis=1), jnp.sum(yn * yn, axis=1)
    tx, ty, dxx, dyy = jnp.sum(dx), jnp.sum(dy), jnp.sum(dx * dx), jnp.sum(dy * dy)
    uxy = debiased_linear_hsic(sxy, jnp.sum(dx * dy), tx, ty, n)
    uxx = debiased_linear_hsic(sxx, dxx, tx, tx, n)
    uyy = debiased_linear_hsic(syy, dyy, ty, ty, n)
    good = self_hsic_ok(uxx, sxx, dxx, n) & self_hsic_ok(uyy, syy, dyy, n)
    flags["nonpositive_self_hsic"] = ok & ~good
    ok = ok & good
    den = jnp.sqrt(jnp.where(ok, uxx, 1.0)) * jnp.sqrt(jnp.where(ok, uyy, 1.0))
    return safe_div(uxy, den, ok), flags


def squared_distances(xc: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(||x_i - x_j||^2 [n, n] summed from explicit differences (`explicit_squared_distances`: exact to a
    few eps of each distance, where the expansion |x_i|^2 + |x_j|^2 - 2 x_i.x_j loses distances within a
    tight cluster far from the mean), mask of the nonzero off-diagonal pairs)."""
    d2 = explicit_squared_distances(xc)
    nonzero = (d2 > 0) & ~jnp.eye(xc.shape[0], dtype=bool)
    return jnp.where(nonzero, d2, 0.0), nonzero


def rbf_gram(xc: jax.Array, threshold: float | jax.Array) -> tuple[jax.Array, jax.Array]:
    """(RBF Gram matrix with the median-distance bandwidth, whether any two examples differ)."""
    d2, nonzero = squared_distances(xc)
    iu = jnp.triu_indices(xc.shape[0], 1)
    vals = jnp.where(nonzero[iu], d2[iu], jnp.nan)
    median = jnp.nanmedian(vals)
    any_diff = jnp.any(nonzero)
    sigma2 = jnp.asarray(threshold, d2.dtype) ** 2 * jnp.where(any_diff, median, 1.0)
    return jnp.exp(-d2 / (2.0 * sigma2)), any_diff


def center_gram(k: jax.Array) -> jax.Array:
    """H K H: subtract row and column means, add back the grand mean (two passes for accuracy)."""
    k = k - jnp.mean(k, axis=0, keepdims=True)
    k = k - jnp.mean(k, axis=1, keepdims=True)
    return k - jnp.mean(k)


def u_center_gram(k: jax.Array) -> jax.Array:
    """The U-centered Gram matrix of Székely & Rizzo (2014, Def. 1); its Frobenius products give n(n-3) HSIC_u."""
    n = k.shape[0]
    off = ~jnp.eye(n, dtype=bool)
    k = jnp.where(off, k, 0.0)
    rows = jnp.sum(k, axis=1)
    total = jnp.sum(rows)
    ku = k - rows[:, None] / (n - 2.0) - rows[None, :] / (n - 2.0) + total / ((n - 1.0) * (n - 2.0))
    return jnp.where(off, ku, 0.0)


def gram_cka(k: jax.Array, l: jax.Array, debiased: bool) -> tuple[jax.Array, jax.Array]:
    """(CKA of two Gram matrices, whether both normalizers are positive)."""
    kc = u_center_gram(k) if debiased else center_gram(k)
    lc = u_center_gram(l) if debiased else center_gram(l)
    kk, ll = _frob2(kc), _frob2(lc)
    ok = (kk > 0) & (ll > 0)
    return safe_div(jnp.sum(kc * lc), jnp.sqrt(kk) * jnp.sqrt(ll), ok), ok


@metric(
    symmetric=True,
    memory=lambda n, d1, d2: 12 * n * n + 4 * n * (d1 + d2) + difference_block_floats(n, d1, d2),
)
def rbf_cka(
    x: jax.Array, y: jax.Array, threshold: float = 1.0, debiased: bool = False
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """CKA with RBF kernels, bandwidth sigma = threshold * sqrt(median nonzero squared distance).

    <H K H, H L H>_F / (||H K H||_F ||H L H||_F) (Kornblith et al. 2019), or with U-centered Gram
    matrices when `debiased` (Song et al. 2012; Székely & Rizzo 2014). Needs n x n memory.
    Invariant to translations, orthogonal transforms and isotropic scaling of either side. Constant
    inputs (all examples equal) give 0.
    """
    check_pair("rbf_cka", x, y, 4 if debiased else 2)
    if isinstance(threshold, (int, float)) and not threshold > 0:
        raise ConfigError("rbf_cka: threshold", f"must be > 0, got {threshold!r}")
    (xc, cx), (yc, cy) = center(x), center(y)
    k, kx = rbf_gram(xc, threshold)
    l, ky = rbf_gram(yc, threshold)
    value, ok = gram_cka(k, l, debiased)
    const = cx | cy | ~kx | ~ky
    flags = {"constant_input": const, "nonpositive_self_hsic": ~const & ~ok}
    return jnp.where(const, 0.0, value), flags
