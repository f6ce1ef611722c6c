"""The command line's config flags: `--seeds`, `--set key=value` and `--sweep key=v1,v2`."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from jaxlab.config.checks import MAX_RUNS, SEED_LIMIT
from jaxlab.config.experiment import ExperimentConfig
from jaxlab.config.values import _field_type, parse_value
from jaxlab.errors import ConfigError


def parse_seeds(spec: str) -> tuple[int, ...]:
    """`N` -> 0..N-1; `3,7,9` -> those; `a:b` -> a..b-1.

    Seeds are PRNG seeds in [0, 2^32) (a key holds 32 bits: s and s + 2^32 would be the same
    run), distinct, at most `MAX_RUNS` of them; counts are checked before any range is listed.
    """
    forms = ["N", "3,7,9", "0:64"]
    text = spec.strip()
    if not text:
        raise ConfigError("--seeds", "is empty (it would silently mean the preset's seeds)", forms)
    try:
        if ":" in text:
            lo, hi = (int(p) for p in text.split(":"))
            bounds = (lo, hi)
        elif "," in text:
            listed = tuple(int(p) for p in text.split(",") if p.strip())
            bounds = None
        else:
            bounds = (0, int(text))
    except ValueError:
        raise ConfigError("--seeds", f"cannot parse {spec!r}", forms) from None
    if bounds is not None:
        lo, hi = bounds
        if hi - lo > MAX_RUNS:
            raise ConfigError("--seeds", f"{spec!r} gives {hi - lo} seeds; at most {MAX_RUNS} runs per sweep")
        listed = tuple(range(lo, hi))
    if not listed:
        raise ConfigError("--seeds", f"{spec!r} gives no seeds", forms)
    bad = [s for s in listed if not 0 <= s < SEED_LIMIT]
    if bad:
        raise ConfigError(
            "--seeds",
            f"{spec!r}: {bad[0]} is outside the key range (a key holds 32 bits: s and s + 2^32 give the same run)",
            f"integers 0..{SEED_LIMIT - 1}",
        )
    if len(set(listed)) != len(listed):
        raise ConfigError("--seeds", f"{spec!r}: seeds must be distinct")
    return listed


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on `sep` outside brackets, so `model.x=[1,2],[3,4]` keeps its lists."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def parse_assignment(text: str, flag: str) -> tuple[str, str]:
    """`key=value` -> (key, value), both stripped; ConfigError naming `flag` without a `=` or a key."""
    key, eq, value = text.partition("=")
    if not eq or not key.strip():
        raise ConfigError(flag, f"expected key=value, got {text!r}")
    return key.strip(), value.strip()


def apply_sweep_args(cfg: ExperimentConfig, sweeps: Iterable[str]) -> ExperimentConfig:
    """Add `--sweep key=v1,v2` entries to the grid, parsing and validating each value.

    A `--sweep` of a key the preset's grid already sweeps replaces those values; two `--sweep`
    flags for one key are refused (the second would silently replace the first).
    """
    grid = dict(cfg.sweep.grid)
    given: set[str] = set()
    for item in sweeps:
        key, text = parse_assignment(item, "--sweep")
        section, name = cfg._split(key)
        if key in given:
            raise ConfigError(
                f"--sweep {key}", "is given twice; list every value in one flag", [f"--sweep {key}=v1,v2,v3"]
            )
        given.add(key)
        hint = _field_type(type(getattr(cfg, section)), name)
        values = tuple(parse_value(key, v, hint) for v in split_top_level(text))
        for v in values:
            cfg.set(key, v)  # validates each value on its own
        grid[key] = values
    return dataclasses.replace(cfg, sweep=dataclasses.replace(cfg.sweep, grid=tuple(grid.items())))
