"""The `Batch` every task returns and the `TaskSpec` every task declares."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
from flax import struct


@struct.dataclass
class Batch:
    """One batch of sequences.

    inputs:    [B, T, d_in] float tokens, or [B, T] int token ids.
    targets:   [B, T, d_out] float targets, or [B, T] int next-token ids.
    loss_mask: [B, T] float, 1 where the position counts in the loss.
    aux:       task parameters and labels (e.g. the regression weights `w` [B, d_out, d]).
    """

    inputs: jax.Array
    targets: jax.Array
    loss_mask: jax.Array
    aux: dict[str, Any] = struct.field(default_factory=dict)

    @property
    def batch_size(self) -> int:
        """B, the number of sequences."""
        return self.inputs.shape[0]

    @property
    def seq_len(self) -> int:
        """T, the number of positions per sequence."""
        return self.inputs.shape[1]


@dataclass(frozen=True)
class TaskSpec:
    """What a model needs to know about a task's sequences.

    kind: the task's registered name. seq_len: tokens per sequence. token_dim: width of continuous
    tokens (None for discrete). vocab_size: number of token ids (None for continuous).
    output_dim: width of the prediction (regression) or number of classes (cross-entropy).
    loss: "mse" (0.5 * squared error summed over output dims, averaged over masked positions) or
    "xent" (cross-entropy in nats averaged over masked positions).
    """

    kind: str
    seq_len: int
    output_dim: int
    loss: str
    token_dim: int | None = None
    vocab_size: int | None = None
