"""Pure-data interventions on the residual stream, and hook names.

An `Intervention` is data, not a callback: it names a hook and carries arrays, so it can be
vmapped (a grid of steering strengths is a batch of interventions) and nothing needs cleaning up.

  mode="add":     x[b, t] <- x[b, t] + positions[b, t] * value[b, t]
  mode="replace": x[b, t] <- value[b, t] where positions[b, t], else x[b, t]

`value` broadcasts to [B, T, D] ([D], [T, D] or [B, T, D]); `positions` to [B, T] ([T] or [B, T]).
"""

from __future__ import annotations

from collections.abc import Sequence

import jax
import jax.numpy as jnp
from flax import struct

from jaxlab.config import ModelConfig

RESIDUAL_HOOKS = ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")
MODES = ("add", "replace")


@struct.dataclass
class Intervention:
    """A change of the residual stream at one hook, as data (a pytree: `value` and `positions` are its
    leaves, so interventions vmap). `mode` "add" or "replace"; shapes and formulas in the module
    docstring.
    """

    hook: str = struct.field(pytree_node=False)
    value: jax.Array
    positions: jax.Array
    mode: str = struct.field(pytree_node=False, default="add")

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"Intervention.mode: unknown value {self.mode!r} (allowed: {', '.join(MODES)})")

    def apply(self, x_BTD: jax.Array) -> jax.Array:
        """The intervened stream: `x_BTD` with `value` added (mode add) or substituted (mode replace) at `positions`."""
        pos = jnp.asarray(self.positions)
        pos_BT1 = pos[..., None]
        value = jnp.asarray(self.value, x_BTD.dtype)
        if self.mode == "add":
            return x_BTD + pos_BT1.astype(x_BTD.dtype) * value
        return jnp.where(pos_BT1.astype(bool), value, x_BTD)


def add_at(hook: str, vector: jax.Array, positions: jax.Array) -> Intervention:
    """Add `vector` to the residual stream at `hook` on the given positions (a steering vector)."""
    return Intervention(hook=hook, value=vector, positions=positions, mode="add")


def replace_at(hook: str, value: jax.Array, positions: jax.Array) -> Intervention:
    """Replace the residual stream at `hook` on the given positions by `value`."""
    return Intervention(hook=hook, value=value, positions=positions, mode="replace")


def hook_names(cfg: ModelConfig) -> list[str]:
    """Every hook a model of this config records, in execution order."""
    names = []
    for i in range(cfg.n_layers):
        b = f"blocks.{i}"
        names += [f"{b}.hook_resid_pre", f"{b}.attn.hook_pattern", f"{b}.hook_attn_out"]
        if cfg.d_mlp:
            names += [f"{b}.hook_resid_mid", f"{b}.hook_mlp_out"]
        names.append(f"{b}.hook_resid_post")
    return names


RESIDUAL_NAMES = ("post", "pre")


def residual_hooks(n_layers: int, *, embeddings: bool, name: str = "post") -> list[str]:
    """The hooks of the residual stream's reading points, in depth order.

    Point s = 0 .. n_layers is the stream after s blocks: s = 0 the embeddings
    (`blocks.0.hook_resid_pre`), s >= 1 the output of block s - 1. `embeddings=False` leaves point 0
    out (n_layers points), `embeddings=True` keeps it (n_layers + 1 points).
    A point 0 < s < n_layers has two hooks that record the same array: `name="post"` reads it as
    `blocks.{s-1}.hook_resid_post` (after the block), `name="pre"` as `blocks.{s}.hook_resid_pre`
    (before the next). The choice matters to interventions, which act at the named hook; the
    embeddings are always `blocks.0.hook_resid_pre`, the last point `blocks.{n_layers-1}.hook_resid_post`.
    """
    if n_layers < 1:
        raise ValueError(f"residual_hooks: n_layers must be >= 1, got {n_layers}")
    if name not in RESIDUAL_NAMES:
        raise ValueError(f"residual_hooks: name must be one of {', '.join(RESIDUAL_NAMES)}, got {name!r}")

    def hook(s: int) -> str:
        if s == 0 or (name == "pre" and s < n_layers):
            return f"blocks.{s}.hook_resid_pre"
        return f"blocks.{s - 1}.hook_resid_post"

    return [hook(s) for s in range(0 if embeddings else 1, n_layers + 1)]


def check_interventions(cfg: ModelConfig, interventions: Sequence[Intervention]) -> None:
    """ValueError unless every intervention names a hook this model records (any of `hook_names` but the attention
    patterns)."""
    valid = [n for n in hook_names(cfg) if not n.endswith("hook_pattern")]
    for iv in interventions:
        if iv.hook not in valid:
            raise ValueError(f"Intervention.hook: unknown hook {iv.hook!r} (allowed: {', '.join(valid)})")
