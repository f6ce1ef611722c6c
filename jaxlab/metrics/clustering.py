"""Clustering of representations: k-means and the scores of a partition against labels.

All functions are pure, jit- and vmap-compatible (no Python branches on values); numbers of
clusters or classes are static Python ints, labels are int arrays in [0, n). Representations are
x [n_examples, n_features].

- `kmeans`: Lloyd's algorithm from k-means++ seeds (Arthur & Vassilvitskii 2007), a fixed number
  of iterations, several restarts, the restart of lowest inertia sum_i ||x_i - c_{a_i}||^2 kept.
- `adjusted_rand_index` (Hubert & Arabie 1985), `normalized_mutual_info` (arithmetic-mean
  normalization, as scikit-learn's default), from the contingency table of two partitions.
- `silhouette_score` (Rousseeuw 1987) of a labelling, Euclidean distances.
- `variance_ratio`: between-class over within-class variance.

As in Wu & Varshney (2024), ARI and NMI compare k-means clusters of hidden states with task labels.
"""

from __future__ import annotations

from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp


class KMeansResult(NamedTuple):
    assignments: jax.Array  # [n] int32 cluster of each example
    centroids: jax.Array  # [k, d]
    inertia: jax.Array  # [] sum of squared distances to the assigned centroid
    init_inertia: jax.Array  # [] inertia of the k-means++ seeds of the kept restart


def squared_distances(x_ND: jax.Array, c_KD: jax.Array) -> jax.Array:
    """||x_i - c_j||^2 [n, k], clipped at 0 (the expansion can round below it)."""
    d = jnp.sum(x_ND**2, -1)[:, None] + jnp.sum(c_KD**2, -1)[None, :] - 2.0 * x_ND @ c_KD.T
    return jnp.maximum(d, 0.0)


def kmeans_plus_plus(key: jax.Array, x_ND: jax.Array, k: int) -> jax.Array:
    """k-means++ seeds [k, d]: the first uniform, each next one drawn with probability
    proportional to its squared distance to the nearest seed so far (uniform when all are 0)."""
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


def lloyd(x_ND: jax.Array, centroids_KD: jax.Array, n_iters: int) -> jax.Array:
    """`n_iters` Lloyd steps (assign to the nearest centroid, move each centroid to its mean).

    An empty cluster keeps its centroid, so the inertia never increases.
    """
    k = centroids_KD.shape[0]

    def step(_, cents):
        assign = jnp.argmin(squared_distances(x_ND, cents), -1)
        onehot = jax.nn.one_hot(assign, k, dtype=x_ND.dtype)  # [n, k]
        counts = onehot.sum(0)
        sums = onehot.T @ x_ND
        return jnp.where(counts[:, None] > 0, sums / jnp.maximum(counts, 1.0)[:, None], cents)

    return jax.lax.fori_loop(0, n_iters, step, centroids_KD)


def inertia(x_ND: jax.Array, centroids_KD: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(sum of squared distances to the nearest centroid, assignments)."""
    d = squared_distances(x_ND, centroids_KD)
    assign = jnp.argmin(d, -1)
    return jnp.sum(jnp.min(d, -1)), assign.astype(jnp.int32)


def kmeans(key: jax.Array, x_ND: jax.Array, k: int, n_iters: int = 30, n_restarts: int = 4) -> KMeansResult:
    """k-means with k-means++ seeding, `n_iters` Lloyd iterations, best of `n_restarts` by inertia."""
    chex.assert_rank(x_ND, 2)
    x = x_ND.astype(jnp.float32)

    def one(key):
        seeds = kmeans_plus_plus(key, x, k)
        cents = lloyd(x, seeds, n_iters)
        value, assign = inertia(x, cents)
        return assign, cents, value, inertia(x, seeds)[0]

    assign, cents, values, init_values = jax.vmap(one)(jax.random.split(key, n_restarts))
    best = jnp.argmin(values)
    return KMeansResult(assign[best], cents[best], values[best], init_values[best])


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
def pairwise_distances(x_ND: jax.Array) -> jax.Array:
    """Euclidean distances [n, n], computed on centred data (less cancellation in float32)."""
    x = x_ND.astype(jnp.float32)
    x = x - x.mean(0)
    d2 = squared_distances(x, x)
    d2 = d2 * (1.0 - jnp.eye(x.shape[0], dtype=d2.dtype))
    return jnp.sqrt(d2)


def silhouette_score(x_ND: jax.Array, labels_N: jax.Array, n_labels: int) -> jax.Array:
    """Mean over examples of s_i = (b_i - a_i) / max(a_i, b_i), where a_i is the mean distance to
    the other members of i's class and b_i the smallest mean distance to another non-empty class;
    s_i = 0 for a class of one (Rousseeuw 1987, scikit-learn's convention). NaN with < 2 classes.
    """
    chex.assert_rank(x_ND, 2)
    dist = pairwise_distances(x_ND)
    onehot = jax.nn.one_hot(labels_N, n_labels, dtype=jnp.float32)  # [n, c]
    counts = onehot.sum(0)  # [c]
    sums = dist @ onehot  # [n, c] sum of distances from i to class c
    own = counts[labels_N]
    a = jnp.take_along_axis(sums, labels_N[:, None], 1)[:, 0] / jnp.maximum(own - 1.0, 1.0)
    means = sums / jnp.maximum(counts, 1.0)
    other = (counts[None, :] > 0) & (jnp.arange(n_labels)[None, :] != labels_N[:, None])
    b = jnp.min(jnp.where(other, means, jnp.inf), -1)
    s = (b - a) / jnp.maximum(jnp.maximum(a, b), 1e-30)
    s = jnp.where(own > 1, s, 0.0)
    return jnp.where(jnp.sum(counts > 0) >= 2, jnp.mean(s), jnp.nan)


def variance_ratio(x_ND: jax.Array, labels_N: jax.Array, n_labels: int) -> jax.Array:
    """Between-class over within-class variance, sum_c n_c ||mu_c - mu||^2 / sum_i ||x_i - mu_{y_i}||^2.

    (The Calinski-Harabasz index without its (n - k) / (k - 1) degrees-of-freedom factor.) NaN when
    the points do not vary (total variance below 1e-10 of the mean squared norm: float32 round-off),
    where both variances are round-off and their ratio means nothing.
    """
    chex.assert_rank(x_ND, 2)
    x = x_ND.astype(jnp.float32)
    onehot = jax.nn.one_hot(labels_N, n_labels, dtype=jnp.float32)
    counts = onehot.sum(0)
    means = (onehot.T @ x) / jnp.maximum(counts, 1.0)[:, None]
    between = jnp.sum(counts * jnp.sum((means - x.mean(0)) ** 2, -1))
    within = jnp.sum((x - means[labels_N]) ** 2)
    total = jnp.sum((x - x.mean(0)) ** 2)
    varies = total > 1e-10 * jnp.sum(x**2)
    return jnp.where(varies, between / jnp.maximum(within, 1e-30), jnp.nan)


def class_means(x_ND: jax.Array, labels_N: jax.Array, n_labels: int) -> jax.Array:
    """Mean [n_labels, d] of each class (0 for an empty class)."""
    onehot = jax.nn.one_hot(labels_N, n_labels, dtype=jnp.float32)
    return (onehot.T @ x_ND.astype(jnp.float32)) / jnp.maximum(onehot.sum(0), 1.0)[:, None]


__all__ = [
    "KMeansResult",
    "adjusted_rand_index",
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
