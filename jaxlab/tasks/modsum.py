"""Modular addition with an optional spurious "hint" shortcut (for representation-dissimilarity).

A sequence is `n_items` independent items of three tokens, a b h, and the model predicts
y = (a + b) mod p at the third token of every item (the only positions of the loss):

  a, b ~ U{0, ..., p - 1}                  number tokens (ids 0..p-1)
  y    = (a + b) mod p                     the target at the hint position
  h    = y          with probability `shortcut`,
         ~ U{0..p-1} otherwise (independent of a, b; may equal y by chance, prob. 1/p)
  token of the hint = p + h                hint tokens have their own ids p..2p-1

So inputs [B, 3 n_items]: a_1 b_1 (p+h_1) a_2 b_2 (p+h_2) ...; targets are y_k at position
3k + 2 (loss mask 1 there, 0 elsewhere; target id 0 at masked positions).

Why this task: y is not a linear function of the one-hot codes of a and b (attention can only
mix their embeddings; the sum mod p needs a nonlinear map, the MLP's job, as in Nanda et al.'s
grokking models), so GeLU vs SoLU MLPs matter. The hint is a spurious feature: with
`shortcut = 1` it names the answer (a bigram h -> y the model can learn without attending to a, b);
with `shortcut = 0` it is noise. A model trained with the shortcut can reach the same accuracy on
shortcut-holding data as one that computes the sum, and fails where the shortcut is broken
(the OOD set: `shortcut = 0`), like the MNLI / HANS models of McCoy et al. (2020) that Brown et
al. (2023) stitch.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp

from jaxlab.config import TaskSection
from jaxlab.errors import ConfigError
from jaxlab.tasks.batch import Batch, TaskSpec

ITEM = 3  # tokens per item: a, b, hint


@dataclass(frozen=True)
class Config(TaskSection):
    """The `task` section of modular addition with a hint token (`kind = "modsum"`; module docstring)."""

    kind: ClassVar[str] = "modsum"
    p: int = 11
    n_items: int = 4
    shortcut: float = 0.0

    FIELD_DOCS: ClassVar[dict[str, str]] = {
        "p": "the modulus: y = (a + b) mod p; 2p token ids (numbers and hints)",
        "n_items": "items (a, b, hint) per sequence",
        "shortcut": "probability that an item's hint names its answer (else the hint is uniform noise)",
    }

    def validate(self) -> None:
        n = self._name
        if not isinstance(self.p, int) or self.p < 2:
            raise ConfigError(n("p"), f"must be an integer >= 2, got {self.p!r}")
        if not isinstance(self.n_items, int) or self.n_items < 1:
            raise ConfigError(n("n_items"), f"must be an integer >= 1, got {self.n_items!r}")
        if not 0.0 <= self.shortcut <= 1.0:
            raise ConfigError(n("shortcut"), f"is a probability, must be in [0, 1], got {self.shortcut!r}")


ModsumConfig = Config


def vocab_size(cfg: Config) -> int:
    """2p: the number tokens 0..p-1 and the hint tokens p..2p-1."""
    return 2 * cfg.p


def spec(cfg: Config) -> TaskSpec:
    """The `TaskSpec`: 3 n_items token ids from a vocabulary of 2p, cross-entropy over 2p classes."""
    V = vocab_size(cfg)
    return TaskSpec(kind=cfg.kind, seq_len=ITEM * cfg.n_items, output_dim=V, loss="xent", vocab_size=V)


def loss_positions(cfg: Config) -> tuple[int, ...]:
    """The hint positions 3k + 2: the only ones the loss mask covers."""
    return tuple(range(ITEM - 1, ITEM * cfg.n_items, ITEM))


def assemble(a: jax.Array, b: jax.Array, hint: jax.Array, cfg: Config) -> Batch:
    """The batch of items (a, b, hint) [B, n_items] (see the module docstring)."""
    B, K = a.shape
    y = (a + b) % cfg.p
    inputs = jnp.stack([a, b, cfg.p + hint], axis=-1).reshape(B, ITEM * K).astype(jnp.int32)
    targets = jnp.stack([jnp.zeros_like(y), jnp.zeros_like(y), y], axis=-1).reshape(B, ITEM * K).astype(jnp.int32)
    mask = jnp.tile(jnp.asarray([0.0, 0.0, 1.0], jnp.float32), (B, K))
    aux = {"a": a.astype(jnp.int32), "b": b.astype(jnp.int32), "y": y.astype(jnp.int32), "hint": hint.astype(jnp.int32)}
    return Batch(inputs=inputs, targets=targets, loss_mask=mask, aux=aux)


def sample(key: jax.Array, cfg: Config, batch_size: int = 1) -> Batch:
    """`batch_size` sequences; aux: a, b, y, hint [B, n_items] (int32). Pure, jit/vmap-able."""
    k_a, k_b, k_s, k_h = jax.random.split(key, 4)
    shape = (batch_size, cfg.n_items)
    a = jax.random.randint(k_a, shape, 0, cfg.p)
    b = jax.random.randint(k_b, shape, 0, cfg.p)
    y = (a + b) % cfg.p
    honest = jax.random.uniform(k_s, shape) < cfg.shortcut
    hint = jnp.where(honest, y, jax.random.randint(k_h, shape, 0, cfg.p))
    return assemble(a, b, hint, cfg)
