"""Softmax attention through `jax.nn.dot_product_attention`: the kernel an accelerator's plan chooses.

    z_q = sum_t softmax_t(scale q_q . k_t | M) v_t,   scale = 1 / sqrt(Dh),

the same function as `jaxlab.models.softmax_attention` (tests/test_fused_attention.py), computed by
JAX's fused attention instead of jaxlab's custom-vjp einsums. The plan (`jaxlab.train.plan`) picks
it for GPUs and TPUs (`AttentionExecution.kernel == "fused"`); CPUs keep jaxlab's kernel.

Masks: every mask the tasks use is passed as it is: the whole-sequence causal mask as `is_causal`
(which cuDNN runs without computing the masked half), any other boolean [Q, T] mask (context keys,
the rows of a few static queries) as `mask`. No mask needs a fallback.

`implementation=None` (JAX picks; in JAX 0.10 always its XLA composition: two batched matmuls
around a float32 softmax, which XLA fuses per backend) is what `jax.export` can lower on a machine
without a GPU and what a GPU then runs. `implementation="cudnn"` is not used: JAX refuses to trace
it without cuDNN on the tracing machine ("cuDNN is not detected"), and cuDNN's flash attention takes
float16/bfloat16 inputs only, head dims a multiple of 8.

With `dtype="bfloat16"` q, k and v enter as bfloat16: q . k accumulates in float32
(`DotAlgorithmPreset.BF16_BF16_F32`), the softmax runs in float32 and the pattern times v returns
bfloat16, cast back to float32 here (the `jaxlab.models.attention.dot` convention).

The call runs inside a jitted function named `fused_attention`: exported programs show it as
`func.func private @fused_attention` (tests/test_plan.py reads that from the exported MLIR).
"""

from __future__ import annotations

import functools
import math

import chex
import jax
import jax.numpy as jnp

__all__ = ["fused_attention"]


@functools.partial(jax.jit, static_argnames=("causal", "dtype"))
def fused_attention(
    q_BQHK: jax.Array, k_BTHK: jax.Array, v_BTHK: jax.Array, mask_QT: jax.Array, causal: bool, dtype: str = "float32"
) -> jax.Array:
    """z [B, Q, H, Dh] = softmax_t(q . k_t / sqrt(Dh) | mask) v, float32 (module docstring).

    `causal`: `mask_QT` is the whole-sequence causal mask (Q == T); it is then given to the kernel
    as `is_causal` instead of as an array. `dtype`: the matmul inputs, `float32` or `bfloat16`.
    """
    B, Q, H, Dh = q_BQHK.shape
    T = k_BTHK.shape[1]
    chex.assert_shape(k_BTHK, (B, T, H, Dh))
    chex.assert_shape(v_BTHK, (B, T, H, Dh))
    chex.assert_shape(mask_QT, (Q, T))
    if causal and Q != T:
        raise ValueError(f"fused_attention: causal=True needs every query (Q == T), got Q={Q}, T={T}")
    cast = (lambda a: a.astype(jnp.bfloat16)) if dtype == "bfloat16" else (lambda a: a)
    z = jax.nn.dot_product_attention(
        cast(q_BQHK),
        cast(k_BTHK),
        cast(v_BTHK),
        mask=None if causal else mask_QT[None, None],
        is_causal=causal,
        scale=1.0 / math.sqrt(Dh),
        implementation=None,
    )
    return z.astype(jnp.float32)
