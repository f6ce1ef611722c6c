"""`pairwise`: all pairs of stacks, against per-pair NumPy float64 references; blocking, widths, symmetry, warnings."""

import functools

import numpy as np
import pytest
from similarity_reference import ref_linear_cka, ref_procrustes, ref_pwcca, ref_rbf_cka, ref_rsa

from jaxlab.errors import ConfigError
from jaxlab.metrics import (
    DegenerateInputWarning,
    linear_cka,
    mutual_knn,
    pairwise,
    procrustes_distance,
    pwcca,
    rbf_cka,
    reset_warning_counts,
    rsa,
    svcca,
    warning_counts,
)
from jaxlab.metrics.pairwise import tile_size

TOL = 1e-4


def stack(shape, seed=0):
    """Representations that share a signal, so the matrix has structure: base @ mixing + noise."""
    rng = np.random.default_rng(seed)
    *lead, n, d = shape
    base = rng.normal(size=(n, 4))
    reps = base @ rng.normal(size=(*lead, 4, d)) + rng.uniform(0.3, 2.0, size=(*lead, 1, 1)) * rng.normal(size=shape)
    return reps.astype(np.float32)


def ref_matrix(ref, xs, ys):
    return np.array([[ref(np.float64(a), np.float64(b)) for b in ys] for a in xs])


def test_linear_cka_fast_path_matches_reference_with_leading_shapes_and_tiles():
    xs = stack((3, 2, 40, 6))  # runs x layers: n = 40 <= 2 d^2, the Gram-of-Grams path
    got = np.asarray(pairwise(linear_cka, xs))
    assert got.shape == (3, 2, 3, 2)
    flat = xs.reshape(6, 40, 6)
    want = ref_matrix(ref_linear_cka, flat, flat)
    np.testing.assert_allclose(got.reshape(6, 6), want, atol=TOL)
    off = want[~np.eye(6, dtype=bool)]
    assert 0.05 < off.min() < off.max() < 0.95
    assert tile_size(40, 6, 6 * 8 * 8 * 2 * 4, 4) == (8, 5)  # this budget cuts the examples into 5 tiles
    tiled = np.asarray(pairwise("linear_cka", xs, memory_bytes=6 * 8 * 8 * 2 * 4))
    np.testing.assert_allclose(tiled, got, atol=1e-6)

    deb = np.asarray(pairwise(functools.partial(linear_cka, debiased=True), xs, memory_bytes=6 * 8 * 8 * 2 * 4))
    want_deb = ref_matrix(functools.partial(ref_linear_cka, debiased=True), flat, flat)
    np.testing.assert_allclose(deb.reshape(6, 6), want_deb, atol=TOL)

    ys = stack((2, 40, 9), seed=1)
    rect = np.asarray(pairwise(linear_cka, xs, ys))
    assert rect.shape == (3, 2, 2)
    np.testing.assert_allclose(rect.reshape(6, 2), ref_matrix(ref_linear_cka, flat, ys), atol=TOL)


def test_mixed_widths_and_zero_padding_give_the_same_matrix():
    reps = [stack((40, d), seed=d)[...] for d in (6, 9, 3, 6)]
    got = np.asarray(pairwise(linear_cka, reps))
    np.testing.assert_allclose(got, ref_matrix(ref_linear_cka, reps, reps), atol=TOL)
    padded = np.stack([np.pad(r, ((0, 0), (0, 9 - r.shape[1]))) for r in reps])
    np.testing.assert_allclose(np.asarray(pairwise(linear_cka, padded)), got, atol=1e-6)
    # n > 2 d^2: the generic (feature-space, vmapped) path, with the same answers
    narrow = stack((4, 40, 2), seed=7)
    np.testing.assert_allclose(
        np.asarray(pairwise(linear_cka, narrow)), ref_matrix(ref_linear_cka, narrow, narrow), atol=TOL
    )


def test_generic_metrics_vmapped_in_blocks_symmetric_asymmetric_and_mixed_widths():
    xs = stack((2, 2, 50, 4), seed=2)
    flat = xs.reshape(4, 50, 4)
    rbf = np.asarray(pairwise(rbf_cka, xs, block_pairs=3))  # 10 pairs i <= j in blocks of 3
    assert rbf.shape == (2, 2, 2, 2)
    np.testing.assert_allclose(rbf.reshape(4, 4), ref_matrix(ref_rbf_cka, flat, flat), atol=TOL)
    pw = np.asarray(pairwise(pwcca, flat))  # asymmetric: every ordered pair is computed
    want = ref_matrix(ref_pwcca, flat, flat)
    np.testing.assert_allclose(pw, want, atol=TOL)
    assert np.abs(want - want.T).max() > 1e-3
    ys = stack((2, 50, 3), seed=3)
    spearman = functools.partial(rsa, method="spearman", dissimilarity="euclidean")
    got = np.asarray(pairwise(spearman, flat, ys))
    ref = functools.partial(ref_rsa, method="spearman", dissimilarity="euclidean")
    np.testing.assert_allclose(got, ref_matrix(ref, flat, ys), atol=TOL)
    mixed = [flat[0], flat[1][:, :3], flat[2]]  # widths are grouped (4, 3), never padded
    got = np.asarray(pairwise(procrustes_distance, mixed))
    np.testing.assert_allclose(got, ref_matrix(ref_procrustes, mixed, mixed), atol=TOL)


def test_constant_representations_are_counted_per_pair():
    xs = stack((4, 30, 5), seed=5)
    xs[1] = 2.0
    reset_warning_counts()
    with pytest.warns(DegenerateInputWarning, match="constant_input x4"):
        got = np.asarray(pairwise(linear_cka, xs))  # pairs i <= j involving rep 1: (0,1) (1,1) (1,2) (1,3)
    assert np.all(got[1] == 0.0) and np.all(got[:, 1] == 0.0) and np.all(np.isfinite(got))
    with pytest.warns(DegenerateInputWarning):
        pairwise(functools.partial(mutual_knn, k=3), xs, xs[:2])  # 4 x 2 pairs, 5 with rep 1 on a side
    assert warning_counts() == {"linear_cka: constant_input": 4, "mutual_knn: constant_input": 5}


def test_bad_inputs_are_refused():
    with pytest.raises(ConfigError, match="pairwise: xs"):
        pairwise(linear_cka, np.zeros((10, 3)))
    with pytest.raises(ConfigError, match="same n_examples"):
        pairwise(linear_cka, [np.zeros((10, 3)), np.zeros((11, 3))])
    with pytest.raises(ConfigError, match="pairwise: ys"):
        pairwise(linear_cka, np.zeros((2, 10, 3)), np.zeros((2, 12, 3)))
    with pytest.raises(ConfigError, match="block_pairs"):
        pairwise(svcca, np.zeros((2, 10, 3)), block_pairs=0)
    with pytest.raises(ConfigError, match="by keyword"):
        pairwise(functools.partial(svcca, np.zeros((10, 3))), np.zeros((2, 10, 3)))
