"""The transformer family and its pure-data interventions."""

from jaxlab.config import ModelConfig
from jaxlab.models.attention import AttentionExecution
from jaxlab.models.interventions import Intervention, add_at, hook_names, replace_at, residual_hooks
from jaxlab.models.transformer import Transformer, count_params, init_params, run_with_cache, scale_weights

__all__ = [
    "AttentionExecution",
    "Intervention",
    "ModelConfig",
    "Transformer",
    "add_at",
    "count_params",
    "hook_names",
    "init_params",
    "replace_at",
    "residual_hooks",
    "run_with_cache",
    "scale_weights",
]
