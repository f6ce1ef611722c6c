"""`jaxlab bench memory`: peak resident memory of a large sweep, run as `jaxlab run` in a fresh process.

The sweep runs in a child process (`python -m jaxlab run ... --quiet`) and its peak RSS is the
kernel's count for that child alone (`os.wait4` rusage `ru_maxrss`), so the figure includes
everything a user's run holds: Python, JAX, XLA's compiled programs, the device buffers (the CPU
"device" is host memory), checkpoints, result tables and the report. The run-chunk layout the
sweep chose is read back from the run directory.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

from jaxlab.errors import ConfigError, UserError
from jaxlab.registry import get_experiment

NAME = "memory"
HELP = "peak memory (RSS) of a large sweep (default: 10,000 smoke runs) in a fresh process"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `jaxlab bench memory`: the sweep (experiment, preset, runs, `--set`), the memory
    budget, `--out`, `--json`."""
    p.add_argument("--experiment", default="icl-regression")
    p.add_argument("--preset", default="smoke")
    p.add_argument("--runs", type=int, default=10_000, help="number of seeds (runs)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    p.add_argument("--budget", help="JAXLAB_MEMORY_BUDGET for the child (e.g. 512M): forces smaller run chunks")
    p.add_argument("--out", help="keep the run directory here (default: a temporary one, removed)")
    p.add_argument("--overwrite", action="store_true", help="replace a run already in --out (as jaxlab run's)")
    p.add_argument("--json", action="store_true", help="print the result as json")


def _mem_total_gb() -> float:
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return float("nan")


def measure(args: argparse.Namespace, out: Path) -> dict:
    """Run the sweep in a child process writing to `out`; its command, exit status, peak RSS (GiB),
    machine, and (when it succeeded) its size, times and run-chunk layout read back from `out`.
    """
    cmd = [sys.executable, "-m", "jaxlab", "run", args.experiment, "--preset", args.preset]
    cmd += ["--seeds", f"0:{args.runs}", "--out", str(out), "--quiet"] + (["--overwrite"] if args.overwrite else [])
    for item in args.set:
        cmd += ["--set", item]
    env = dict(os.environ)
    if args.budget:
        env["JAXLAB_MEMORY_BUDGET"] = args.budget
    with tempfile.TemporaryFile("w+") as out_f, tempfile.TemporaryFile("w+") as err_f:
        proc = subprocess.Popen(cmd, env=env, stdout=out_f, stderr=err_f, text=True)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own rusage
        proc.returncode = rc = os.waitstatus_to_exitcode(status)
        out_f.seek(0)
        err_f.seek(0)
        stdout, stderr = out_f.read(), err_f.read()
    result = {
        "command": ("JAXLAB_MEMORY_BUDGET=" + args.budget + " " if args.budget else "")
        + "jaxlab "
        + shlex.join(cmd[3:]),
        "returncode": rc,
        "peak_rss_gb": usage.ru_maxrss / 2**20,  # ru_maxrss is in KiB on Linux
        "date": datetime.date.today().isoformat(),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, {_mem_total_gb():.1f} GiB RAM",
    }
    if rc != 0:
        result["error"] = stderr[-2000:]
        return result
    summary = json.loads((out / "summary.json").read_text())
    layout = json.loads((out / "checkpoints" / "group-0000" / "layout.json").read_text())
    result.update(
        n_runs=summary["n_runs"],
        n_diverged=summary.get("n_diverged"),
        wall_s=summary["wall_s"],
        compile_s=summary["compile_s"],
        device=summary["device"],
        n_devices=summary["n_devices"],
        chunk_size=layout["chunk_size"],
        n_chunks=layout["n_chunks"],
        estimate=layout.get("estimate", {}),
        eval_loss_median=(summary["aggregate"].get("eval_loss") or {}).get("median"),
        log_tail=stderr.strip().splitlines()[-1:] + stdout.strip().splitlines()[-1:],
    )
    return result


def main(args: argparse.Namespace) -> int:
    """`jaxlab bench memory`: measure (in a temporary directory unless `--out`) and print; 0 when the
    sweep succeeded, else 1. Bad arguments, and a sweep that refused its own (e.g. `--out` holds a
    run), raise `UserError` with that one-line error (the command line's exit status 2)."""
    if args.runs < 1:
        raise ConfigError("--runs", f"must be >= 1, got {args.runs}")
    get_experiment(args.experiment).preset(args.preset)  # ConfigError naming the allowed ones
    if args.out:
        result = measure(args, Path(args.out))
    else:
        with tempfile.TemporaryDirectory(prefix="jaxlab-bench-memory-") as tmp:
            result = measure(args, Path(tmp) / "run")
    if result["returncode"] == 2:  # the child's user error (e.g. --out holds a run: --overwrite)
        lines = [line for line in result.get("error", "").splitlines() if line.strip()]
        raise UserError(lines[-1].removeprefix("jaxlab: error: ") if lines else "the sweep refused its arguments")
    if args.json:
        print(json.dumps(result, indent=2))
    else:
        for k, v in result.items():
            print(f"{k}: {v}")
    return 0 if result["returncode"] == 0 else 1
