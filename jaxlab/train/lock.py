"""The lock of a run directory (`DIR/.jaxlab.lock`): one writer at a time.

Every writer of a run directory (`jaxlab run`, plain, `--resume` or `--overwrite`, and `jaxlab
report`) takes the lock before it changes anything there and releases it at the end, on error
and on Ctrl-C too; in a multi-process sweep process 0 takes it for all. Two writers would
otherwise replace each other's results or collide in orbax's temporary directories.

The lock file is created with O_CREAT | O_EXCL (atomic, also on NFS v3+): of two processes
exactly one creates it. It holds the owner: pid, host name, start time and command, so a refusal
can say who holds the directory. A lock whose owner is gone (same host, pid not alive: a SIGKILL,
a power cut) is taken over with a notice; the take-over itself is serialized by a second
O_EXCL file, so of two processes that find the same stale lock only one replaces it. A lock from
another host cannot be checked from here and is refused with how to remove it.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from jaxlab.errors import UserError

LOCK_NAME = ".jaxlab.lock"
TAKEOVER_NAME = ".jaxlab.lock.takeover"
_TRIES = 50  # rounds of create / read / take over before giving up (each round waits <= 0.1 s)
_WRITING_S = 5.0  # an unreadable lock file younger than this is being written right now
_TAKEOVER_STALE_S = 60.0  # a take-over holds its guard for microseconds; older means its owner died


@dataclass(frozen=True)
class LockOwner:
    """Who holds a run directory's lock: process id, host, when it took the lock, and its command."""

    pid: int
    host: str
    since: float  # time.time() when the lock was taken
    command: str

    def describe(self) -> str:
        """The owner in words: `pid N@host, since YYYY-MM-DD HH:MM:SS (command)`."""
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(self.since))
        return f"pid {self.pid}@{self.host}, since {when}" + (f" ({self.command})" if self.command else "")


def print_notice(message: str) -> None:
    """A one-line notice on stderr (not an error: the command goes on)."""
    print(f"jaxlab: {message}", file=sys.stderr, flush=True)


def pid_alive(pid: int, since: float | None = None) -> bool:
    """Whether process `pid` exists on this host (one of another user counts as alive) and, where
    /proc tells, started no later than `since` (a younger process reuses a dead owner's pid)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    if since is not None:
        started = _process_start(pid)
        if started is not None and started > since + 2.0:  # /proc's start time is rounded to clock ticks
            return False
    return True


def _process_start(pid: int) -> float | None:
    """The start time of process `pid` (seconds since the epoch) from Linux's /proc, else None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        ticks = int(stat.rsplit(")", 1)[1].split()[19])  # field 22, counted after "(comm)"
        boot = next(
            float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines() if line.startswith("btime")
        )
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return None


def read_owner(path: Path) -> LockOwner | str | None:
    """The owner in lock file `path`; None when there is none; "unreadable" for a partial or foreign file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        data = json.loads(text)
        return LockOwner(int(data["pid"]), str(data["host"]), float(data["since"]), str(data.get("command", "")))
    except (ValueError, KeyError, TypeError):
        return "unreadable"


class RunLock:
    """A held lock of a run directory; `release()` (or leaving the `with` block) gives it back."""

    def __init__(self, path: Path, owner: LockOwner):
        self.path, self.owner, self.held = path, owner, True

    @classmethod
    def acquire(cls, run_dir: Path, command: str = "", notice: Callable[[str], None] = print_notice) -> RunLock:
        """Take the lock of the existing directory `run_dir`, or raise UserError naming its owner."""
        run_dir = Path(run_dir)
        path = run_dir / LOCK_NAME
        me = LockOwner(os.getpid(), socket.gethostname(), time.time(), command)
        for _ in range(_TRIES):
            if _create(path, me):
                return cls(path, me)
            owner = read_owner(path)
            if owner is None:  # released meanwhile
                continue
            if owner == "unreadable":
                if _age(path) < _WRITING_S:  # its owner is writing it right now
                    time.sleep(0.1)
                    continue
                raise UserError(
                    f"{run_dir} holds a lock file jaxlab cannot read ({path}); if no jaxlab process is "
                    "writing this directory, remove that file and run again"
                )
            assert isinstance(owner, LockOwner)
            if owner.host != me.host:
                raise UserError(
                    f"{run_dir} is in use by a jaxlab process on another host: {owner.describe()}. Wait for it "
                    f"to finish, or choose another --out; if that process is gone, remove {path} and run again"
                )
            if pid_alive(owner.pid, owner.since):
                raise UserError(
                    f"{run_dir} is in use by another jaxlab process: {owner.describe()}. Wait for it to finish, "
                    f"or stop it (kill {owner.pid}) and run again, or choose another --out"
                )
            if _take_over(path, owner):
                notice(f"{run_dir}: taking over the lock of {owner.describe()}, which is no longer running")
        raise UserError(f"{run_dir}: could not take the lock {path}: other processes keep taking it; try again")

    def release(self) -> None:
        """Remove the lock file if it is still this owner's (idempotent)."""
        if self.held:
            self.held = False
            if read_owner(self.path) == self.owner:
                self.path.unlink(missing_ok=True)

    def __enter__(self) -> RunLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _create(path: Path, owner: LockOwner) -> bool:
    """Create the lock file holding `owner`; False if it exists. OSError -> UserError."""
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    except OSError as err:
        raise UserError(f"{path.parent}: cannot write there ({err.strerror or err})") from None
    try:
        os.write(fd, (json.dumps(asdict(owner)) + "\n").encode())
    except BaseException:
        os.close(fd)
        path.unlink(missing_ok=True)
        raise
    os.close(fd)
    return True


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


def _take_over(path: Path, stale: LockOwner) -> bool:
    """Remove the lock file if it still holds `stale`; only one process at a time may do this."""
    guard = path.with_name(TAKEOVER_NAME)
    try:
        fd = os.open(guard, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        if _age(guard) > _TAKEOVER_STALE_S:
            guard.unlink(missing_ok=True)
        time.sleep(0.1)
        return False
    os.close(fd)
    try:
        if read_owner(path) == stale:
            path.unlink()
            return True
        return False
    finally:
        guard.unlink(missing_ok=True)
