"""The training state in the per-block parameter layout, and back: checkpoints and outcomes keep `blocks_{i}`.

A `Train` whose state holds the blocks stacked (`Train.stacked`: `blocks` [L, ...],
`jaxlab.models.layer_scan`) converts at the boundaries of its compiled programs, so that a
checkpoint on disk, an outcome and the state handed to an experiment's `finalize` are what an
unscanned run writes:

  params      `unstack_blocks` / `stack_blocks` (the layer axis after the state's run axes);
  opt_state   the optimizer runs on the raveled parameter vector (`Train.optimizer`, `optax.flatten`),
              whose order is that of the layout's leaves: every state leaf of that length N (Adam's
              moments, momentum) is permuted from one order to the other,
                  v_blocks = v_stacked[perm],  v_stacked = v_blocks[argsort(perm)],
              with perm[j] the position in the stacked vector of entry j of the per-block vector.

Both move values only, so save, restore and continue is bitwise the run that never stopped, and a
checkpoint saved with `train.scan_layers` loads without it and the other way round. A state of a
`Train` that does not stack comes back as it is.
"""

from __future__ import annotations

from typing import Any

import chex
import jax
import numpy as np

from jaxlab.models.layer_scan import STACKED, stack_blocks, unstack_blocks
from jaxlab.train.engine import Train, TrainState

__all__ = ["per_block_order", "state_per_block", "state_stacked"]


def per_block_order(stacked_params: chex.ArrayTree, n_layers: int, batch_dims: int = 0) -> np.ndarray:
    """perm [N]: entry j of the raveled per-block parameter vector is entry perm[j] of the raveled stacked
    one (`jax.flatten_util.ravel_pytree` order: the leaves in tree order, each in C order). Leaves'
    first `batch_dims` axes (the runs) are not part of a run's vector."""
    leaves, treedef = jax.tree_util.tree_flatten(stacked_params)
    shapes = [np.shape(x)[batch_dims:] for x in leaves]
    sizes = [int(np.prod(s)) for s in shapes]
    starts = np.cumsum([0, *sizes])
    index = treedef.unflatten([np.arange(a, a + n).reshape(s) for a, n, s in zip(starts, sizes, shapes)])
    per_block = unstack_blocks(index, n_layers)
    return np.concatenate([np.ravel(x) for x in jax.tree_util.tree_leaves(per_block)])


def _permute_vectors(opt_state: Any, order: np.ndarray, batch_dims: int) -> Any:
    """Every leaf of `opt_state` that is a parameter vector ([..., N] after `batch_dims` run axes) taken at
    `order` along its last axis; the others (step counts, hyperparameters) as they are."""
    n = order.shape[0]
    vector = lambda x: tuple(np.shape(x)[batch_dims:]) == (n,)
    return jax.tree_util.tree_map(lambda x: x[..., order] if vector(x) else x, opt_state)


def state_per_block(train: Train, state: TrainState, batch_dims: int = 1) -> TrainState:
    """`state` (a training state of `train`, `batch_dims` leading run axes) with per-block parameters and
    its optimizer's vectors in their order (module docstring); as it is unless `train.stacked`. NumPy
    leaves stay NumPy (a checkpoint template), jax arrays give jax arrays (under jit: slices and one
    gather per vector)."""
    if not train.stacked or STACKED not in state.params:
        return state
    n_layers = train.cfg.model.n_layers
    order = per_block_order(state.params, n_layers, batch_dims)
    return state.replace(
        params=unstack_blocks(state.params, n_layers, axis=batch_dims),
        opt_state=_permute_vectors(state.opt_state, order, batch_dims),
    )


def state_stacked(train: Train, state: TrainState, batch_dims: int = 1) -> TrainState:
    """The inverse of `state_per_block`: a per-block state (a checkpoint's) in `train`'s training layout;
    as it is unless `train.stacked`."""
    if not train.stacked or STACKED in state.params:
        return state
    params = stack_blocks(state.params, axis=batch_dims)
    order = per_block_order(params, train.cfg.model.n_layers, batch_dims)
    return state.replace(params=params, opt_state=_permute_vectors(state.opt_state, np.argsort(order), batch_dims))
