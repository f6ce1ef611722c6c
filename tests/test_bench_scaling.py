"""`jaxlab bench scaling` and `jaxlab bench fit` on tiny sizes: the log-log fit, the JSON fields, the
size axes' configs, the bar, bad input; benchmarks/gpu.sh's commands parse as `jaxlab` commands."""

import json
import math
import os
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from jaxlab.bench import fit, registry, scaling
from jaxlab.bench._scaling_report import format_markdown, plot
from jaxlab.bench._train_workloads import WORKLOADS
from jaxlab.cli import _parser, main
from jaxlab.errors import ConfigError
from jaxlab.tasks import task_spec
from jaxlab.train.programs import Programs

ROOT = Path(__file__).resolve().parent.parent

POINT_FIELDS = (
    "size", "runs", "slots", "steps", "calls_per_repeat", "repeats", "seq_len", "n_layers", "batch_size",
    "run_layout", "run_block", "micro_batch", "runs_per_chunk", "compile_s", "compile_cpu_s", "compile_init_s",
    "run_steps_per_s", "run_steps_per_cpu_s", "steps_per_s_per_run", "step_s", "per_repeat_run_steps_per_s",
    "flops_per_run_step", "model_flops_per_s", "peak_rss_bytes", "rss_before_bytes", "rss_reset",
    "xla_bytes_per_device", "xla_start_bytes_per_device", "device_peak_bytes",
)  # fmt: skip


def test_fit_recovers_the_exponent_of_a_power_law():
    x = np.array([1, 8, 64, 512, 4096], float)
    for a, b in ((3e-4, 1.0), (0.02, 1.7), (5.0, -0.25), (2.0, 0.0)):
        f = scaling.fit_exponent(x, a * x**b)
        assert f["exponent"] == pytest.approx(b, abs=1e-12) and f["prefactor"] == pytest.approx(a, rel=1e-12)
        assert f["r2"] == pytest.approx(1.0)
    # least squares on log-log, written out: slope of the regression line through (log x, log y)
    y = np.array([1.0, 5.0, 30.0, 500.0, 2000.0])
    want = np.polyfit(np.log(x), np.log(y), 1)[0]
    assert scaling.fit_exponent(x, y)["exponent"] == pytest.approx(want, rel=1e-12)
    assert math.isnan(scaling.fit_exponent([4, 4], [1.0, 2.0])["exponent"])  # one distinct size
    assert math.isnan(scaling.fit_exponent([1, 2], [1.0, 0.0])["exponent"])  # log of 0


def test_bar_is_the_rate_ratio_at_4096_and_64_runs():
    pts = [{"size": n, "run_steps_per_s": r, "run_steps_per_cpu_s": 2 * r} for n, r in ((64, 1000.0), (4096, 920.0))]
    b = scaling.bar(pts)
    assert b["ratio"] == pytest.approx(0.92) and b["ratio_cpu"] == pytest.approx(0.92) and b["met"]
    pts[1]["run_steps_per_s"] = 850.0
    assert not scaling.bar(pts)["met"] and scaling.bar(pts[:1]) is None


def test_axis_configs_set_the_sequence_length_and_depth():
    soft = WORKLOADS["softmax-regression"].config()
    for T in (20, 320):
        assert task_spec(scaling.point_config(soft, "seq_len", T).task).seq_len == T
    assert scaling.point_config(soft, "depth", 7).resolve().model.n_layers == 7
    lsa = WORKLOADS["lsa-regression"].config()  # paired layout: T = N + 1
    assert scaling.point_config(lsa, "seq_len", 21).task.n_context == 20
    with pytest.raises(ConfigError, match="--values"):
        scaling.point_config(soft, "seq_len", 21)  # interleaved: T is even
    assert scaling.auto_steps("runs", 64, "lsa-regression", None, None) == 40  # 2 x 64 x 20 run-steps per call
    assert scaling.auto_steps("runs", 4096, "lsa-regression", None, None) == 1
    assert scaling.auto_steps("depth", 2, "softmax-regression", None, None) == 1


def test_runs_axis_json_has_every_field(tmp_path):
    r = scaling.measure("runs", (1, 2), steps=2, batch_size=8, repeats=2, min_time=0.0, warmup=False)
    assert json.loads(json.dumps(r)) == r
    assert [p["size"] for p in r["points"]] == [1, 2] and r["workload"] == "lsa-regression"
    for p in r["points"]:
        assert set(POINT_FIELDS) <= set(p), set(POINT_FIELDS) - set(p)
        assert (
            p["steps"] == 2
            and p["batch_size"] == 8
            and p["seq_len"] == 11
            and len(p["per_repeat_run_steps_per_s"]) == 2
        )
        assert p["step_s"] == pytest.approx(p["runs"] / p["run_steps_per_s"])
        assert p["steps_per_s_per_run"] * p["runs"] == pytest.approx(p["run_steps_per_s"])
        assert p["run_steps_per_s"] == pytest.approx(float(np.median(p["per_repeat_run_steps_per_s"])))
        assert p["peak_rss_bytes"] >= p["rss_before_bytes"] > 0 and p["xla_bytes_per_device"] > 0
    for name in ("step_s", "step_cpu_s", "compile_s", "compile_cpu_s", "xla_bytes_per_device", "rss_growth_bytes"):
        assert {"exponent", "prefactor", "r2"} <= set(r["fit"][name]) and f"{name}_large" in r["fit"]
    cost = [p["step_s"] for p in r["points"]]
    assert r["fit"]["step_s"]["exponent"] == pytest.approx(math.log(cost[1] / cost[0]) / math.log(2))
    assert r["bar"] is None  # neither 64 nor 4096 runs measured
    table = format_markdown(r)
    assert table.count("\n| 1 |") == 1 and "| step_s |" in table
    plot(r, str(tmp_path / "s.png"))
    assert (tmp_path / "s.png").read_bytes()[:4] == b"\x89PNG"


def test_fit_probe_doubles_until_the_budget(monkeypatch):
    r = fit.measure("lsa-regression", max_runs=2, budget=2**40, confirm=False, batch_size=8)
    assert r["largest_runs"] == 2 and r["limited_by"] == "max_runs"
    assert [q["runs"] for q in r["probes"]] == [1, 2] and 0 < r["probes"][0]["bytes_per_device"]

    class Footprint:  # a compiled program whose memory analysis says 1000 bytes per run
        def __init__(self, size):
            self.size = size

        def memory_analysis(self):
            return SimpleNamespace(
                argument_size_in_bytes=1000 * self.size,
                output_size_in_bytes=0,
                alias_size_in_bytes=0,
                temp_size_in_bytes=0,
            )

    monkeypatch.setattr(Programs, "compile_interval", lambda self, size, keys: Footprint(size))
    monkeypatch.setattr(Programs, "compile_start", lambda self, size, keys: Footprint(size))
    r = fit.measure("lsa-regression", max_runs=64, budget=2500, confirm=False, batch_size=8)
    assert [q["runs"] for q in r["probes"]] == [1, 2, 4] and r["largest_runs"] == 2 and r["limited_by"] == "budget"
    assert [q["bytes_per_device"] for q in r["probes"]] == [1000, 2000, 4000]


@pytest.mark.parametrize(
    ("argv", "field"),
    [(["--axis", "width"], "--axis"), (["--values", "8,x"], "--values"), (["--repeats", "0"], "--repeats"),
     (["--workload", "nope"], "--workload"), (["--axis", "seq_len", "--workload", "clustering"], "--workload")],
)  # fmt: skip
def test_bad_input_is_a_user_error(argv, field, capsys):
    assert main(["bench", "scaling", *argv]) == 2
    assert field in capsys.readouterr().err


def test_gpu_script_commands_are_jaxlab_commands():
    """Every command benchmarks/gpu.sh runs (real and dry-run sizes) parses with `jaxlab`'s own parser."""
    assert registry()["scaling"] is scaling and registry()["fit"] is fit
    parser = _parser()
    for flags in ([], ["--dry-run"]):
        out = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu.sh"), "--print", *flags], capture_output=True,
                             text=True, timeout=60, check=True, env={**os.environ, "PYTHON": sys.executable}).stdout  # fmt: skip
        commands = [shlex.split(line) for line in out.splitlines() if " -m jaxlab " in line]
        benches = [c[c.index("bench") + 1] for c in commands]
        assert set(benches) == {"train", "scaling", "fit"} and benches.count("scaling") == 3
        workloads = {c[c.index("--workload") + 1] for c in commands if "--workload" in c}
        assert workloads == ({"lsa-regression"} if flags else set(WORKLOADS))  # real sizes: every workload
        for c in commands:
            args = parser.parse_args(c[c.index("jaxlab") + 1 :])
            assert args.json
