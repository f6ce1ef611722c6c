"""Sensitivity of an in-context prediction to the query: g = d y_hat / d x_query (von Oswald et al. 2023).

For a model with a fixed context, y_hat(x_q) is the function it has learned in context; for GD
from W0 = 0 it is linear, y_hat = W1 x_q, so g_GD = W1. Comparing g_model with g_GD (cosine and
L2 distance) compares the implicit linear models themselves, not only their outputs.

`query_sensitivity` needs a batched predictor whose prediction for task b depends on x_query[b]
only (true of a transformer applied to a batch of sequences); it then gets all B Jacobians from
one vector-Jacobian product per output dimension. Jacobians are compared with `jaxlab.probes.cosine`
(von Oswald et al.'s form: `eps=VON_OSWALD_EPS`) on their flattened rows.
"""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp


def with_query(inputs_BTD: jax.Array, x_query_BD: jax.Array) -> jax.Array:
    """Paired-layout sequences with the query token's x entries replaced by `x_query`."""
    chex.assert_rank([inputs_BTD, x_query_BD], [3, 2])
    return inputs_BTD.at[:, -1, : x_query_BD.shape[-1]].set(x_query_BD.astype(inputs_BTD.dtype))


def model_query_fn(
    apply_fn: Callable[[chex.ArrayTree, jax.Array], jax.Array], params: chex.ArrayTree, inputs_BTD: jax.Array
) -> Callable[[jax.Array], jax.Array]:
    """x_query [B, d] -> the model's query predictions [B, O] with each task's own context."""
    return lambda x_query_BD: apply_fn(params, with_query(inputs_BTD, x_query_BD))[:, -1, :]


def query_sensitivity(
    predict_fn: Callable[[jax.Array], jax.Array], x_query_BD: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(predictions [B, O], Jacobians d y_hat_b / d x_query_b [B, O, d]) of a task-wise predictor."""
    chex.assert_rank(x_query_BD, 2)
    preds_BO, vjp = jax.vjp(predict_fn, x_query_BD)
    chex.assert_rank(preds_BO, 2)
    eye = jnp.eye(preds_BO.shape[-1], dtype=preds_BO.dtype)
    jac_OBD = jax.vmap(lambda e: vjp(jnp.broadcast_to(e, preds_BO.shape))[0])(eye)
    return preds_BO, jnp.moveaxis(jac_OBD, 0, 1)


__all__ = ["model_query_fn", "query_sensitivity", "with_query"]
