"""One writer's attempt at a run directory: lock, check, move an old run aside, commit or roll back.

Nothing is lost and nothing is deleted before the new run is known to start:

1. the directory is created if needed and locked (`jaxlab.train.lock`); leftovers of an attempt
   that died before its start (SIGKILL, power cut) are rolled back first;
2. it is checked under the lock (`jaxlab.train.rundir.check_run_dir`);
3. a fresh run (plain or `--overwrite`) moves what jaxlab wrote there (`jaxlab.runfiles`, never
   the user's files) into `DIR/.jaxlab-replaced/` and records the names it will write, with
   `started: false`;
4. when the first training interval has finished (config valid, programs compiled, memory
   sufficed) the run is known to start: the record says `started: true` and the old run is deleted;
5. if the sweep fails before that (any exception, Ctrl-C, SIGTERM), what the attempt wrote is
   removed and the old run moved back, so the directory is as it was, and a directory the
   attempt created is removed again. After the start a failure keeps everything (`--resume`).

Every step is a rename or a write of the record, in an order such that a crash anywhere leaves a
state that the next writer's step 1 completes (`recover`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

from jaxlab import runfiles
from jaxlab.errors import UserError
from jaxlab.runfiles import MANIFEST, RUN_DIRS, RUN_FILES, Manifest
from jaxlab.train.lock import RunLock, print_notice

REPLACED = ".jaxlab-replaced"


class RunAttempt:
    """Process 0's use of `run_dir` for one sweep (`begin`, then `started` or `abandon`, then `release`)."""

    def __init__(
        self,
        run_dir: Path,
        *,
        resume: bool,
        overwrite: bool,
        command: str | None = None,
        notice: Callable[[str], None] = print_notice,
    ):
        self.run_dir, self.resume, self.overwrite = Path(run_dir), resume, overwrite
        self.command, self.notice = command or "", notice
        self.lock: RunLock | None = None
        self.created: list[Path] = []  # directories this attempt created, outermost first
        self.claimed = False  # the record names this attempt's files (a fresh run)
        self.done = False  # committed or rolled back

    def begin(self, check: Callable[[], None]) -> None:
        """Lock the directory, complete an interrupted attempt, `check()` it, and (a fresh run)
        move the old run aside and claim the names the run writes. On error call `abandon()`."""
        d = self.run_dir
        if d.exists() and not d.is_dir():
            raise UserError(f"--out {d}: exists and is not a directory")
        self.created = _make_dirs(d)
        self.lock = RunLock.acquire(d, self.command, notice=self.notice)
        recover(d, self.notice)
        check()
        if self.resume:
            return
        theirs = runfiles.strangers(d)
        if theirs:
            raise UserError(
                f"--out {d}: {', '.join(theirs)} inside jaxlab's directories {'is' if len(theirs) == 1 else 'are'} "
                "not jaxlab's and would go with the old run: move it away, then run again"
            )
        if os.path.lexists(d / REPLACED):  # `recover` removed or put back jaxlab's: this one is someone else's
            raise UserError(f"--out {d}: {REPLACED} is not jaxlab's (jaxlab keeps a replaced run there): move it away")
        aside = move_aside(d)
        self.claimed = True
        runfiles.write(d, Manifest(set(RUN_FILES) | set(RUN_DIRS), started=False, command=self.command))
        if aside:
            self.notice(f"{d}: the run there is kept in {REPLACED}/ until the new run has started")

    def started(self) -> None:
        """The run is known to start: make the replacement final (once; nothing to do on resume)."""
        if self.done or not self.claimed:
            return
        self.done = True
        commit(self.run_dir)

    def abandon(self) -> None:
        """The sweep failed: before its start, put the directory back as it was; then unlock."""
        try:
            if self.claimed and not self.done:
                self.done = True
                rollback(self.run_dir)
        finally:
            self.release()
            for path in reversed(self.created):
                try:
                    path.rmdir()  # only if empty: never what someone else put there meanwhile
                except OSError:
                    break
            self.created = []

    def release(self) -> None:
        """Release the run directory's lock, when this attempt holds it (again: nothing)."""
        if self.lock is not None:
            self.lock.release()
            self.lock = None


def _make_dirs(run_dir: Path) -> list[Path]:
    """Create `run_dir` and missing parents; the ones created, outermost first."""
    missing = []
    p = run_dir
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise UserError(f"--out {run_dir}: cannot create the directory ({err.strerror or err})") from None
    return list(reversed(missing))


# -- the steps -------------------------------------------------------------------------------------
def move_aside(run_dir: Path) -> bool:
    """Move what jaxlab wrote in `run_dir` into `run_dir/.jaxlab-replaced/`, the record first.

    Of `parts/` and `checkpoints/` only jaxlab's entries move (the whole directory when it holds
    nothing else). Returns whether there was anything to move.
    """
    names = sorted(n for n in runfiles.owned(run_dir) if os.path.lexists(run_dir / n))
    has_record = (run_dir / MANIFEST).exists()
    if not names and not has_record:
        return False
    aside = run_dir / REPLACED
    aside.mkdir()
    try:
        if has_record:  # first: while the record is away, an interrupted move is put back (`recover`)
            os.rename(run_dir / MANIFEST, aside / MANIFEST)
        for name in names:
            src = run_dir / name
            if runfiles.is_jaxlab_dir(src) and not runfiles.only_jaxlab(src):
                (aside / name).mkdir()
                for child in runfiles.jaxlab_children(src):
                    os.rename(child, aside / name / child.name)
            else:
                os.rename(src, aside / name)
    except BaseException:
        rollback(run_dir)  # a move that failed half-way (a permission, a full disk): put back what moved
        raise
    return True


def commit(run_dir: Path) -> None:
    """The new run started: record it, then delete the old run (in that order: see `recover`)."""
    manifest = runfiles.read(run_dir) or Manifest()
    manifest.started = True
    runfiles.write(run_dir, manifest)
    aside = run_dir / REPLACED
    if aside.exists():
        runfiles.remove_tree(aside)


def rollback(run_dir: Path) -> None:
    """Remove what an unstarted attempt wrote (the names its record claims) and move the old run back."""
    manifest = runfiles.read(run_dir) if (run_dir / MANIFEST).exists() else None
    if manifest is not None and not manifest.started:
        for name in sorted(manifest.files):
            if os.path.lexists(run_dir / name):
                runfiles.remove(run_dir / name)
        (run_dir / MANIFEST).unlink()
    aside = run_dir / REPLACED
    if not aside.is_dir():
        return
    kept = []
    for entry in sorted(aside.iterdir(), key=lambda p: p.name == MANIFEST):  # the record last
        target = run_dir / entry.name
        if entry.name in runfiles.JAXLAB_ENTRIES and entry.is_dir() and target.is_dir():
            for child in sorted(entry.iterdir()):
                if os.path.lexists(target / child.name):
                    kept.append(f"{entry.name}/{child.name}")
                else:
                    os.rename(child, target / child.name)
            if not any(entry.iterdir()):
                entry.rmdir()
        elif os.path.lexists(target):
            kept.append(entry.name)
        else:
            os.rename(entry, target)
    if kept:  # never overwrite: keep the rest aside under a name no later commit deletes
        spare = run_dir / f"{REPLACED}-{time.strftime('%Y%m%d-%H%M%S')}"
        os.rename(aside, spare)
        print_notice(f"{run_dir}: could not put back {', '.join(kept)} (the names are taken); they are in {spare}")
    else:
        aside.rmdir()


def recover(run_dir: Path, notice: Callable[[str], None] = print_notice) -> None:
    """Complete what a writer that died left in `run_dir` (call with the lock held).

    - a record with `started: false`: that run never started: roll it back;
    - `.jaxlab-replaced/` and no record: the move aside was interrupted: move it back;
    - `.jaxlab-replaced/` and a started record: the deletion of the replaced run was interrupted: finish it.
    """
    has_record = (run_dir / MANIFEST).exists()
    manifest = runfiles.read(run_dir) if has_record else None
    aside = run_dir / REPLACED
    if manifest is not None and not manifest.started:
        notice(f"{run_dir}: the last run there stopped before its first training interval; undoing it")
        rollback(run_dir)
    elif aside.is_dir() and not aside.is_symlink() and not has_record:
        notice(f"{run_dir}: putting back the run that an interrupted --overwrite had moved to {REPLACED}/")
        rollback(run_dir)
    elif aside.is_dir() and not aside.is_symlink():  # jaxlab's directory (a file of that name is the user's)
        runfiles.remove_tree(aside)
