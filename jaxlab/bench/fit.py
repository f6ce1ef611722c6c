"""`jaxlab bench fit`: the largest run chunk (runs in one program) that fits one device's memory.

The interval and start programs `jaxlab run` compiles (`jaxlab.train.programs.Programs` on
`make_train(cfg)`) are compiled for R = start, 2 start, 4 start, ... runs (multiples of the device
count, up to `--max-runs`), and each R's per-device footprint read from XLA's memory analysis, as
`jaxlab.train.chunking` reads it to choose `jaxlab run`'s run chunks (arguments + outputs - donated
aliases + temporaries; the larger of the two programs; nothing is allocated). The largest R whose
footprint fits the budget (`jaxlab.train.chunking.memory_budget`: 90% of an accelerator's free
memory, half the host's available memory on a CPU, or `--budget`) is then trained for real, one
call of `--steps` steps (`jaxlab.bench._train_timing.TrainBench`, the benchmark's own programs),
to confirm that it fits: its run-steps/s and peak device memory are reported. A sweep larger than
that R runs as several chunks of at most R runs each (`jaxlab run` does this by itself).
"""

from __future__ import annotations

import argparse
import datetime
import json
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxlab.bench._train_timing import TrainBench
from jaxlab.bench._train_workloads import WORKLOADS
from jaxlab.errors import ConfigError, UserError
from jaxlab.train import chunking
from jaxlab.train.engine import make_train
from jaxlab.train.groups import with_seeds
from jaxlab.train.hparams import stack_hparams
from jaxlab.train.programs import Programs, key_data
from jaxlab.train.runmap import RUN_LAYOUTS
from jaxlab.train.sharding import Placement

NAME = "fit"
HELP = "the largest run chunk that fits one device's memory (XLA's memory analysis), trained once to confirm"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `jaxlab bench fit`: workload, the doubling range, budget, confirmation, `--json`."""
    p.add_argument("--workload", default="lsa-regression", help=f"one of {', '.join(WORKLOADS)}")
    p.add_argument("--start", type=int, help="first run count (default: the device count)")
    p.add_argument("--max-runs", type=int, default=2**20, help="stop doubling here (default 2^20)")
    p.add_argument("--budget", help="bytes per device (K/M/G suffix; default: as jaxlab run)")
    p.add_argument("--steps", type=int, default=1, help="steps of the confirming call (default 1)")
    p.add_argument("--no-confirm", action="store_true", help="only the estimate: do not train the largest R")
    p.add_argument("--batch-size", type=int, help="tasks per step and run (default: the workload's)")
    p.add_argument("--dtype", default="float32", help="matmul inputs: float32 or bfloat16")
    p.add_argument("--run-layout", default="auto", help=f"how one program holds its runs: {', '.join(RUN_LAYOUTS)}")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _check(args: argparse.Namespace) -> None:
    if args.workload not in WORKLOADS:
        raise ConfigError("--workload", f"unknown workload {args.workload!r}", list(WORKLOADS))
    if args.dtype not in ("float32", "bfloat16"):
        raise ConfigError("--dtype", f"unknown value {args.dtype!r}", ("float32", "bfloat16"))
    if args.run_layout not in RUN_LAYOUTS:
        raise ConfigError("--run-layout", f"unknown value {args.run_layout!r}", RUN_LAYOUTS)
    for name in ("start", "max_runs", "steps", "batch_size"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')}", f"must be >= 1, got {value}")


def measure(
    workload: str = "lsa-regression",
    start: int | None = None,
    max_runs: int = 2**20,
    budget: int | None = None,
    steps: int = 1,
    confirm: bool = True,
    batch_size: int | None = None,
    dtype: str = "float32",
    run_layout: str = "auto",
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """The doubling probe and the confirming call (module docstring); the result of `--json`."""
    cfg = (
        WORKLOADS[workload]
        .config()
        .with_overrides({"model.dtype": dtype, "train.run_layout": run_layout, "train.eval_batch_size": 1})
    )
    if batch_size is not None:
        cfg = cfg.set("train.batch_size", batch_size)
    p = Placement.default()
    D = p.n_devices
    budget = chunking.memory_budget() if budget is None else budget
    train = make_train(cfg)
    programs = Programs(train, p, key_data(np.arange(1), cfg.train.prng_impl).shape[1])
    hp_keys = list(stack_hparams(cfg, [{}]))
    size = max(D, -(-(start or D) // D) * D)
    probes, best = [], None
    while size <= max_runs:
        t0 = time.perf_counter()
        compiled = [programs.compile_interval(size, hp_keys), programs.compile_start(size, hp_keys)]
        sizes = [b for b in map(chunking.compiled_bytes, compiled) if b is not None]
        need = max(sizes) if sizes else None
        probes.append({"runs": size, "bytes_per_device": need, "compile_s": time.perf_counter() - t0})
        log(f"{size} runs: {chunking.gigabytes(need or 0)} per device (budget {chunking.gigabytes(budget)})")
        if need is not None and need > budget:
            break
        best = size
        size *= 2
    device = jax.devices()[0]
    result: dict[str, Any] = {
        "workload": workload,
        "dtype": dtype,
        "run_layout": train.plan.run_layout,
        "budget_bytes": budget,
        "budget_source": chunking.budget_source(),
        "probes": probes,
        "largest_runs": best,
        "limited_by": "budget" if probes and best != probes[-1]["runs"] else "max_runs",
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "n_devices": D,
        "jax_version": jax.__version__,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if confirm and best is not None:
        result["confirm"] = _confirm(cfg, best, steps, log)
    return result


def _confirm(cfg: Any, runs: int, steps: int, log: Callable[[str], None]) -> dict[str, Any]:
    """Train `runs` runs for one untimed and one timed call of `steps` steps; the rate, or the error."""
    try:
        prog = TrainBench(make_train(with_seeds(cfg, range(runs))), runs, steps)
        prog.sweep()
        wall, _ = prog.sweep()
    except Exception as e:  # an allocation the estimate missed: the probe's finding, reported
        log(f"{runs} runs did not run: {type(e).__name__}")
        return {"runs": runs, "ok": False, "error": f"{type(e).__name__}: {str(e)[:500]}"}
    stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
    out = {
        "runs": runs,
        "ok": True,
        "steps": steps,
        "run_steps_per_s": runs * steps / wall,
        "compile_s": prog.compile[0],
    }
    if stats:
        out["device_peak_bytes"] = int(stats.get("peak_bytes_in_use", 0))
        out["device_limit_bytes"] = int(stats.get("bytes_limit", 0))
    log(f"{runs} runs trained: {out['run_steps_per_s']:.1f} run-steps/s")
    return out


def format_result(r: dict[str, Any]) -> str:
    """The probes, one line each, then the largest run chunk and its confirmation."""
    lines = [f"workload {r['workload']} ({r['run_layout']}, {r['dtype']}) on {r['device']} x {r['n_devices']}, "
             f"budget {chunking.gigabytes(r['budget_bytes'])} per device ({r['budget_source']})"]  # fmt: skip
    for q in r["probes"]:
        need = "-" if q["bytes_per_device"] is None else chunking.gigabytes(q["bytes_per_device"])
        lines.append(f"  {q['runs']:>9d} runs: {need:>10s} per device (compiled in {q['compile_s']:.1f} s)")
    lines.append(f"  largest run chunk that fits: {r['largest_runs']} runs (limited by {r['limited_by']})")
    c = r.get("confirm")
    if c:
        lines.append(
            f"  trained: {c['run_steps_per_s']:.1f} run-steps/s" if c["ok"] else f"  did not run: {c['error']}"
        )
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """`jaxlab bench fit`: check the arguments, probe, print; 0 (1 when the confirming call failed)."""
    _check(args)
    budget = None
    if args.budget:
        try:
            budget = chunking.parse_bytes(args.budget)
        except UserError:
            raise ConfigError("--budget", f"not a size in bytes: {args.budget!r}", "e.g. 512M, 40G") from None
    log = (lambda s: None) if args.json else (lambda s: print(f"[jaxlab bench fit] {s}", file=sys.stderr, flush=True))
    result = measure(
        args.workload,
        start=args.start,
        max_runs=args.max_runs,
        budget=budget,
        steps=args.steps,
        confirm=not args.no_confirm,
        batch_size=args.batch_size,
        dtype=args.dtype,
        run_layout=args.run_layout,
        log=log,
    )
    print(json.dumps(result) if args.json else format_result(result))
    return 0 if result.get("confirm", {}).get("ok", True) else 1
