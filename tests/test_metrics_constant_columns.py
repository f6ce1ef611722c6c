"""Constant columns in the similarity metrics (`jaxlab.metrics._common.center`): a feature that never varies,
however large, is zeroed on its own and leaves the metrics of the other features unchanged; an input is
constant only when all its columns are. The values are checked against float64 NumPy formulas written here."""

import functools
import warnings

import numpy as np
import pytest

from jaxlab.metrics import (
    DegenerateInputWarning,
    cca,
    is_constant,
    linear_cka,
    pairwise,
    procrustes_distance,
    pwcca,
    rbf_cka,
    reset_warning_counts,
    svcca,
    warning_counts,
)

N, D1, D2 = 60, 10, 9


def _pair(seed=0):
    """float32 x [N, D1], y [N, D2] with y a noisy nonlinear function of x (every metric away from its extremes)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, D1)) * np.linspace(0.5, 2.0, D1)
    y = np.tanh(x @ rng.normal(size=(D1, D2)) / np.sqrt(D1)) + rng.normal(size=(N, D2))
    return np.float32(x), np.float32(y)


def _with_column(x, value):
    return np.concatenate([x, np.full((x.shape[0], 1), value, np.float32)], axis=1)


# -- float64 references ------------------------------------------------------------------------------------
def _centered(x):
    x = np.asarray(x, np.float64)
    return x - x.mean(0)


def np_linear_cka(x, y):
    """||X^T Y||_F^2 / (||X^T X||_F ||Y^T Y||_F) of the centered x, y."""
    x, y = _centered(x), _centered(y)
    return np.linalg.norm(x.T @ y) ** 2 / (np.linalg.norm(x.T @ x) * np.linalg.norm(y.T @ y))


def np_procrustes(x, y):
    """2 - 2 ||X^T Y||_* of the centered, unit-Frobenius-norm x, y."""
    x, y = _centered(x), _centered(y)
    x, y = x / np.linalg.norm(x), y / np.linalg.norm(y)
    return 2.0 - 2.0 * np.linalg.svd(x.T @ y, compute_uv=False).sum()


def np_cca(x, y):
    """Canonical correlations: singular values of Qx^T Qy, Q orthonormal bases of the centered columns."""
    qx, qy = np.linalg.qr(_centered(x))[0], np.linalg.qr(_centered(y))[0]
    return np.linalg.svd(qx.T @ qy, compute_uv=False)


# -- tests ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("value", [3e6, 1e7, -1e20])
def test_a_large_constant_column_changes_no_metric(value):
    x, y = _pair()
    xk = _with_column(x, value)
    reset_warning_counts()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DegenerateInputWarning)  # CCA counts the zero column as rank_deficient
        got = {
            "cka": float(linear_cka(xk, y)),
            "cka_y": float(linear_cka(y, xk)),
            "procrustes": float(procrustes_distance(xk, y)),
            "cca": np.asarray(cca(xk, y)),
        }
        same = {
            "debiased cka": (linear_cka(xk, y, debiased=True), linear_cka(x, y, debiased=True)),
            "rbf cka": (rbf_cka(xk, y), rbf_cka(x, y)),
            "svcca": (svcca(xk, y), svcca(x, y)),
            "pwcca": (pwcca(xk, y), pwcca(x, y)),
        }
    assert not any("constant_input" in key for key in warning_counts()), warning_counts()
    assert not bool(is_constant(xk))
    want_cka, want_proc = np_linear_cka(x, y), np_procrustes(x, y)
    assert want_cka == pytest.approx(0.38019, abs=1e-5) and want_proc == pytest.approx(0.82757, abs=1e-5)
    assert got["cka"] == pytest.approx(want_cka, rel=1e-5)
    assert got["cka_y"] == pytest.approx(want_cka, rel=1e-5)
    assert got["procrustes"] == pytest.approx(want_proc, rel=1e-5)
    np.testing.assert_allclose(got["cca"], np_cca(x, y), rtol=1e-5, atol=1e-6)
    assert got["cka"] == pytest.approx(float(linear_cka(x, y)), rel=1e-6)
    assert got["procrustes"] == pytest.approx(float(procrustes_distance(x, y)), rel=1e-6)
    for name, (a, b) in same.items():
        assert float(a) == pytest.approx(float(b), rel=1e-5, abs=1e-6), name


def test_pairwise_linear_cka_with_constant_columns():
    x, y = _pair(1)
    xs = np.stack([_with_column(x, 1e7), _with_column(2 * x, 5.0)])  # x and 2 x, each with a constant column
    ys = np.stack([_with_column(y, -1e7)])
    reset_warning_counts()
    got = np.asarray(pairwise(linear_cka, xs, ys))[:, 0]
    assert not any("constant_input" in key for key in warning_counts()), warning_counts()
    np.testing.assert_allclose(got, [np_linear_cka(x, y)] * 2, rtol=1e-5)
    deb = np.asarray(pairwise(functools.partial(linear_cka, debiased=True), xs))
    assert deb[0, 1] == pytest.approx(1.0, rel=1e-5)
    np.testing.assert_allclose(deb[0], deb[1], rtol=1e-5)


def test_a_truly_constant_input_still_warns():
    x, y = _pair(2)
    const = np.tile(np.float32([1e7, 3.0, 0.0, -2e-5, 7.0]), (N, 1))
    reset_warning_counts()
    with pytest.warns(DegenerateInputWarning, match="constant_input"):
        assert float(linear_cka(const, y)) == 0.0
    with pytest.warns(DegenerateInputWarning, match="constant_input"):
        assert float(procrustes_distance(x, const)) == 2.0
    with pytest.warns(DegenerateInputWarning, match="constant_input"):
        assert np.all(np.asarray(cca(const, y)) == 0.0)
    assert warning_counts() == {
        "linear_cka: constant_input": 1,
        "procrustes_distance: constant_input": 1,
        "cca: constant_input": 1,
    }
    assert bool(is_constant(const)) and bool(is_constant(np.zeros((N, 3), np.float32)))
    # columns that vary by one unit in the last place only (a rounding-level spread): constant too
    blur = np.tile(np.float32([1e4, -50.0, 0.25]), (N, 1))
    blur[::7] = np.nextafter(blur[::7], np.float32(np.inf))
    assert np.all(np.ptp(blur, axis=0) > 0) and bool(is_constant(blur))
    rng = np.random.default_rng(3)
    # ... but one column varying above its own resolution is not, whatever the scale of the others
    blur[:, 2] = np.float32(0.25 + 1e-5 * rng.normal(size=N))
    assert not bool(is_constant(blur))
