"""Result parts from several chunks and processes merge into one tidy table and one summary."""

import os
import stat

import numpy as np
import pandas as pd
import pytest

from jaxlab import results
from jaxlab.errors import UserError
from jaxlab.train.rundir import RunStore, merge_parts, part_records


def write_parts(run_dir, layout, ref):
    """Parts of one group as (chunk, process) -> runs, with eval_loss = run / 10 at the last step."""
    steps = np.array([0, 10])
    for (chunk, process), runs in layout.items():
        info = [{"run": r, "seed": 100 + r, "point": {"optim.lr": 0.1 if r < 3 else 0.2}} for r in runs]
        history = {"eval_loss": np.array([[1.0, r / 10] for r in runs])}
        diverged = np.array([5 if r == 4 else -1 for r in runs])
        table, part = part_records(
            group=0,
            chunk=chunk,
            process=process,
            label="",
            runs=info,
            steps=steps,
            history=history,
            diverged_at=diverged,
            per_run={},
            fin_history={},
            reference={"fitted": ref[(chunk, process)]},
            compile_s=1.0 if (chunk, process) == (0, 0) else 0.0,
            wall_s=1.0,
        )
        RunStore(run_dir, process).write_part(0, chunk, table, part)


def test_merge_of_chunks_and_processes(tmp_path, smoke_cfg):
    layout = {(0, 0): [0, 1], (0, 1): [2, 3], (1, 0): [4], (1, 1): [5]}
    write_parts(tmp_path, layout, ref={(0, 0): 1.0, (0, 1): 2.0, (1, 0): 4.0, (1, 1): 4.0})
    # while running, load() reads the parts
    assert sorted(results.load(tmp_path).run.unique()) == list(range(6))
    summary = merge_parts(tmp_path, smoke_cfg, wall_s=3.0, command="jaxlab run x")
    table = pd.read_parquet(tmp_path / "metrics.parquet")
    assert list(table.run.unique()) == list(range(6))  # sorted by run, whatever the part order
    final = results.final_values(table, "eval_loss")
    np.testing.assert_allclose(final.to_numpy(), np.arange(6) / 10)
    assert [r["run"] for r in summary["runs"]] == list(range(6))
    assert summary["n_runs"] == 6 and summary["n_diverged"] == 1 and summary["runs"][4]["diverged_at_step"] == 5
    assert summary["compile_s"] == 1.0
    # run-weighted over the parts: (2 * 1 + 2 * 2 + 1 * 4 + 1 * 4) / 6
    assert summary["reference"] == {"fitted": pytest.approx(14 / 6)}
    agg = summary["aggregate"]["eval_loss"]
    assert agg["n"] == 5 and agg["mean"] == pytest.approx(np.mean([0, 0.1, 0.2, 0.3, 0.5]))
    for name in ("metrics.parquet", "summary.json"):
        mode = stat.S_IMODE(os.stat(tmp_path / name).st_mode)
        assert mode & stat.S_IRGRP, oct(mode)  # readable by the group (shared cluster file systems)
    assert not list(tmp_path.rglob("*.tmp"))


def test_load_many_concatenates_sweeps(tmp_path, smoke_cfg):
    for name, runs in (("a", [0, 1]), ("b", [0, 1, 2, 3])):
        write_parts(tmp_path / name, {(0, 0): runs}, ref={(0, 0): 0.0})
        # sweep a set train.eval_batch_size on top of its preset; sweep b kept the preset's value
        overrides = {"train.eval_batch_size": 7} if name == "a" else {}
        merge_parts(tmp_path / name, smoke_cfg, 1.0, None, overrides=overrides)
    assert "train__eval_batch_size" not in results.load(tmp_path / "b").columns
    df = results.load_many([tmp_path / "a", tmp_path / "b"])
    assert list(df.columns[:3]) == ["sweep", "experiment", "preset"]
    # b's rows get b's own value from its runs.parquet, not an empty cell
    by_sweep = df.groupby("sweep").train__eval_batch_size.unique().to_dict()
    assert list(by_sweep["a"]) == [7] and list(by_sweep["b"]) == [smoke_cfg.train.eval_batch_size]
    assert df.groupby("sweep").run.nunique().to_dict() == {"a": 2, "b": 4}
    assert len(df) == len(results.load(tmp_path / "a")) + len(results.load(tmp_path / "b"))


def test_load_many_labels_same_named_directories_by_path_and_final_values_keeps_sweeps_apart(tmp_path, smoke_cfg):
    for name, runs in (("a/smoke", [0, 1]), ("b/smoke", [0, 1, 2])):
        write_parts(tmp_path / name, {(0, 0): runs}, ref={(0, 0): 0.0})
        merge_parts(tmp_path / name, smoke_cfg, 1.0, None)
    dirs = [tmp_path / "a" / "smoke", tmp_path / "b" / "smoke"]
    df = results.load_many(dirs)
    assert sorted(df.sweep.unique()) == sorted(str(d) for d in dirs)  # one label per sweep
    final = results.final_values(df, "eval_loss")
    assert final.index.names == ["sweep", "run"] and len(final) == 5  # 2 + 3 runs, none merged
    assert results.final_values(results.load(dirs[1]), "eval_loss").index.name == "run"
    with pytest.raises(UserError, match="given twice"):
        results.load_many([dirs[0], tmp_path / "a" / ".." / "a" / "smoke"])


def test_final_values_takes_the_last_step_even_when_nan_and_splits_by_parameters():
    df = pd.DataFrame(
        {
            "run": [0, 0, 0, 1, 1, 1],
            "seed": [0, 0, 0, 1, 1, 1],
            "step": [0, 20, 40, 0, 40, 20],  # rows out of step order
            "metric": ["m"] * 6,
            "value": [0.1, 0.5, np.nan, 0.2, 0.4, 0.3],
        }
    )
    final = results.final_values(df, "m")
    assert final.index.name == "run" and np.isnan(final[0]) and final[1] == 0.4  # not step 20's 0.5
    # as the tidy tables hold a parameterized metric: its parameter columns between metric and value
    named = [df.assign(metric="m[alpha=0.5]"), df.assign(metric="m[alpha=2.0]", value=df.value * 10)]
    two = results.split_metric_column(pd.concat(named, ignore_index=True))
    assert list(two.columns[-3:]) == ["metric", "alpha", "value"]
    by_alpha = results.final_values(two, "m")
    assert by_alpha.index.names == ["alpha", "run"]
    assert by_alpha[(2.0, 1)] == pytest.approx(4.0) and by_alpha[(0.5, 1)] == pytest.approx(0.4)
    # one parameter value left: indexed by run again
    assert results.final_values(two[two.alpha == 2.0], "m").index.name == "run"
    # a column the user adds (a value per row, a merged config value) never splits the runs
    assert (
        results.final_values(df.assign(log_value=np.log(df.value), group=[0, 0, 0, 1, 1, 1]), "m").index.name == "run"
    )
    explicit = results.final_values(df.assign(group=[0, 0, 0, 1, 1, 1]), "m", by=["group"])
    assert explicit.index.names == ["group", "run"]
    with pytest.raises(UserError, match=r"no metric 'loss' in the table \(metrics: m\)"):
        results.final_values(df, "loss")


def test_metric_parameters_round_trip_and_refuse_bad_keys():
    name = results.metric_name("nse", algorithm="least_squares", n=3)
    assert name == "nse[algorithm=least_squares,n=3]"
    assert results.split_metric(name) == ("nse", {"algorithm": "least_squares", "n": 3.0})
    assert results.split_metric(results.metric_name("loss", alpha=0.333)) == ("loss", {"alpha": 0.333})
    assert results.split_metric("eval_loss") == ("eval_loss", {})
    for plain in ("stitch[gelu->solu]", "cka_within[gelu]_l0_l1", "x[step=1]", "x[a=1,b]"):  # not parameters
        assert results.split_metric(plain) == (plain, {})
    assert results.metric_name("eval_loss") == "eval_loss"
    for bad in ({"step": 1}, {"Alpha": 1.0}, {"optim__lr": 1.0}, {"status": "x"}):
        with pytest.raises(ValueError, match="parameter key"):
            results.metric_name("loss", **bad)
    with pytest.raises(ValueError, match="may not contain"):
        results.metric_name("loss", who="a,b")


def test_parameterized_metrics_become_columns_of_the_tidy_table_and_a_sql_query(tmp_path):
    duckdb = pytest.importorskip("duckdb")
    runs = [{"run": r, "seed": r, "point": {}} for r in range(3)]
    alphas = (0.5, 1.0, 2.0)
    history = {"eval_loss": np.arange(6.0).reshape(3, 2)}
    history.update({results.metric_name("ood_loss", alpha=a): np.full((3, 1), 10 * a) + np.arange(3)[:, None]
                    for a in alphas})  # fmt: skip
    df = results.tidy_rows(runs, [0, 100], history)
    assert list(df.columns) == ["run", "seed", "step", "metric", "alpha", "value"]
    assert set(df.metric) == {"eval_loss", "ood_loss"} and df[df.metric == "eval_loss"].alpha.isna().all()
    # independent: every (run, alpha) value where the name says it is
    for a in alphas:
        for r in range(3):
            row = df[(df.metric == "ood_loss") & (df.alpha == a) & (df.run == r)]
            assert row.value.tolist() == [10 * a + r]
    path = tmp_path / "metrics.parquet"
    results.write_parquet(path, df)
    got = duckdb.sql(
        f"SELECT alpha, median(value) AS m FROM '{path}' WHERE metric = 'ood_loss' GROUP BY alpha ORDER BY alpha"
    ).fetchall()
    assert got == [(0.5, 6.0), (1.0, 11.0), (2.0, 21.0)]
