"""The `sweep` section: seeds x a grid of `section.field` values, the runs of one sweep."""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from jaxlab.config.base import Section
from jaxlab.config.checks import MAX_RUNS, SEED_LIMIT
from jaxlab.errors import ConfigError


@dataclass(frozen=True)
class SweepConfig(Section):
    """Seeds x grid. Each grid entry is `(key, values)`; the runs are the product of all of them."""

    section: ClassVar[str] = "sweep"
    seeds: tuple[int, ...] = (0,)
    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    FIELD_DOCS: ClassVar[dict[str, str]] = {
        "seeds": "PRNG seeds: every point of the grid trains one run per seed (--seeds)",
        "grid": "(key, values) pairs; the runs are the seeds x every combination of the values (--sweep)",
    }

    def validate(self) -> None:
        if not self.seeds:
            raise ConfigError("sweep.seeds", "needs at least one seed")
        keys = [k for k, _ in self.grid]
        if len(set(keys)) != len(keys):
            raise ConfigError("sweep.grid", f"a key is swept twice: {keys}")
        if self.n_runs > MAX_RUNS:
            sizes = " x ".join([f"{len(self.seeds)} seeds", *(f"{len(v)} {k}" for k, v in self.grid)])
            raise ConfigError(
                "sweep",
                f"{self.n_runs} runs ({sizes}); at most {MAX_RUNS} runs per sweep: every run's results "
                "pass through one host process; split the study into several sweeps (--seeds, --sweep)",
            )
        for key, values in self.grid:
            if not values:
                raise ConfigError(f"--sweep {key}", "needs at least one value")
            repeat = _first_repeat(values)
            if repeat is not None:
                raise ConfigError(f"--sweep {key}", f"the value {repeat[0]!r} is given twice (identical runs)")
        for seed in self.seeds:
            if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < SEED_LIMIT:
                raise ConfigError(
                    "sweep.seeds",
                    f"{seed!r} is not a PRNG seed: keys hold 32 bits, so seed s and s + 2^32 give the same runs",
                    f"integers 0..{SEED_LIMIT - 1}",
                )
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("sweep.seeds", f"seeds repeat: {list(self.seeds)}")

    @property
    def n_runs(self) -> int:
        """Seeds x grid points: len(seeds) * prod(len(values) per grid key)."""
        return len(self.seeds) * math.prod(len(v) for _, v in self.grid)

    def points(self) -> list[dict[str, Any]]:
        """The hyperparameter points of the grid (one empty point when there is no grid)."""
        keys = [k for k, _ in self.grid]
        return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in self.grid))]


def _first_repeat(values: Sequence[Any]) -> tuple[Any] | None:
    """(v,) for the first value equal to an earlier one (lists compared by their repr), else None."""
    seen: set[Any] = set()
    for v in values:
        try:
            hash(v)
            key = (0, v)
        except TypeError:  # a list value
            key = (1, repr(v))
        if key in seen:
            return (v,)
        seen.add(key)
    return None
