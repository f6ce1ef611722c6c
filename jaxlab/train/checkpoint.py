"""Checkpoints of a chunk of runs with orbax-checkpoint's `CheckpointManager` (`args` API),
fingerprinted so that a damaged one is recognised and skipped on resume.

A checkpoint holds the stacked `TrainState` of every run of one run chunk (params, optimizer state,
step, data keys, divergence flags) and its metric history so far (the on-device table [n_evals,
runs], rows not yet reached are NaN), taken after an evaluation. The checkpointer's callers name a
checkpoint by the index of that evaluation; on disk it is named by its training step (`<step>/`;
`steps` gives the step of each evaluation index; `steps=None`: by the index, as in run directories
written before checkpoints were named by step). Arrays may be sharded over the run mesh, across
processes: orbax writes each shard from the process that holds it. Saves are asynchronous (the call
returns once the arrays are copied off the device) and atomic (orbax writes to a temporary directory
and renames it when complete; leftovers of a killed save are removed when the manager opens), so a
killed sweep leaves whole checkpoints only.

Whole is not intact: a disk or a copy can still damage a finished checkpoint. So each one gets a
fingerprint, `fingerprints/<step>.json` beside the step directories:

- `arrays`: per leaf of the saved tree, two sums over its bits read as uint32 words u_i,
  (sum_i u_i, sum_i (2i + 1) u_i) mod 2^32, computed on the device from the arrays being saved
  (`fingerprint`). Any single changed byte changes the second sum (it changes one word by
  d * 256^k, 0 < |d| < 256, k < 4, and 2i + 1 is odd, hence invertible mod 2^32); random larger
  damage goes unnoticed with probability about 2^-64. The sums are exact integers, so they do not depend
  on how the arrays are sharded or in which order the devices add them.
- `files`: the size and CRC-32 of every file of the step directory, so that damaged files are
  found before orbax reads them (orbax's failures on damaged files differ between versions and
  file kinds, and its reader threads print tracebacks: `_quiet_reader_threads`).

The fingerprint is written by process 0 once orbax has finished the save (`poll`, called after
every evaluation interval, and `save`, `wait`, `close`): the file list only exists then, and a
fingerprint never describes a checkpoint that was never completed. A checkpoint without a
fingerprint is accepted when orbax restores it without error, unverified: that is a checkpoint
written before jaxlab kept fingerprints, or one finished within the last interval before the
sweep was killed (orbax's atomic rename still guarantees it is complete).

`restore` verifies (files, then orbax, then the arrays) and raises `DamagedCheckpoint`;
`restore_newest` falls back from the newest checkpoint to older ones, moving each damaged one
into `damaged/<step>-<time>/` (kept for inspection, outside orbax's step directories).

Intact is not compatible: a checkpoint written by a jaxlab whose state or evaluation had another
structure (an experiment that has since gained or lost a metric, say) is whole but does not fit
the tree this version restores into. Its structure is compared with the expected one (from
orbax's metadata, before any array is read) and a difference raises `IncompatibleCheckpoint`,
never `DamagedCheckpoint`: nothing is moved aside and a resume stops with a message instead of
falling back to older checkpoints or to step 0. For reading a run (`missing_metrics="nan"`), a
history that lacks metrics of this version restores with those metrics NaN (not measured then),
and metrics this version no longer records are left out.

A checkpoint restores with plain orbax in any process, whatever device count saved it (the arrays
come back as NumPy arrays, stacked over the chunk's runs):

    ckptr = ocp.StandardCheckpointer()
    tree = ckptr.restore(path, jax.tree.map(lambda m: np.empty(m.shape, m.dtype), ckptr.metadata(path).item_metadata))

with `path = DIR/checkpoints/group-GGGG/chunk-KKKK/<step>/item`; `tree["state"]` is the `TrainState`
as a dict (`params`, `opt_state`, ...), `tree["history"]` the metric table.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp

from jaxlab import results
from jaxlab.train.distributed import agree_min, barrier

FINGERPRINTS = "fingerprints"
DAMAGED = "damaged"

__all__ = [
    "DAMAGED",
    "FINGERPRINTS",
    "DamagedCheckpoint",
    "GroupCheckpointer",
    "IncompatibleCheckpoint",
    "Restored",
    "SaveSchedule",
    "clock",
    "fingerprint",
]


def clock() -> float:
    """Seconds on a monotonic clock (`SaveSchedule` reads it through this name; tests replace it)."""
    return time.monotonic()


class SaveSchedule:
    """When a chunk saves a checkpoint besides its final state.

    After evaluation interval i: every `every` intervals (i % every == 0; 0: never), and once at
    least `minutes` have passed since the chunk started or since its last save (0: never), so a
    killed sweep loses at most about `minutes` of work plus one interval. The clock (`clock`) is
    read once when the schedule is made and once per `time_due` call.
    """

    def __init__(self, every: int, minutes: float):
        self.every, self.minutes = int(every), float(minutes)
        self.last = self.now = clock()

    def every_due(self, i: int) -> bool:
        """Whether the count rule saves after interval `i`."""
        return self.every > 0 and i % self.every == 0

    def time_due(self) -> bool:
        """Whether the time rule saves now (reads the clock)."""
        self.now = clock()
        return self.minutes > 0 and self.now - self.last >= 60.0 * self.minutes

    def saved(self) -> None:
        """A checkpoint was saved after the interval of the last `time_due` call."""
        self.last = self.now


# -- fingerprints ----------------------------------------------------------------------------------
def _words(x: jax.Array) -> jax.Array:
    """The bits of `x` as a flat uint32 vector (16-bit and 8-bit items widened, 64-bit ones split)."""
    x = jnp.asarray(x)
    if x.dtype == jnp.bool_:
        x = x.astype(jnp.uint8)
    size = x.dtype.itemsize
    if size == 4:
        return jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(-1)
    if size in (1, 2):
        unsigned = jnp.uint8 if size == 1 else jnp.uint16
        return jax.lax.bitcast_convert_type(x, unsigned).reshape(-1).astype(jnp.uint32)
    if size == 8:
        return jax.lax.bitcast_convert_type(x, jnp.uint32).reshape(-1)
    raise TypeError(f"cannot fingerprint arrays of dtype {x.dtype}")


def _leaf_sums(x: jax.Array) -> jax.Array:
    u = _words(x)
    weights = 2 * jnp.arange(u.shape[0], dtype=jnp.uint32) + 1
    return jnp.stack([jnp.sum(u, dtype=jnp.uint32), jnp.sum(u * weights, dtype=jnp.uint32)])


_tree_sums = jax.jit(lambda leaves: [_leaf_sums(x) for x in leaves])


def fingerprint(tree: Any) -> dict[str, list[int]]:
    """{leaf path: [sum_i u_i, sum_i (2i + 1) u_i] mod 2^32} of a pytree of arrays (module docstring).

    Device arrays (sharded, across processes too) are summed where they are; NumPy arrays on the
    default device. Every process gets the same values.
    """
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    if not flat:
        return {}
    sums = jax.device_get(_tree_sums([x for _, x in flat]))
    return {jax.tree_util.keystr(path): [int(a), int(b)] for (path, _), (a, b) in zip(flat, sums)}


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            crc = zlib.crc32(block, crc)
    return crc


def _file_table(step_dir: Path) -> dict[str, list[int]]:
    """{path relative to the step directory: [size, CRC-32]} of every file under it."""
    return {
        str(p.relative_to(step_dir)): [p.stat().st_size, _crc32(p)] for p in sorted(step_dir.rglob("*")) if p.is_file()
    }


# -- the checkpointer ------------------------------------------------------------------------------
class DamagedCheckpoint(Exception):
    """Checkpoint `index` cannot be used: `reason` says why (a file differs from its fingerprint,
    orbax cannot restore it, or the restored arrays differ from the ones saved)."""

    def __init__(self, index: int, reason: str):
        self.index, self.reason = index, reason
        super().__init__(f"checkpoint {index}: {reason}")


@dataclass
class Restored:
    """The outcome of `restore_newest`: the state and history of checkpoint `index` (None: no
    usable checkpoint), whether it was verified against a fingerprint, and the damaged
    checkpoints set aside on the way: (index, reason, where it was moved)."""

    index: int | None
    state: Any = None
    history: dict[str, Any] = field(default_factory=dict)
    verified: bool = False
    damaged: list[tuple[int, str, Path | None]] = field(default_factory=list)


class IncompatibleCheckpoint(Exception):
    """Checkpoint `index` is intact but has another structure than this version restores into (it
    was written by a jaxlab whose training state or evaluation differed): the leaf paths only in
    the checkpoint (`only_saved`) and only expected here (`only_expected`), as "state/..." and
    "history/<metric>" strings."""

    def __init__(self, index: int, only_saved: Sequence[str], only_expected: Sequence[str]):
        self.index, self.only_saved, self.only_expected = index, list(only_saved), list(only_expected)
        super().__init__(f"checkpoint {index}: {self.difference()}")

    def difference(self) -> str:
        """The differing paths in words (at most 6 of each kind named)."""

        def named(paths: list[str]) -> str:
            return ", ".join(paths[:6]) + (f" and {len(paths) - 6} more" if len(paths) > 6 else "")

        parts = []
        if self.only_saved:
            parts.append(f"only in the checkpoint: {named(self.only_saved)}")
        if self.only_expected:
            parts.append(f"only in this version: {named(self.only_expected)}")
        return "; ".join(parts)


def leaf_paths(tree: Any) -> set[str]:
    """The "/"-joined key paths of a tree's leaves, with dict keys, attribute names and sequence
    indices alike (a namedtuple's fields and orbax's metadata dict of it give the same paths)."""

    def part(key: Any) -> str:
        for attr in ("key", "name", "idx"):
            if hasattr(key, attr):
                return str(getattr(key, attr))
        return str(key)

    flat, _ = jax.tree_util.tree_flatten_with_path(tree)
    return {"/".join(part(k) for k in path) for path, _ in flat}


class GroupCheckpointer:
    """The checkpoints of one run chunk: save, list, verify and restore them (module docstring).

    Callers name checkpoints by evaluation index; `steps[index]` is the name on disk (the training
    step; None: the index itself, the layout of older run directories).
    """

    def __init__(self, directory: Path, keep: int = 2, async_save: bool = True, steps: Sequence[int] | None = None):
        self.directory = Path(directory).absolute()
        self.steps = None if steps is None else [int(s) for s in steps]
        self._index_of = None if steps is None else {s: i for i, s in enumerate(self.steps)}
        options = ocp.CheckpointManagerOptions(
            max_to_keep=keep or None,
            enable_async_checkpointing=async_save,
            create=True,
            cleanup_tmp_directories=True,
        )
        self.manager = ocp.CheckpointManager(self.directory, options=options)
        self._pending: dict[int, dict[str, list[int]]] = {}  # saves in flight: index -> array sums

    # -- saving ----------------------------------------------------------------------------------
    def save(self, index: int, state: Any, history: dict[str, Any], force: bool = False) -> None:
        """Save the state after evaluation `index` with the metric history [n_evals, R].

        The fingerprint of the arrays is taken now (before the next interval donates them); it
        is written once orbax has finished the save.
        """
        item = {"state": state, "history": dict(history)}
        sums = fingerprint(item)
        if self._pending:  # orbax waits for the previous save before it starts this one anyway
            self.wait()
        args = ocp.args.Composite(item=ocp.args.StandardSave(item))
        if self.manager.save(self.name(index), args=args, force=force):
            self._pending[index] = sums

    def poll(self) -> None:
        """Write the fingerprints of the saves orbax has finished (does not wait for any)."""
        if self._pending and not self.manager.is_saving_in_progress():
            self._write_fingerprints()

    def _write_fingerprints(self) -> None:
        for index in sorted(self._pending):
            step_dir = self.directory / str(self.name(index))
            if step_dir.is_dir() and jax.process_index() == 0:
                record = {"step": self.name(index), "arrays": self._pending[index], "files": _file_table(step_dir)}
                results.write_json(self._fingerprint_path(index), record)
        self._pending.clear()
        if jax.process_index() == 0:
            self._prune()

    def _prune(self) -> None:
        """Remove the fingerprints of checkpoints orbax has deleted (`keep`)."""
        have = set(self.manager.all_steps())
        for path in (self.directory / FINGERPRINTS).glob("*.json"):
            if path.stem.isdigit() and int(path.stem) not in have and not (self.directory / path.stem).exists():
                path.unlink(missing_ok=True)

    def wait(self) -> None:
        """Block until every save has finished and its fingerprint is written."""
        self.manager.wait_until_finished()
        if self._pending:
            self._write_fingerprints()

    def close(self) -> None:
        """Wait for every save and its fingerprint, then close orbax's manager."""
        self.wait()
        self.manager.close()

    # -- what there is ---------------------------------------------------------------------------
    def name(self, index: int) -> int:
        """The on-disk name of checkpoint `index`: its step (or the index itself, `steps=None`)."""
        return index if self.steps is None else self.steps[index]

    def latest(self) -> int | None:
        """The evaluation index of the newest kept checkpoint (None: there is none)."""
        have = self.all()
        return have[-1] if have else None

    def all(self) -> list[int]:
        """Evaluation indices of every kept checkpoint, oldest first (directories whose name is not
        a step of this run's evaluation schedule are not its checkpoints, and are left alone)."""
        names = self.manager.all_steps()
        if self._index_of is None:
            return sorted(names)
        return sorted(self._index_of[n] for n in names if n in self._index_of)

    def _fingerprint_path(self, index: int) -> Path:
        return self.directory / FINGERPRINTS / f"{self.name(index)}.json"

    # -- restoring -------------------------------------------------------------------------------
    def restore(
        self, index: int, like_state: Any, like_history: dict[str, Any], missing_metrics: str = "raise"
    ) -> tuple[Any, dict[str, Any]]:
        """Restore evaluation `index`, shaped (and sharded) like `like_state` and `like_history`.

        Leaves given as jax arrays or `ShapeDtypeStruct`s with a sharding come back as arrays with
        that sharding; NumPy leaves come back as NumPy arrays (every process reads all of it).
        Raises `DamagedCheckpoint` when it does not verify, `IncompatibleCheckpoint` when its
        structure differs (`restore_verified`; `missing_metrics`: see there).
        """
        state, history, _ = self.restore_verified(index, like_state, like_history, missing_metrics)
        return state, history

    def restore_verified(
        self, index: int, like_state: Any, like_history: dict[str, Any], missing_metrics: str = "raise"
    ) -> tuple[Any, dict[str, Any], bool]:
        """`restore`, and whether a fingerprint verified it (False: it has none; module docstring).

        Order: the files against the fingerprint's file table, the saved structure against the
        expected one, orbax's restore, the restored arrays against the fingerprint's sums; the first
        failure raises `DamagedCheckpoint` (`IncompatibleCheckpoint` for the structure).
        missing_metrics: "raise" (a history with other metrics than `like_history` is incompatible:
        for a resume) or "nan" (its metrics that `like_history` has come back, the others of
        `like_history` as NaN of their shape: for reading a run written by another version).
        """
        if missing_metrics not in ("raise", "nan"):
            raise ValueError(f"missing_metrics must be 'raise' or 'nan', got {missing_metrics!r}")
        # every process takes each step (restores and fingerprints are collective): a failure on
        # one process is agreed on before the next step, so none waits for the others forever
        problem, record = None, None
        try:
            record = self._read_fingerprint(index)
            if record is not None:
                self._check_files(index, record.get("files", {}))
        except DamagedCheckpoint as err:
            problem = err
        _agree(index, problem)
        saved = None
        try:
            saved = self._saved_tree(index)
        except Exception as err:  # metadata that cannot be read: the checkpoint is not usable
            problem = DamagedCheckpoint(index, f"orbax cannot read its metadata ({_first_line(err)})")
        _agree(index, problem)
        self._check_structure(index, saved, like_state, like_history, missing_metrics)
        # the history as saved (its metrics only this version reads are dropped below: orbax restores whole trees)
        saved_history = saved.get("history") or {}
        like = {
            "state": like_state,
            "history": {k: like_history.get(k, _empty_like(meta)) for k, meta in saved_history.items()},
        }
        abstract = jax.tree_util.tree_map(_abstract, like)
        _quiet_reader_threads()
        try:
            args = ocp.args.Composite(item=ocp.args.StandardRestore(abstract))
            restored = self.manager.restore(self.name(index), args=args)
            item = restored.item
        except Exception as err:  # any failure to read it back: it is not usable
            problem = DamagedCheckpoint(index, f"orbax cannot restore it ({_first_line(err)})")
        _agree(index, problem)
        if record is not None and "arrays" in record:
            got = fingerprint(item)
            bad = sorted(k for k in set(got) | set(record["arrays"]) if got.get(k) != record["arrays"].get(k))
            if bad:
                shown = ", ".join(bad[:3]) + (f" and {len(bad) - 3} more" if len(bad) > 3 else "")
                raise DamagedCheckpoint(index, f"restored arrays differ from the ones saved: {shown}")
        history = dict(item["history"])
        for name in like_history:
            if name not in history:  # not recorded by the version that wrote it (missing_metrics="nan")
                like = like_history[name]
                history[name] = np.full(like.shape, np.nan, np.dtype(like.dtype))
        return item["state"], {k: history[k] for k in like_history}, record is not None

    def _saved_tree(self, index: int) -> dict[str, Any]:
        """The saved tree's structure ({"state": ..., "history": ...}, leaves orbax's array metadata),
        from orbax's metadata file: no array is read."""
        step_dir = self.directory / str(self.name(index)) / "item"
        metadata = ocp.StandardCheckpointHandler().metadata(step_dir)
        return dict(getattr(metadata, "tree", metadata))

    @staticmethod
    def _check_structure(
        index: int, saved: dict[str, Any], like_state: Any, like_history: dict[str, Any], missing_metrics: str
    ) -> None:
        """Raise `IncompatibleCheckpoint` when the state's leaf paths differ from the saved ones, or the
        metrics do and missing_metrics is "raise". The same on every process (they read the same files)."""
        saved_state, expected_state = leaf_paths(saved.get("state")), leaf_paths(like_state)
        saved_metrics, expected_metrics = set(saved.get("history") or {}), set(like_history)
        only_saved = sorted(f"state/{p}" for p in saved_state - expected_state)
        only_expected = sorted(f"state/{p}" for p in expected_state - saved_state)
        if missing_metrics == "raise" or only_saved or only_expected:
            only_saved += sorted(f"history/{m}" for m in saved_metrics - expected_metrics)
            only_expected += sorted(f"history/{m}" for m in expected_metrics - saved_metrics)
        if only_saved or only_expected:
            raise IncompatibleCheckpoint(index, only_saved, only_expected)

    def _read_fingerprint(self, index: int) -> dict[str, Any] | None:
        path = self._fingerprint_path(index)
        if not path.exists():
            return None
        try:
            record = json.loads(path.read_text())
            # "index": fingerprints written before checkpoints were named by step
            if not isinstance(record, dict) or record.get("step", record.get("index")) != self.name(index):
                raise ValueError("not a fingerprint of this checkpoint")
            return record
        except (OSError, ValueError) as err:
            raise DamagedCheckpoint(index, f"its fingerprint {path} is unreadable ({_first_line(err)})") from None

    def _check_files(self, index: int, table: dict[str, list[int]]) -> None:
        step_dir = self.directory / str(self.name(index))
        for name, (size, crc) in sorted(table.items()):
            path, shown = step_dir / name, f"its file {self.name(index)}/{name}"
            try:
                if path.stat().st_size != size:
                    raise DamagedCheckpoint(index, f"{shown} has {path.stat().st_size} bytes, {size} when saved")
                if _crc32(path) != crc:
                    raise DamagedCheckpoint(index, f"{shown} differs from the one saved (CRC-32)")
            except OSError as err:
                raise DamagedCheckpoint(index, f"{shown} cannot be read ({err.strerror or err})") from None

    def restore_newest(
        self,
        like_state: Any,
        like_history: dict[str, Any],
        on_damaged: Callable[[int, str, Path | None], None] = lambda index, reason, moved: None,
    ) -> Restored:
        """The newest checkpoint that restores and verifies; each newer damaged one is moved
        aside (`move_aside`) and reported through `on_damaged(index, reason, moved_to)`.

        Every process takes part (restores are collective) and all agree on each verdict
        (`restore_verified`): a checkpoint counts as damaged when it fails on any process.
        """
        out = Restored(index=None)
        for index in reversed(self.all()):
            try:
                out.state, out.history, out.verified = self.restore_verified(index, like_state, like_history)
                out.index = index
                return out
            except DamagedCheckpoint as err:
                reason = err.reason
            moved = self.move_aside(index, reason)
            out.damaged.append((index, reason, moved))
            on_damaged(index, reason, moved)
        return out

    def move_aside(self, index: int, reason: str) -> Path | None:
        """Move checkpoint `index` and its fingerprint to `damaged/<index>-<time>/` (process 0;
        every process calls this), out of orbax's sight; returns where it went (on process 0)."""
        target = None
        if jax.process_index() == 0:
            stamp = time.strftime("%Y%m%d-%H%M%S")
            name = self.name(index)
            target = self.directory / DAMAGED / f"{name}-{stamp}"
            n = 1
            while target.exists():
                n += 1
                target = self.directory / DAMAGED / f"{name}-{stamp}-{n}"
            target.mkdir(parents=True)
            source = self.directory / str(name)
            if source.exists():
                shutil.move(str(source), str(target / "checkpoint"))
            fp = self._fingerprint_path(index)
            if fp.exists():
                shutil.move(str(fp), str(target / "fingerprint.json"))
            (target / "reason.txt").write_text(reason + "\n")
        barrier(f"jaxlab-damaged-{os.fspath(self.directory)}-{index}")
        self.manager.reload()
        return target


def _quiet_reader_threads() -> None:
    """When a restore fails, tensorstore's reads still in flight complete into orbax's closed
    event loop (during the restore or later, when they are collected), and each prints a
    traceback ("Event loop is closed") through `sys.unraisablehook`. From the first restore on,
    this process drops exactly those; anything else reaches the previous hook."""
    if getattr(sys.unraisablehook, "jaxlab_quiet", False):
        return
    previous = sys.unraisablehook

    def hook(unraisable: Any) -> None:
        err = unraisable.exc_value
        if not (isinstance(err, RuntimeError) and str(err) == "Event loop is closed"):
            previous(unraisable)

    hook.jaxlab_quiet = True  # type: ignore[attr-defined]
    sys.unraisablehook = hook


def _agree(index: int, problem: DamagedCheckpoint | None) -> None:
    """Raise on every process when checkpoint `index` failed a check on any of them."""
    if agree_min(0 if problem is not None else 1) == 0:
        raise problem or DamagedCheckpoint(index, "it failed to restore or verify on another process")


def _first_line(err: BaseException) -> str:
    text = str(err).strip().splitlines() or [""]
    line = text[0] if len(text[0]) <= 240 else text[0][:240] + "..."
    return f"{type(err).__name__}: {line}" if line else type(err).__name__


def _empty_like(meta: Any) -> np.ndarray:
    """A NumPy target for a saved array that this version does not read (from orbax's metadata)."""
    return np.zeros(tuple(meta.shape), np.dtype(meta.dtype))


def _abstract(x: Any) -> Any:
    if isinstance(x, np.ndarray):
        return x
    return ocp.utils.to_shape_dtype_struct(x)
