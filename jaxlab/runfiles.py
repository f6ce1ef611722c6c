"""The record of what jaxlab wrote into a run directory (`DIR/.jaxlab-files.json`).

A run directory may also hold the user's own files (a directory that holds no run is accepted as
`--out`). Replacing a run (`--overwrite`) must move and delete only what jaxlab wrote, so jaxlab
keeps a record: the names of the top-level entries it wrote (config.json, summary.json,
metrics.parquet, runs.parquet, report.md, parts/, checkpoints/, every figure or cache the report wrote), and
whether the run that wrote them got past its first training interval (`started`). Inside
`parts/` and `checkpoints/` the names jaxlab writes follow fixed patterns (`JAXLAB_ENTRIES`);
anything else in them is the user's.

A directory written before this record existed ("legacy": a jaxlab config.json, no record) is read
as holding RUN_FILES, RUN_DIRS and the figures its report.md shows; a config.json that is not a
jaxlab config (`is_jaxlab_config`) is the user's. Inside jaxlab's directories, entries jaxlab does
not write at the levels below (`strangers`: a note in `checkpoints/group-0000/`) make `--overwrite`
refuse rather than delete them with the old run.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from jaxlab import results
from jaxlab.errors import UserError

MANIFEST = ".jaxlab-files.json"
RUN_FILES = ("config.json", "summary.json", "metrics.parquet", "runs.parquet", "report.md")
RUN_DIRS = ("parts", "checkpoints")
# what jaxlab writes inside its directories (with the temporary names of `results`' atomic writes); the
# trackers' directories (`jaxlab.trackers`): tensorboardX's run-<run>/, the wandb library's runs and logs
JAXLAB_ENTRIES = {
    "parts": ("part-*", "done-*", "cross.json", ".part-*.tmp", ".done-*.tmp", ".cross.json.*.tmp"),
    "checkpoints": ("group-*",),
    "tensorboard": ("run-*",),
    "wandb": ("run-*", "offline-run-*", "latest-run", "debug*.log"),
}
# below those: what jaxlab writes inside a checkpoint group and chunk, and a TensorBoard run (checked by
# `strangers`; the wandb library's own directories are not looked into)
NESTED_ENTRIES = {
    ("checkpoints", 1): ("layout.json", ".layout.json.*.tmp", "chunk-*"),
    ("checkpoints", 2): ("[0-9]*", "fingerprints", "damaged", ".*.tmp"),
    ("tensorboard", 1): ("events.out.tfevents.*",),
}
_FIGURE_LINK = re.compile(r"!\[[^\]]*\]\(([^)/\\]+)\)")


@dataclass
class Manifest:
    """Top-level names jaxlab wrote, whether their run got past its first training interval, and the
    command that started it (a `--resume` keeps it as the run's provenance; "" when not recorded)."""

    files: set[str] = field(default_factory=set)
    started: bool = True
    command: str = ""


def read(run_dir: Path) -> Manifest | None:
    """The record of `run_dir`, inferred for a legacy run directory; None when it holds no run."""
    run_dir = Path(run_dir)
    path = run_dir / MANIFEST
    if path.exists():
        try:
            data = json.loads(path.read_text())
            return Manifest(set(data["files"]), bool(data["started"]), str(data.get("command") or ""))
        except (ValueError, KeyError, TypeError):
            pass  # damaged: read as legacy (what a run there certainly wrote), never as "nothing"
    elif not is_jaxlab_config(run_dir / "config.json"):
        return None
    files = set(RUN_FILES) | set(RUN_DIRS)
    report = run_dir / "report.md"
    if report.is_file():
        files |= set(_FIGURE_LINK.findall(report.read_text(errors="replace")))
    return Manifest(files, True)


def write(run_dir: Path, manifest: Manifest) -> None:
    """Write `manifest` as the record of `run_dir` (`MANIFEST`, atomically)."""
    data = {"files": sorted(manifest.files), "started": manifest.started}
    if manifest.command:
        data["command"] = manifest.command
    results.write_json(Path(run_dir) / MANIFEST, data)


def started_by(run_dir: Path) -> str:
    """The command that started the run in `run_dir`: the record's; for a run written before the record
    held it, its summary.json's (a finished run's); "" when neither says."""
    run_dir = Path(run_dir)
    manifest = read(run_dir) if (run_dir / MANIFEST).exists() else None
    if manifest is not None and manifest.command:
        return manifest.command
    try:
        summary = json.loads((run_dir / "summary.json").read_text())
    except (OSError, ValueError):  # none, or damaged (the merge rewrites it)
        return ""
    command = summary.get("command") if isinstance(summary, dict) else None
    return command if isinstance(command, str) else ""


def record(run_dir: Path, names: Iterable[str]) -> None:
    """Add `names` (top-level entries of `run_dir` jaxlab just wrote) to the record."""
    manifest = read(run_dir) or Manifest()
    new = set(names) - manifest.files
    if new or not (Path(run_dir) / MANIFEST).exists():
        manifest.files |= new
        write(run_dir, manifest)


def owned(run_dir: Path) -> set[str]:
    """Top-level names of `run_dir` that jaxlab wrote (whether or not they exist now)."""
    manifest = read(run_dir)
    return set() if manifest is None else manifest.files


def is_jaxlab_config(path: Path) -> bool:
    """Whether `path` is a file that reads as a jaxlab config.json (a JSON object naming its `experiment`,
    with a `train` section): a config.json of anything else is the user's, never a legacy run's."""
    try:
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and isinstance(data.get("experiment"), str) and isinstance(data.get("train"), dict)


def holds_run(run_dir: Path) -> bool:
    """Whether jaxlab wrote a run (or the start of one) into `run_dir`."""
    return (Path(run_dir) / MANIFEST).exists() or is_jaxlab_config(Path(run_dir) / "config.json")


def strangers(run_dir: Path, limit: int = 8) -> list[str]:
    """Paths (relative to `run_dir`) inside the directories jaxlab wrote there, below their top level,
    that jaxlab does not write (`NESTED_ENTRIES`): a file of the user's in `checkpoints/group-0000/`
    would go with the old run. At most `limit` of them (the first, sorted), then "... (N more)"."""
    run_dir = Path(run_dir)
    mine = owned(run_dir)
    out: list[str] = []
    for top in sorted({top for top, _ in NESTED_ENTRIES}):
        root = run_dir / top
        if top not in mine or not root.is_dir() or root.is_symlink():
            continue
        level = [c for c in root.iterdir() if is_jaxlab_entry(top, c.name)]  # jaxlab's entries of depth 0
        depth = 1
        while (top, depth) in NESTED_ENTRIES:
            children = [g for c in level if c.is_dir() and not c.is_symlink() for g in c.iterdir()]
            patterns = NESTED_ENTRIES[(top, depth)]
            out += [str(g.relative_to(run_dir)) for g in children if not _matches(g.name, patterns)]
            level = [g for g in children if _matches(g.name, patterns)]
            depth += 1
    out.sort()
    return out if len(out) <= limit else [*out[:limit], f"... ({len(out) - limit} more)"]


def _matches(name: str, patterns: Iterable[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, p) for p in patterns)


def foreign(run_dir: Path) -> list[str]:
    """Entries of `run_dir` with a name a run writes that jaxlab did not write (the user's)."""
    mine = owned(run_dir)
    return [n for n in RUN_FILES + RUN_DIRS if n not in mine and (Path(run_dir) / n).exists()]


def is_jaxlab_entry(directory: str, name: str) -> bool:
    """Whether `name` inside jaxlab's directory `directory` (parts, checkpoints, a tracker's) is jaxlab's."""
    return _matches(name, JAXLAB_ENTRIES.get(directory, ()))


def is_jaxlab_dir(path: Path) -> bool:
    """Whether `path` is one of jaxlab's directories whose entries jaxlab knows by name (`JAXLAB_ENTRIES`):
    of those only jaxlab's entries are moved or deleted."""
    return path.name in JAXLAB_ENTRIES and path.is_dir() and not path.is_symlink()


def jaxlab_children(path: Path) -> list[Path]:
    """The entries of jaxlab's directory `path` that jaxlab wrote."""
    return sorted(p for p in path.iterdir() if is_jaxlab_entry(path.name, p.name))


def only_jaxlab(path: Path) -> bool:
    """Whether jaxlab's directory `path` holds nothing but jaxlab's entries."""
    return all(is_jaxlab_entry(path.name, p.name) for p in path.iterdir())


def remove(path: Path) -> None:
    """Delete the entry `path` that jaxlab wrote; of its directories only jaxlab's entries, then
    the directory itself if that left it empty."""
    if is_jaxlab_dir(path):
        for child in jaxlab_children(path):
            remove_tree(child)
        if not any(path.iterdir()):
            path.rmdir()
    else:
        remove_tree(path)


def remove_tree(path: Path) -> None:
    """Remove `path`: a directory with everything in it, or a file or symbolic link (nothing when it does not exist)."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def claim(run_dir: Path, name: str) -> None:
    """Record that jaxlab is about to write the top-level entry `name` of `run_dir`; refuse
    (UserError) when that would overwrite something jaxlab did not write. A directory from
    before the record existed cannot tell and is not checked."""
    run_dir = Path(run_dir)
    path = run_dir / name
    if (run_dir / MANIFEST).exists() and os.path.lexists(path) and name not in owned(run_dir):
        raise UserError(
            f"{path} is not jaxlab's and the report would overwrite it; "
            f"move it away, then run `jaxlab report {run_dir}`"
        )
    record(run_dir, [name])


def listing(run_dir: Path) -> frozenset[str]:
    """The top-level entries of `run_dir` but jaxlab's own bookkeeping: taken before a step, it tells
    what that step created (`written`)."""
    return frozenset(p.name for p in Path(run_dir).iterdir() if not p.name.startswith(".jaxlab"))


def written(run_dir: Path, before: Iterable[str]) -> list[str]:
    """Top-level entries of `run_dir` that are new since `before = listing(run_dir)`. An entry that
    existed before does not count even when it changed: it is jaxlab's already when jaxlab wrote it
    before (in the record), and otherwise someone else's (a file the user edits meanwhile)."""
    return sorted(listing(run_dir) - set(before))
