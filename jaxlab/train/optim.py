"""optax optimizers whose hyperparameters are traced values (vmappable across runs).

The chain is `clip_by_global_norm(clip_norm)` (when clip_norm > 0) followed by adamw, adam or
sgd, wrapped in `optax.inject_hyperparams` so the learning rate, weight decay and Adam betas live
in the optimizer state as arrays. For adam and sgd, weight decay is coupled (L2 added to the
gradient); for adamw it is decoupled (Loshchilov & Hutter 2019).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import jax.numpy as jnp
import optax

from jaxlab.config import OptimConfig


def schedule_shape(cfg: OptimConfig, total_steps: int) -> Callable[[jax.Array], jax.Array]:
    """Multiplier of the peak learning rate at optimizer step `count`."""
    warm = max(cfg.warmup_steps, 1)

    def cosine(count: jax.Array, start: int) -> jax.Array:
        frac = jnp.clip((count - start) / max(total_steps - start, 1), 0.0, 1.0)
        return 0.5 * (1.0 + jnp.cos(jnp.pi * frac))

    def warmup(count: jax.Array) -> jax.Array:
        return jnp.minimum(1.0, (count + 1) / warm) if cfg.warmup_steps else jnp.float32(1.0)

    shapes = {
        "constant": lambda c: jnp.float32(1.0),
        "cosine": lambda c: cosine(c, 0),
        "warmup_constant": warmup,
        "warmup_cosine": lambda c: warmup(c) * cosine(c, cfg.warmup_steps),
        "linear_decay": lambda c: jnp.clip(1.0 - c / max(total_steps, 1), 0.0, 1.0),
    }
    return shapes[cfg.schedule]


def make_optimizer(
    cfg: OptimConfig, total_steps: int, hparams: Mapping[str, jax.Array]
) -> optax.GradientTransformation:
    """The optax optimizer of `cfg` (module docstring) over `total_steps` steps, its learning rate the
    schedule times `hparams["optim.lr"]` and its weight decay and Adam betas taken from `hparams`
    (traced values, so they can differ between vmapped runs).
    """
    shape = schedule_shape(cfg, total_steps)
    peak = hparams["optim.lr"]

    def build(learning_rate, weight_decay, b1, b2) -> optax.GradientTransformation:
        parts = []
        if cfg.clip_norm > 0:
            parts.append(optax.clip_by_global_norm(cfg.clip_norm))
        if cfg.name == "adamw":
            parts.append(optax.adamw(learning_rate, b1=b1, b2=b2, eps=cfg.eps, weight_decay=weight_decay))
        elif cfg.name == "adam":
            parts += [optax.add_decayed_weights(weight_decay), optax.adam(learning_rate, b1=b1, b2=b2, eps=cfg.eps)]
        else:
            momentum = cfg.momentum if cfg.momentum > 0 else None
            parts += [optax.add_decayed_weights(weight_decay), optax.sgd(learning_rate, momentum=momentum)]
        return optax.chain(*parts)

    return optax.inject_hyperparams(build)(
        learning_rate=lambda count: peak * shape(count),
        weight_decay=hparams["optim.weight_decay"],
        b1=hparams["optim.b1"],
        b2=hparams["optim.b2"],
    )
