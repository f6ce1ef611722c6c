"""Clustering metrics against straightforward NumPy computations, and their invariances."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import comb

from jaxlab.metrics.clustering import (
    adjusted_rand_index,
    class_means,
    kmeans,
    normalized_mutual_info,
    silhouette_score,
    variance_ratio,
)


# -- NumPy references --------------------------------------------------------------------------------
def np_contingency(a, b):
    table = np.zeros((a.max() + 1, b.max() + 1))
    for i, j in zip(a, b):
        table[i, j] += 1
    return table


def np_ari(a, b):
    t = np_contingency(a, b)
    n = len(a)
    index = comb(t, 2).sum()
    sa, sb = comb(t.sum(1), 2).sum(), comb(t.sum(0), 2).sum()
    expected = sa * sb / comb(n, 2)
    return (index - expected) / (0.5 * (sa + sb) - expected)


def np_nmi(a, b):
    p = np_contingency(a, b) / len(a)
    pa, pb = p.sum(1), p.sum(0)
    mi = sum(
        p[i, j] * np.log(p[i, j] / (pa[i] * pb[j])) for i in range(p.shape[0]) for j in range(p.shape[1]) if p[i, j] > 0
    )
    h = lambda q: -sum(v * np.log(v) for v in q if v > 0)
    return mi / (0.5 * (h(pa) + h(pb)))


def np_silhouette(x, labels):
    n = len(x)
    s = np.zeros(n)
    for i in range(n):
        dist = {}
        for j in range(n):
            if j != i:
                dist.setdefault(labels[j], []).append(np.linalg.norm(x[i] - x[j]))
        own = dist.get(labels[i], [])
        if not own:
            continue  # a class of one scores 0
        a = np.mean(own)
        b = min(np.mean(v) for c, v in dist.items() if c != labels[i])
        s[i] = (b - a) / max(a, b)
    return s.mean()


# jitted once per shape: eager dispatch of every primitive is what would make these tests slow
_ari = jax.jit(adjusted_rand_index, static_argnums=(2, 3))
_nmi = jax.jit(normalized_mutual_info, static_argnums=(2, 3))
_kmeans = jax.jit(kmeans, static_argnums=(2, 3, 4))
_silhouette = jax.jit(silhouette_score, static_argnums=2)


def ari(a, b, na=None, nb=None):
    return float(_ari(jnp.asarray(a), jnp.asarray(b), na or int(a.max()) + 1, nb or int(b.max()) + 1))


def nmi(a, b, na=None, nb=None):
    return float(_nmi(jnp.asarray(a), jnp.asarray(b), na or int(a.max()) + 1, nb or int(b.max()) + 1))


# -- ARI and NMI -------------------------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ari_nmi_match_numpy_contingency_formulas(seed):
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 5, 300)
    b = np.where(rng.random(300) < 0.6, a, rng.integers(0, 7, 300))  # partly agreeing
    assert ari(a, b) == pytest.approx(np_ari(a, b), abs=1e-5)
    assert nmi(a, b) == pytest.approx(np_nmi(a, b), abs=1e-5)
    assert 0.2 < np_ari(a, b) < 0.9  # the case is neither trivial nor degenerate
    # spare (empty) label slots change nothing
    assert ari(a, b, 9, 11) == pytest.approx(np_ari(a, b), abs=1e-5)
    assert nmi(a, b, 9, 11) == pytest.approx(np_nmi(a, b), abs=1e-5)


def test_ari_nmi_invariances_and_extremes():
    rng = np.random.default_rng(3)
    a = rng.integers(0, 6, 400)
    b = np.where(rng.random(400) < 0.5, a, rng.integers(0, 6, 400))
    perm = rng.permutation(6)
    # renaming clusters or labels, and swapping the two arguments, leave both scores unchanged
    for x, y in [(a, perm[b]), (perm[a], b), (b, a)]:
        assert ari(x, y) == pytest.approx(ari(a, b), abs=1e-6)
        assert nmi(x, y) == pytest.approx(nmi(a, b), abs=1e-6)
    assert ari(a, perm[a]) == pytest.approx(1.0, abs=1e-6)
    assert nmi(a, perm[a]) == pytest.approx(1.0, abs=1e-6)
    # independent partitions: ARI ~ 0 (its std here is ~0.003), NMI small
    many = [ari(rng.integers(0, 6, 2000), rng.integers(0, 6, 2000)) for _ in range(5)]
    assert abs(np.mean(many)) < 0.005 and max(abs(v) for v in many) < 0.015
    assert nmi(rng.integers(0, 6, 2000), rng.integers(0, 6, 2000)) < 0.02
    # degenerate partitions follow scikit-learn: both trivial -> 1
    one = np.zeros(10, int)
    assert ari(one, one) == 1.0 and nmi(one, one) == 1.0
    assert ari(np.arange(10), np.arange(10)[::-1]) == 1.0


def test_ari_is_vmappable_and_jittable():
    rng = np.random.default_rng(4)
    a = rng.integers(0, 4, (3, 100))
    b = rng.integers(0, 4, (3, 100))
    got = jax.jit(jax.vmap(lambda x, y: adjusted_rand_index(x, y, 4, 4)))(jnp.asarray(a), jnp.asarray(b))
    np.testing.assert_allclose(got, [np_ari(x, y) for x, y in zip(a, b)], atol=1e-5)


# -- silhouette and variance ratio -------------------------------------------------------------------
@pytest.mark.parametrize("seed", [0, 1])
def test_silhouette_matches_numpy_double_loop(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 4, 40)
    labels[0], labels[1] = 4, 5  # ... plus two classes of one, which score 0
    x = rng.normal(size=(40, 5)) + 2.0 * rng.normal(size=(6, 5))[labels]
    got = float(_silhouette(jnp.asarray(x), jnp.asarray(labels), 7))  # class 6 is empty
    assert got == pytest.approx(np_silhouette(x, labels), abs=1e-4)


def test_silhouette_extremes():
    rng = np.random.default_rng(5)
    labels = np.repeat(np.arange(3), 20)
    tight = 100.0 * np.eye(3)[labels] + 0.01 * rng.normal(size=(60, 3))
    assert float(_silhouette(jnp.asarray(tight), jnp.asarray(labels), 3)) > 0.99
    assert float(_silhouette(jnp.asarray(tight), jnp.asarray(rng.permutation(labels)), 3)) < 0.05
    assert np.isnan(float(_silhouette(jnp.asarray(tight), jnp.zeros(60, int), 3)))


def test_variance_ratio_and_class_means_match_numpy():
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 3, 90)
    x = rng.normal(size=(90, 4)) + rng.normal(size=(3, 4))[labels]
    mu = np.stack([x[labels == c].mean(0) for c in range(3)])
    between = sum((labels == c).sum() * np.sum((mu[c] - x.mean(0)) ** 2) for c in range(3))
    within = np.sum((x - mu[labels]) ** 2)
    got = float(variance_ratio(jnp.asarray(x), jnp.asarray(labels), 3))
    assert got == pytest.approx(between / within, rel=1e-4)
    np.testing.assert_allclose(class_means(jnp.asarray(x), jnp.asarray(labels), 4)[:3], mu, rtol=1e-5, atol=1e-6)
    # invariant to translation and to a common scale
    shifted = 3.0 * x + 7.0
    assert float(variance_ratio(jnp.asarray(shifted), jnp.asarray(labels), 3)) == pytest.approx(got, rel=1e-3)
    # identical points (e.g. the embedding of one fixed token): no variance, no ratio
    same = np.broadcast_to(rng.normal(size=4), (90, 4))
    assert np.isnan(float(variance_ratio(jnp.asarray(same), jnp.asarray(labels), 3)))


# -- k-means -----------------------------------------------------------------------------------------
def test_kmeans_recovers_separated_clusters_and_lowers_inertia():
    rng = np.random.default_rng(7)
    k = 5
    centers = 8.0 * rng.normal(size=(k, 6))
    labels = rng.integers(0, k, 300)
    x = centers[labels] + rng.normal(size=(300, 6))
    res = _kmeans(jax.random.key(0), jnp.asarray(x), k, 20, 4)
    assert ari(labels, np.asarray(res.assignments)) == pytest.approx(1.0)
    assert float(res.inertia) <= float(res.init_inertia) * (1 + 1e-5)
    # the inertia is the sum of squared distances to the assigned centroid
    c = np.asarray(res.centroids)
    a = np.asarray(res.assignments)
    np.testing.assert_allclose(float(res.inertia), np.sum((x - c[a]) ** 2), rtol=1e-4)
    # each centroid is the mean of its members (a Lloyd fixed point)
    for j in range(k):
        np.testing.assert_allclose(c[j], x[a == j].mean(0), rtol=1e-4, atol=1e-4)


def test_kmeans_restarts_keep_the_best_and_vmap():
    """Harder data (overlapping clusters): more restarts never end at a higher inertia."""
    rng = np.random.default_rng(8)
    centers, labels = 2.0 * rng.normal(size=(4, 6, 3)), rng.integers(0, 6, (4, 120))
    x = jnp.asarray(centers[np.arange(4)[:, None], labels] + rng.normal(size=(4, 120, 3)))
    one = jax.jit(jax.vmap(lambda v: kmeans(jax.random.key(1), v, 6, n_iters=15, n_restarts=1).inertia))(x)
    many = jax.jit(jax.vmap(lambda v: kmeans(jax.random.key(1), v, 6, n_iters=15, n_restarts=6).inertia))(x)
    assert one.shape == (4,) and np.all(np.asarray(many) <= np.asarray(one) * (1 + 1e-5))
    # against a brute-force optimum on tiny data: 8 points, 2 clusters, every partition tried
    y = rng.normal(size=(8, 2))
    best = min(
        sum(np.sum((y[m] - y[m].mean(0)) ** 2) for m in (np.array(s, bool), ~np.array(s, bool)) if m.any())
        for s in itertools.product([0, 1], repeat=8)
    )
    got = float(_kmeans(jax.random.key(2), jnp.asarray(y), 2, 30, 8).inertia)
    assert got == pytest.approx(best, rel=1e-4)


def test_kmeans_handles_duplicate_points():
    x = jnp.asarray(np.repeat(np.eye(2), 10, axis=0))  # 2 distinct points, k = 3
    res = _kmeans(jax.random.key(3), x, 3, 5, 2)
    assert float(res.inertia) == pytest.approx(0.0, abs=1e-6)
    assert np.all(np.isfinite(np.asarray(res.centroids)))
