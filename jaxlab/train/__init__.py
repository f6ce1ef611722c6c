"""Training: `make_train(cfg) -> train(key, hparams)`, and `run_sweep(experiment, cfg)` for whole sweeps."""

from jaxlab.train.engine import Train, TrainState, make_train, seed_keys
from jaxlab.train.experiment import Experiment, Finalized
from jaxlab.train.groups import plan_groups, with_seeds
from jaxlab.train.hparams import TRACED_KEYS, default_hparams, stack_hparams
from jaxlab.train.outcomes import GroupOutcome, SweepResult
from jaxlab.train.restore import checkpoint_indices, load_group
from jaxlab.train.sweep import run_sweep

__all__ = [
    "TRACED_KEYS",
    "Experiment",
    "Finalized",
    "GroupOutcome",
    "SweepResult",
    "Train",
    "TrainState",
    "checkpoint_indices",
    "default_hparams",
    "load_group",
    "make_train",
    "plan_groups",
    "run_sweep",
    "seed_keys",
    "stack_hparams",
    "with_seeds",
]
