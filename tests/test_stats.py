"""Host-side statistics (`jaxlab.stats`) against straightforward NumPy loops, with awkward inputs."""

import numpy as np
import pytest

from jaxlab.stats import onset_steps


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
