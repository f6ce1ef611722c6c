"""Hyperparameters that may differ between the vmapped runs of one compiled program.

These keys become traced scalars (`hparams["optim.lr"]`, ...) passed to `train(key, hparams)`;
any other swept key changes shapes or code and gets a program of its own.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.config import ExperimentConfig

TRACED_KEYS = ("optim.lr", "optim.weight_decay", "optim.b1", "optim.b2", "model.init_scale")

Hparams = dict[str, jax.Array]


def is_traced(key: str) -> bool:
    """Whether `key` is one of `TRACED_KEYS`, which may differ between the runs of one program."""
    return key in TRACED_KEYS


def default_hparams(cfg: ExperimentConfig) -> Hparams:
    """The config's own values of the traced hyperparameters, as float32 scalars."""
    return {k: jnp.float32(cfg.get(k)) for k in TRACED_KEYS}


def stack_hparams(cfg: ExperimentConfig, points: Sequence[Mapping[str, float]]) -> dict[str, np.ndarray]:
    """[R] arrays of every traced key, one entry per run (config value unless the point sets it)."""
    return {k: np.asarray([float(p.get(k, cfg.get(k))) for p in points], dtype=np.float32) for k in TRACED_KEYS}
