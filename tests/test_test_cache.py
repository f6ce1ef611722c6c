"""The tests' shared compilation cache: where it lives and how it stays bounded (tests/_jaxenv.py)."""

import os
from pathlib import Path

import jax
from _jaxenv import CACHE_DIR, _test_cache_dir, jax_env, prune_cache


def _write(path: Path, size: int, mtime: float, atime: float | None = None) -> None:
    path.write_bytes(b"x" * size)
    os.utime(path, (atime or mtime, mtime))


def test_prune_removes_the_least_recently_used_entries_until_under_the_bound(tmp_path):
    for i in range(6):  # entry i: 100 bytes, written at time 1000 + i, in a shuffled order of names
        _write(tmp_path / f"jit_{(i * 7) % 6}-{i}-cache", 100, 1000 + i)
    _write(tmp_path / "jit_0-0-cache", 100, 1000, atime=2000)  # the oldest entry, but read last
    _write(tmp_path / "notes.txt", 10_000, 1)  # not an entry: never deleted, not counted
    assert prune_cache(tmp_path, max_bytes=350) == 3
    kept = sorted(int(p.name.split("-")[1]) for p in tmp_path.glob("*-cache"))
    assert kept == [0, 4, 5]  # the three used most recently
    assert (tmp_path / "notes.txt").exists()
    assert prune_cache(tmp_path, max_bytes=350) == 0  # already under the bound
    assert prune_cache(tmp_path / "absent", max_bytes=0) == 0


def test_the_cache_is_outside_the_clone_and_every_process_uses_it(monkeypatch, tmp_path):
    root = Path(__file__).resolve().parent.parent
    assert root not in CACHE_DIR.parents  # shared by every clone, not written into this one
    assert jax.config.jax_compilation_cache_dir == str(CACHE_DIR)
    assert jax_env()["JAX_COMPILATION_CACHE_DIR"] == str(CACHE_DIR)  # the suite's subprocesses too
    monkeypatch.setenv("JAXLAB_TEST_XLA_CACHE", str(tmp_path / "c"))
    assert _test_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("JAXLAB_TEST_XLA_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert _test_cache_dir() == tmp_path / "jaxlab" / "xla-tests"
