"""The README's Python blocks run as written, in order, in one namespace, from an empty directory
(docs/extending.md's are run by tests/test_extending.py)."""

import re
from pathlib import Path

import jax
import numpy as np
import pytest

README = Path(__file__).resolve().parents[1] / "README.md"


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), re.S)


@pytest.mark.timeout(300)
def test_every_python_block_of_the_readme_runs_as_written(tmp_path, monkeypatch):
    blocks = python_blocks(README)
    assert len(blocks) >= 3
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    for i, block in enumerate(blocks):
        exec(compile(block, f"README.md python block {i + 1}", "exec"), namespace)
    # what the blocks promise: 8 trained runs, a run directory, a cache, a steered output, CKA pairs
    assert namespace["history"]["eval_loss"].shape[0] == 8
    assert (tmp_path / "runs" / "smoke" / "metrics.parquet").is_file() and len(namespace["df"]) > 0
    out, steered = np.asarray(namespace["out"]), np.asarray(namespace["steered"])
    assert out.shape == steered.shape and not np.allclose(out[:, -1], steered[:, -1])
    np.testing.assert_allclose(out[:, :-1], steered[:, :-1], rtol=1e-5, atol=1e-6)  # only the last token moved
    assert namespace["cka_RLRL"].shape == (3, 2, 3, 2)
    # jaxlab.load and plain orbax read the same final parameters of the sweep's runs
    assert len(namespace["ok"]) == len(namespace["result"].summary["runs"])
    loaded, restored = namespace["params"], namespace["tree"]["state"]["params"]
    for a, b in zip(jax.tree.leaves(loaded), jax.tree.leaves(restored), strict=True):
        np.testing.assert_array_equal(np.asarray(a), b)
