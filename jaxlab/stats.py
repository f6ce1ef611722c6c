"""Statistics of finished runs, on the host (NumPy, float64): correlations and onsets across runs and steps.

One implementation each, shared by the experiments and their reports:
  pearson(x, y)        r of two flat arrays over their finite pairs (NaN when either is constant
                       there, i.e. all its values are equal; no threshold, so r is the same at any scale)
  pearson_rows(x, y)   r of each row pair of [R, N] arrays (NaN for a constant or non-finite row)
  diff_corr(x, y)      r of the first differences x[n+1] - x[n], y[n+1] - y[n] (a trend shared
                       linearly in n removed); NaN with fewer than MIN_DIFFS finite pairs
  diff_corr_rows(x, y) the same for each row pair of [R, N] arrays
  onset_steps(v, steps, threshold, strict=...)
                       per row of [R, N] values, the first step whose value reaches (>=) or, with
                       strict=True, exceeds (>) the threshold (NaN when none does)
"""

from __future__ import annotations

import numpy as np


def _r(x: np.ndarray, y: np.ndarray, axis: int | None) -> np.ndarray:
    """Pearson r of x and y along `axis` (float64), NaN where either side is constant (all its values equal).

    Scale-free: each side is divided by its largest |value|, centered, and divided by its largest
    |centered value| before the products, so r is the same at any scale (no threshold on the
    variances, no overflow or underflow), and clipped to [-1, 1] against rounding, as np.corrcoef does.
    A non-finite value makes its r NaN.
    """
    constant = np.max(x, axis=axis) == np.min(x, axis=axis)
    constant |= np.max(y, axis=axis) == np.min(y, axis=axis)
    with np.errstate(invalid="ignore", divide="ignore", over="ignore", under="ignore"):
        xs, ys = _unit_centered(x, axis), _unit_centered(y, axis)
        num = np.sum(xs * ys, axis=axis)
        den = np.sqrt(np.sum(xs * xs, axis=axis) * np.sum(ys * ys, axis=axis))
        r = np.clip(num / den, -1.0, 1.0)
    return np.where(constant | ~(den > 0), np.nan, r)


def _unit_centered(x: np.ndarray, axis: int | None) -> np.ndarray:
    """(x - mean x) / max |x - mean x| along `axis`, computed on x / max |x| (0 for an all-zero x)."""
    keep = axis is not None
    amax = np.max(np.abs(x), axis=axis, keepdims=keep)
    x = x / np.where(amax > 0, amax, 1.0)
    xc = x - np.mean(x, axis=axis, keepdims=keep)
    cmax = np.max(np.abs(xc), axis=axis, keepdims=keep)
    return xc / np.where(cmax > 0, cmax, 1.0)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two flat arrays over the pairs where both are finite (NaN when either
    is constant there): sum (x - x-bar)(y - y-bar) / sqrt(sum (x - x-bar)^2 sum (y - y-bar)^2)."""
    x, y = np.ravel(x).astype(np.float64), np.ravel(y).astype(np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size == 0:
        return float("nan")
    return float(_r(x, y, None))


def pearson_rows(x_RN: np.ndarray, y_RN: np.ndarray) -> np.ndarray:
    """[R] Pearson correlation of each row pair of x, y [R, N] (as `pearson`), NaN where either row is
    constant (all its values equal) or has a non-finite value."""
    x, y = np.asarray(x_RN, np.float64), np.asarray(y_RN, np.float64)
    if x.shape[-1] == 0 or y.shape[-1] == 0:  # no values: no correlation (and no max to take)
        return np.full(np.broadcast_shapes(x.shape, y.shape)[:-1], np.nan)
    return _r(x, y, 1)


MIN_DIFFS = 3  # first differences a correlation over checkpoints needs (the r of two points is +-1)


def diff_corr(x_N: np.ndarray, y_N: np.ndarray) -> float:
    """Pearson r of the first differences x[n+1] - x[n], y[n+1] - y[n] over the pairs where both are
    finite; NaN with fewer than `MIN_DIFFS` such pairs (the r of two points is +-1 by construction)."""
    dx, dy = np.diff(np.asarray(x_N, np.float64)), np.diff(np.asarray(y_N, np.float64))
    ok = np.isfinite(dx) & np.isfinite(dy)
    return pearson(dx[ok], dy[ok]) if ok.sum() >= MIN_DIFFS else float("nan")


def diff_corr_rows(x_RN: np.ndarray, y_RN: np.ndarray) -> np.ndarray:
    """[R] `diff_corr` of each row pair of x, y [R, N]."""
    x, y = np.asarray(x_RN, np.float64), np.asarray(y_RN, np.float64)
    return np.array([diff_corr(a, b) for a, b in zip(x, y)], np.float64).reshape(x.shape[0])


def too_few_differences(n_evals: int) -> str | None:
    """Why a `diff_corr` over `n_evals` evaluations cannot test a claim, or None when it can."""
    if n_evals < MIN_DIFFS + 1:
        return (
            f"{n_evals} evaluations give {n_evals - 1} first differences; a correlation of differences needs "
            f"at least {MIN_DIFFS} (the r of two points is +-1 by construction)"
        )
    return None


def onset_steps(values_RN: np.ndarray, steps_N: np.ndarray, threshold: float, *, strict: bool) -> np.ndarray:
    """[R] float64: for each row r, steps[n*] with n* the first n where values[r, n] >= threshold
    (`strict=False`: the value *reaches* it) or values[r, n] > threshold (`strict=True`: *exceeds*
    it); NaN where no evaluation does. NaN values never count as reaching the threshold.

    The choice is explicit because a metric's definition says which: an onset "at accuracy above
    0.5" is strict, one "when separability reaches 0.9" is not; at a value equal to the threshold
    (e.g. a saturated metric at threshold 1.0) the two differ.
    """
    values = np.asarray(values_RN, np.float64)
    steps = np.asarray(steps_N, np.float64)
    if values.ndim != 2 or steps.shape != values.shape[1:]:
        raise ValueError(f"onset_steps: expected values [R, N] and steps [N], got {values.shape} and {steps.shape}")
    if steps.size == 0:  # no evaluation: no onset (argmax of nothing is undefined)
        return np.full(values.shape[0], np.nan)
    hit = values > threshold if strict else values >= threshold
    return np.where(hit.any(axis=1), steps[np.argmax(hit, axis=1)], np.nan)


__all__ = ["MIN_DIFFS", "diff_corr", "diff_corr_rows", "onset_steps", "pearson", "pearson_rows", "too_few_differences"]
