"""Gradient accumulation: one optimizer step's loss and gradient computed over micro-batches.

For a masked-mean loss over a batch split into micro-batches i,

    L = sum_{b,t} m_bt l_bt / sum_{b,t} m_bt = sum_i w_i L_i,   grad L = sum_i w_i grad L_i,
    w_i = C_i / sum_j C_j,

with L_i the masked mean over micro-batch i and C_i = sum of its mask (w_i = 0 when no position
counts at all, as the masked mean's max(count, 1) gives). It is the full batch's loss and gradient
up to float summation order: the same batch, the same optimizer step, only the activations of one
micro-batch alive at a time.

Why: a training step of a small transformer makes dozens of passes over its activations (norms,
GeLU, softmax, residuals, the layout copies around the GEMMs). On a CPU those passes run at
memory speed once a batch's activations outgrow the core's caches, and at cache speed when a
micro-batch's fit. `auto_micro_batch` takes the largest divisor of the batch size whose forward
activations (`sequence_bytes`) fit in `WORK_BYTES` (2 MB, one core's L2 on the measured CPU),
but no fewer than `MIN_TOKENS` (512) tokens per micro-batch: below that the GEMMs are too short
to pay for reading their weights. Measured on the 2-core CPU, micro-batch vs whole batch, time
ratio (benchmarks/results/train.md):

    softmax-regression (T 80, D 64, batch 256)   8 sequences: 0.62-0.69
    latent-ambiguity paper (T 132, D 128, 64)     4 sequences: 0.76
    steerability paper (T 32, D 64, 64)          16 sequences: 0.80
    representation-dissimilarity paper (T 18)    32 sequences: 0.76
    instruction-clustering paper (T 15, D 256)   64 sequences: 0.98 (4 sequences: 1.53)
    paper LSA (T 11, D 11, batch 2048)           the whole batch (1024: 1.09)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxlab.config import divisors
from jaxlab.tasks import Batch

WORK_BYTES = 2 * 2**20
MIN_TOKENS = 512

__all__ = ["MIN_TOKENS", "WORK_BYTES", "accumulate", "auto_micro_batch", "sequence_bytes"]


def sequence_bytes(seq_len: int, d_model: int, d_mlp: int, n_heads: int, n_layers: int) -> int:
    """float32 forward activations of one sequence: per layer and token, the residual stream (D),
    the MLP's hidden layer (F) and one attention row per head (H x T)."""
    return 4 * seq_len * (d_model + d_mlp + n_heads * seq_len) * max(n_layers, 1)


def auto_micro_batch(
    batch_size: int, seq_len: int, seq_bytes: int, budget: int = WORK_BYTES, min_tokens: int = MIN_TOKENS
) -> int:
    """Sequences per micro-batch: the largest divisor of `batch_size` whose activations
    (`seq_bytes` per sequence) fit in `budget` bytes, raised if needed to the smallest divisor
    that holds `min_tokens` tokens (module docstring)."""
    sizes = divisors(batch_size)
    fits = max(d for d in sizes if d == 1 or d * seq_bytes <= budget)
    long_enough = min(d for d in sizes if d * seq_len >= min_tokens or d == batch_size)
    return max(fits, long_enough)


def accumulate(
    loss_fn: Callable[[Any, Batch], jax.Array],
    params: Any,
    batch: Batch,
    mask_BT: jax.Array,
    micro_batch: int,
) -> tuple[jax.Array, Any]:
    """(loss, grad) of the masked-mean `loss_fn(params, batch)` over the whole batch, computed on
    micro-batches of `micro_batch` sequences (a `lax.scan`; module docstring).

    `mask_BT` is the mask `loss_fn` averages over (its counts weight the micro-batches). Only
    `inputs`, `targets` and `loss_mask` are split; `aux` is dropped (the training loss reads none).
    """
    grad_fn = jax.value_and_grad(loss_fn)
    B = batch.inputs.shape[0]
    if micro_batch < 1 or B % micro_batch:
        raise ValueError(f"micro_batch {micro_batch} does not divide the batch size {B}")
    if micro_batch == B:
        return grad_fn(params, batch)
    n = B // micro_batch
    split = lambda x: x.reshape(n, micro_batch, *x.shape[1:])
    parts = Batch(inputs=split(batch.inputs), targets=split(batch.targets), loss_mask=split(batch.loss_mask))
    counts = jnp.sum(split(mask_BT).reshape(n, -1), axis=1)
    weights = counts / jnp.maximum(jnp.sum(counts), 1.0)

    def body(carry, part_and_weight):
        part, w = part_and_weight
        loss, grads = grad_fn(params, part)
        total_loss, total_grads = carry
        return (total_loss + w * loss, jax.tree_util.tree_map(lambda a, g: a + w * g, total_grads, grads)), None

    init = (jnp.float32(0.0), jax.tree_util.tree_map(jnp.zeros_like, params))
    (loss, grads), _ = jax.lax.scan(body, init, (parts, weights))
    return loss, grads
