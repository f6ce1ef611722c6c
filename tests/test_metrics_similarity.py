"""Similarity metrics against independent NumPy float64 references (tests/similarity_reference.py),
invariances, numerics (offsets, extreme scales, x64) and degenerate inputs."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from similarity_reference import (
    ref_cca,
    ref_linear_cka,
    ref_mutual_knn,
    ref_procrustes,
    ref_pwcca,
    ref_rbf_cka,
    ref_rsa,
    ref_svcca,
    related_pair,
)

from jaxlab.errors import ConfigError
from jaxlab.metrics import (
    DegenerateInputWarning,
    cca,
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

TOL = 1e-4  # the bar: float32 agreement with a float64 reference


SHAPES = [(60, 5, 9), (24, 40, 30)]  # n > d and n < d
CCA_SHAPE = (80, 6, 10)  # CCA needs n > d1 + d2 to be non-trivial


def f32(a):
    return jnp.asarray(a, jnp.float32)


# Each variant with its reference; evaluated in one compiled program per shape (compiling dominates).
VARIANTS = {
    "linear_cka": (linear_cka, ref_linear_cka),
    "linear_cka_debiased": (
        functools.partial(linear_cka, debiased=True),
        functools.partial(ref_linear_cka, debiased=True),
    ),
    "rbf_cka": (rbf_cka, ref_rbf_cka),
    "rbf_cka_0.5_debiased": (
        functools.partial(rbf_cka, threshold=0.5, debiased=True),
        functools.partial(ref_rbf_cka, threshold=0.5, debiased=True),
    ),
    "procrustes": (procrustes_distance, ref_procrustes),
    "rsa_pearson_correlation": (rsa, ref_rsa),
    "rsa_spearman_euclidean": (
        functools.partial(rsa, method="spearman", dissimilarity="euclidean"),
        functools.partial(ref_rsa, method="spearman", dissimilarity="euclidean"),
    ),
    "rsa_spearman_correlation": (
        functools.partial(rsa, method="spearman"),
        functools.partial(ref_rsa, method="spearman"),
    ),
    "mutual_knn_cosine": (functools.partial(mutual_knn, k=5), functools.partial(ref_mutual_knn, k=5)),
    "mutual_knn_euclidean": (
        functools.partial(mutual_knn, k=5, similarity="euclidean"),
        functools.partial(ref_mutual_knn, k=5, similarity="euclidean"),
    ),
}


@jax.jit
def all_variants(x, y):
    return {name: f(x, y) for name, (f, _) in VARIANTS.items()}


@pytest.mark.parametrize("shape", SHAPES)
def test_metrics_match_float64_reference(shape):
    x, y = related_pair(*shape)
    got = all_variants(f32(x), f32(y))
    for name, (_, ref) in VARIANTS.items():
        assert abs(float(got[name]) - ref(x, y)) < TOL, name
    assert 0.1 < float(got["linear_cka"]) < 0.99 and 0.1 < float(got["rsa_pearson_correlation"]) < 0.99
    # the eager (compiled, counting) entry point gives the same numbers
    assert float(linear_cka(f32(x), f32(y))) == pytest.approx(float(got["linear_cka"]), abs=1e-6)


@jax.jit
def cca_family(x, y):
    return cca(x, y), svcca(x, y), svcca(x, y, keep=0.5), pwcca(x, y), pwcca(y, x)


def test_cca_family_matches_float64_reference():
    x, y = related_pair(*CCA_SHAPE, noise=0.5)
    rho, sv99, sv50, pw_xy, pw_yx = cca_family(f32(x), f32(y))
    assert rho.shape == (min(CCA_SHAPE[1:]),)
    np.testing.assert_allclose(rho, ref_cca(x, y), atol=TOL)
    assert abs(float(sv99) - ref_svcca(x, y, 0.99)) < TOL
    assert abs(float(sv50) - ref_svcca(x, y, 0.5)) < TOL
    assert abs(float(pw_xy) - ref_pwcca(x, y)) < TOL
    assert abs(float(pw_yx) - ref_pwcca(y, x)) < TOL
    assert abs(float(pw_xy) - float(pw_yx)) > 1e-3  # asymmetric by design


def test_float64_under_x64():
    x, y = related_pair(*SHAPES[0], seed=3)
    with jax.enable_x64(True):
        got = jax.jit(lambda a, b: (linear_cka(a, b), procrustes_distance(a, b)))(x, y)
        assert got[0].dtype == jnp.float64
        assert abs(float(got[0]) - ref_linear_cka(x, y)) < 1e-12
        assert abs(float(got[1]) - ref_procrustes(x, y)) < 1e-10


def orthogonal(d, seed):
    return np.linalg.qr(np.random.default_rng(seed).normal(size=(d, d)))[0]


def moved(x, seed, width=None):
    """x rotated, scaled and translated, then zero-padded to `width` features."""
    out = 2.0 * x @ orthogonal(x.shape[1], seed) + 1.0
    return np.pad(out, ((0, 0), (0, (width or x.shape[1]) - x.shape[1])))


# Invariant under orthogonal maps, isotropic scaling and translation of either side (the same
# compiled programs as the reference tests: compiling dominates these tests).
INVARIANT = ["linear_cka", "linear_cka_debiased", "rbf_cka", "rbf_cka_0.5_debiased", "procrustes"]
INVARIANT += ["rsa_spearman_euclidean", "mutual_knn_euclidean"]


def test_invariances():
    x, y = related_pair(*SHAPES[0], seed=1)
    base = all_variants(f32(x), f32(y))
    for xt, yt in [(moved(x, 0), y), (x, moved(y, 1)), (moved(x, 2), 1e-3 * moved(y, 3))]:
        got = all_variants(f32(xt), f32(yt))
        for name in INVARIANT:
            assert float(got[name]) == pytest.approx(float(base[name]), abs=1e-5), name
    # against itself (moved and zero-padded to y's width): similarity 1, Procrustes distance 0
    same = all_variants(f32(x), f32(moved(x, 4, width=y.shape[1])))
    for name in INVARIANT:
        assert float(same[name]) == pytest.approx(0.0 if name == "procrustes" else 1.0, abs=1e-5), name
    xc, yc = related_pair(*CCA_SHAPE, noise=0.5)
    rho, *summaries = cca_family(f32(xc), f32(yc))
    rho_moved, *summaries_moved = cca_family(f32(moved(xc, 5)), f32(moved(yc, 6)))
    np.testing.assert_allclose(rho_moved, rho, atol=1e-5)
    np.testing.assert_allclose(summaries_moved[:2], summaries[:2], atol=1e-5)  # SVCCA; PWCCA weighs x's own neurons
    _, sv99, sv50, pw_xy, pw_yx = cca_family(f32(xc), f32(moved(xc, 7, width=yc.shape[1])))
    np.testing.assert_allclose([sv99, sv50, pw_xy, pw_yx], 1.0, atol=1e-5)


def test_biased_cka_decreases_with_n_and_debiased_stays_near_zero():
    """Independent Gaussian X, Y: biased linear CKA (~ sqrt(d1 d2) / n) shrinks with n; debiased stays ~ 0."""
    rng = np.random.default_rng(2)
    both = jax.jit(jax.vmap(lambda a, b: jnp.stack([linear_cka(a, b), linear_cka(a, b, debiased=True)])))
    means = []
    for n in (32, 128, 512):
        means.append(np.asarray(both(f32(rng.normal(size=(8, n, 16))), f32(rng.normal(size=(8, n, 16))))).mean(0))
    biased, debiased = [m[0] for m in means], [m[1] for m in means]
    assert biased[0] > biased[1] > biased[2] and biased[0] > 0.3 and biased[2] < 0.1, biased
    assert max(abs(v) for v in debiased) < 0.03, debiased


def test_float32_stays_accurate_with_offsets_and_extreme_scales():
    x, y = related_pair(*SHAPES[0], seed=4)
    xc, yc = related_pair(*CCA_SHAPE, seed=4, noise=0.5)
    for shift, scale in [(1e4, 1.0), (0.0, 1e20), (0.0, 1e-20), (-300.0, 30.0)]:
        xs = np.float32(scale * (x + shift))
        got = all_variants(xs, f32(y))
        xs = xs.astype(np.float64)  # references on what float32 holds of the input
        for name in ("linear_cka", "linear_cka_debiased", "rbf_cka", "procrustes", "rsa_pearson_correlation"):
            assert abs(float(got[name]) - VARIANTS[name][1](xs, y)) < TOL, (name, shift, scale)
        xcs = np.float32(scale * (xc + shift))
        _, sv99, _, pw_xy, _ = cca_family(xcs, f32(yc))
        xcs = xcs.astype(np.float64)
        assert abs(float(sv99) - ref_svcca(xcs, yc)) < TOL and abs(float(pw_xy) - ref_pwcca(xcs, yc)) < TOL


def test_constant_inputs_give_documented_values_and_are_counted():
    x, y = related_pair(*SHAPES[0], seed=5)
    const = np.full(x.shape, 3.3, np.float32)
    got = all_variants(const, f32(y))
    for name in VARIANTS:
        if not name.startswith("mutual_knn"):  # kNN of a constant has index-ordered neighbours (documented)
            assert float(got[name]) == (2.0 if name == "procrustes" else 0.0), name
    xc, yc = related_pair(*CCA_SHAPE)
    rho, *summaries = cca_family(np.full(xc.shape, -1.0, np.float32), f32(yc))
    assert np.all(np.asarray(rho) == 0.0) and np.all(np.asarray(summaries) == 0.0)
    reset_warning_counts()
    with pytest.warns(DegenerateInputWarning, match="linear_cka: degenerate input"):
        assert float(linear_cka(const, f32(y))) == 0.0
    with pytest.warns(DegenerateInputWarning):
        linear_cka(f32(x), np.zeros_like(const))
    assert float(linear_cka(f32(x), f32(y))) > 0
    assert warning_counts() == {"linear_cka: constant_input": 2}


def test_rank_deficient_inputs_stay_finite_and_are_counted():
    x, y = related_pair(*CCA_SHAPE, noise=0.5)
    dup = np.concatenate([x[:, :4], x[:, :1], 2 * x[:, 1:2]], axis=1)  # rank 4 in 6 columns
    rho, sv99, sv50, pw_xy, pw_yx = (np.asarray(v) for v in cca_family(f32(dup), f32(y)))
    assert np.all(np.isfinite(rho)) and np.all(rho[4:] == 0.0)
    np.testing.assert_allclose(rho[:4], ref_cca(x[:, :4], y), atol=TOL)
    assert np.all(np.isfinite([sv99, sv50, pw_xy, pw_yx]))
    reset_warning_counts()
    with pytest.warns(DegenerateInputWarning, match="rank_deficient"):
        cca(f32(dup), f32(y))
    with pytest.warns(DegenerateInputWarning, match="trivial_correlations"):
        few = np.asarray(cca(*map(f32, related_pair(10, 6, 6))))  # n - 1 < d1 + d2: shared directions
    assert np.all(np.isfinite(few)) and few[0] == pytest.approx(1.0, abs=1e-4)
    counts = warning_counts()
    assert counts["cca: rank_deficient"] == 1 and counts["cca: trivial_correlations"] == 1


def test_bad_arguments_are_refused_with_the_field_named():
    x, y = related_pair(10, 3, 4)
    with pytest.raises(ConfigError, match="mutual_knn: k"):
        mutual_knn(x, y, k=10)
    with pytest.raises(ConfigError, match="rsa: method.*pearson, spearman"):
        rsa(x, y, method="kendall")
    with pytest.raises(ConfigError, match="svcca: keep"):
        svcca(x, y, keep=0.0)
    with pytest.raises(ConfigError, match="same number of examples"):
        linear_cka(x, y[:9])
    with pytest.raises(ConfigError, match="at least 4 examples"):
        linear_cka(x[:3], y[:3], debiased=True)
    with pytest.raises(ConfigError, match="pairwise: metric"):
        pairwise("cosine", np.stack([x, x]))
