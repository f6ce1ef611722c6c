"""Task losses on model outputs, per position and masked means.

mse:  l[b, t] = 0.5 * sum_o (y_hat[b, t, o] - y[b, t, o])^2   (von Oswald et al.'s 0.5 * squared error)
xent: l[b, t] = -log softmax(logits[b, t])[y[b, t]]           (nats)
loss = sum_{b,t} mask[b, t] l[b, t] / sum_{b,t} mask[b, t]
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxlab.tasks.batch import Batch


def per_position_loss(kind: str, outputs: jax.Array, targets: jax.Array) -> jax.Array:
    """[B, T] loss of each position."""
    if kind == "mse":
        return 0.5 * jnp.sum((outputs.astype(jnp.float32) - targets) ** 2, axis=-1)
    if kind == "xent":
        logp = jax.nn.log_softmax(outputs.astype(jnp.float32), axis=-1)
        return -jnp.take_along_axis(logp, targets[..., None].astype(jnp.int32), axis=-1)[..., 0]
    raise ValueError(f"unknown loss {kind!r}")


def masked_mean(values_BT: jax.Array, mask_BT: jax.Array) -> jax.Array:
    """sum(values * mask) / max(sum(mask), 1): the mean over the masked positions ([B, T] each)."""
    return jnp.sum(values_BT * mask_BT) / jnp.maximum(jnp.sum(mask_BT), 1.0)


def batch_loss(kind: str, outputs: jax.Array, batch: Batch) -> jax.Array:
    """The mean loss of `kind` (`per_position_loss`: mse or xent) over the positions of `batch.loss_mask`."""
    return masked_mean(per_position_loss(kind, outputs, batch.targets), batch.loss_mask)


def accuracy(outputs: jax.Array, batch: Batch) -> jax.Array:
    """Fraction of masked positions whose arg-max logit is the target (xent tasks)."""
    hit = (jnp.argmax(outputs, axis=-1) == batch.targets).astype(jnp.float32)
    return masked_mean(hit, batch.loss_mask)
