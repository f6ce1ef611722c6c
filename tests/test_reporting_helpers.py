"""The report helpers shared by every experiment's sections: `finals` and `spread` (`jaxlab.reporting`)."""

from pathlib import Path

import numpy as np
import pandas as pd

from jaxlab.reporting import ReportContext, finals, fmt, spread


def ctx_with(runs):
    return ReportContext(Path("."), None, {"runs": runs}, pd.DataFrame())


def test_finals_skips_diverged_runs_and_fills_missing_with_nan():
    runs = [
        {"status": "ok", "final": {"a": 1.5, "b": None}},
        {"status": "diverged", "final": {"a": 99.0}},
        {"status": "ok", "final": {"b": 2.0}},
    ]
    ctx = ctx_with(runs)
    np.testing.assert_array_equal(finals(ctx, "a"), [1.5, np.nan])
    np.testing.assert_array_equal(finals(ctx, "b"), [np.nan, 2.0])
    assert finals(ctx, "a").dtype == np.float64
    assert finals(ctx_with([]), "a").shape == (0,)


def test_spread_is_median_min_max_of_the_finite_values():
    rng = np.random.default_rng(0)
    v = rng.normal(size=7)
    ref = f"{fmt(float(np.median(v)))} [{fmt(float(v.min()))}, {fmt(float(v.max()))}]"
    assert spread(v) == ref
    assert spread([*v, None, np.nan, np.inf]) == ref  # dropped
    assert spread(pd.Series(v)) == ref
    assert spread([3.25]) == fmt(3.25)
    assert spread([]) == "—" and spread([None, np.nan]) == "—"
    assert spread([np.nan], empty="never") == "never"
    assert spread(np.array([2, 1, 4])) == "2 [1, 4]"
