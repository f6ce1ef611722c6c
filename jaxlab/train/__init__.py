"""Training: `make_train(cfg) -> train(key, hparams)`, and `run_sweep(cfg)` for whole sweeps."""

from jaxlab.train.engine import Train, TrainState, make_train, seed_keys
from jaxlab.train.hparams import TRACED_KEYS, default_hparams, stack_hparams
from jaxlab.train.sweep import SweepResult, checkpoint_indices, load_group, plan, run_sweep

__all__ = [
    "TRACED_KEYS",
    "SweepResult",
    "Train",
    "TrainState",
    "checkpoint_indices",
    "default_hparams",
    "load_group",
    "make_train",
    "plan",
    "run_sweep",
    "seed_keys",
    "stack_hparams",
]
