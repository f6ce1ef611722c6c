"""`jaxlab bench cka`: the JSON schema and sane values on a tiny workload.

Run in-process: nothing here asserts on speed (the measured figures are in benchmarks/results/cka.md).
"""

import json

import pytest

from jaxlab.bench import cka, registry
from jaxlab.cli import main

KEYS = {
    "seconds",
    "flops_per_s",
    "peak_flops_per_s",
    "utilization",
    "numpy_loop_seconds",
    "speedup_vs_numpy_loop",
    "device",
}


def test_bench_cka_json_on_a_tiny_workload(capsys):
    args = ["--runs", "3", "--layers", "2", "--examples", "64", "--features", "8", "--repeats", "2"]
    assert main(["bench", "cka", *args, "--numpy-pairs", "4", "--matmul-size", "128", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert KEYS <= set(out)
    assert out["flops"] == cka.flop_count(6, 64, 8) == 6 * 64 * 64 * 8 + 21 * 64 * 65
    assert out["flops_per_s"] == out["flops"] / out["seconds"]
    for key in ("seconds", "flops_per_s", "peak_flops_per_s", "utilization", "numpy_loop_seconds"):
        assert out[key] > 0, key
    assert out["numpy_loop_seconds"] == pytest.approx(out["numpy_loop_seconds_unique_pairs"] * 36 / 21)
    assert out["max_abs_diff_vs_numpy"] < 1e-5 and out["n_pairs"] == 21 and out["device"].startswith("cpu")
    assert len(out["seconds_all"]) == 2


def test_bench_cka_is_registered_and_refuses_bad_sizes(capsys):
    assert registry()["cka"] is cka
    assert main(["bench", "cka", "--runs", "0"]) == 2
    assert "--runs: must be >= 1" in capsys.readouterr().err
