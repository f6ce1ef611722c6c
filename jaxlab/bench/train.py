"""`jaxlab bench train`: training throughput of a vectorized sweep, against its own data generation,
the machine's matmul peak, and one-run-at-a-time baselines, all measured in one process.

Measured (all times exclude compilation, which is reported as `compile_s`):
  sweep       R runs in one program: the evaluation-interval program that `jaxlab run` compiles
              (`jaxlab.train.programs.Programs.interval` on `make_train(cfg)`, imported, not
              copied): `--steps` optimizer steps of every run, then the engine's evaluation on a
              one-sequence evaluation batch (`train.eval_batch_size=1`, so the call times
              training). The execution plan is `jaxlab run`'s (`jaxlab.train.plan`): the run
              layout (`--run-layout`, `jaxlab.train.runmap`: `vmap`, or `scan` = each device
              trains its share of the runs one after another; `auto` = scan on CPUs), the run
              block (`--run-block`), each run's gradient micro-batch (`--micro-batch`,
              `jaxlab.train.microbatch`) and the blocks as one loop over stacked parameters
              (`--scan-layers`, `jaxlab.models.layer_scan`) force `train.*` as `--set` does. The
              runs are split over every device as `jaxlab run` splits them (the `jaxlab` command
              gives a CPU host one device per core, `jaxlab.hostdevices`), state and history
              donated; one program for all R runs, or for chunks of C runs called in turn when all
              runs do not fit in memory (`--runs-per-chunk`, as `train.max_runs_per_chunk` does for
              `jaxlab run`).
  shared      with `--shared-stream`: the sweep program again with `task.shared_stream` (each step's
              batches drawn once per data seed of a device's runs, `jaxlab.train.streams`), on the
              same runs, timed in the same repeats; `shared_speedup` is the median within-repeat
              ratio of the two sweeps' times. `--data-seeds K` gives run r the seed r mod K (default:
              every run its own seed, so nothing is shared).
  datagen     the same program without the model, in the same run layout: every step samples the
              same batch shapes from the same sampler and keys (`Train.train_batch`) and only sums
              them.
  loop        baseline (a), the published codes' style (`jaxlab.bench._reference`): Python loops
              over seeds and steps, a jitted sampler (`jax.random`, per-sequence keys) and a jitted
              step (explicit T x T attention at every position) called once per step.
  jaxlab-loop jaxlab's own `jit(Train.step)` called once per step and run: the gain of the scan.
  single-scan baseline (b): `jit(Train.advance)` for one run, called once per run: the gain of
              vmapping runs alone.
  peak        a jitted N x N float32 matmul (2 N^3 FLOPs; on a GPU also TF32 and bfloat16): the
              better of one on the first device (all cores) and one on every device at once.
Baselines run `--baseline-runs` runs on the first device, one run at a time as the published codes
do (their cost per run-step does not depend on R); rates are run-steps (runs x optimizer steps)
per second. Model FLOPs are the analytic count of `jaxlab.bench._train_workloads`; the result
records the execution plan (`plan`). Each repeat times sweep, datagen, the baselines and the peak
back to back; reported rates are medians over repeats, and every ratio (utilization, speedups,
datagen fraction) is the median of the ratios within a repeat, so a machine shared with other jobs
biases them less than it biases the rates. Every figure is also given per second of this
process's CPU time (`*_cpu`), which other jobs on the machine disturb less than wall time.

This module is the command (arguments, `measure`, the figures and the table); the timed programs
and the matmul peak are `jaxlab.bench._train_timing`.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import sys
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from jaxlab.bench._train_timing import TrainBench, matmul_peaks
from jaxlab.bench._train_workloads import WORKLOADS, flops_per_run_step
from jaxlab.config import PRNG_IMPLS
from jaxlab.errors import ConfigError
from jaxlab.train.engine import make_train
from jaxlab.train.groups import with_seeds
from jaxlab.train.runmap import RUN_LAYOUTS

NAME = "train"
HELP = "training throughput (run-steps/s) vs data generation, matmul peak and one-run-at-a-time loops"
DTYPES = ("float32", "bfloat16")
BASELINES = ("loop", "jaxlab-loop", "single-scan")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `jaxlab bench train`: workload, runs, steps, repeats, baselines, dtype, layout and `--json`."""
    p.add_argument("--workload", default="lsa-regression", help=f"one of {', '.join(WORKLOADS)}")
    p.add_argument("--runs", type=int, default=64, help="runs trained as one program (default 64)")
    p.add_argument("--steps", type=int, help="optimizer steps per timed call (default: per workload)")
    p.add_argument("--runs-per-chunk", type=int, help="runs per compiled program (default: per workload)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; medians are reported (default 3)")
    p.add_argument("--baseline-runs", type=int, default=4, help="runs timed in each baseline loop (default 4)")
    p.add_argument(
        "--baselines",
        default=",".join(BASELINES),
        help=f"comma-separated baselines to time: {', '.join(BASELINES)}, or none (default: all)",
    )
    p.add_argument("--dtype", default="float32", help="matmul inputs: float32 or bfloat16 (float32 accumulation)")
    p.add_argument("--batch-size", type=int, help="tasks per step and run (default: the workload's)")
    p.add_argument("--prng-impl", default="threefry2x32", help=f"train.prng_impl: {', '.join(PRNG_IMPLS)}")
    p.add_argument("--matmul-size", type=int, help="N of the peak N x N matmul (default 2048 CPU, 8192 GPU)")
    p.add_argument("--run-layout", default="auto", help=f"how one program holds its runs: {', '.join(RUN_LAYOUTS)}")
    p.add_argument("--run-block", type=int, help="runs vmapped per step of the scan layout (default: automatic)")
    p.add_argument("--micro-batch", type=int, help="sequences per gradient micro-batch (default: automatic)")
    p.add_argument(
        "--scan-layers",
        action="store_true",
        help="train.scan_layers: the blocks as one lax.scan over stacked parameters (default: unrolled)",
    )
    p.add_argument(
        "--shared-stream",
        action="store_true",
        help="also time the sweep with task.shared_stream (batches drawn once per data seed), same runs",
    )
    p.add_argument("--data-seeds", type=int, help="distinct seeds among the runs: run r has seed r mod K (default R)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _check(args: argparse.Namespace) -> None:
    if args.workload not in WORKLOADS:
        raise ConfigError("--workload", f"unknown workload {args.workload!r}", list(WORKLOADS))
    if args.dtype not in DTYPES:
        raise ConfigError("--dtype", f"unknown value {args.dtype!r}", DTYPES)
    for name in _baselines(args.baselines):
        if name not in BASELINES:
            raise ConfigError("--baselines", f"unknown baseline {name!r}", [*BASELINES, "none"])
    if args.run_layout not in RUN_LAYOUTS:
        raise ConfigError("--run-layout", f"unknown value {args.run_layout!r}", RUN_LAYOUTS)
    if args.prng_impl not in PRNG_IMPLS:
        raise ConfigError("--prng-impl", f"unknown value {args.prng_impl!r}", PRNG_IMPLS)
    for name in (
        "runs",
        "steps",
        "repeats",
        "baseline_runs",
        "matmul_size",
        "batch_size",
        "runs_per_chunk",
        "run_block",
        "micro_batch",
        "data_seeds",
    ):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')}", f"must be >= 1, got {value}")


def _baselines(text: str) -> list[str]:
    return [] if text.strip() == "none" else [b.strip() for b in text.split(",") if b.strip()]


def measure(
    workload: str,
    runs: int = 64,
    steps: int | None = None,
    repeats: int = 3,
    baseline_runs: int = 4,
    baselines: tuple[str, ...] = BASELINES,
    dtype: str = "float32",
    matmul_size: int | None = None,
    batch_size: int | None = None,
    prng_impl: str = "threefry2x32",
    runs_per_chunk: int | None = None,
    run_layout: str = "auto",
    run_block: int | None = None,
    micro_batch: int | None = None,
    shared_stream: bool = False,
    data_seeds: int | None = None,
    log: Callable[[str], None] = lambda s: None,
    scan_layers: bool = False,
) -> dict[str, Any]:
    """Run the benchmark (module docstring); returns the result object of `--json`."""
    wl = WORKLOADS[workload]
    steps = steps or wl.default_steps
    cfg = wl.config().with_overrides({"model.dtype": dtype, "train.prng_impl": prng_impl})
    if batch_size is not None:
        cfg = cfg.set("train.batch_size", batch_size)
    if micro_batch is not None:
        cfg = cfg.set("train.micro_batch", micro_batch)
    if run_block is not None:
        cfg = cfg.set("train.run_block", run_block)
    if scan_layers:
        cfg = cfg.set("train.scan_layers", True)
    # the evaluation closing each interval: one sequence, so that an interval times its training
    cfg = cfg.with_overrides({"train.run_layout": run_layout, "train.eval_batch_size": 1})
    n_seeds = min(data_seeds or runs, runs)
    seeds = np.arange(runs) % n_seeds  # run r has seed r mod K
    cfg = with_seeds(cfg, tuple(range(n_seeds)))
    device = jax.devices()[0]
    on_gpu = jax.default_backend() == "gpu"
    matmul_size = matmul_size or (8192 if on_gpu else 2048)
    load_before = os.getloadavg()[0]

    train = make_train(cfg)  # the execution plan, decided once: train.plan
    layout = train.plan.run_layout
    # A workload's default chunking is for the memory of vmapped runs; scanned runs hold one
    # run's activations at a time.
    chunk = runs_per_chunk or (wl.runs_per_chunk if layout == "vmap" else None)
    log(f"compiling {workload} for {runs} runs ({layout})")
    prog = TrainBench(train, runs, steps, chunk, seeds)
    shared = None
    if shared_stream:
        log(f"compiling {workload} with shared streams ({n_seeds} data seeds)")
        shared = TrainBench(make_train(cfg.set("task.shared_stream", True)), runs, steps, chunk, seeds)
        shared.sweep()
    k = min(baseline_runs, runs)
    timers = {"loop": prog.loop, "jaxlab-loop": prog.jaxlab_loop, "single-scan": prog.single_scan}
    for name in baselines:  # compile and warm the baselines
        timers[name](1)
    prog.sweep()
    prog.datagen()

    rows: list[dict[str, Any]] = []
    for rep in range(repeats):
        row = {"sweep": prog.sweep(), "datagen": prog.datagen()}
        if shared is not None:
            row["shared"] = shared.sweep()
        for name in baselines:
            row[name.replace("-", "_")] = timers[name](k)
        row["peak"] = matmul_peaks(matmul_size)
        rows.append(row)
        log(f"repeat {rep + 1}/{repeats}: sweep {runs * steps / row['sweep'][0]:.1f} run-steps/s")

    flops = flops_per_run_step(cfg)
    peak_kind = "bfloat16" if dtype == "bfloat16" else ("tf32" if on_gpu else "float32")
    result: dict[str, Any] = {
        "workload": workload,
        "runs": runs,
        "steps": steps,
        "dtype": dtype,
        "batch_size": cfg.train.batch_size,
        "prng_impl": prng_impl,
        "runs_per_chunk": prog.chunk,
        "run_layout": layout,
        "run_block": train.plan.run_block if layout == "scan" else None,
        "micro_batch": train.plan.micro_batch,
        "plan": train.plan.as_dict(),
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "n_devices": prog.n_devices,
        "data_seeds": n_seeds,
        "shared_stream": shared_stream,
    }
    # i = 0: wall-clock figures (the issue's); i = 1: per second of this process's CPU time, which
    # a machine shared with other jobs disturbs less (it still slows caches and memory).
    for i, suffix in ((0, ""), (1, "_cpu")):
        figures = _figures(rows, i, runs, steps, k, flops, peak_kind, baselines)
        result.update({f"{name}{suffix}" if suffix else name: v for name, v in figures.items()})
    result.update(
        {
            "peak_kind": peak_kind,
            "compile_s": prog.compile[0],
            "compile_cpu_s": prog.compile[1],
            "compile_init_s": prog.compile_init[0],
            "compile_datagen_s": prog.compile_datagen[0],
            "flops_per_run_step": flops,
            "repeats": repeats,
            "matmul_size": matmul_size,
            "per_repeat_run_steps_per_s": [runs * steps / r["sweep"][0] for r in rows],
            "per_repeat_datagen_run_steps_per_s": [runs * steps / r["datagen"][0] for r in rows],
            **(
                {
                    "per_repeat_shared_run_steps_per_s": [runs * steps / r["shared"][0] for r in rows],
                    "compile_shared_s": shared.compile[0],
                }
                if shared is not None
                else {}
            ),
            "jax_version": jax.__version__,
            "host": platform.node(),
            "cpu_count": os.cpu_count(),
            "loadavg_1min": [load_before, os.getloadavg()[0]],
            "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        }
    )
    if baselines:
        result["baseline_runs"] = k
        result["baselines"] = list(baselines)
    return result


def _figures(
    rows: list[dict[str, Any]], i: int, runs: int, steps: int, k: int, flops: float, peak_kind: str, baselines: tuple
) -> dict[str, float]:
    """Medians over repeats of the rates and of the within-repeat ratios, from time index i."""
    med = lambda f: float(np.median([f(r) for r in rows]))
    peak_key = peak_kind if i == 0 else f"{peak_kind}_cpu"
    rate = lambda r: runs * steps / r["sweep"][i]
    out = {
        "run_steps_per_s": med(rate),
        "datagen_run_steps_per_s": med(lambda r: runs * steps / r["datagen"][i]),
        "datagen_fraction": med(lambda r: r["datagen"][i] / r["sweep"][i]),
        "model_flops_per_s": med(lambda r: flops * rate(r)),
        "peak_flops_per_s": med(lambda r: r["peak"][peak_key]),
        "utilization": med(lambda r: flops * rate(r) / r["peak"][peak_key]),
    }
    for kind in ("float32", "tf32", "bfloat16"):
        for name in (kind, f"{kind}_one_device", f"{kind}_all_devices"):
            key = name if i == 0 else f"{name}_cpu"
            if key in rows[0]["peak"]:
                out[f"peak_{name}_flops_per_s"] = med(lambda r, key=key: r["peak"][key])
    if "shared" in rows[0]:
        out["shared_run_steps_per_s"] = med(lambda r: runs * steps / r["shared"][i])
        out["shared_speedup"] = med(lambda r: r["sweep"][i] / r["shared"][i])
    for name in (b.replace("-", "_") for b in baselines):
        out[f"speedup_vs_{name}"] = med(lambda r, n=name: r[n][i] / k / (r["sweep"][i] / runs))
        out[f"{name}_run_steps_per_s"] = med(lambda r, n=name: k * steps / r[n][i])
    return out


def format_result(r: dict[str, Any]) -> str:
    """A short table: wall-clock rates, and the ratios by wall and by CPU time."""
    rows = [("sweep", "run_steps_per_s", None)]
    if "shared_speedup" in r:
        rows.append(("shared streams", "shared_run_steps_per_s", "shared_speedup"))
    rows.append(("datagen alone", "datagen_run_steps_per_s", "datagen_fraction"))
    for label, name in (("loop (a)", "loop"), ("jaxlab loop", "jaxlab_loop"), ("single scan (b)", "single_scan")):
        if f"speedup_vs_{name}" in r:
            rows.append((label, f"{name}_run_steps_per_s", f"speedup_vs_{name}"))
    block = "" if r.get("run_block") is None else f", blocks of {r['run_block']}"
    split = r.get("micro_batch", r["batch_size"]) < r["batch_size"]
    micro = f" in micro-batches of {r['micro_batch']}" if split else ""
    lines = [
        f"workload {r['workload']}: {r['runs']} runs ({r['run_layout']}{block}, chunks of {r['runs_per_chunk']}, "
        f"{r['n_devices']} devices, {r.get('data_seeds', r['runs'])} data seeds) "
        f"x {r['steps']} steps, "
        f"batch {r['batch_size']}{micro}, {r['dtype']}, "
        f"{r['prng_impl']}, on {r['device']}",
        f"  {'':16s}{'run-steps/s':>12s}{'per CPU-s':>12s}   ratio (wall / CPU time)",
    ]
    for label, key, ratio in rows:
        line = f"  {label:16s}{r[key]:12.1f}{r[key + '_cpu']:12.1f}"
        if ratio:
            line += f"   {ratio} {r[ratio]:.2f} / {r[ratio + '_cpu']:.2f}"
        lines.append(line)
    lines += [
        f"  model {r['model_flops_per_s'] / 1e9:.2f} GFLOP/s of {r['peak_flops_per_s'] / 1e9:.1f} ({r['peak_kind']} "
        f"matmul peak): utilization {r['utilization']:.3f} (CPU time: {r['utilization_cpu']:.3f})",
        f"  compile {r['compile_s']:.2f} s (CPU {r['compile_cpu_s']:.2f} s); init {r['compile_init_s']:.2f} s, "
        f"datagen {r['compile_datagen_s']:.2f} s",
    ]
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    """`jaxlab bench train`: check the arguments, `measure` and print the result (`format_result`, or JSON); 0."""
    _check(args)
    log = (lambda s: None) if args.json else (lambda s: print(f"[jaxlab bench train] {s}", file=sys.stderr, flush=True))
    result = measure(
        args.workload,
        runs=args.runs,
        steps=args.steps,
        repeats=args.repeats,
        baseline_runs=args.baseline_runs,
        baselines=tuple(_baselines(args.baselines)),
        dtype=args.dtype,
        matmul_size=args.matmul_size,
        batch_size=args.batch_size,
        prng_impl=args.prng_impl,
        runs_per_chunk=args.runs_per_chunk,
        run_layout=args.run_layout,
        run_block=args.run_block,
        micro_batch=args.micro_batch,
        shared_stream=args.shared_stream,
        data_seeds=args.data_seeds,
        log=log,
        scan_layers=args.scan_layers,
    )
    print(json.dumps(result) if args.json else format_result(result))
    return 0
