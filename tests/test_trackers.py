"""--log tensorboard / wandb (jaxlab.trackers): one tracker run per jaxlab run, one scalar series per metric,
equal to metrics.parquet; resumed runs without duplicate steps; refusals before anything is written."""

import json
import os

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


def assert_series_equal_table(series, df, run):
    """A tracker's {metric: [(step, value)]} of jaxlab run `run` is the tidy table's finite rows of that run."""
    assert set(series) == {"eval_loss", "train_loss"}
    for metric, points in series.items():
        want = df[(df.run == run) & (df.metric == metric)].sort_values("step")
        want = want[np.isfinite(want.value)]
        assert [s for s, _ in points] == list(want.step)
        np.testing.assert_allclose([v for _, v in points], want.value, rtol=1e-6)


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
        assert_series_equal_table(series[f"run-{r:05d}"], df, r)
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
    with pytest.raises(UserError, match="allowed: tensorboard, wandb"):
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


# -- wandb ----------------------------------------------------------------------------------------
def wandb_records(path):
    """The records of a W&B run file: a 7-byte header (":W&B", magic, version), then LevelDB-log
    blocks of 32 KiB (7-byte chunk headers: crc, length, type FULL=1 / FIRST=2 / MIDDLE=3 / LAST=4),
    each record a serialized `wandb_internal_pb2.Record`."""
    from wandb.proto import wandb_internal_pb2

    data = path.read_bytes()
    assert data[:4] == b":W&B"
    pos, block, out, pending = 7, 32768, [], b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # a block's tail too short for a chunk header is padding
            pos += left
            continue
        length, kind = int.from_bytes(data[pos + 4 : pos + 6], "little"), data[pos + 6]
        pending += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            out.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return out


def wandb_runs(run_dir):
    """{run id: (display name, group, config, {metric: [(step, value)]})} from the offline run files."""
    out = {}
    for path in sorted((run_dir / "wandb").glob("offline-run-*/*.wandb")):
        series, meta = {}, None
        for rec in wandb_records(path):
            kind = rec.WhichOneof("record_type")
            if kind == "run":
                config = {i.key: json.loads(i.value_json) for i in rec.run.config.update if i.key != "_wandb"}
                meta = (rec.run.run_id, rec.run.display_name, rec.run.run_group, config)
            elif kind == "history":
                for item in rec.history.item:
                    key = item.key or "/".join(item.nested_key)
                    if not key.startswith("_"):
                        series.setdefault(key, []).append((rec.history.step.num, json.loads(item.value_json)))
        out[meta[0]] = (*meta[1:], series)
    return out


@pytest.mark.timeout(300)
def test_wandb_offline_one_run_per_jaxlab_run_equal_to_the_tidy_table(tmp_path, monkeypatch):
    pytest.importorskip("wandb")  # an optional dependency (`jaxlab[log]`)
    from jaxlab.trackers import wandb_sweep_id

    monkeypatch.delenv("WANDB_MODE", raising=False)  # offline is the default: no network, no account
    cfg = EXP.preset("smoke").derive("smoke", sweep=SweepConfig(seeds=(0, 1), grid=(("optim.lr", (3e-2, 1e-2)),)))
    out = tmp_path / "run"
    run_sweep(EXP, cfg, out, progress=False, log=("wandb",))
    df = results.load(out)
    runs = wandb_runs(out)
    sweep = wandb_sweep_id(out)
    assert sorted(runs) == [f"{sweep}-{r:05d}" for r in range(4)]
    seeds = df.groupby("run").seed.first()
    lrs = df.groupby("run")["optim__lr"].first()
    for r in range(4):
        name, group, config, series = runs[f"{sweep}-{r:05d}"]
        assert (name, group) == (f"run-{r:05d}", "run")
        assert config["experiment"] == "icl-regression" and config["preset"] == "smoke"
        assert config["seed"] == seeds[r] and np.isclose(config["optim.lr"], lrs[r])
        assert_series_equal_table(series, df, r)
    assert "wandb" in json.loads((out / ".jaxlab-files.json").read_text())["files"]


def test_wandb_sweep_id_survives_a_resume_and_changes_with_a_new_run(tmp_path):
    from jaxlab.trackers import wandb_sweep_id

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text("{}")
    first = wandb_sweep_id(run_dir)
    assert first == wandb_sweep_id(tmp_path / "." / "run") and len(first) == 8  # --resume: the same runs
    stat = (run_dir / "config.json").stat()
    os.utime(run_dir / "config.json", ns=(stat.st_atime_ns, stat.st_mtime_ns + 1))  # --overwrite wrote it again
    assert wandb_sweep_id(run_dir) != first
    (tmp_path / "other").mkdir()
    assert wandb_sweep_id(tmp_path / "other") != first


def test_a_users_wandb_directory_is_refused(tmp_path, capsys):
    pytest.importorskip("wandb")
    theirs = tmp_path / "run" / "wandb"
    theirs.mkdir(parents=True)
    (theirs / "notes.txt").write_text("mine")
    code = main(["run", "icl-regression", "--preset", "smoke", "--log", "wandb", "--out", str(tmp_path / "run")])
    assert code == 2 and "is not jaxlab's" in capsys.readouterr().err
    assert (theirs / "notes.txt").read_text() == "mine"
