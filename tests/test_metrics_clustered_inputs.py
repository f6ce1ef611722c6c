"""Distance-based metrics (mutual kNN, RSA) on tight clusters far from the origin, against float64 NumPy.

Within a cluster of spread s around a centre c the squared distances are ~s^2 while
||x_i||^2 + ||x_j||^2 ~ |c|^2: the Gram expansion loses them in float32 once s / |c| < ~1e-3, and
1 - cos(x_i, x_j) ~ (angle)^2 / 2 is lost below an angle of ~1e-4. The references here use explicit
differences in float64 on what float32 holds of the data.
"""

import jax
import numpy as np
import pytest
import scipy.stats
from similarity_reference import ref_rbf_cka

from jaxlab.metrics import mutual_knn, rbf_cka, reset_warning_counts, rsa, warning_counts
from jaxlab.metrics.knn import explicit_squared_distances

N, D, K = 60, 16, 5


def clusters(ratio, seed):
    """Two clusters of N / 2 points each, within-cluster spread `ratio` times the centre norm; x and y independent."""
    rng = np.random.default_rng(seed)
    lab = np.arange(N) % 2
    cx, cy = rng.normal(size=(2, D)), rng.normal(size=(2, D))
    x = np.float32(cx[lab] + ratio * rng.normal(size=(N, D)))
    y = np.float32(cy[lab] + ratio * rng.normal(size=(N, D)))
    return x, y


def np_sq_dist(a):
    a = np.asarray(a, np.float64)
    return np.sum((a[:, None, :] - a[None, :, :]) ** 2, axis=-1)


def np_mutual_knn(x, y, k, similarity):
    def knn(a):
        a = np.asarray(a, np.float64)
        if similarity == "cosine":
            a = a / np.linalg.norm(a, axis=1, keepdims=True)
        d2 = np_sq_dist(a)
        np.fill_diagonal(d2, np.inf)
        return np.argsort(d2, axis=1, kind="stable")[:, :k]

    kx, ky = knn(x), knn(y)
    return sum(len(set(a) & set(b)) for a, b in zip(kx, ky)) / (len(kx) * k)


def np_rdm(a, dissimilarity):
    a = np.asarray(a, np.float64)
    iu = np.triu_indices(len(a), 1)
    if dissimilarity == "euclidean":
        return np.sqrt(np_sq_dist(a)[iu])
    return (1.0 - np.corrcoef(a))[iu]


def np_rsa(x, y, method, dissimilarity):
    a, b = np_rdm(x, dissimilarity), np_rdm(y, dissimilarity)
    if method == "spearman":
        a, b = scipy.stats.rankdata(a), scipy.stats.rankdata(b)
    return np.corrcoef(a, b)[0, 1]


@pytest.mark.parametrize("ratio", [1e-3, 3e-4])
def test_mutual_knn_euclidean_on_tight_clusters(ratio):
    x, y = clusters(ratio, seed=1)
    got = float(mutual_knn(x, y, k=K, similarity="euclidean"))
    ref = np_mutual_knn(x, y, K, "euclidean")
    assert ref < 0.3  # independent within-cluster structure: near chance, k / (n / 2 - 1) ~ 0.17
    assert abs(got - ref) < 1e-6, (got, ref)  # one neighbour differing would be 1 / (n k) = 3e-3


def test_mutual_knn_cosine_on_tight_angular_clusters():
    rng = np.random.default_rng(0)
    lab = np.arange(N) % 2
    centres = 100.0 * rng.normal(size=(2, 8))
    x = np.float32(centres[lab] + 0.01 * rng.normal(size=(N, 8)))  # angular spread ~1e-4
    y = np.float32(x + 0.001 * rng.normal(size=(N, 8)))  # nearly the same representation
    got = float(mutual_knn(x, y, k=K))
    ref = np_mutual_knn(x, y, K, "cosine")
    assert ref > 0.8
    assert abs(got - ref) < 1e-6, (got, ref)
    # the same through angles spread ~1e-4 around a zero-mean direction pair: independent structure
    x, y = clusters(1e-4, seed=2)
    assert abs(float(mutual_knn(x, y, k=K)) - np_mutual_knn(x, y, K, "cosine")) < 1e-6


@pytest.mark.parametrize("ratio", [1e-3, 3e-4])
def test_rsa_spearman_euclidean_on_tight_clusters(ratio):
    """Spearman: the ranks of within-cluster distances count (Pearson is ~1 from the two distance levels alone)."""
    x, y = clusters(ratio, seed=1)
    got = float(rsa(x, y, method="spearman", dissimilarity="euclidean"))
    ref = np_rsa(x, y, "spearman", "euclidean")
    assert abs(got - ref) < 1e-4, (got, ref)  # measured 1e-6 and 3e-6 (old code: 1e-2 and 0.106)


def test_explicit_squared_distances_in_blocks_match_float64():
    x, _ = clusters(1e-3, seed=3)
    x = x[:10, :4]  # 10 rows, 4 features
    ref = np_sq_dist(x)
    one_block = np.asarray(explicit_squared_distances(x))
    np.testing.assert_allclose(one_block, ref, rtol=1e-5, atol=0)  # measured 1.3e-7
    for block_floats in (40, 120):  # 1 row per block; 3 rows per block with a remainder of 1
        np.testing.assert_array_equal(np.asarray(explicit_squared_distances(x, block_floats)), one_block)


def test_correlation_rsa_is_invariant_to_rescaling_single_examples():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(30, 12))
    y = x @ rng.normal(size=(12, 10)) + rng.normal(size=(30, 10))
    scaled = x.copy()
    scaled[:5] *= 1e-6  # the correlation RDM does not change
    ref = np_rsa(x, y, "pearson", "correlation")
    reset_warning_counts()
    for method in ("pearson", "spearman"):
        base = float(rsa(np.float32(x), np.float32(y), method=method))
        got = float(rsa(np.float32(scaled), np.float32(y), method=method))
        assert abs(got - base) < 1e-6, (method, got, base)
    assert abs(float(rsa(np.float32(scaled), np.float32(y))) - ref) < 1e-6  # measured 4e-8 (old code: 0.13)
    assert warning_counts() == {}
    # a truly flat example is still one
    flat = np.float32(x)
    flat[3] = 1e-6
    with pytest.warns(UserWarning, match="constant_example"):
        rsa(flat, np.float32(y))
    assert warning_counts() == {"rsa: constant_example": 1}


def test_mutual_knn_stays_in_unit_interval():
    for n in (10, 24):  # the old mean of per-example fractions gave 1.0000001 at (10, 5), (10, 7), (24, 3), (24, 7)
        a = np.float32(np.random.default_rng(n).normal(size=(n, 4)))
        for k in (3, 5, 7):
            for similarity in ("cosine", "euclidean"):
                assert float(mutual_knn(a, a, k=k, similarity=similarity)) == 1.0, (n, k, similarity)
    x, y = clusters(3e-4, seed=1)
    tight = np.float32(np.ones((N, D)) + 1e-6 * np.random.default_rng(5).normal(size=(N, D)))
    for a, b in [(x, y), (x, x), (tight, tight[::-1])]:
        for similarity in ("cosine", "euclidean"):
            v = float(mutual_knn(a, b, k=K, similarity=similarity))
            assert 0.0 <= v <= 1.0, (similarity, v)


def test_float64_under_x64():
    """Spread 1e-7 of the centre: float32 cannot hold it, float64 explicit differences can (the expansion cannot)."""
    rng = np.random.default_rng(4)
    lab = np.arange(N) % 2
    e = rng.normal(size=(N, D))
    x = rng.normal(size=(2, D))[lab] + 1e-7 * e
    y = rng.normal(size=(2, D))[lab] + 1e-7 * (e[:, ::-1] + 0.3 * rng.normal(size=(N, D)))  # related structure
    with jax.enable_x64(True):
        got = float(mutual_knn(x, y, k=K, similarity="euclidean"))
        got_rsa = float(rsa(x, y, method="spearman", dissimilarity="euclidean"))
    ref = np_mutual_knn(x, y, K, "euclidean")
    assert 0.3 < ref < 0.99
    assert abs(got - ref) < 1e-12, (got, ref)
    assert abs(got_rsa - np_rsa(x, y, "spearman", "euclidean")) < 1e-10


@pytest.mark.parametrize("ratio", [1e-3, 3e-4])
def test_rbf_cka_on_many_tight_pairs_against_float64(ratio):
    """Pairs of near-duplicate points (spread `ratio` of their centre): the bandwidth sits at the pairs' own
    scale only if their distances survive, which the Gram expansion does not (float32)."""
    rng = np.random.default_rng(7)
    centres_x, centres_y = rng.normal(size=(2, N // 2, D))
    pair = np.repeat(np.arange(N // 2), 2)
    x = np.float32(centres_x[pair] + ratio * rng.normal(size=(N, D)))
    y = np.float32(centres_y[pair] + ratio * rng.normal(size=(N, D)))
    for threshold in (1.0, 0.01):
        want = ref_rbf_cka(np.float64(x), np.float64(y), threshold=threshold)
        got = float(rbf_cka(jax.numpy.asarray(x), jax.numpy.asarray(y), threshold=threshold))
        assert got == pytest.approx(want, abs=1e-4), (threshold, got, want)
