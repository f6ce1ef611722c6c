"""Clustering of representations: k-means and the scores of a partition against labels.

All functions are pure, jit- and vmap-compatible (no Python branches on values); numbers of
clusters or classes are static Python ints, labels are int arrays in [0, n). Representations are
x [n_examples, n_features], JAX or NumPy arrays.

- `kmeans`: Lloyd's algorithm from k-means++ seeds (Arthur & Vassilvitskii 2007), a fixed number
  of iterations, several restarts, the restart of lowest inertia sum_i ||x_i - c_{a_i}||^2 kept.
- `adjusted_rand_index` (Hubert & Arabie 1985), `normalized_mutual_info` (arithmetic-mean
  normalization, as scikit-learn's default), from the contingency table of two partitions.
- `silhouette_score` (Rousseeuw 1987) of a labelling, Euclidean distances.
- `variance_ratio`: between-class over within-class variance.

Precision. Hidden states often share a large common offset m: x_i = m + z_i with |m| >> |z_i|.
The expansion ||x - c||^2 = |x|^2 + |c|^2 - 2 x.c is then a small difference of numbers ~|m|^2,
and in float32 it loses everything below eps |m|^2 (at |m| = 1e4 that is ~6 per coordinate: the
partition is wrong). Every distance and variance here is therefore computed in a centred frame
(`centred_frame`): x = origin + scale * u, the origin the mean of x refined by a second pass (which
removes the rounding of the first), the scale a power of two (exact). All quantities
are invariant to translation, so nothing is lost; results given in coordinates (centroids, class
means) are mapped back, and squared quantities (inertia) multiplied by scale^2. The expansion is
used only to compare distances (assignment); sums of squared distances are taken of differences,
`pairwise_distances` takes explicit differences of the input itself (only scaled: the centring rounds
each coordinate to eps times its distance from the mean, too coarse for close points of a widely
spread set), and `silhouette_score` expands around each point's class mean
(`class_centred_sq_distances`).
What is left is the rounding of the input itself (eps |m| per coordinate in float32: 0.004 at
|m| = 1e5, 0.03 at 1e6). Inputs are cast as the other metrics cast them (`jaxlab.metrics._common`:
float64 under jax x64, float32 otherwise); matrix products use `precision="highest"` (on GPUs the
default is TF32, with ~1e-3 relative error).

As in Wu & Varshney (2024), ARI and NMI compare k-means clusters of hidden states with task labels.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from jaxlab.errors import ConfigError
from jaxlab.metrics._common import (
    CONSTANT_RTOL,
    HIGHEST,
    as_float,
    eps,
    explicit_squared_distances,
    max_abs,
    max_abs_columns,
    pow2_at_least,
)


class KMeansResult(NamedTuple):
    """The result of `kmeans`: the kept restart's assignments and centroids, its inertia, and its seeds' inertia."""

    assignments: jax.Array  # [n] int32 cluster of each example
    centroids: jax.Array  # [k, d], in the input's coordinates
    inertia: jax.Array  # [] sum of squared distances to the assigned centroid
    init_inertia: jax.Array  # [] inertia of the k-means++ seeds of the kept restart


class Frame(NamedTuple):
    """x = origin + scale * u: u centred over examples (to rounding), max |u| <= 1."""

    u: jax.Array  # [n, d]
    origin: jax.Array  # [d]
    scale: jax.Array  # [] a power of two
    constant: jax.Array  # [] bool: x has no variation at float resolution


def centred_frame(x_ND: jax.Array) -> Frame:
    """The centred frame of x (see the module docstring).

    x is divided by a power of two >= max |x| (no overflow in the sums, exactly), and the origin is
    its mean refined by a second pass (the mean m1, then m1 plus the mean of x - m1, which removes
    the rounding error of the first sum); u = (x - origin) / scale, where the subtraction is exact
    for points near a common offset and scale is a power of two >= max |x - origin| (no underflow in
    the squares). Points compared with x (centroids) are moved by the same origin and scale, so the
    frame is the same translation for all of them. As in `jaxlab.metrics._common`, x is flagged
    constant when every column's centred values have an RMS <= CONSTANT_RTOL eps times that column's
    own max |x| (variation at the float resolution of each feature: one large constant feature does
    not make the others constant); u is kept as it is (distances stay those of the input; identical
    rows give u = 0 exactly), and only `variance_ratio` acts on the flag.
    """
    x = as_float(x_ND)
    s1 = pow2_at_least(max_abs(x))
    xs = x / s1
    m1 = jnp.mean(xs, axis=0)
    origin = m1 + jnp.mean(xs - m1, axis=0)
    u = xs - origin
    residual = u - jnp.mean(u, axis=0)  # ~0 already: the origin is within rounding of the mean
    rms_D = jnp.sqrt(jnp.mean(residual * residual, axis=0))
    constant = jnp.all(rms_D <= CONSTANT_RTOL * eps() * max_abs_columns(xs))
    s2 = pow2_at_least(max_abs(u))
    return Frame(u / s2, origin * s1, s1 * s2, constant)


def _to_frame(frame: Frame, c_KD: jax.Array) -> jax.Array:
    """Points c in the frame's coordinates, (c - origin) / scale."""
    return (as_float(c_KD) - frame.origin) / frame.scale


def _from_frame(frame: Frame, c_KD: jax.Array) -> jax.Array:
    return frame.origin + frame.scale * c_KD


def _expanded_sq(u_ND: jax.Array, v_KD: jax.Array) -> jax.Array:
    """|u|^2 + |v|^2 - 2 u.v [n, k], clipped at 0; accurate only for centred points (see `centred_frame`)."""
    d = (
        jnp.sum(u_ND * u_ND, -1)[:, None]
        + jnp.sum(v_KD * v_KD, -1)[None, :]
        - 2.0 * jnp.matmul(u_ND, v_KD.T, precision=HIGHEST)
    )
    return jnp.maximum(d, 0.0)


def squared_distances(x_ND: jax.Array, c_KD: jax.Array) -> jax.Array:
    """||x_i - c_j||^2 [n, k], by the expansion |x|^2 + |c|^2 - 2 x.c of both point sets taken in
    the centred frame of x (exact translation invariance; no cancellation of a common offset),
    clipped at 0 (the expansion can round below it)."""
    frame = centred_frame(x_ND)
    return frame.scale**2 * _expanded_sq(frame.u, _to_frame(frame, c_KD))


def kmeans_plus_plus(key: jax.Array, x_ND: jax.Array, k: int) -> jax.Array:
    """k-means++ seeds [k, d] (rows of x): the first uniform, each next one drawn with probability
    proportional to its squared distance to the nearest seed so far (uniform when all are 0).

    Distances to a seed are taken of differences ||x_i - s||^2, exact under translation.
    """
    x_ND = as_float(x_ND)
    n = x_ND.shape[0]
    u = jax.random.uniform(key, (k,))  # one draw per seed, by inverse-CDF sampling below
    first = x_ND[jnp.minimum(jnp.floor(u[0] * n).astype(jnp.int32), n - 1)]
    centroids = jnp.zeros((k, x_ND.shape[1]), x_ND.dtype).at[0].set(first)
    nearest = jnp.sum((x_ND - first) ** 2, -1)

    def body(j, carry):
        cents, near = carry
        total = jnp.sum(near)
        weights = jnp.where(total > 0, near, 1.0)
        cdf = jnp.cumsum(weights)
        idx = jnp.minimum(jnp.searchsorted(cdf, u[j] * cdf[-1], side="right"), n - 1)
        c = x_ND[idx]
        return cents.at[j].set(c), jnp.minimum(near, jnp.sum((x_ND - c) ** 2, -1))

    centroids, _ = jax.lax.fori_loop(1, k, body, (centroids, nearest))
    return centroids


def _lloyd(u_ND: jax.Array, centroids_KD: jax.Array, n_iters: int) -> jax.Array:
    """Lloyd steps on centred points (`lloyd` in the frame)."""
    k = centroids_KD.shape[0]

    def step(_, cents):
        assign = jnp.argmin(_expanded_sq(u_ND, cents), -1)
        onehot = jax.nn.one_hot(assign, k, dtype=u_ND.dtype)  # [n, k]
        counts = onehot.sum(0)
        sums = jnp.matmul(onehot.T, u_ND, precision=HIGHEST)
        return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], cents)

    return jax.lax.fori_loop(0, n_iters, step, centroids_KD)


def lloyd(x_ND: jax.Array, centroids_KD: jax.Array, n_iters: int) -> jax.Array:
    """`n_iters` Lloyd steps (assign to the nearest centroid, move each centroid to its mean).

    An empty cluster keeps its centroid, so the inertia never increases. Computed in the centred
    frame of x (see the module docstring); the centroids are returned in x's coordinates.
    """
    frame = centred_frame(x_ND)
    return _from_frame(frame, _lloyd(frame.u, _to_frame(frame, centroids_KD), n_iters))


def _inertia(u_ND: jax.Array, centroids_KD: jax.Array) -> tuple[jax.Array, jax.Array]:
    """`inertia` of centred points: assignment by the expansion, the sum of squared differences."""
    assign = jnp.argmin(_expanded_sq(u_ND, centroids_KD), -1)
    return jnp.sum((u_ND - centroids_KD[assign]) ** 2), assign.astype(jnp.int32)


def inertia(x_ND: jax.Array, centroids_KD: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sum_i min_j ||x_i - c_j||^2, assignments argmin_j ||x_i - c_j||^2), in the centred frame of x;
    the sum is of squared differences x_i - c_{a_i} (no expansion)."""
    frame = centred_frame(x_ND)
    value, assign = _inertia(frame.u, _to_frame(frame, centroids_KD))
    return frame.scale**2 * value, assign


def _check_kmeans(x_ND: jax.Array, k: int, n_iters: int, n_restarts: int) -> None:
    shape = jnp.shape(x_ND)
    if len(shape) != 2 or shape[0] < 1:
        raise ConfigError("kmeans: x", f"needs shape [n_examples >= 1, n_features], got {tuple(shape)}")
    for field, value, low in (("k", k, 1), ("n_iters", n_iters, 0), ("n_restarts", n_restarts, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < low:
            raise ConfigError(f"kmeans: {field}", f"must be an int >= {low}, got {value!r}")


@functools.partial(jax.jit, static_argnums=(2, 3, 4))
def _kmeans(key: jax.Array, x_ND: jax.Array, k: int, n_iters: int, n_restarts: int) -> KMeansResult:
    frame = centred_frame(x_ND)
    u = frame.u

    def one(key):
        seeds = kmeans_plus_plus(key, u, k)
        cents = _lloyd(u, seeds, n_iters)
        value, assign = _inertia(u, cents)
        return assign, cents, value, _inertia(u, seeds)[0]

    assign, cents, values, init_values = jax.vmap(one)(jax.random.split(key, n_restarts))
    best = jnp.argmin(values)
    s2 = frame.scale**2
    return KMeansResult(assign[best], _from_frame(frame, cents[best]), s2 * values[best], s2 * init_values[best])


def kmeans(key: jax.Array, x_ND: jax.Array, k: int, n_iters: int = 30, n_restarts: int = 4) -> KMeansResult:
    """k-means with k-means++ seeding, `n_iters` Lloyd iterations, best of `n_restarts` by inertia.

    x is a JAX or NumPy array [n, d]; k, n_iters and n_restarts are static ints (a `ConfigError`
    names a bad one). The clustering runs in the centred frame of x (see the module docstring), so
    a common offset changes neither the partition nor the inertia; the centroids are returned in x's
    coordinates. Eager calls run one compiled program per shape and options.
    """
    _check_kmeans(x_ND, k, n_iters, n_restarts)
    return _kmeans(key, x_ND, k, n_iters, n_restarts)


# -- partition comparison --------------------------------------------------------------------------
def contingency(a_N: jax.Array, b_N: jax.Array, n_a: int, n_b: int) -> jax.Array:
    """Counts [n_a, n_b]: n_ij = #{examples with a = i and b = j}."""
    chex.assert_equal_shape([a_N, b_N])
    return jax.nn.one_hot(a_N, n_a, dtype=jnp.float32).T @ jax.nn.one_hot(b_N, n_b, dtype=jnp.float32)


def _comb2(x: jax.Array) -> jax.Array:
    return x * (x - 1.0) / 2.0


def adjusted_rand_index(labels_N: jax.Array, clusters_N: jax.Array, n_labels: int, n_clusters: int) -> jax.Array:
    """ARI = (sum_ij C(n_ij, 2) - E) / (max - E) with, for row sums a_i and column sums b_j,
    E = sum_i C(a_i, 2) sum_j C(b_j, 2) / C(n, 2) and max = (sum_i C(a_i, 2) + sum_j C(b_j, 2)) / 2.

    1 for identical partitions (up to renaming), ~0 in expectation for independent ones; 1 when the
    denominator is 0 (both partitions trivial: one cluster each, or all singletons), as scikit-learn.
    """
    table = contingency(labels_N, clusters_N, n_labels, n_clusters)
    n = jnp.float32(labels_N.shape[0])
    index = jnp.sum(_comb2(table))
    sum_a = jnp.sum(_comb2(table.sum(1)))
    sum_b = jnp.sum(_comb2(table.sum(0)))
    expected = sum_a * sum_b / _comb2(n)
    maximum = 0.5 * (sum_a + sum_b)
    denom = maximum - expected
    return jnp.where(denom == 0, 1.0, (index - expected) / jnp.where(denom == 0, 1.0, denom))


def _entropy(p: jax.Array) -> jax.Array:
    return -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))


def mutual_info(labels_N: jax.Array, clusters_N: jax.Array, n_labels: int, n_clusters: int) -> jax.Array:
    """I(A; B) = sum_ij p_ij log(p_ij / (p_i p_j)) in nats, from the contingency table."""
    p = contingency(labels_N, clusters_N, n_labels, n_clusters) / labels_N.shape[0]
    outer = p.sum(1)[:, None] * p.sum(0)[None, :]
    ratio = jnp.where(p > 0, p / jnp.where(outer > 0, outer, 1.0), 1.0)
    return jnp.sum(jnp.where(p > 0, p * jnp.log(ratio), 0.0))


def normalized_mutual_info(labels_N: jax.Array, clusters_N: jax.Array, n_labels: int, n_clusters: int) -> jax.Array:
    """NMI = I(A; B) / ((H(A) + H(B)) / 2); 1 when both partitions have a single cluster."""
    p = contingency(labels_N, clusters_N, n_labels, n_clusters) / labels_N.shape[0]
    mi = mutual_info(labels_N, clusters_N, n_labels, n_clusters)
    denom = 0.5 * (_entropy(p.sum(1)) + _entropy(p.sum(0)))
    return jnp.where(denom <= 0, 1.0, jnp.clip(mi / jnp.where(denom <= 0, 1.0, denom), 0.0, 1.0))


# -- geometry of a labelling -----------------------------------------------------------------------
def class_centred_sq_distances(x_ND: jax.Array, labels_N: jax.Array, n_labels: int) -> jax.Array:
    """||x_i - x_j||^2 [n, n] by an expansion around each point's class mean, 0 on the diagonal.

    With m_c the mean of class c, v_i = x_i - m_{l_i} and delta_ab = m_a - m_b (explicit differences):

        ||x_i - x_j||^2 = |v_i|^2 + |v_j|^2 - 2 v_i.v_j + 2 v_i.delta_{l_i l_j} + 2 v_j.delta_{l_j l_i}
                          + |delta_{l_i l_j}|^2,

    exact for any m (the identity holds for every choice). Every term is of the size of a class's spread s
    or of the distance between the two classes' means, never of the points' distance from the origin or
    from the set's centre, so the rounding is a few eps of the terms: a within-class distance keeps its
    precision next to classes 1e4 spreads away (the plain expansion loses eps times the set's squared
    extent). One [n, n] matrix product (v_i.v_j), [n_labels, n_labels, d] differences of means and
    their [n, n_labels, n_labels] products with the v_i. x is only scaled by a power of two (exact):
    v_i = x_i - m_{l_i} is then the difference of nearby numbers.
    """
    chex.assert_rank(x_ND, 2)
    x = as_float(x_ND)
    scale = pow2_at_least(max_abs(x))
    x = x / scale
    means_CD, _ = _class_means_unit(x, labels_N, n_labels)
    v_ND = x - means_CD[labels_N]
    delta_CCD = means_CD[:, None, :] - means_CD[None, :, :]  # m_a - m_c
    between_CC = jnp.sum(delta_CCD * delta_CCD, -1)  # |m_a - m_c|^2
    proj_NCC = jnp.einsum("nd,acd->nac", v_ND, delta_CCD, precision=HIGHEST)  # v_i . delta_ac
    proj_NC = jnp.take_along_axis(proj_NCC, labels_N[:, None, None], axis=1)[:, 0]  # v_i . delta_{l_i c}
    sq_N = jnp.sum(v_ND * v_ND, -1)
    cross = proj_NC[:, labels_N]  # [i, j]: v_i . delta_{l_i l_j}
    d2 = (
        sq_N[:, None]
        + sq_N[None, :]
        - 2.0 * jnp.matmul(v_ND, v_ND.T, precision=HIGHEST)
        + 2.0 * cross
        + 2.0 * cross.T
        + between_CC[labels_N][:, labels_N]
    )
    d2 = jnp.maximum(d2, 0.0) * (1.0 - jnp.eye(x.shape[0], dtype=x.dtype))
    return d2 * scale**2


def pairwise_distances(x_ND: jax.Array) -> jax.Array:
    """Euclidean distances [n, n] from explicit differences of the input scaled by a power of two
    (`jaxlab.metrics._common.explicit_squared_distances`; no centring, whose subtraction would round
    each coordinate to eps times its distance from the mean): the difference of two close points is
    exact in floating point (Sterbenz), so each distance is accurate to a few eps of itself, also
    between close points of a set that spans much more (the expansion |x|^2 + |y|^2 - 2 x.y loses
    eps times the set's squared extent: within-cluster distances of clusters 1e4 apart are noise in
    float32); 0 on the diagonal."""
    chex.assert_rank(x_ND, 2)
    x = as_float(x_ND)
    scale = pow2_at_least(max_abs(x))
    return scale * jnp.sqrt(explicit_squared_distances(x / scale))


def silhouette_score(x_ND: jax.Array, labels_N: jax.Array, n_labels: int) -> jax.Array:
    """Mean over examples of s_i = (b_i - a_i) / max(a_i, b_i), where a_i is the mean distance to
    the other members of i's class and b_i the smallest mean distance to another non-empty class;
    s_i = 0 for a class of one (Rousseeuw 1987, scikit-learn's convention). NaN with < 2 classes.
    Distances by `class_centred_sq_distances`: within-class distances keep their precision however far
    the classes lie from each other and from the origin (tested with two close classes and a third 1e4
    and 1e5 spreads away, where the plain expansion was off by 0.002 and 0.11 in s).
    """
    chex.assert_rank(x_ND, 2)
    dist = jnp.sqrt(class_centred_sq_distances(x_ND, labels_N, n_labels))
    onehot = jax.nn.one_hot(labels_N, n_labels, dtype=dist.dtype)  # [n, c]
    counts = onehot.sum(0)  # [c]
    sums = jnp.matmul(dist, onehot, precision=HIGHEST)  # [n, c] sum of distances from i to class c
    own = counts[labels_N]
    a = jnp.take_along_axis(sums, labels_N[:, None], 1)[:, 0] / jnp.maximum(own - 1.0, 1.0)
    means = sums / jnp.maximum(counts, 1.0)
    other = (counts[None, :] > 0) & (jnp.arange(n_labels)[None, :] != labels_N[:, None])
    b = jnp.min(jnp.where(other, means, jnp.inf), -1)
    s = (b - a) / jnp.maximum(jnp.maximum(a, b), 1e-30)
    s = jnp.where(own > 1, s, 0.0)
    return jnp.where(jnp.sum(counts > 0) >= 2, jnp.mean(s), jnp.nan)


def _class_means_unit(u_ND: jax.Array, labels_N: jax.Array, n_labels: int) -> tuple[jax.Array, jax.Array]:
    """(class means [n_labels, d], counts [n_labels]) of points in one frame; 0 for an empty class."""
    onehot = jax.nn.one_hot(labels_N, n_labels, dtype=u_ND.dtype)
    counts = onehot.sum(0)
    return jnp.matmul(onehot.T, u_ND, precision=HIGHEST) / jnp.maximum(counts, 1.0)[:, None], counts


def variance_ratio(x_ND: jax.Array, labels_N: jax.Array, n_labels: int) -> jax.Array:
    """Between-class over within-class variance, sum_c n_c ||mu_c - mu||^2 / sum_i ||x_i - mu_{y_i}||^2.

    (The Calinski-Harabasz index without its (n - k) / (k - 1) degrees-of-freedom factor.) Invariant
    to translation and scale, so computed in the centred frame of x (the class means of uncentred
    float32 data at a large offset carry errors ~eps |offset|, which both variances would absorb).
    NaN when the points do not vary (x constant at float resolution, as `centred_frame` decides),
    where both variances are round-off and their ratio means nothing.
    """
    chex.assert_rank(x_ND, 2)
    frame = centred_frame(x_ND)
    u = frame.u
    means, counts = _class_means_unit(u, labels_N, n_labels)
    between = jnp.sum(counts * jnp.sum((means - u.mean(0)) ** 2, -1))
    within = jnp.sum((u - means[labels_N]) ** 2)
    return jnp.where(frame.constant, jnp.nan, between / jnp.maximum(within, 1e-30))


def class_means(x_ND: jax.Array, labels_N: jax.Array, n_labels: int) -> jax.Array:
    """Mean [n_labels, d] of each class (0 for an empty class), summed in the centred frame of x and
    returned in x's coordinates."""
    frame = centred_frame(x_ND)
    means, counts = _class_means_unit(frame.u, labels_N, n_labels)
    return jnp.where(counts[:, None] > 0, _from_frame(frame, means), 0.0)


__all__ = [
    "Frame",
    "KMeansResult",
    "adjusted_rand_index",
    "centred_frame",
    "class_centred_sq_distances",
    "class_means",
    "contingency",
    "inertia",
    "kmeans",
    "kmeans_plus_plus",
    "lloyd",
    "mutual_info",
    "normalized_mutual_info",
    "pairwise_distances",
    "silhouette_score",
    "squared_distances",
    "variance_ratio",
]
