"""Divergence isolation across run chunks: a learning-rate grid whose largest rate diverges."""

import jax
import numpy as np
import pytest
from _runs import run_cfg

from jaxlab import results
from jaxlab.config import apply_sweep_args
from jaxlab.train import default_hparams, make_train, seed_keys, with_seeds

LRS = (0.01, 0.02, 0.03, 0.05, 1e9)


def test_lr_grid_largest_rate_diverges_and_is_isolated(smoke_cfg, tmp_path, capsys):
    plain = with_seeds(smoke_cfg.with_overrides({"optim.name": "sgd", "optim.clip_norm": 0.0}), (0,))
    # 5 runs, at most 4 per chunk: chunks of 3, the second one = [lr 0.05, lr 1e9, a copy of lr 1e9]
    cfg = apply_sweep_args(
        plain.with_overrides({"train.max_runs_per_chunk": 4}), [f"optim.lr={','.join(map(str, LRS))}"]
    )
    res = run_cfg(cfg, tmp_path / "r", quiet=True)
    err = capsys.readouterr().err.splitlines()

    runs = res.summary["runs"]
    assert [r["hparams"]["optim.lr"] for r in runs] == list(LRS)
    assert [r["status"] for r in runs] == ["ok"] * 4 + ["diverged"]
    step = runs[-1]["diverged_at_step"]
    assert isinstance(step, int) and 0 <= step < smoke_cfg.train.steps

    # frozen at its last finite state: the state after exactly `step` optimizer steps
    out = res.groups[0]
    train = make_train(cfg.with_overrides({"optim.lr": 1e9}))
    hp = default_hparams(train.cfg)
    alone = train.init(seed_keys([0])[0], hp)
    alone, _ = jax.jit(train.advance)(alone, hp, step)
    diverged = jax.tree_util.tree_map(lambda x: np.asarray(x)[4], out.state.params)
    # rtol 1e-4: the sweep's runs share a vmapped block while `alone` is the one-run program, so
    # float32 sums associate differently; at lr 1e9 the parameters reach ~1e30 and such rounding
    # differences grow to ~1e-5 relative. One step more or less would differ by orders of magnitude.
    for a, b in zip(jax.tree_util.tree_leaves(diverged), jax.tree_util.tree_leaves(alone.params)):
        assert np.all(np.isfinite(a))
        np.testing.assert_allclose(a, b, rtol=1e-4)
    # its evaluations stay those of that state (the state is finite, its loss may overflow)
    eval_after = out.history["eval_loss"][4][np.asarray(train.eval_steps) > step]
    np.testing.assert_array_equal(eval_after, np.full_like(eval_after, eval_after[0]))

    # summaries leave it out instead of averaging NaN; its grid point says so
    agg = res.summary["aggregate"]["eval_loss"]
    finals = [r["final"]["eval_loss"] for r in runs[:4]]
    assert agg["n"] == 4 and agg["mean"] == pytest.approx(np.mean(finals))
    by_point = {p["hparams"]["optim.lr"]: p["aggregate"] for p in res.summary["aggregate_by_point"]}
    assert by_point[1e9]["eval_loss"]["n"] == 0 and by_point[1e9]["eval_loss"]["mean"] is None
    assert by_point[0.05]["eval_loss"]["n"] == 1 and by_point[0.05]["eval_loss"]["mean"] == finals[3]
    points = {p["hparams"]["optim.lr"]: (p["n_runs"], p["n_diverged"]) for p in res.summary["aggregate_by_point"]}
    assert points[1e9] == (1, 1) and points[0.05] == (1, 0) and res.summary["n_diverged"] == 1
    report = (tmp_path / "r" / "report.md").read_text()
    assert "Diverged runs" in report and "| 4 | 0 | " in report and f"| {step} |" in report
    assert '{"optim.lr": 1000000000.0} | eval_loss | — | — | — | 0 |' in report  # not a NaN mean
    assert results.load_summary(tmp_path / "r")["runs"][4]["status"] == "diverged"

    # progress: one line per evaluation interval and chunk; the padding copy is not counted twice
    lines = [line for line in err if line.startswith("[jaxlab]")]
    n_intervals = len(train.eval_steps) - 1
    assert len(lines) == 2 * n_intervals
    assert all("chunk 1/2" in line and "diverged 0" in line for line in lines[:n_intervals])
    assert all("chunk 2/2" in line and "runs 2" in line for line in lines[n_intervals:])
    assert "diverged 1 " in lines[-1] and "ETA" in lines[-1] and "run-steps/s" in lines[-1]
