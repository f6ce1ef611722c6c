"""Shared by the run-directory tests: a finished smoke run made by the command line (copied per test),
the directory snapshot they compare, and the one-line error they expect."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from jaxlab.cli import main

SMOKE = ["run", "icl-regression", "--preset", "smoke", "--quiet"]


def run(out: Path, *extra: str) -> int:
    """`jaxlab run icl-regression --preset smoke --quiet --out OUT EXTRA...` in this process; its exit status."""
    return main([*SMOKE, "--out", str(out), *extra])


def tree(d: Path) -> dict[str, bytes | None]:
    """Every entry under `d` (hidden ones too): a file's bytes, None for a directory."""
    return {str(p.relative_to(d)): (None if p.is_dir() else p.read_bytes()) for p in sorted(d.rglob("*"))}


def error_line(capsys) -> str:
    """The one `jaxlab: error:` line on stderr (after asserting there is exactly one, and no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err, err[-3000:]
    lines = [line for line in err.splitlines() if line.startswith("jaxlab: error:")]
    assert len(lines) == 1, err[-3000:]
    return lines[0]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """A finished smoke run (seeds 0, 1); tests copy it (`old_run`)."""
    out = tmp_path_factory.mktemp("finished") / "run"
    assert run(out) == 0
    return out


@pytest.fixture
def old_run(finished, tmp_path) -> Path:
    """A copy of `finished` that the test may change."""
    d = tmp_path / "old"
    shutil.copytree(finished, d)
    return d
