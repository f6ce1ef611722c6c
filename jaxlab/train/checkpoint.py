"""Checkpoints of a chunk of runs with orbax-checkpoint's `CheckpointManager` (`args` API).

A checkpoint holds the stacked `TrainState` of every run of one run chunk (params, optimizer
state, step, data keys, divergence flags) and its metric history so far (the on-device table
[n_evals, runs], rows not yet reached are NaN), keyed by the index of the last completed
evaluation. Arrays may be sharded over the run mesh, across processes: orbax writes each shard
from the process that holds it. Saves are asynchronous (the call returns once the arrays are
copied off the device) and atomic (orbax writes to a temporary directory and renames it when
complete; leftovers of a killed save are removed when the manager opens), so a killed sweep
leaves whole checkpoints only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp


class GroupCheckpointer:
    def __init__(self, directory: Path, keep: int = 2, async_save: bool = True):
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep or None,
            enable_async_checkpointing=async_save,
            create=True,
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(Path(directory).absolute(), options=options)

    def save(self, index: int, state: Any, history: dict[str, Any], force: bool = False) -> None:
        """Save the state after evaluation `index` with the metric history [n_evals, R]."""
        item = {"state": state, "history": dict(history)}
        self.manager.save(index, args=ocp.args.Composite(item=ocp.args.StandardSave(item)), force=force)

    def latest(self) -> int | None:
        return self.manager.latest_step()

    def all(self) -> list[int]:
        """Indices of every kept checkpoint, oldest first."""
        return sorted(self.manager.all_steps())

    def restore(self, index: int, like_state: Any, like_history: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        """Restore evaluation `index`, shaped (and sharded) like `like_state` and `like_history`.

        Leaves given as jax arrays or `ShapeDtypeStruct`s with a sharding come back as arrays with
        that sharding; NumPy leaves come back as NumPy arrays (every process reads all of it).
        """
        like = {"state": like_state, "history": dict(like_history)}
        abstract = jax.tree_util.tree_map(_abstract, like)
        restored = self.manager.restore(index, args=ocp.args.Composite(item=ocp.args.StandardRestore(abstract)))
        item = restored.item
        return item["state"], dict(item["history"])

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()


def _abstract(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x
    return ocp.utils.to_shape_dtype_struct(x)
