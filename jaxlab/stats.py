"""Statistics of finished runs, on the host (NumPy, float64): correlations across runs and steps.

One implementation each, shared by the experiments and their reports:
  pearson(x, y)        r of two flat arrays over their finite pairs (NaN when either is constant)
  pearson_rows(x, y)   r of each row pair of [R, N] arrays (NaN for a constant row)
"""

from __future__ import annotations

import numpy as np


def _r(xc: np.ndarray, yc: np.ndarray, axis: int | None) -> np.ndarray:
    den = np.sqrt(np.sum(xc * xc, axis=axis) * np.sum(yc * yc, axis=axis))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(den > 1e-12, np.sum(xc * yc, axis=axis) / den, np.nan)


def pearson(x: np.ndarray, y: np.ndarray) -> float:
    """Pearson correlation of two flat arrays over the pairs where both are finite (NaN when either
    is constant there): sum (x - x-bar)(y - y-bar) / sqrt(sum (x - x-bar)^2 sum (y - y-bar)^2)."""
    x, y = np.ravel(x).astype(np.float64), np.ravel(y).astype(np.float64)
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size == 0:
        return float("nan")
    return float(_r(x - x.mean(), y - y.mean(), None))


def pearson_rows(x_RN: np.ndarray, y_RN: np.ndarray) -> np.ndarray:
    """[R] Pearson correlation of each row pair of x, y [R, N] (NaN where either row is constant)."""
    x, y = np.asarray(x_RN, np.float64), np.asarray(y_RN, np.float64)
    return _r(x - x.mean(1, keepdims=True), y - y.mean(1, keepdims=True), 1)


__all__ = ["pearson", "pearson_rows"]
