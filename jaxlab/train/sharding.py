"""The run axis laid out over every device: a 1-D `jax.sharding.Mesh`, padding, host views.

A sweep's runs are independent, so the only parallelism jaxlab needs is data parallelism over
runs: every array with a leading run axis is sharded `PartitionSpec("runs")` over a 1-D mesh of
all devices (of all processes, after `jax.distributed.initialize()`), and the per-run code is
left to XLA's SPMD partitioner (axis type `Auto`: the engine knows nothing of sharding). A run
count that does not divide the device count is padded with copies of a real run; the copies
are computed like any run and dropped before anything is written.

Arrays enter programs through `Placement.put` (`jax.make_array_from_callback`: every process
holds the same host array and contributes its own shards) and leave through `Placement.local`
(the rows this process can address), so the same code runs on one device, several devices of
one host, and several hosts.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

RUN_AXIS = "runs"


def run_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D mesh named `runs` over `devices` (default: every device of every process)."""
    devices = list(jax.devices() if devices is None else devices)
    return jax.make_mesh((len(devices),), (RUN_AXIS,), axis_types=(AxisType.Auto,), devices=devices)


def padded_size(n: int, multiple: int) -> int:
    """The smallest multiple of `multiple` that is >= n (and >= multiple)."""
    return max(1, math.ceil(n / multiple)) * multiple


@dataclass(frozen=True)
class Placement:
    """Where the runs of a program live: the mesh, and the shardings of run-axis arrays."""

    mesh: Mesh

    @classmethod
    def default(cls) -> Placement:
        """The placement over every device of every process (`run_mesh()`)."""
        return cls(run_mesh())

    @property
    def n_devices(self) -> int:
        """The devices of the mesh."""
        return self.mesh.devices.size

    @property
    def runs(self) -> NamedSharding:
        """Leading axis = runs, split over the devices."""
        return NamedSharding(self.mesh, PartitionSpec(RUN_AXIS))

    @property
    def runs_second(self) -> NamedSharding:
        """[time, runs] tables such as the metric history."""
        return NamedSharding(self.mesh, PartitionSpec(None, RUN_AXIS))

    @property
    def replicated(self) -> NamedSharding:
        """The sharding of an array every device holds in full."""
        return NamedSharding(self.mesh, PartitionSpec())

    def put(self, x: Any, sharding: NamedSharding) -> jax.Array:
        """A global array from a host array that every process holds in full."""
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    def put_tree(self, tree: Any, sharding: NamedSharding) -> Any:
        """Every leaf of `tree` (held in full by every process) as a global array with `sharding` (`put`)."""
        return jax.tree_util.tree_map(lambda x: self.put(x, sharding), tree)

    def local(self, x: jax.Array, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
        """(positions [n], values with axis `axis` of length n): the runs this process addresses.

        Positions are indices along the run axis of the global array, in increasing order.
        """
        if not isinstance(x, jax.Array) or x.is_fully_addressable:
            values = np.asarray(x)
            return np.arange(values.shape[axis]), values
        blocks: dict[int, np.ndarray] = {}
        for shard in x.addressable_shards:
            sl = shard.index[axis] if len(shard.index) > axis else slice(None)
            start = sl.start or 0
            if start not in blocks:  # replicas of the same block hold the same values
                blocks[start] = np.asarray(shard.data)
        starts = sorted(blocks)
        values = np.concatenate([blocks[s] for s in starts], axis=axis)
        positions = np.concatenate([s + np.arange(blocks[s].shape[axis]) for s in starts])
        return positions, values

    def local_slots(self, size: int) -> np.ndarray:
        """Indices along a run axis of length `size` that this process's devices hold."""
        blocks = set()
        for index in self.runs.addressable_devices_indices_map((size,)).values():
            sl = index[0]
            blocks.add((sl.start or 0, size if sl.stop is None else sl.stop))
        return np.concatenate([np.arange(a, b) for a, b in sorted(blocks)])

    def local_tree(self, tree: Any, axis: int = 0) -> tuple[np.ndarray, Any]:
        """`local` of every leaf of a run-axis pytree: (positions, tree of host arrays)."""
        leaves, treedef = jax.tree_util.tree_flatten(tree)
        if not leaves:
            return np.zeros(0, np.int64), tree
        pairs = [self.local(leaf, axis) for leaf in leaves]
        return pairs[0][0], jax.tree_util.tree_unflatten(treedef, [v for _, v in pairs])
