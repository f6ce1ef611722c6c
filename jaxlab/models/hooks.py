"""Hook points: the TransformerLens names a model records, their layouts, and how a module records one.

A model has a point when its config has the component (B batch, T positions, D d_model, H heads,
Dh d_head, F d_mlp), in forward order:

  hook_embed                        [B, T, D]      the tokens read in (linear map or identity) or embedded
  hook_pos_embed                    [B, T, D]      the positional encoding added to them (learned or
                                                   sinusoidal; `pos_encoding` not none)
  blocks.{i}.hook_resid_pre         [B, T, D]      the stream entering block i
  blocks.{i}.ln1.hook_scale         [B, T, 1]      sqrt(var(x) + eps) of the LayerNorm before attention
                                                   (norm_position="attn_out": after hook_z, the LayerNorm
                                                   of the attention output; hook_attn_out is then LN1's
                                                   output, the term added to the stream; ln2 likewise)
  blocks.{i}.attn.hook_q / _k / _v  [B, T, H, Dh]  x W_Q^h + b_Q^h (and K, V), biases included
  blocks.{i}.attn.hook_attn_scores  [B, H, T, T]   softmax: q . k / sqrt(Dh), masked entries at the
                                                   float32 minimum (the softmax's input); linear and
                                                   positional: the raw scores q . k, unscaled and unmasked
  blocks.{i}.attn.hook_pattern      [B, H, T, T]   softmax: the attention weights; linear: the masked
                                                   scores (/ n_keys); positional: those times the
                                                   positional softmax
  blocks.{i}.attn.hook_z            [B, T, H, Dh]  z_t^h = sum_t' pattern^h[t, t'] v_t'^h (before W_O)
  blocks.{i}.hook_attn_out          [B, T, D]      sum_h z^h W_O^h + b_O
  blocks.{i}.hook_resid_mid         [B, T, D]      resid_pre + attn_out (blocks with an MLP)
  blocks.{i}.ln2.hook_scale         [B, T, 1]      the LayerNorm before the MLP
  blocks.{i}.mlp.hook_pre           [B, T, F]      x W_in + b_in
  blocks.{i}.mlp.hook_mid           [B, T, F]      solu only: pre * softmax(pre), before its LayerNorm
  blocks.{i}.mlp.hook_post          [B, T, F]      act(pre) (solu: after its LayerNorm, as TransformerLens)
  blocks.{i}.hook_mlp_out           [B, T, D]      post W_out + b_out
  blocks.{i}.hook_resid_post        [B, T, D]      the stream leaving block i
  ln_final.hook_scale               [B, T, 1]      the final LayerNorm (norm_position="pre" only)

With `tie_layers` each block index i has its own names (one set of parameters, n_layers sets of
points), as it has when the blocks run as one `lax.scan` (`jaxlab.models.layer_scan`: the loop's
stacked points are stored under each layer's name). A module records a point with `record`: the
interventions naming it are applied, then the value is sown into the `intermediates` collection
under its flat name (nested under the recording module's path; `flatten_intermediates` undoes the
nesting).

Fast paths: attention, the LayerNorm and the MLP take their explicit computations only when
`intermediates` is mutable or an intervention names one of their points (`active`); otherwise every
hook is the identity and costs nothing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax

from jaxlab.config import ModelConfig

COLLECTION = "intermediates"
HEAD_HOOKS = ("hook_q", "hook_k", "hook_v", "hook_z")  # [B, T, H, Dh]: positions on axis 1, heads on axis 2
PATTERN_HOOKS = ("hook_attn_scores", "hook_pattern")  # [B, H, Tq, Tk]: heads on axis 1, query positions on axis 2
RESIDUAL_HOOKS = ("hook_resid_pre", "hook_attn_out", "hook_resid_mid", "hook_mlp_out", "hook_resid_post")


def block_point(name: str) -> tuple[int, str] | None:
    """(i, rest) of a name under block i, `blocks.{i}` or `blocks.{i}.{rest}` (`blocks.2.attn.hook_z`:
    (2, `attn.hook_z`); `blocks.2`: (2, ``)); None for the model's other names (hook_embed, ln_final, ...)."""
    parts = name.split(".", 2)
    if len(parts) >= 2 and parts[0] == "blocks" and parts[1].isdigit():
        return int(parts[1]), parts[2] if len(parts) == 3 else ""
    return None


def block_hook_names(cfg: ModelConfig, i: int) -> list[str]:
    """The points of block i, in forward order (module docstring)."""
    b = f"blocks.{i}"
    pre, post = cfg.final_norm, cfg.layernorm and not cfg.final_norm  # post: norm_position="attn_out"
    names = [f"{b}.hook_resid_pre"]
    if pre:
        names.append(f"{b}.ln1.hook_scale")
    names += [f"{b}.attn.{h}" for h in ("hook_q", "hook_k", "hook_v", "hook_attn_scores", "hook_pattern", "hook_z")]
    if post:
        names.append(f"{b}.ln1.hook_scale")
    names.append(f"{b}.hook_attn_out")
    if cfg.d_mlp:
        names.append(f"{b}.hook_resid_mid")
        if pre:
            names.append(f"{b}.ln2.hook_scale")
        mid = ["hook_mid"] if cfg.activation == "solu" else []
        names += [f"{b}.mlp.{h}" for h in ("hook_pre", *mid, "hook_post")]
        if post:
            names.append(f"{b}.ln2.hook_scale")
        names.append(f"{b}.hook_mlp_out")
    names.append(f"{b}.hook_resid_post")
    return names


def hook_names(cfg: ModelConfig) -> list[str]:
    """Every point a model of this config records and accepts interventions at, in forward order (the
    module docstring lists them with their shapes)."""
    names = ["hook_embed"]
    if cfg.pos_encoding != "none":
        names.append("hook_pos_embed")
    for i in range(cfg.n_layers):
        names += block_hook_names(cfg, i)
    if cfg.final_norm:
        names.append("ln_final.hook_scale")
    return names


def hook_axes(name: str) -> tuple[int, int | None]:
    """(position axis, head axis or None) of the activation at hook `name`: (1, 2) for hook_q/k/v/z
    [B, T, H, Dh], (2, 1) for hook_attn_scores/hook_pattern [B, H, Tq, Tk] (the query positions), else
    (1, None) ([B, T, ...]). The batch is axis 0 everywhere."""
    leaf = name.rsplit(".", 1)[-1]
    if leaf in HEAD_HOOKS:
        return 1, 2
    if leaf in PATTERN_HOOKS:
        return 2, 1
    return 1, None


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


def active(module: nn.Module, prefix: str, interventions: Sequence[Any]) -> bool:
    """Whether `module` must compute its points under `prefix` (a hook name, or a module path such as
    `blocks.0.attn` for all of its points): `intermediates` is mutable, or an intervention names one."""
    if module.is_mutable_collection(COLLECTION):
        return True
    return any(iv.hook == prefix or iv.hook.startswith(prefix + ".") for iv in interventions)


def record(module: nn.Module, name: str, x: jax.Array, interventions: Sequence[Any]) -> jax.Array:
    """The activation at hook `name` after the interventions that name it (in their order), sown into
    `intermediates` when that collection is mutable (else `sow` does nothing): the identity when
    nothing is recorded and no intervention names the point."""
    for iv in interventions:
        if iv.hook == name:
            x = iv.apply(x)
    module.sow(COLLECTION, name, x)
    return x


def flatten_intermediates(tree: Mapping[str, Any]) -> dict[str, jax.Array]:
    """{flat hook name: activation} of an `intermediates` collection: points sown by submodules sit
    under their module path (blocks_0/attn/...), the points of blocks run as one loop at the top level
    (`jaxlab.models.layer_scan`); each is keyed by its full name already, and `sow` keeps a tuple of
    values, of which the last is taken."""
    out: dict[str, jax.Array] = {}
    for key, value in tree.items():
        if isinstance(value, tuple):
            out[key] = value[-1]
        else:
            out.update(flatten_intermediates(value))
    return out


__all__ = [
    "HEAD_HOOKS",
    "PATTERN_HOOKS",
    "RESIDUAL_HOOKS",
    "active",
    "block_hook_names",
    "block_point",
    "flatten_intermediates",
    "hook_axes",
    "hook_names",
    "record",
    "residual_hooks",
]
