"""Sweeps of a config's own experiment, for tests that build configs from presets."""

from __future__ import annotations

from typing import Any

from jaxlab.registry import get_experiment
from jaxlab.train import run_sweep


def run_cfg(cfg: Any, *args: Any, **kwargs: Any) -> Any:
    """`run_sweep(experiment, cfg, ...)` with the experiment named in `cfg`."""
    return run_sweep(get_experiment(cfg.experiment), cfg, *args, **kwargs)
