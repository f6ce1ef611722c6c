"""Field checks every config section uses (task and probe sections too), and the limits they enforce.

Each check raises `ConfigError` naming the field (`model.n_heads`) and, where there is a list, the
allowed values.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from jaxlab.errors import ConfigError

INT32_MAX = 2**31 - 1  # step counters and seeds travel to the device as int32
# Every evaluation is a host round trip and a row of the on-device history [n_evals, R] of
# every metric; presets use at most a few dozen.
MAX_EVALS = 10_000
# Seeds x grid points of one sweep: every run's records (summary.json, the metric table, the
# report) pass through one host process. Split larger studies into several sweeps.
MAX_RUNS = 100_000
SEED_LIMIT = 2**32  # PRNG keys hold 32-bit seeds: seed s and s + 2^32 would give the same key


def _choice(name: str, value: object, allowed: Sequence[object]) -> None:
    """Refuse a value that is not one of `allowed` (the error lists them)."""
    if value not in allowed:
        raise ConfigError(name, f"unknown value {value!r}", allowed)


def divisors(n: int) -> list[int]:
    """The positive divisors of n, ascending."""
    return [d for d in range(1, n + 1) if n % d == 0]


def _int_range(name: str, value: int, lo: int, hi: int, why: str) -> None:
    """Refuse an integer outside [lo, hi] (values the device or the PRNG cannot hold exactly)."""
    if not lo <= value <= hi:
        raise ConfigError(name, f"{value!r} is out of range: {why}", f"integers {lo}..{hi}")


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    """Refuse a value <= 0 (< 0 with `allow_zero`), and a float that is NaN or infinite."""
    ok = value >= 0 if allow_zero else value > 0
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(name, f"must be {bound}, got {value!r}")
