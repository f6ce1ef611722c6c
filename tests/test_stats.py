"""Host-side statistics (`jaxlab.stats`) against straightforward NumPy loops, with awkward inputs."""

import numpy as np
import pytest

from jaxlab.stats import diff_corr, diff_corr_rows, onset_steps, pearson, pearson_rows


def loop_onsets(values, steps, threshold, strict):
    out = []
    for row in values:
        found = np.nan
        for v, s in zip(row, steps):
            if (v > threshold) if strict else (v >= threshold):
                found = float(s)
                break
        out.append(found)
    return np.asarray(out)


@pytest.mark.parametrize("strict", [False, True])
def test_onset_steps_match_a_loop_on_random_rows(strict):
    rng = np.random.default_rng(0)
    values = rng.uniform(size=(20, 9)).round(1)  # rounded: many values equal the threshold
    values[3, 4] = np.nan
    steps = np.cumsum(rng.integers(1, 50, size=9))
    np.testing.assert_array_equal(
        onset_steps(values, steps, 0.7, strict=strict), loop_onsets(values, steps, 0.7, strict)
    )


def test_strict_exceeds_and_non_strict_reaches():
    steps = np.array([0, 10, 100])
    values = np.array([[0.2, 0.5, 0.9], [0.5, 0.5, 0.5], [0.1, 0.2, 0.3]])
    np.testing.assert_array_equal(onset_steps(values, steps, 0.5, strict=False), [10.0, 0.0, np.nan])
    np.testing.assert_array_equal(onset_steps(values, steps, 0.5, strict=True), [100.0, np.nan, np.nan])


def test_nan_values_never_reach_and_float32_values_compare_exactly():
    steps = np.array([1, 2, 3])
    values = np.array([[np.nan, np.nan, 1.0], [np.nan] * 3])
    np.testing.assert_array_equal(onset_steps(values, steps, 0.0, strict=False), [3.0, np.nan])
    # float32 0.9 is just below 0.9: it does not reach a threshold of 0.9
    v32 = np.array([[np.float32(0.9), 1.0, 1.0]], np.float32)
    np.testing.assert_array_equal(onset_steps(v32, steps, 0.9, strict=False), [2.0])


def test_no_runs_no_evaluations_and_bad_shapes():
    assert onset_steps(np.zeros((0, 4)), np.arange(4), 0.5, strict=False).shape == (0,)
    out = onset_steps(np.zeros((3, 0)), np.zeros(0), 0.5, strict=True)
    assert out.shape == (3,) and np.isnan(out).all()
    with pytest.raises(ValueError, match="values \\[R, N\\] and steps \\[N\\]"):
        onset_steps(np.zeros((2, 3)), np.arange(4), 0.5, strict=False)
    with pytest.raises(ValueError, match="values \\[R, N\\]"):
        onset_steps(np.zeros(3), np.arange(3), 0.5, strict=False)
    with pytest.raises(TypeError):
        onset_steps(np.zeros((2, 3)), np.arange(3), 0.5)  # strict has no default: the metric says which


# -- correlations: scale-free, NaN exactly when a side is constant --------------------------------------


def corrcoef(x, y):
    """np.corrcoef's r over the pairs where both are finite (NaN when fewer than 2 or a side is constant)."""
    x, y = np.ravel(x).astype(np.float64), np.ravel(y).astype(np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    if ok.sum() < 2 or np.ptp(x[ok]) == 0 or np.ptp(y[ok]) == 0:
        return np.nan
    return float(np.corrcoef(x[ok], y[ok])[0, 1])


def _related(seed=0, n=30):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n)
    return x, 0.9 * x + 0.4 * rng.normal(size=n)


@pytest.mark.parametrize("scale", [1e-8, 1.0, 1e8])
def test_pearson_is_np_corrcoef_at_any_scale(scale):
    x, y = _related()
    want = corrcoef(x * scale, y * scale)
    assert pearson(x * scale, y * scale) == pytest.approx(want, rel=1e-12, abs=0)
    assert pearson(x * scale, y) == pytest.approx(want, rel=1e-12, abs=0)  # only one side scaled
    # far beyond float64's squares: the same r (np.corrcoef itself overflows or underflows there)
    assert pearson(x * scale * 1e-200, y * 1e200) == pytest.approx(corrcoef(x, y), rel=1e-12, abs=0)


def test_pearson_is_nan_exactly_when_a_side_is_constant_over_the_finite_pairs():
    x, y = _related(1)
    assert np.isnan(pearson(np.full(30, 3e-9), y))
    assert np.isnan(pearson(x, np.zeros(30)))
    x_nan = x.copy()
    x_nan[[2, 7]] = [np.nan, np.inf]
    assert pearson(x_nan, y) == pytest.approx(corrcoef(x_nan, y), rel=1e-12, abs=0)
    # y is constant where both are finite, though not over all its values
    x_part, y_part = np.where(np.arange(30) < 20, x, np.nan), np.where(np.arange(30) < 20, 5.0, y)
    assert np.isnan(pearson(x_part, y_part)) and np.ptp(y_part) > 0
    assert np.isnan(pearson(np.array([np.nan, np.nan]), np.array([1.0, 2.0])))
    assert pearson(x * 1e-9 + 1.0, y) == pytest.approx(corrcoef(x * 1e-9 + 1.0, y), rel=1e-6)  # tiny spread, offset


def test_pearson_rows_match_np_corrcoef_row_by_row():
    x, y = _related(2, n=12)
    rows_x = np.stack([x * 1e-8, x * 1e8, np.full(12, 2.0), x, x * 1e-30, x])
    rows_y = np.stack([y * 1e-8, y, y, np.zeros(12), y * 1e30, y])
    rows_x[5, 3] = np.nan  # a non-finite value: NaN for that row, as np.corrcoef gives
    got = pearson_rows(rows_x, rows_y)
    with np.errstate(invalid="ignore", divide="ignore"):
        want = [np.corrcoef(a, b)[0, 1] if np.ptp(a) > 0 and np.ptp(b) > 0 else np.nan for a, b in zip(rows_x, rows_y)]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=0)  # NaNs compare equal
    assert np.isnan(got[[2, 3, 5]]).all() and np.isfinite(got[[0, 1, 4]]).all()
    assert pearson_rows(np.zeros((3, 0)), np.zeros((3, 0))).shape == (3,)


@pytest.mark.parametrize("scale", [1e-8, 1e8])
def test_diff_corr_is_the_r_of_first_differences_at_any_scale(scale):
    rng = np.random.default_rng(3)
    x = np.cumsum(rng.normal(size=(4, 10)), axis=1)
    y = x + 0.5 * np.cumsum(rng.normal(size=(4, 10)), axis=1)
    want = [corrcoef(np.diff(a), np.diff(b)) for a, b in zip(x, y)]
    assert diff_corr(x[0] * scale, y[0] * scale) == pytest.approx(want[0], rel=1e-12, abs=0)
    np.testing.assert_allclose(diff_corr_rows(x * scale, y * scale), want, rtol=1e-12, atol=0)
