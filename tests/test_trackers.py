"""--log tensorboard (jaxlab.trackers): one TensorBoard run per jaxlab run, one scalar series per metric,
equal to metrics.parquet; resumed runs without duplicate steps; refusals before anything is written."""

import json

import numpy as np
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboardX import SummaryWriter

from jaxlab import results
from jaxlab.cli import main
from jaxlab.config import SweepConfig
from jaxlab.errors import UserError
from jaxlab.registry import get_experiment
from jaxlab.trackers import TensorBoard, check_trackers
from jaxlab.train import run_sweep

EXP = get_experiment("icl-regression")


def scalars(run_dir):
    """{run directory name: {tag: [(step, value)]}} as TensorBoard's own reader loads them."""
    out = {}
    for d in sorted((run_dir / "tensorboard").iterdir()):
        acc = EventAccumulator(str(d))
        acc.Reload()
        out[d.name] = {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}
    return out


@pytest.mark.timeout(300)
def test_every_run_and_metric_is_one_series_equal_to_the_tidy_table(tmp_path):
    # two programs (learning rates) of two seeds: four TensorBoard runs
    cfg = EXP.preset("smoke").derive("smoke", sweep=SweepConfig(seeds=(0, 1), grid=(("optim.lr", (3e-2, 1e-2)),)))
    out = tmp_path / "run"
    run_sweep(EXP, cfg, out, progress=False, log=("tensorboard",))
    df = results.load(out)
    series = scalars(out)
    runs = sorted(df.run.unique())
    assert sorted(series) == [f"run-{r:05d}" for r in runs]
    assert len(runs) == 4
    for r in runs:
        got = series[f"run-{r:05d}"]
        assert set(got) == {"eval_loss", "train_loss"}
        for metric, points in got.items():
            want = df[(df.run == r) & (df.metric == metric)].sort_values("step")
            want = want[np.isfinite(want.value)]
            assert [s for s, _ in points] == list(want.step)
            np.testing.assert_allclose([v for _, v in points], want.value, rtol=1e-6)
    # the directory is jaxlab's (--overwrite replaces it with the new run's)
    assert "tensorboard" in json.loads((out / ".jaxlab-files.json").read_text())["files"]


def test_a_resumed_run_has_no_duplicate_steps(tmp_path):
    root = tmp_path / "tensorboard"
    first = TensorBoard(root, SummaryWriter)
    for step in (0, 20, 40, 60):
        first.write(0, step, {"eval_loss": 1.0 + step})
    first.close()
    # the interrupted attempt had reached step 60; the resumed one redoes steps from 40 on
    again = TensorBoard(root, SummaryWriter)
    for step in (40, 60, 80):
        again.write(0, step, {"eval_loss": 2.0 + step, "not_finite": float("nan")})
    again.close()
    got = scalars(tmp_path)["run-00000"]
    assert got["eval_loss"] == [(0, 1.0), (20, 21.0), (40, 42.0), (60, 62.0), (80, 82.0)]
    assert "not_finite" not in got


def test_bad_tracker_requests_are_refused_before_anything_is_written(tmp_path, capsys):
    with pytest.raises(UserError, match="allowed: tensorboard"):
        check_trackers(["wandb-typo"], tmp_path)
    with pytest.raises(UserError, match="give --out"):
        run_sweep(EXP, EXP.preset("smoke"), None, progress=False, log=("tensorboard",))
    theirs = tmp_path / "run" / "tensorboard"
    theirs.mkdir(parents=True)
    (theirs / "notes.txt").write_text("mine")
    code = main(["run", "icl-regression", "--preset", "smoke", "--log", "tensorboard", "--out", str(tmp_path / "run")])
    assert code == 2 and "is not jaxlab's" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == ["tensorboard"]
    assert (theirs / "notes.txt").read_text() == "mine"
