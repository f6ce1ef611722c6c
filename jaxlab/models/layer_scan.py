"""Blocks of identical structure compiled once: `jax.lax.scan` of one block over the layers.

The blocks of a model have one structure, so their forward pass (and its gradient) is one block's
computation repeated over their parameters. `scan_blocks` takes the parameters of blocks
i = first .. first + n - 1 as [n, ...] leaves (a stacked tree's as they are, a per-block tree's
stacked inside the forward pass; with tied layers the one shared tree is closed over instead) and
scans a pure function of one block over them:

    x_{i+1} = Block(params_i, x_i),   l = i traced inside the loop body.

XLA then compiles one block whatever the depth. The parameters come in either of two layouts, and
the model reads both:

  per block   `blocks_{i}` (i < L): one subtree per block, as `init` creates them; what checkpoints,
              outcomes, `params_at` and every probe see;
  stacked     `blocks` (`STACKED`): one subtree whose leaves are the blocks' leaves stacked [L, ...];
              what a training state holds with `train.scan_layers` (`jaxlab.train.engine`), so that
              the gradient, the micro-batch sums, clipping and the optimizer handle one leaf per
              weight whatever the depth, and the loop reads its parameters without stacking them.

`stack_blocks` and `unstack_blocks` convert between them (exactly: they move values, nothing is
computed); tied layers (one shared `blocks_0`) have one layout only. Inside the body the block's points
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

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.models.block import Block
from jaxlab.models.hooks import COLLECTION, RESIDUAL_HOOKS, block_point, flatten_intermediates
from jaxlab.models.interventions import Intervention

SCANNED = "blocks.scanned"  # the prefix of the hook points inside the loop body
STACKED = "blocks"  # the params key of the stacked layout (module docstring)
_BLOCK_KEY = re.compile(r"blocks_(\d+)")


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


def stack_trees(trees: Sequence[chex.ArrayTree], axis: int = 0) -> chex.ArrayTree:
    """Trees of one structure as one tree whose leaves are stacked on a new axis `axis` ([n, ...] for 0);
    NumPy leaves stay NumPy arrays (a checkpoint read on the host), others become jax arrays."""

    def stack(*leaves: chex.Array) -> chex.Array:
        xp = np if all(isinstance(x, np.ndarray) for x in leaves) else jnp
        return xp.stack(leaves, axis=axis)

    return jax.tree_util.tree_map(stack, *trees)


def block_count(params: Mapping[str, chex.ArrayTree]) -> int:
    """The number of `blocks_{i}` subtrees of a per-block parameter tree (0 for a stacked one); ValueError
    when their indices are not 0 .. n-1."""
    found = sorted(int(m.group(1)) for k in params if (m := _BLOCK_KEY.fullmatch(str(k))))
    if found != list(range(len(found))):
        names = ", ".join(f"blocks_{i}" for i in found)
        raise ValueError(f"block parameters {names} are not blocks_0 .. blocks_{{n-1}}")
    return len(found)


def stack_blocks(params: Mapping[str, chex.ArrayTree], axis: int = 0) -> dict[str, chex.ArrayTree]:
    """The stacked layout of a per-block parameter tree (module docstring):

        {blocks_0: t_0, ..., blocks_{L-1}: t_{L-1}, rest}  ->  {blocks: stack(t_0, ..., t_{L-1}), rest},

    the layer axis inserted at `axis` of every leaf (0: [L, ...]; 1 under a leading run axis [R, L, ...]).
    A tree already stacked, or without blocks, comes back as it is. For untied models: stacking a tied
    model's one shared `blocks_0` would give a one-layer tree."""
    n = 0 if STACKED in params else block_count(params)
    if not n:
        return dict(params)
    out = {k: v for k, v in params.items() if not _BLOCK_KEY.fullmatch(str(k))}
    out[STACKED] = stack_trees([params[f"blocks_{i}"] for i in range(n)], axis)
    return out


def unstack_blocks(params: Mapping[str, chex.ArrayTree], n_layers: int, axis: int = 0) -> dict[str, chex.ArrayTree]:
    """The per-block layout of a stacked parameter tree, the inverse of `stack_blocks`:

        {blocks: T, rest}  ->  {blocks_i: T[i] (every leaf indexed at `axis`), i < n_layers, rest}.

    `n_layers` is checked against the leaves' layer axis (ValueError). A per-block tree comes back as it
    is (so any boundary may call it on either layout)."""
    if STACKED not in params:
        return dict(params)
    stacked = params[STACKED]
    sizes = {np.shape(x)[axis] for x in jax.tree_util.tree_leaves(stacked)}
    if sizes != {n_layers}:
        raise ValueError(f"unstack_blocks: the stacked blocks have layer axes {sorted(sizes)}, not n_layers={n_layers}")
    index = lambda i: (slice(None),) * axis + (i,)
    out = {k: v for k, v in params.items() if k != STACKED}
    for i in range(n_layers):
        out[f"blocks_{i}"] = jax.tree_util.tree_map(lambda x, i=i: x[index(i)], stacked)
    return out


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

    `block`: an unbound `Block` of the model's config; `params`: the model's parameters in either layout
    (`blocks_{i}` for i in `layers`, stacked here; `blocks` [L, ...], sliced to `layers` when they are not
    all of them; `blocks_0` alone when `tied`). With `recording` every point of the body is recorded and
    returned under `blocks.{i}.*` (under jit the ones not used are removed); else the dict is empty.
    `interventions` may name any of the model's points; those of these blocks must be `scannable`.
    """
    chex.assert_rank(x_BTD, 3)
    assert scannable(interventions), "interventions inside a block's modules need the unrolled loop"
    index = jnp.arange(layers.start, layers.stop, dtype=jnp.int32)
    shared = params["blocks_0"] if tied else None
    if tied:
        stacked = None
    elif STACKED in params:
        stacked = params[STACKED]
        if layers != range(jax.tree_util.tree_leaves(stacked)[0].shape[0]):  # some blocks run outside the loop
            stacked = jax.tree_util.tree_map(lambda x: x[layers.start : layers.stop], stacked)
    else:
        stacked = stack_trees([params[f"blocks_{i}"] for i in layers])

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


__all__ = [
    "SCANNED",
    "STACKED",
    "LayerSelected",
    "at_layer",
    "block_count",
    "scan_blocks",
    "scannable",
    "stack_blocks",
    "stack_trees",
    "unstack_blocks",
]
