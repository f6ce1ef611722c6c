"""The Python blocks of docs/*.md run as written, page by page, in order, in one namespace, from an
empty directory (README.md: tests/test_readme.py; docs/extending.md, which also runs command
lines from outside the repository: tests/test_extending.py)."""

from pathlib import Path

import numpy as np
import pytest
from test_readme import python_blocks

DOCS = Path(__file__).resolve().parents[1] / "docs"
ELSEWHERE = {"extending.md"}


def run_page(path: Path, cwd: Path, monkeypatch) -> dict:
    monkeypatch.chdir(cwd)
    namespace: dict = {}
    for i, block in enumerate(python_blocks(path)):
        exec(compile(block, f"{path.name} python block {i + 1}", "exec"), namespace)
    return namespace


def test_every_page_with_python_is_run_somewhere():
    pages = {p.name for p in DOCS.glob("*.md") if python_blocks(p)}
    assert "tutorial.md" in pages and pages - ELSEWHERE == {"tutorial.md"}, pages


@pytest.mark.timeout(300)
def test_the_tutorial_runs_as_written(tmp_path, monkeypatch):
    ns = run_page(DOCS / "tutorial.md", tmp_path, monkeypatch)
    steps = ns["steps"]
    assert len(steps) >= 3 and steps == sorted(steps)
    assert ns["model_cos"].shape == (len(steps), 4) and np.isfinite(ns["model_cos"]).all()
    assert (tmp_path / "model_cos.png").stat().st_size > 1000
    # the final probe's loss is the sweep's own final evaluation loss, run by run
    final = ns["probe"](ns["sweep"].params())["eval_loss"]
    np.testing.assert_allclose(np.asarray(final), ns["final_loss"].sort_index().to_numpy(), rtol=1e-5)
    # patching the query's last residual state with B's gives B's prediction, in every run
    out_patched, out_b = np.asarray(ns["out_patched"]), np.asarray(ns["out_b"])
    np.testing.assert_allclose(out_patched[:, :, -1], out_b[:, :, -1], rtol=1e-5, atol=1e-6)
    assert not np.allclose(out_patched[:, :, :-1], out_b[:, :, :-1])  # other positions keep A's
    # steering: the shift is linear in alpha (zero at alpha = 0)
    shift = np.asarray(ns["shift"])
    alphas = np.asarray(ns["alphas"])
    np.testing.assert_allclose(shift[alphas == 0], 0.0, atol=1e-6)
    np.testing.assert_allclose(shift[-1], -shift[0], rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(shift[-1], 2 * shift[-2], rtol=1e-4, atol=1e-6)
