"""The cosine between vectors, shared by every probe: one function, two guards for zero vectors.

    cos(a, b) = a . b / (||a|| ||b||)          over the last axis (leading axes broadcast)

A zero vector has no direction, so the plain formula divides by zero; the two guards in use differ
only there and in the last bits elsewhere, and each is the definition of some metric:

  eps=None (default)   a . b / max(||a|| ||b||, 1e-30): exact up to rounding for any nonzero
                       vectors, 0 for a zero vector (the concept directions of `steering`).
  eps=e                (a / (||a|| + e)) . (b / (||b|| + e)): von Oswald et al.'s code (their
                       "model_cos", norms + 1e-8), kept exactly for the metrics that reproduce it
                       (`gd_equivalence`, `autoregressive`); shrinks the cosine of tiny vectors
                       towards 0 (|a| = e gives at most 1/2).

`sign_invariant=True` gives |cos| (directions whose sign is arbitrary). Jacobians and other
matrices are compared as flat vectors: reshape them first (`g.reshape(B, -1)`).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

VON_OSWALD_EPS = 1e-8  # the eps von Oswald et al.'s code adds to each norm


def cosine(a: jax.Array, b: jax.Array, *, eps: float | None = None, sign_invariant: bool = False) -> jax.Array:
    """cos(a, b) over the last axis, [...] from a, b [..., K] (broadcast); see the module docstring
    for `eps` (None: the norm product clamped at 1e-30; a float: added to each norm)."""
    if eps is None:
        c = jnp.sum(a * b, -1) / jnp.maximum(jnp.linalg.norm(a, axis=-1) * jnp.linalg.norm(b, axis=-1), 1e-30)
    else:
        na = jnp.linalg.norm(a, axis=-1, keepdims=True) + eps
        nb = jnp.linalg.norm(b, axis=-1, keepdims=True) + eps
        c = jnp.sum((a / na) * (b / nb), axis=-1)
    return jnp.abs(c) if sign_invariant else c


__all__ = ["VON_OSWALD_EPS", "cosine"]
