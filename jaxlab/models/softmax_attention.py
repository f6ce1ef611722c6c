"""Softmax attention with a hand-written backward pass that makes fewer passes over the scores.

    z_q = sum_t p_qt v_t,  p_qt = e_qt / l_q,  e_qt = exp(s_qt - m_q) (0 where masked),
    s_qt = q_q . k_t,  m_q = max_t s_qt,  l_q = sum_t e_qt.

Forward: the normalization is applied to z ([B, Q, H, Dh]) instead of the pattern ([B, H, Q, T]),
and e is kept for the backward pass. Backward (the identity FlashAttention uses, Dao et al. 2022):
with dp_qt = dz_q . v_t,

    ds_qt = p_qt (dp_qt - D_q),   D_q = sum_t p_qt dp_qt = dz_q . z_q,

so the row sums D come from [B, Q, H, Dh] arrays, not from another pass over the T x T pattern.
dq = ds k, dk = ds^T q, dv = p^T dz. Values equal `jax.nn.softmax` attention's up to float
rounding (tests/test_models.py); the pattern itself is not returned (hooks use the explicit path).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def softmax_attention(q_BQHK: jax.Array, k_BTHK: jax.Array, v_BTHK: jax.Array, mask_QT: jax.Array) -> jax.Array:
    """z [B, Q, H, Dh] = softmax_t(q . k_t | mask) v (scores unscaled: scale q first)."""
    return _forward(q_BQHK, k_BTHK, v_BTHK, mask_QT)[0]


def _forward(q, k, v, mask):
    s = jnp.einsum("bqhk,bthk->bhqt", q, k)
    s = jnp.where(mask, s, jnp.finfo(s.dtype).min)
    e = jnp.exp(s - jnp.max(s, axis=-1, keepdims=True))
    l_BQH = jnp.sum(e, axis=-1).transpose(0, 2, 1)
    z = jnp.einsum("bhqt,bthk->bqhk", e, v) / l_BQH[..., None]
    return z, (q, k, v, e, l_BQH, z)


def _bwd(res, dz_BQHK):
    q, k, v, e, l_BQH, z = res
    p = e / l_BQH.transpose(0, 2, 1)[..., None]
    d_BQH = jnp.sum(dz_BQHK * z, axis=-1)
    dp = jnp.einsum("bqhk,bthk->bhqt", dz_BQHK, v)
    ds = p * (dp - d_BQH.transpose(0, 2, 1)[..., None])
    dq = jnp.einsum("bhqt,bthk->bqhk", ds, k)
    dk = jnp.einsum("bhqt,bqhk->bthk", ds, q)
    dv = jnp.einsum("bhqt,bqhk->bthk", p, dz_BQHK)
    return dq, dk, dv, None


softmax_attention.defvjp(_forward, _bwd)
