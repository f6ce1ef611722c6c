"""Pure-data interventions at any hook point: add, replace, zero- and mean-ablate, patch.

An `Intervention` is data, not a callback: it names a hook (`jaxlab.models.hooks`) and carries
arrays, so it can be vmapped (a grid of steering strengths is a batch of interventions; so are the
caches of runs to patch from) and jitted, and nothing needs cleaning up. With x the activation at
the hook and w the selection weight (`positions` times `heads`, each 1 where absent):

  mode="add":     x <- x + w * value
  mode="replace": x <- value where w, else x
  mode="zero":    x <- 0 where w, else x                      (zero-ablation)
  mode="mean":    x <- mean_b x[b] where w, else x            (mean-ablation: the mean over the batch
                                                               axis 0 of this forward pass, i.e. of each
                                                               run's own batch under vmap)

`value` broadcasts against the activation (NumPy rules: [D], [T, D] or [B, T, D] at a residual
hook; an activation from another input's cache at any hook). `positions` is a mask [T] or [B, T]
(bool, or float weights for mode add) over the hook's position axis, `heads` a mask [H] or [B, H]
over its head axis (`hooks.hook_axes`: hook_q/k/v/z [B, T, H, Dh] have positions on axis 1 and
heads on axis 2; hook_attn_scores/hook_pattern [B, H, Tq, Tk] heads on axis 1 and query positions
on axis 2); None selects every position (head). Masks are arrays, so they vmap and jit like values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import jax
import jax.numpy as jnp
from flax import struct

from jaxlab.config import ModelConfig
from jaxlab.models.hooks import hook_axes, hook_names

MODES = ("add", "replace", "zero", "mean")
ABLATIONS = ("zero", "mean")


def _placed(mask: jax.Array | None, ndim: int, axis: int) -> jax.Array | None:
    """A mask [n] or [B, n] (or a scalar) with unit axes added so that it broadcasts against an
    activation of rank `ndim`, n on `axis` (and B on axis 0): [n, 1, ...] or [B, 1, ..., n, 1, ...]."""
    if mask is None:
        return None
    mask = jnp.asarray(mask)
    if mask.ndim == 0:
        return mask
    if mask.ndim > 2:
        raise ValueError(f"Intervention: a mask is [n] or [B, n], got shape {mask.shape}")
    between = tuple(range(1, axis)) if mask.ndim == 2 else ()
    after = tuple(range(axis + 1, ndim)) if mask.ndim == 2 else tuple(range(1, ndim - axis))
    return jnp.expand_dims(mask, between + after)


@struct.dataclass
class Intervention:
    """A change of the activation at one hook, as data (a pytree: `value`, `positions` and `heads` are
    its leaves, so interventions vmap; None leaves are empty). `mode` add, replace, zero or mean;
    formulas and shapes in the module docstring.
    """

    hook: str = struct.field(pytree_node=False)
    value: jax.Array | None = None
    positions: jax.Array | None = None
    mode: str = struct.field(pytree_node=False, default="add")
    heads: jax.Array | None = None

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"Intervention.mode: unknown value {self.mode!r} (allowed: {', '.join(MODES)})")

    def weight(self, x: jax.Array) -> jax.Array | None:
        """The selection w = positions * heads broadcastable against x (None: everything selected)."""
        pos_axis, head_axis = hook_axes(self.hook)
        w = _placed(self.positions, x.ndim, pos_axis)
        if self.heads is not None:
            if head_axis is None:
                raise ValueError(f"Intervention.heads: hook {self.hook!r} has no head axis")
            h = _placed(self.heads, x.ndim, head_axis)
            w = h if w is None else w * h
        return w

    def apply(self, x: jax.Array) -> jax.Array:
        """The intervened activation (module docstring): x + w * value, or the new value where w is set."""
        w = self.weight(x)
        if self.mode == "add":
            value = jnp.asarray(self.value, x.dtype)
            return x + value if w is None else x + w.astype(x.dtype) * value
        if self.mode == "replace":
            new = jnp.asarray(self.value, x.dtype)
        elif self.mode == "zero":
            new = jnp.zeros((), x.dtype)
        else:
            new = jnp.mean(x, axis=0, keepdims=True)
        if w is None:
            return jnp.broadcast_to(new, x.shape)
        return jnp.where(w.astype(bool), new, x)


def add_at(hook: str, vector: jax.Array, positions: jax.Array | None, heads: jax.Array | None = None) -> Intervention:
    """Add `vector` to the activation at `hook` on the given positions (and heads): a steering vector."""
    return Intervention(hook=hook, value=vector, positions=positions, mode="add", heads=heads)


def replace_at(
    hook: str, value: jax.Array, positions: jax.Array | None, heads: jax.Array | None = None
) -> Intervention:
    """Replace the activation at `hook` on the given positions (and heads) by `value`."""
    return Intervention(hook=hook, value=value, positions=positions, mode="replace", heads=heads)


def ablate_at(
    hook: str, positions: jax.Array | None = None, heads: jax.Array | None = None, mode: str = "zero"
) -> Intervention:
    """Zero-ablate (`mode="zero"`) or mean-ablate (`mode="mean"`: the mean over the batch axis of the
    activation in this forward pass) the activation at `hook` on the selected positions and heads
    (None: all). E.g. head 1 of block 0: `ablate_at("blocks.0.attn.hook_z", heads=jnp.arange(H) == 1)`."""
    if mode not in ABLATIONS:
        raise ValueError(f"ablate_at: mode must be one of {', '.join(ABLATIONS)}, got {mode!r}")
    return Intervention(hook=hook, positions=positions, mode=mode, heads=heads)


def patch_from(
    cache: Mapping[str, jax.Array], hook: str, positions: jax.Array | None = None, heads: jax.Array | None = None
) -> Intervention:
    """Activation patching: replace the activation at `hook` on the selected positions and heads (None:
    all) by `cache[hook]`, the activation of another input (`run_with_cache` of the same model)."""
    if hook not in cache:
        raise ValueError(f"patch_from: hook {hook!r} is not in the cache (cached: {', '.join(cache)})")
    return replace_at(hook, cache[hook], positions, heads)


def check_interventions(cfg: ModelConfig, interventions: Sequence[Intervention]) -> None:
    """ValueError unless every intervention names a hook of this model (`hook_names(cfg)`, listed in the
    message) and selects heads only at a hook with a head axis."""
    valid = hook_names(cfg)
    for iv in interventions:
        if iv.hook not in valid:
            raise ValueError(f"Intervention.hook: unknown hook {iv.hook!r} (allowed: {', '.join(valid)})")
        if iv.heads is not None and hook_axes(iv.hook)[1] is None:
            raise ValueError(
                f"Intervention.heads: hook {iv.hook!r} has no head axis (heads can be selected at hook_q, hook_k, "
                "hook_v, hook_z, hook_attn_scores, hook_pattern)"
            )
        if iv.mode in ("add", "replace") and iv.value is None:
            raise ValueError(f"Intervention.value: mode {iv.mode!r} at {iv.hook!r} needs a value")


__all__ = ["Intervention", "ablate_at", "add_at", "check_interventions", "patch_from", "replace_at"]
