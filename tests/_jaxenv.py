"""Environment for tests that run jaxlab in subprocesses (several devices or processes)."""

from __future__ import annotations

import os
import socket
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _test_cache_dir() -> Path:
    """Where the tests keep compiled programs: `JAXLAB_TEST_XLA_CACHE`, else the user's cache directory
    (`$XDG_CACHE_HOME/jaxlab/xla-tests`, default `~/.cache/...`), shared by every clone and worktree of the
    project on this machine, so a fresh clone (CI's) compiles only what changed since the last run.
    JAX keys an entry by the program, the compile options and flags, and the jax/jaxlib versions: a
    program another version or flag set compiled is a miss, never a wrong hit."""
    if env := os.environ.get("JAXLAB_TEST_XLA_CACHE"):
        return Path(env)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "jaxlab" / "xla-tests"


CACHE_DIR = _test_cache_dir()
# a suite from an empty cache writes ~70 MB; `prune_cache` keeps the directory under this
CACHE_MAX_BYTES = 2 * 1024**3


def prune_cache(directory: Path = CACHE_DIR, max_bytes: int = CACHE_MAX_BYTES) -> int:
    """Delete the least recently used entries (`*-cache` files, by the later of their access and
    modification times) of the compilation cache until its entries hold at most `max_bytes`; returns how
    many went. Other files are left alone. Called once per suite, before any worker starts. (JAX's own
    bound, `jax_compilation_cache_max_size`, lists and stats the whole directory under a file lock on every
    write: it slowed the suite's workers to ~60% of a core each.) A suite running meanwhile that loses an
    entry recompiles it (JAX warns and carries on)."""
    entries = []
    try:
        listing = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    for e in listing:
        if not e.name.endswith("-cache"):
            continue
        try:
            st = e.stat()
        except FileNotFoundError:  # removed meanwhile (another suite's prune)
            continue
        entries.append((max(st.st_atime, st.st_mtime), st.st_size, e.path))
    total, removed = sum(size for _, size, _ in entries), 0
    for _, size, path in sorted(entries):
        if total <= max_bytes:
            break
        try:
            os.unlink(path)
        except FileNotFoundError:
            pass
        total, removed = total - size, removed + 1
    return removed


# Compile-time settings for the tests (conftest adds them to XLA_FLAGS): backend optimization off,
# the classic CPU fusion emitters instead of the new ones, LLVM's expensive passes off. On the
# representation-dissimilarity smoke sweep (75 programs, 2-core CPU) XLA's backend compile took
# 44.3 s with the first flag alone and 17.6 s with the first two; the third together with
# `--xla_cpu_parallel_codegen_split_count=1` took it from 19.1 to 17.1 s (mean of 3 alternating
# runs each). That one is not used: code generated as one module changed float32 results by an ulp
# (tests/test_instruction_clustering.py::test_between_class_basis_far_from_the_origin failed).
# Timing tests remove them (`default_flags`).
FAST_COMPILE_FLAGS = (
    "--xla_backend_optimization_level=0",
    "--xla_cpu_use_fusion_emitters=false",
    "--xla_llvm_disable_expensive_passes=true",
)


def default_flags(xla_flags: str) -> str:
    """`xla_flags` without the tests' compile-time settings: what a timing comparison should run under."""
    return " ".join(f for f in xla_flags.split() if f not in FAST_COMPILE_FLAGS)


def jax_env(n_devices: int | None = None) -> dict[str, str]:
    """This process's environment for a CPU subprocess: the same XLA flags (so the same compiled
    programs and numbers), the shared compilation cache, and `n_devices` host devices (default 1)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    env["JAX_PLATFORMS"] = "cpu"
    flags = [f for f in env.get("XLA_FLAGS", "").split() if not f.startswith("--xla_force_host_platform_device_count")]
    # always explicit: the `jaxlab` command would otherwise give the subprocess one device per core
    flags.append(f"--xla_force_host_platform_device_count={n_devices or 1}")
    env["XLA_FLAGS"] = " ".join(flags)
    env["JAX_COMPILATION_CACHE_DIR"] = str(CACHE_DIR)
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"  # as tests/conftest.py
    env["PYTHONUNBUFFERED"] = "1"
    return env


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
