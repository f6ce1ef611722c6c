"""Clustering metrics against straightforward NumPy computations, and their invariances."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import comb

from jaxlab.errors import ConfigError
from jaxlab.metrics.clustering import (
    adjusted_rand_index,
    class_centred_sq_distances,
    class_means,
    inertia,
    kmeans,
    kmeans_plus_plus,
    lloyd,
    normalized_mutual_info,
    pairwise_distances,
    silhouette_score,
    squared_distances,
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
    assert float(variance_ratio(jnp.asarray(shifted), jnp.asarray(labels), 3)) == pytest.approx(got, rel=1e-5)  # 1.2e-7
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


# -- far from the origin: float64 NumPy references -----------------------------------------------
# Hidden states often share a large common offset. The metrics work in float32 (no jax x64 here),
# so the reference is computed in float64 from the float32-rounded input (`f32`): what is compared
# is the algorithm, not the rounding of the input itself (eps * offset per coordinate). Centroids and
# class means come back in the input's coordinates, rounded to float32: they are compared to within
# one float32 spacing at the data's magnitude. The previous code got the inertia wrong from 1e3 and
# the partition from 1e4. k-means holds to 1e7, where the float32 input is rounded to integers (the
# clusters' noise is 1); there the variance ratio is NaN by the metrics' rule for inputs that vary
# only at float resolution (RMS <= 4 eps max |x|, `jaxlab.metrics._common`).
OFFSETS = (0.0, 1e3, 1e4, 1e5, 1e6)


def f32(x):
    return np.asarray(x, np.float32).astype(np.float64)


def spacing(x):
    """One float32 spacing at the magnitude of x."""
    return float(np.spacing(np.float32(np.abs(x).max())))


def np_lloyd(x, c, n_iters):
    c = c.copy()
    for _ in range(n_iters):
        a = ((x[:, None] - c[None]) ** 2).sum(-1).argmin(1)
        for j in range(len(c)):
            if (a == j).any():  # an empty cluster keeps its centroid
                c[j] = x[a == j].mean(0)
    return c


def np_inertia(x, c):
    d2 = ((x[:, None] - c[None]) ** 2).sum(-1)
    a = d2.argmin(1)
    return d2[np.arange(len(x)), a].sum(), a


def np_partition_inertia(x, a):
    return sum(((x[a == j] - x[a == j].mean(0)) ** 2).sum() for j in np.unique(a))


def np_variance_ratio(x, labels):
    classes = np.unique(labels)
    mu = {c: x[labels == c].mean(0) for c in classes}
    between = sum((labels == c).sum() * np.sum((mu[c] - x.mean(0)) ** 2) for c in classes)
    return between / sum(np.sum((x[labels == c] - mu[c]) ** 2) for c in classes)


def blobs(seed, n=120, d=5, k=4, spread=10.0):
    """Well-separated Gaussian clusters (unit noise) and a direction for the offset (entries 0.5 to 1.5)."""
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    x = spread * rng.normal(size=(k, d))[labels] + rng.normal(size=(n, d))
    return x, labels, 0.5 + rng.random(d)


@pytest.mark.parametrize("offset", (*OFFSETS, 1e7))
def test_lloyd_and_inertia_match_float64_lloyd_far_from_the_origin(offset):
    x0, _, direction = blobs(10)
    x = f32(x0 + offset * direction)
    seeds = x[np.random.default_rng(11).choice(len(x), 4, replace=False)]  # the same initial centroids
    ref = np_lloyd(x, seeds, 8)
    got = np.asarray(lloyd(jnp.asarray(x), jnp.asarray(seeds), 8), np.float64)
    np.testing.assert_allclose(got, ref, rtol=0, atol=2 * spacing(x) + 1e-4)
    c = f32(ref)  # what a float32 caller holds
    value, assign = inertia(jnp.asarray(x), jnp.asarray(c))
    ref_value, ref_assign = np_inertia(x, c)
    assert float(value) == pytest.approx(ref_value, rel=1e-5)
    np.testing.assert_array_equal(np.asarray(assign), ref_assign)
    dist = squared_distances(jnp.asarray(x), jnp.asarray(c))
    np.testing.assert_allclose(dist, ((x[:, None] - c[None]) ** 2).sum(-1), rtol=1e-4, atol=1e-3)


@pytest.mark.parametrize("offset", (*OFFSETS, 1e7))
def test_kmeans_far_from_the_origin_matches_float64(offset):
    x0, labels, direction = blobs(12)
    x = f32(x0 + offset * direction)
    res = _kmeans(jax.random.key(0), jnp.asarray(x), 4, 20, 4)
    a = np.asarray(res.assignments)
    assert ari(labels, a) == pytest.approx(1.0)  # the planted partition
    # inertia: the float64 sum of squares of that partition (which here is the optimum)
    assert float(res.inertia) == pytest.approx(np_partition_inertia(x, a), rel=1e-5)
    assert float(res.inertia) <= float(res.init_inertia) * (1 + 1e-5)
    # centroids: the members' means, in the input's coordinates
    means = np.stack([x[a == j].mean(0) for j in range(4)])
    np.testing.assert_allclose(np.asarray(res.centroids, np.float64), means, rtol=0, atol=2 * spacing(x) + 1e-4)


@pytest.mark.parametrize("offset", OFFSETS)
def test_variance_ratio_silhouette_class_means_far_from_the_origin(offset):
    x0, labels, direction = blobs(13, n=60, k=3, spread=2.0)  # overlapping classes: a ratio ~ 5
    x = f32(x0 + offset * direction)
    xj, lj = jnp.asarray(x), jnp.asarray(labels)
    assert float(variance_ratio(xj, lj, 3)) == pytest.approx(np_variance_ratio(x, labels), rel=2e-6)
    assert float(_silhouette(xj, lj, 3)) == pytest.approx(np_silhouette(x, labels), abs=2e-6)
    mu = np.stack([x[labels == c].mean(0) for c in range(3)])
    np.testing.assert_allclose(np.asarray(class_means(xj, lj, 4), np.float64)[:3], mu, rtol=0, atol=spacing(x) + 1e-5)
    assert np.all(np.asarray(class_means(xj, lj, 4))[3] == 0.0)  # an empty class
    dist = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    np.testing.assert_allclose(pairwise_distances(xj), dist, rtol=0, atol=1e-4 * dist.max())


@pytest.mark.parametrize("separation", (1e4, 1e5))
def test_distances_within_far_apart_clusters(separation):
    """Two classes 4 apart and a third `separation` away (unit spread, 5e3 from the origin): pairwise_distances
    and the class-centred squared distances keep every distance to float32 resolution of itself (the plain
    expansion loses eps separation^2: within-class distances of ~4 were off by ~5 at 1e4), and the
    silhouette, which the close pair's within- and between-class distances decide, matches float64 to 1e-5
    (the expansion in the centred frame was off by 0.002 at 1e4 and 0.11 at 1e5). The reference is float64 on the float32-rounded
    input."""
    rng = np.random.default_rng(7)
    d, m = 6, 16
    direction = rng.normal(size=d)
    direction /= np.linalg.norm(direction)
    offsets = np.stack([np.zeros(d), 4.0 * rng.normal(size=d) / np.sqrt(d), separation * direction])
    labels = np.repeat(np.arange(3), m)
    x = f32(offsets[labels] + rng.normal(size=(3 * m, d)) + 5e3)
    n = len(x)
    dist = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    off = ~np.eye(n, dtype=bool)
    within = (labels[:, None] == labels[None]) & off
    assert (
        dist[within].max() < 10
        and dist[(labels[:, None] != labels[None]) & (labels[:, None] + labels[None] > 1)].min() > separation / 2
    )
    xj, lj = jnp.asarray(x, jnp.float32), jnp.asarray(labels)
    got = np.asarray(pairwise_distances(xj), np.float64)
    np.testing.assert_allclose(got[off], dist[off], rtol=1e-5)
    sq = np.asarray(class_centred_sq_distances(xj, lj, 3), np.float64)
    np.testing.assert_allclose(sq[off], dist[off] ** 2, rtol=1e-5)
    assert np.all(np.diag(sq) == 0.0)
    assert float(_silhouette(xj, lj, 3)) == pytest.approx(np_silhouette(x, labels), abs=1e-5)


def test_translation_invariance_of_partition_inertia_and_scores():
    """The same data shifted by 1e3 .. 1e6 in a random direction: the same partition (up to renaming),
    inertia, variance ratio and silhouette. The data lie on a grid of 1/8 and the shifts are integers
    below 2^21, so the shifted data are exact in float32: only the algorithm can break invariance."""
    x0, labels, _ = blobs(14, n=90, k=3, spread=1.0)  # overlapping clusters: k-means is not trivial
    x0 = np.round(8 * x0) / 8
    rng = np.random.default_rng(15)
    base = _kmeans(jax.random.key(1), jnp.asarray(x0), 3, 20, 4)
    base_vr = float(variance_ratio(jnp.asarray(x0), jnp.asarray(labels), 3))
    base_sil = float(_silhouette(jnp.asarray(x0), jnp.asarray(labels), 3))
    assert 0.5 < ari(labels, np.asarray(base.assignments)) < 1.0  # the case is not trivial
    for offset in (1e3, 1e4, 1e5, 1e6):
        shift = np.round(offset * rng.uniform(-1.5, 1.5, size=x0.shape[1]))
        x = x0 + shift
        assert np.array_equal(f32(x), x)
        res = _kmeans(jax.random.key(1), jnp.asarray(x), 3, 20, 4)
        assert ari(np.asarray(base.assignments), np.asarray(res.assignments)) == pytest.approx(1.0)
        assert float(res.inertia) == pytest.approx(float(base.inertia), rel=1e-5)
        assert float(variance_ratio(jnp.asarray(x), jnp.asarray(labels), 3)) == pytest.approx(base_vr, rel=1e-5)
        assert float(_silhouette(jnp.asarray(x), jnp.asarray(labels), 3)) == pytest.approx(base_sil, abs=1e-5)
        # centroids move with the data (to within their float32 rounding at the offset)
        a, b = np.asarray(res.assignments), np.asarray(base.assignments)
        renamed = np.zeros_like(np.asarray(base.centroids, np.float64))
        renamed[[b[a == j][0] for j in range(3)]] = np.asarray(res.centroids, np.float64) - shift
        np.testing.assert_allclose(renamed, base.centroids, rtol=0, atol=spacing(x) + 1e-5)


def test_constant_features_change_nothing():
    """Dead units (a feature equal for every example, large or 0) add no distance and no variance."""
    x0, labels, _ = blobs(16, n=80, d=4, k=3, spread=3.0)
    extra = np.broadcast_to(np.array([1e5, -3e4, 0.0, 7.0]), (80, 4))
    x = np.concatenate([x0, extra], 1)
    plain = _kmeans(jax.random.key(2), jnp.asarray(x0), 3, 20, 4)
    wide = _kmeans(jax.random.key(2), jnp.asarray(x), 3, 20, 4)
    assert ari(np.asarray(plain.assignments), np.asarray(wide.assignments)) == pytest.approx(1.0)
    assert float(wide.inertia) == pytest.approx(float(plain.inertia), rel=1e-5)
    np.testing.assert_allclose(np.asarray(wide.centroids)[:, 4:], np.asarray(extra[:3]), rtol=1e-7)
    xj, lj = jnp.asarray(x), jnp.asarray(labels)
    assert float(variance_ratio(xj, lj, 3)) == pytest.approx(np_variance_ratio(x0, labels), rel=2e-6)
    assert float(_silhouette(xj, lj, 3)) == pytest.approx(np_silhouette(x0, labels), abs=2e-6)
    # one constant feature far larger than the others (1e8: the rest is below its float resolution) is still
    # one feature: the others vary, so the ratio is theirs (a whole-matrix flag called this input constant)
    huge = np.concatenate([x0, np.full((80, 1), 1e8)], 1)
    assert float(variance_ratio(jnp.asarray(huge), lj, 3)) == pytest.approx(np_variance_ratio(x0, labels), rel=2e-6)
    # every feature constant (at a large offset): no variance ratio; k-means finds one point
    same = np.broadcast_to(1e5 + np.arange(6.0), (20, 6))
    assert np.isnan(float(variance_ratio(jnp.asarray(same), jnp.asarray(labels[:20]), 3)))
    res = _kmeans(jax.random.key(3), jnp.asarray(same), 2, 5, 2)
    assert float(res.inertia) == 0.0
    np.testing.assert_allclose(res.centroids, same[:2], rtol=1e-7)


@pytest.mark.parametrize("offset", [0.0, 1e4, 1e5])
def test_kmeans_with_fewer_examples_than_features_finds_the_optimum(offset):
    """n <= d: against every partition of 7 points in 12 dimensions into 3 clusters (and of 6 into 2)."""
    rng = np.random.default_rng(17)
    for n, d, k in [(7, 12, 3), (6, 6, 2)]:
        x = f32(rng.normal(size=(n, d)) + offset * (0.5 + rng.random(d)))
        best = min(np_partition_inertia(x, np.array(a)) for a in itertools.product(range(k), repeat=n))
        got = _kmeans(jax.random.key(4), jnp.asarray(x), k, 20, 8)
        assert float(got.inertia) == pytest.approx(best, rel=1e-4)
        assert np_partition_inertia(x, np.asarray(got.assignments)) == pytest.approx(best, rel=1e-4)


def test_numpy_input_and_bad_options():
    """NumPy arrays (float64 or float32) are accepted eagerly and give what JAX arrays give."""
    x, labels, _ = blobs(18, n=50, k=3)
    key = jax.random.key(5)
    for arr in (x, x.astype(np.float32)):
        got = kmeans(key, arr, 3, 10, 2)
        want = kmeans(key, jnp.asarray(arr, jnp.float32), 3, 10, 2)
        np.testing.assert_array_equal(got.assignments, want.assignments)
        np.testing.assert_allclose(got.centroids, want.centroids, rtol=1e-6)
        assert float(got.inertia) == pytest.approx(float(want.inertia), rel=1e-6)
    seeds = np.asarray(kmeans_plus_plus(key, x, 3))
    assert all(np.any(np.all(np.isclose(x, s, rtol=1e-6), 1)) for s in seeds)  # seeds are examples
    np.testing.assert_allclose(lloyd(x, seeds, 5), np_lloyd(f32(x), f32(seeds), 5), rtol=1e-5, atol=1e-5)
    assert float(inertia(x, seeds)[0]) == pytest.approx(np_inertia(f32(x), f32(seeds))[0], rel=1e-5)
    assert float(variance_ratio(x, labels, 3)) == pytest.approx(np_variance_ratio(x, labels), rel=1e-5)
    assert float(silhouette_score(x, labels, 3)) == pytest.approx(np_silhouette(x, labels), abs=1e-5)
    np.testing.assert_allclose(class_means(x, labels, 3), [x[labels == c].mean(0) for c in range(3)], rtol=1e-5)
    # more clusters than distinct points: inertia 0, finite centroids
    tiny = kmeans(key, np.array([[1.0, 2.0], [3.0, 4.0]]), 3, 5, 2)
    assert float(tiny.inertia) == 0.0 and np.all(np.isfinite(np.asarray(tiny.centroids)))
    for kwargs, field in [
        ({"k": 0}, "k"),
        ({"k": 2.0}, "k"),
        ({"k": 2, "n_iters": -1}, "n_iters"),
        ({"k": 2, "n_restarts": 0}, "n_restarts"),
    ]:
        with pytest.raises(ConfigError, match=f"kmeans: {field}"):
            kmeans(key, x, **kwargs)
    for bad in (x[0], x[:0]):
        with pytest.raises(ConfigError, match="kmeans: x"):
            kmeans(key, bad, 2)
