"""Errors that reach the user: reported as one message, exit status 2, no traceback."""

from __future__ import annotations

import errno
from collections.abc import Iterable

# OS errors that say something about the machine or the user's paths, not about jaxlab's code
ENVIRONMENT_ERRNOS = frozenset(
    getattr(errno, name)
    for name in (
        "ENOSPC",  # disk full
        "EDQUOT",  # quota exceeded
        "EFBIG",  # file too large for the file system
        "EROFS",  # read-only file system
        "EACCES",  # permission denied
        "EPERM",  # operation not permitted
        "ENOTDIR",  # a path component is a file
        "EISDIR",  # a directory where a file should be
        "ENAMETOOLONG",
        "ELOOP",
        "EIO",  # the device failed
        "EMFILE",  # too many open files
        "ENFILE",
        "ENOMEM",
    )
    if hasattr(errno, name)
)


class UserError(Exception):
    """Something the user asked for cannot be done as asked (bad config, bad flag, bad directory)."""


class ConfigError(UserError):
    """An invalid configuration value; the message names the field and what is allowed."""

    def __init__(self, field: str, problem: str, allowed: str | Iterable[object] | None = None):
        self.field = field
        self.problem = problem
        if allowed is not None and not isinstance(allowed, str):
            allowed = ", ".join(str(a) for a in allowed)
        self.allowed = allowed
        message = f"{field}: {problem}"
        if allowed:
            message += f" (allowed: {allowed})"
        super().__init__(message)


class StorageError(UserError, OSError):
    """A file or directory could not be written or read (disk full, read-only, no permission, a
    file in the way, quota exceeded, ...). An environment error, reported like a user error; it is
    also an `OSError` with the original `errno` and the path as `filename`, so code that handles
    OSError still does.
    """

    def __init__(self, path: object, err: OSError, action: str | None = "write", detail: str | None = None):
        """`path`: what jaxlab was writing or reading; `action`: what it was doing ("write",
        "create the directory", "read"; None: unknown); `detail`: more about the cause."""
        reason = err.strerror or str(err) or type(err).__name__
        OSError.__init__(self, err.errno, reason, str(path))
        self.path = str(path)
        self.reason = reason
        head = f"cannot {action} {path}" if action else str(path)
        self.message = f"{head}: {reason}" + (f" ({detail})" if detail else "")

    def __str__(self) -> str:
        return self.message


class CorruptFileError(UserError, ValueError):
    """A file jaxlab wrote earlier cannot be read back (truncated, not JSON, not a parquet file,
    missing fields); the message names the file and what is wrong with it."""

    def __init__(self, path: object, problem: str):
        self.path = str(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def environment_error(exc: BaseException) -> StorageError | None:
    """The environment error behind `exc` as a `StorageError`, or None when there is none.

    Follows the `__cause__` / `__context__` chain, since libraries (orbax, pyarrow, matplotlib)
    may wrap the `OSError` of a full disk or a read-only directory in their own exception; an
    `OSError` counts when its errno is in `ENVIRONMENT_ERRNOS`.
    """
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, StorageError):
            return exc
        if isinstance(exc, OSError) and exc.errno in ENVIRONMENT_ERRNOS:
            if exc.filename is None:
                return StorageError("a file", exc, action="write or read")
            other = exc.filename2
            return StorageError(exc.filename, exc, action=None, detail=f"and {other}" if other else None)
        exc = exc.__cause__ if exc.__cause__ is not None or exc.__suppress_context__ else exc.__context__
    return None
