"""Blocks of identical structure compiled once: `jax.lax.scan` of one block over the layers.

The blocks of a model have one structure, so their forward pass (and its gradient) is one block's
computation repeated over their parameters. `scan_blocks` stacks the parameter trees of blocks
i = first .. first + n - 1 inside the forward pass ([n, ...] leaves; with tied layers the one shared
tree is closed over instead) and scans a pure function of one block over them:

    x_{i+1} = Block(params_i, x_i),   l = i traced inside the loop body.

XLA then compiles one block whatever the depth, and the parameters keep their paths (`blocks_{i}`:
checkpoints, `params_at` and every probe see the same tree). Inside the body the block's points
carry the prefix `SCANNED`; recorded points come out as stacked scan outputs [n, ...], returned
under each layer's own name (`blocks.{i}.hook_resid_post`, ...), so caches are keyed as before.

Interventions at a block's residual-stream points (`hooks.RESIDUAL_HOOKS`: hook_resid_pre,
hook_attn_out, hook_resid_mid, hook_mlp_out, hook_resid_post) are applied inside the body at the
layer they name: x <- where(l == i, iv(x), x) (`LayerSelected`), the numbers of the unrolled loop.
Interventions at points inside a block's attention, LayerNorms or MLP switch that module of that
block alone to its explicit path (`hooks.active`), a per-layer choice of the program's structure
that one loop body cannot make (it would take the explicit path at every layer); with any of them
the model keeps its unrolled loop (`scannable`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import chex
import jax
import jax.numpy as jnp

from jaxlab.models.block import Block
from jaxlab.models.hooks import COLLECTION, RESIDUAL_HOOKS, block_point, flatten_intermediates
from jaxlab.models.interventions import Intervention

SCANNED = "blocks.scanned"  # the prefix of the hook points inside the loop body


def scannable(interventions: Sequence[Intervention]) -> bool:
    """Whether the blocks can run as one loop under these interventions: every one that names a block point
    names a residual-stream point (module docstring: the others choose a module's path per layer)."""
    for iv in interventions:
        point = block_point(iv.hook)
        if point is not None and point[1] not in RESIDUAL_HOOKS:
            return False
    return True


@dataclass(frozen=True)
class LayerSelected:
    """The intervention `inner` (at `blocks.{i}.{point}`) as seen by the loop body: named at the body's point
    `hook` (`SCANNED.{point}`), and applied where `selected` (the traced l == i) holds:
    x <- where(selected, inner(x), x)."""

    hook: str
    inner: Intervention
    selected: jax.Array

    def apply(self, x: jax.Array) -> jax.Array:
        """inner's activation at the selected layer, x unchanged at every other."""
        return jnp.where(self.selected, self.inner.apply(x), x)


def at_layer(interventions: Sequence[Intervention], layer: jax.Array, layers: range) -> tuple[LayerSelected, ...]:
    """The interventions of the blocks in `layers` for the loop body at the traced `layer`, in their order."""
    out = []
    for iv in interventions:
        point = block_point(iv.hook)
        if point is not None and point[0] in layers:
            out.append(LayerSelected(f"{SCANNED}.{point[1]}", iv, layer == point[0]))
    return tuple(out)


def stack_trees(trees: Sequence[chex.ArrayTree]) -> chex.ArrayTree:
    """Trees of one structure as one tree whose leaves are stacked on a new leading axis [n, ...]."""
    return jax.tree_util.tree_map(lambda *leaves: jnp.stack(leaves), *trees)


def scan_blocks(
    block: Block,
    params: Mapping[str, chex.ArrayTree],
    x_BTD: jax.Array,
    layers: range,
    interventions: Sequence[Intervention] = (),
    recording: bool = False,
    tied: bool = False,
) -> tuple[jax.Array, dict[str, jax.Array]]:
    """(the stream leaving the last block of `layers`, {hook name: activation} recorded in them) for x [B, T, D]
    entering the first, the blocks run as one `lax.scan` (module docstring).

    `block`: an unbound `Block` of the model's config; `params`: the model's parameters (`blocks_{i}` for i
    in `layers`, or `blocks_0` alone when `tied`). With `recording` every point of the body is recorded and
    returned under `blocks.{i}.*` (under jit the ones not used are removed); else the dict is empty.
    `interventions` may name any of the model's points; those of these blocks must be `scannable`.
    """
    chex.assert_rank(x_BTD, 3)
    assert scannable(interventions), "interventions inside a block's modules need the unrolled loop"
    index = jnp.arange(layers.start, layers.stop, dtype=jnp.int32)
    shared = params["blocks_0"] if tied else None
    stacked = None if tied else stack_trees([params[f"blocks_{i}"] for i in layers])

    def body(x: jax.Array, xs: tuple[jax.Array, chex.ArrayTree]) -> tuple[jax.Array, dict[str, jax.Array]]:
        layer, p = xs
        variables = {"params": shared if tied else p}
        ivs = at_layer(interventions, layer, layers)
        if not recording:
            return block.apply(variables, x, SCANNED, ivs), {}
        x, state = block.apply(variables, x, SCANNED, ivs, mutable=[COLLECTION])
        return x, flatten_intermediates(state[COLLECTION])

    x, stacked_points = jax.lax.scan(body, x_BTD, (index, stacked))
    recorded = {}
    for k, i in enumerate(layers):
        for name, value in stacked_points.items():
            recorded[f"blocks.{i}{name[len(SCANNED) :]}"] = value[k]
    return x, recorded


__all__ = ["SCANNED", "LayerSelected", "at_layer", "scan_blocks", "scannable", "stack_trees"]
