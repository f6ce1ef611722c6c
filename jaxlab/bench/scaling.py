"""`jaxlab bench scaling`: run-steps/s, compile time and peak memory along one size axis, measured
in one process, with the fitted exponent of cost vs size.

Axes (`--axis`; default values and workload in `AXES`):
  runs     R runs trained as one program (1, 8, 64, 512, 4096; lsa-regression). Runs that are not
           a multiple of the device count are padded with copies, as `jaxlab run` pads its last
           run chunk: R = 1 on 2 devices trains 2 slots, and its rates count the 1 real run.
  seq_len  the task's sequence length T (20, 40, 80, 160, 320; softmax-regression), through
           `task.n_context` (T = 2 N interleaved, N + 1 paired); position tables follow the task.
  depth    `model.n_layers` (1, 2, 4, 8, 12; softmax-regression).
The seq_len and depth axes train `--runs` runs (default: one per device).

Every point is timed on the programs `jaxlab run` compiles (`jaxlab.bench._train_timing.TrainBench`:
`Programs.interval` on `make_train(cfg)`, `jaxlab run`'s execution plan, one-sequence evaluation
so that a call times training). A call advances every run `steps` optimizer steps; on the runs axis
`steps = max(1, round(run_steps / R))` so that every call does about the same work (`--run-steps`,
default 2 x 64 x the workload's default steps of `jaxlab bench train`); on the other axes 1 step.
A repeat is as many calls as last `--min-time` seconds (counted from one warm call); the rates are
medians over `--repeats` repeats, compilation excluded and reported as `compile_s` (the interval
program; `compile_init_s`: the start program, compiled and run). With the vmap layout the runs of a
point are split into run chunks by `jaxlab.train.chunking` as `jaxlab run` splits them. An untimed
point (the smallest, one run per device, one call of one step) comes first, so that the first
measured point's compile time and memory do not carry the process's one-time costs (`--no-warmup`
skips it).

Per point: run-steps/s (runs x steps per second of wall time; also per second of this process's CPU
time), steps/s of each run, `step_s` = the time of one optimizer step of all the point's runs
(R / run-steps/s), peak memory, and the model FLOP/s (`jaxlab.bench._train_workloads`). Peak memory
is measured as `jaxlab bench memory` measures it, the peak resident set size, but for one point of
this process: the kernel's high-water mark (VmHWM) is reset before the point (`/proc/self/clear_refs`)
and read after it; the point's own share is `peak_rss_bytes - rss_before_bytes`. Also XLA's memory
analysis of the interval and start programs (per device, `jaxlab.train.chunking.compiled_bytes`:
the larger is what `jaxlab run` checks against its memory budget) and on an
accelerator the device's `peak_bytes_in_use` (the process's running maximum: points run in
increasing size).

Fit (`fit_exponent`): cost = a * size^b by least squares on (log size, log cost), for `step_s`,
`compile_s` and the memory; over all points and over the three largest (`*_large`). On the runs
axis, the bar of issue 24: run-steps/s at 4096 runs >= 0.9 x at 64 runs (the cost of a run-step
at 4096 runs within ~10% of that at 64).

This module is the command and the measurement; the table and the figure are
`jaxlab.bench._scaling_report`.
"""

from __future__ import annotations

import argparse
import datetime
import gc
import json
import math
import os
import platform
import resource
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import chex
import jax
import numpy as np

from jaxlab.bench._scaling_report import format_markdown, plot
from jaxlab.bench._train_timing import TrainBench
from jaxlab.bench._train_workloads import WORKLOADS, flops_per_run_step
from jaxlab.config import ExperimentConfig
from jaxlab.errors import ConfigError
from jaxlab.tasks import regression, task_spec
from jaxlab.train import chunking
from jaxlab.train.engine import make_train
from jaxlab.train.groups import with_seeds
from jaxlab.train.hparams import stack_hparams
from jaxlab.train.programs import Programs, key_data
from jaxlab.train.runmap import RUN_LAYOUTS
from jaxlab.train.sharding import Placement

NAME = "scaling"
HELP = "run-steps/s, compile time and peak memory over runs, sequence length or depth, with fitted exponents"
BAR_SIZES = (64, 4096)  # issue 24: run-steps/s at 4096 runs >= BAR x at 64 runs
BAR = 0.9


@dataclass(frozen=True)
class Axis:
    """One size axis: its default values and workload, and how a size sets the config."""

    name: str
    values: tuple[int, ...]
    workload: str
    description: str


AXES: dict[str, Axis] = {
    a.name: a
    for a in (
        Axis("runs", (1, 8, 64, 512, 4096), "lsa-regression", "runs trained as one program"),
        Axis("seq_len", (20, 40, 80, 160, 320), "softmax-regression", "task sequence length T"),
        Axis("depth", (1, 2, 4, 8, 12), "softmax-regression", "model.n_layers"),
    )
}


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `jaxlab bench scaling`: axis, values, workload, steps, repeats, outputs."""
    p.add_argument("--axis", default="runs", help=f"one of {', '.join(AXES)} (default runs)")
    p.add_argument("--values", help="comma-separated sizes (default: the axis's, module docstring)")
    p.add_argument("--workload", help=f"one of {', '.join(WORKLOADS)} (default: the axis's)")
    p.add_argument("--runs", type=int, help="runs of the seq_len and depth axes (default: one per device)")
    p.add_argument("--steps", type=int, help="optimizer steps per call (default: automatic, module docstring)")
    p.add_argument("--run-steps", type=int, help="runs axis: run-steps per call when --steps is not given")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats; medians are reported (default 3)")
    p.add_argument("--min-time", type=float, default=1.0, help="seconds each repeat lasts at least (default 1)")
    p.add_argument("--batch-size", type=int, help="tasks per step and run (default: the workload's)")
    p.add_argument("--dtype", default="float32", help="matmul inputs: float32 or bfloat16")
    p.add_argument("--run-layout", default="auto", help=f"how one program holds its runs: {', '.join(RUN_LAYOUTS)}")
    p.add_argument("--runs-per-chunk", type=int, help="runs per compiled program (default: as jaxlab run chooses)")
    p.add_argument("--no-warmup", action="store_true", help="skip the untimed first point (module docstring)")
    p.add_argument("--plot", help="write the figure (PNG) here (an existing file only with --overwrite)")
    p.add_argument("--markdown", help="write the markdown table here (an existing file only with --overwrite)")
    p.add_argument("--overwrite", action="store_true", help="replace existing --plot / --markdown files")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def parse_values(text: str | None, axis: Axis) -> tuple[int, ...]:
    """`--values` as sorted distinct positive ints (the axis's defaults when None)."""
    if text is None:
        return axis.values
    try:
        values = sorted({int(v) for v in text.split(",") if v.strip()})
    except ValueError:
        raise ConfigError("--values", f"not a comma-separated list of integers: {text!r}") from None
    if not values or values[0] < 1:
        raise ConfigError("--values", f"needs positive integers, got {text!r}")
    return tuple(values)


def _check(args: argparse.Namespace) -> None:
    if args.axis not in AXES:
        raise ConfigError("--axis", f"unknown axis {args.axis!r}", list(AXES))
    if args.workload is not None and args.workload not in WORKLOADS:
        raise ConfigError("--workload", f"unknown workload {args.workload!r}", list(WORKLOADS))
    if args.dtype not in ("float32", "bfloat16"):
        raise ConfigError("--dtype", f"unknown value {args.dtype!r}", ("float32", "bfloat16"))
    if args.run_layout not in RUN_LAYOUTS:
        raise ConfigError("--run-layout", f"unknown value {args.run_layout!r}", RUN_LAYOUTS)
    for name in ("runs", "steps", "run_steps", "repeats", "batch_size", "runs_per_chunk"):
        value = getattr(args, name)
        if value is not None and value < 1:
            raise ConfigError(f"--{name.replace('_', '-')}", f"must be >= 1, got {value}")
    if not (math.isfinite(args.min_time) and args.min_time >= 0):
        raise ConfigError("--min-time", f"must be a finite number >= 0, got {args.min_time}")
    for flag, path in (("--plot", args.plot), ("--markdown", args.markdown)):
        if path and os.path.lexists(path) and not args.overwrite:
            raise ConfigError(flag, f"{path} exists; pass --overwrite to replace it, or choose another file")


def fit_exponent(sizes: Sequence[float], costs: Sequence[float]) -> dict[str, float]:
    """cost = a * size^b by least squares on log-log: b = cov(log x, log y) / var(log x),
    log a = mean(log y) - b mean(log x); also r2, the fraction of var(log y) the line explains.
    NaN when fewer than two distinct sizes or a non-positive value."""
    x_P, y_P = np.asarray(sizes, np.float64), np.asarray(costs, np.float64)
    chex.assert_rank(x_P, 1)
    chex.assert_equal_shape((x_P, y_P))
    nan = {"exponent": float("nan"), "prefactor": float("nan"), "r2": float("nan")}
    if len(np.unique(x_P)) < 2 or not (np.all(x_P > 0) and np.all(y_P > 0) and np.all(np.isfinite(y_P))):
        return nan
    lx_P, ly_P = np.log(x_P), np.log(y_P)
    dx_P, dy_P = lx_P - lx_P.mean(), ly_P - ly_P.mean()
    b = float(dx_P @ dy_P / (dx_P @ dx_P))
    log_a = float(ly_P.mean() - b * lx_P.mean())
    resid_P = dy_P - b * dx_P
    ss = float(dy_P @ dy_P)
    r2 = 1.0 - float(resid_P @ resid_P) / ss if ss > 0 else 1.0
    return {"exponent": b, "prefactor": float(np.exp(log_a)), "r2": r2}


def point_config(cfg: ExperimentConfig, axis: str, size: int) -> ExperimentConfig:
    """The workload's config at one size of a seq_len or depth axis (runs are set by `with_seeds`)."""
    if axis == "depth":
        return cfg.set("model.n_layers", size)
    if axis != "seq_len":
        return cfg
    if not isinstance(cfg.task, regression.Config):
        raise ConfigError(
            "--workload", "the seq_len axis needs a regression workload", ["lsa-regression", "softmax-regression"]
        )
    paired = cfg.task.layout == "paired"
    n_context = size - 1 if paired else size // 2
    if n_context < 1 or (not paired and size % 2):
        allowed = "T >= 2" if paired else "even T >= 2"
        raise ConfigError("--values", f"T = {size} is not a sequence length of the {cfg.task.layout} layout", allowed)
    out = cfg.set("task.n_context", n_context)
    assert task_spec(out.task).seq_len == size
    return out


class PeakRSS:
    """Peak resident set size of this process over a block (Linux): the high-water mark VmHWM is
    reset on entry (writing 5 to /proc/self/clear_refs) and read on exit. Without that file
    (older kernels), `getrusage` gives the process's peak so far; `reset` says which."""

    def __enter__(self) -> PeakRSS:
        try:
            with open("/proc/self/clear_refs", "w") as f:
                f.write("5")
            self.reset = True
        except OSError:
            self.reset = False
        self.before = _status_bytes("VmRSS")
        return self

    def __exit__(self, *exc: object) -> None:
        self.peak = _status_bytes("VmHWM") if self.reset else _ru_maxrss()


def _status_bytes(field: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field + ":"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _ru_maxrss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux


def _device_peak() -> int | None:
    stats = jax.devices()[0].memory_stats() if jax.default_backend() != "cpu" else None
    return int(stats["peak_bytes_in_use"]) if stats and "peak_bytes_in_use" in stats else None


def _chunk_size(train: Any, slots: int, n_devices: int, runs_per_chunk: int | None) -> int | None:
    """Runs per program: `runs_per_chunk`, else (vmap layout) what `jaxlab.train.chunking` chooses
    for `jaxlab run`, rounded down to a divisor of `slots` that is a multiple of the device count."""
    if runs_per_chunk is None and train.plan.run_layout != "vmap":
        return None  # scanned runs hold one run's activations at a time: one program
    if runs_per_chunk is None:
        p = Placement.default()
        programs = Programs(train, p, key_data(np.arange(1), train.cfg.train.prng_impl).shape[1])
        hp_keys = list(stack_hparams(train.cfg, [{}]))
        chunks, _, _ = chunking.choose(
            slots, n_devices, 0,
            lambda size: programs.compile_interval(size, hp_keys),
            fixed_bytes=programs.eval_data_bytes(n_devices, hp_keys),
            others=lambda size: [programs.compile_start(size, hp_keys)],
        )  # fmt: skip
        runs_per_chunk = chunks.size
    size = min(runs_per_chunk, slots)
    while size > n_devices and (slots % size or size % n_devices):
        size -= 1
    return size


def measure_point(
    cfg: ExperimentConfig,
    runs: int,
    steps: int,
    repeats: int = 3,
    min_time: float = 1.0,
    runs_per_chunk: int | None = None,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Compile and time `runs` runs of `cfg` (padded to the device count) for `steps` steps per
    call; the figures of one point (module docstring)."""
    n_devices = Placement.default().n_devices
    slots = -(-runs // n_devices) * n_devices
    cfg = with_seeds(cfg.with_overrides({"train.eval_batch_size": 1}), tuple(range(slots)))
    gc.collect()
    with PeakRSS() as rss:
        train = make_train(cfg)
        chunk = _chunk_size(train, slots, n_devices, runs_per_chunk)
        prog = TrainBench(train, slots, steps, chunk)
        warm = prog.sweep()  # the first call, untimed
        calls = max(1, min(10_000, int(np.ceil(min_time / max(warm[0], 1e-9)))))
        times = []
        for _ in range(repeats):
            wall = cpu = 0.0
            for _ in range(calls):
                w, c = prog.sweep()
                wall, cpu = wall + w, cpu + c
            times.append((wall, cpu))
        xla = chunking.compiled_bytes(prog.interval)
        hp_keys = list(stack_hparams(cfg, [{}]))
        xla_start = chunking.compiled_bytes(prog.programs.compile_start(prog.chunk, hp_keys))  # cached: no compile
    work = runs * steps * calls  # real run-steps per repeat (padding slots do not count)
    rate = float(np.median([work / w for w, _ in times]))
    rate_cpu = float(np.median([work / c for _, c in times]))
    flops = flops_per_run_step(cfg)
    plan = train.plan
    point = {
        "runs": runs,
        "slots": slots,
        "steps": steps,
        "calls_per_repeat": calls,
        "repeats": repeats,
        "seq_len": task_spec(cfg.resolve().task).seq_len,
        "n_layers": cfg.resolve().model.n_layers,
        "batch_size": cfg.train.batch_size,
        "run_layout": plan.run_layout,
        "run_block": plan.run_block if plan.run_layout == "scan" else None,
        "micro_batch": plan.micro_batch,
        "runs_per_chunk": prog.chunk,
        "compile_s": prog.compile[0],
        "compile_cpu_s": prog.compile[1],
        "compile_init_s": prog.compile_init[0],
        "run_steps_per_s": rate,
        "run_steps_per_cpu_s": rate_cpu,
        "steps_per_s_per_run": rate / runs,
        "step_s": runs / rate,
        "per_repeat_run_steps_per_s": [work / w for w, _ in times],
        "flops_per_run_step": flops,
        "model_flops_per_s": flops * rate,
        "peak_rss_bytes": rss.peak,
        "rss_before_bytes": rss.before,
        "rss_reset": rss.reset,
        "xla_bytes_per_device": xla,
        "xla_start_bytes_per_device": xla_start,
        "device_peak_bytes": _device_peak(),
    }
    log(f"{runs} runs, T={point['seq_len']}, {point['n_layers']} layers: {rate:.1f} run-steps/s, "
        f"compile {point['compile_s']:.1f} s, peak RSS {(rss.peak or 0) / 2**30:.2f} GiB")  # fmt: skip
    del prog, train
    return point


def auto_steps(axis: str, runs: int, workload: str, steps: int | None, run_steps: int | None) -> int:
    """Steps per call: `steps` when given; on the runs axis max(1, round(run_steps / runs)) (default
    run_steps: 2 x 64 x the workload's default steps), so that every call does about the same work;
    else 1."""
    if steps is not None:
        return steps
    if axis != "runs" and run_steps is None:
        return 1
    target = run_steps or 2 * 64 * WORKLOADS[workload].default_steps
    return max(1, round(target / runs))


def measure(
    axis: str = "runs",
    values: Sequence[int] | None = None,
    workload: str | None = None,
    runs: int | None = None,
    steps: int | None = None,
    run_steps: int | None = None,
    repeats: int = 3,
    min_time: float = 1.0,
    batch_size: int | None = None,
    dtype: str = "float32",
    run_layout: str = "auto",
    runs_per_chunk: int | None = None,
    warmup: bool = True,
    log: Callable[[str], None] = lambda s: None,
) -> dict[str, Any]:
    """Every point of one axis in this process, smallest first, and the fits (module docstring);
    the result object of `--json`. `warmup`: first an untimed point (see below)."""
    ax = AXES[axis]
    values = tuple(values or ax.values)
    workload = workload or ax.workload
    n_devices = Placement.default().n_devices
    base = WORKLOADS[workload].config().with_overrides({"model.dtype": dtype, "train.run_layout": run_layout})
    if batch_size is not None:
        base = base.set("train.batch_size", batch_size)
    load_before = os.getloadavg()[0]
    # one untimed point first, so that no point's compile time or memory carries the process's
    # one-time costs (backend start-up, first compilation, library code paged in)
    if warmup:
        first = values[0] if axis != "runs" else n_devices
        measure_point(point_config(base, axis, first), runs or n_devices, 1, 1, 0.0, runs_per_chunk)
    points = []
    for size in values:
        n_runs = size if axis == "runs" else (runs or n_devices)
        n_steps = auto_steps(axis, n_runs, workload, steps, run_steps)
        log(f"{axis} = {size}: {n_runs} runs x {n_steps} steps per call")
        point = measure_point(point_config(base, axis, size), n_runs, n_steps, repeats, min_time, runs_per_chunk, log)
        points.append({"size": size, **point})
    device = jax.devices()[0]
    result: dict[str, Any] = {
        "axis": axis,
        "axis_description": ax.description,
        "workload": workload,
        "values": list(values),
        "dtype": dtype,
        "points": points,
        "fit": fits(points),
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "n_devices": n_devices,
        "jax_version": jax.__version__,
        "host": platform.node(),
        "cpu_count": os.cpu_count(),
        "loadavg_1min": [load_before, os.getloadavg()[0]],
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": "jaxlab bench scaling " + " ".join(sys.argv[3:]) if sys.argv[1:3] == ["bench", NAME] else None,
    }
    if axis == "runs":
        result["bar"] = bar(points)
    return result


def fits(points: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Fitted exponents vs size of `step_s` (cost; `step_cpu_s`: the same per CPU second, which
    other jobs on a shared machine disturb less), `compile_s` (wall and CPU) and memory (XLA's
    per-device estimate of the interval program, and the point's own RSS growth), over all points
    and over the three largest (`*_large`)."""
    size = [p["size"] for p in points]
    series = {
        "step_s": [p["step_s"] for p in points],
        "step_cpu_s": [p["runs"] / p["run_steps_per_cpu_s"] for p in points],
        "compile_s": [p["compile_s"] for p in points],
        "compile_cpu_s": [p["compile_cpu_s"] for p in points],
        "xla_bytes_per_device": [p["xla_bytes_per_device"] or float("nan") for p in points],
        "rss_growth_bytes": [
            (p["peak_rss_bytes"] - p["rss_before_bytes"]) if p["peak_rss_bytes"] and p["rss_before_bytes"] else 0
            for p in points
        ],
    }
    out = {}
    for name, ys in series.items():
        out[name] = fit_exponent(size, ys)
        out[f"{name}_large"] = fit_exponent(size[-3:], ys[-3:])
    return out


def bar(points: list[dict[str, Any]]) -> dict[str, Any] | None:
    """Issue 24's bar: run-steps/s at 4096 runs / at 64 runs (also per CPU second), met when >= 0.9."""
    by = {p["size"]: p for p in points}
    small, large = BAR_SIZES
    if small not in by or large not in by:
        return None
    ratio = by[large]["run_steps_per_s"] / by[small]["run_steps_per_s"]
    ratio_cpu = by[large]["run_steps_per_cpu_s"] / by[small]["run_steps_per_cpu_s"]
    return {"sizes": list(BAR_SIZES), "threshold": BAR, "ratio": ratio, "ratio_cpu": ratio_cpu, "met": ratio >= BAR}


def main(args: argparse.Namespace) -> int:
    """`jaxlab bench scaling`: check the arguments, `measure`, write the figure and table when asked,
    and print the table (or JSON); 0."""
    _check(args)
    ax = AXES[args.axis]
    values = parse_values(args.values, ax)
    log = (
        (lambda s: None) if args.json else (lambda s: print(f"[jaxlab bench scaling] {s}", file=sys.stderr, flush=True))
    )
    result = measure(
        args.axis,
        values,
        workload=args.workload,
        runs=args.runs,
        steps=args.steps,
        run_steps=args.run_steps,
        repeats=args.repeats,
        min_time=args.min_time,
        batch_size=args.batch_size,
        dtype=args.dtype,
        run_layout=args.run_layout,
        runs_per_chunk=args.runs_per_chunk,
        warmup=not args.no_warmup,
        log=log,
    )
    table = format_markdown(result)
    if args.plot:
        plot(result, args.plot)
    if args.markdown:
        with open(args.markdown, "w") as f:
            f.write(table + "\n")
    print(json.dumps(result) if args.json else table)
    return 0
