"""Configuration: frozen dataclasses, validation, `--set section.field=value` overrides, sweep grids.

An experiment's configuration has the sections `model`, `task`, `optim`, `train`, `probe` and
`sweep`. Presets are Python functions returning an `ExperimentConfig` (config as code, as in
big_vision). Every section validates itself on construction, so an invalid value can never reach
the training code; errors name the field (`model.n_heads`) and the allowed values.

The package, lowest first (each module imports only those above it in this list):
  checks      the field checks (`_choice`, `_positive`, ...) and limits (`MAX_RUNS`, `SEED_LIMIT`, ...)
  values      typed values: parse command-line text as a field's type, check the types of fields
  base        `Section` (the base of every section) and the `Inert` rules
  sections    `ModelConfig`, `OptimConfig`, `TrainConfig`, `TaskSection`, `ProbeConfig`, their choices
  sweep       `SweepConfig`: seeds x grid
  experiment  `ExperimentConfig`: overrides, resolution, the JSON form, `describe` (`KeyDoc`); `require_config`
  flags       the command line's `--seeds`, `--set` and `--sweep`
Every name is imported from here (`from jaxlab.config import ModelConfig`).
"""

from jaxlab.config.base import Inert, Section, inert
from jaxlab.config.checks import INT32_MAX, MAX_EVALS, MAX_RUNS, SEED_LIMIT, _choice, _positive, divisors
from jaxlab.config.experiment import SECTIONS, ExperimentConfig, KeyDoc, require_config
from jaxlab.config.flags import apply_sweep_args, parse_assignment, parse_seeds, split_top_level
from jaxlab.config.sections import (
    ACTIVATIONS,
    ATTENTIONS,
    ATTN_NORMS,
    DTYPES,
    EVAL_SCHEDULES,
    EXECUTION_ONLY,
    INPUTS,
    MASKS,
    OPTIMIZERS,
    POS_ENCODINGS,
    PRNG_IMPLS,
    READ_INS,
    READOUTS,
    RUN_LAYOUTS,
    SCHEDULES,
    ModelConfig,
    OptimConfig,
    ProbeConfig,
    TaskSection,
    TrainConfig,
)
from jaxlab.config.sweep import SweepConfig
from jaxlab.config.values import parse_value, type_text

__all__ = [
    "ACTIVATIONS",
    "ATTENTIONS",
    "ATTN_NORMS",
    "DTYPES",
    "EVAL_SCHEDULES",
    "EXECUTION_ONLY",
    "INPUTS",
    "INT32_MAX",
    "MASKS",
    "MAX_EVALS",
    "MAX_RUNS",
    "OPTIMIZERS",
    "POS_ENCODINGS",
    "PRNG_IMPLS",
    "READOUTS",
    "READ_INS",
    "RUN_LAYOUTS",
    "SCHEDULES",
    "SECTIONS",
    "SEED_LIMIT",
    "ExperimentConfig",
    "Inert",
    "KeyDoc",
    "ModelConfig",
    "OptimConfig",
    "ProbeConfig",
    "Section",
    "SweepConfig",
    "TaskSection",
    "TrainConfig",
    "_choice",
    "_positive",
    "apply_sweep_args",
    "divisors",
    "inert",
    "parse_assignment",
    "parse_seeds",
    "parse_value",
    "require_config",
    "split_top_level",
    "type_text",
]
