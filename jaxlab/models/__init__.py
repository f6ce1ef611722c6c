"""The transformer family, its hook points, pure-data interventions and activation cache."""

from jaxlab.config import ModelConfig
from jaxlab.models.attention import AttentionExecution
from jaxlab.models.cache import ActivationCache
from jaxlab.models.hooks import hook_axes, hook_names, residual_hooks
from jaxlab.models.interventions import (
    Intervention,
    ablate_at,
    add_at,
    check_interventions,
    patch_from,
    replace_at,
)
from jaxlab.models.transformer import (
    Transformer,
    count_params,
    init_params,
    logit_lens,
    param_path,
    params_at,
    run_with_cache,
    scale_weights,
)

__all__ = [
    "ActivationCache",
    "AttentionExecution",
    "Intervention",
    "ModelConfig",
    "Transformer",
    "ablate_at",
    "add_at",
    "check_interventions",
    "count_params",
    "hook_axes",
    "hook_names",
    "init_params",
    "logit_lens",
    "param_path",
    "params_at",
    "patch_from",
    "replace_at",
    "residual_hooks",
    "run_with_cache",
    "scale_weights",
]
