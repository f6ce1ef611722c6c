"""Run the quick presets whose probes decompose matrices, repeatedly, on 2 and 4 host devices, with the CPU
oversubscribed, each under a timeout: the check that no jaxlab program wedges XLA:CPU's thread pool.

    python scripts/stress_presets.py [--repeats 5] [--devices 2,4] [--timeout-min 40] [--out results.md]

Every run is `jaxlab run EXP --preset quick --seeds 8` in a fresh directory, with
`XLA_FLAGS=--xla_force_host_platform_device_count=N` and `--hogs` busy-looping processes beside it
(the sweep's threads plus those exceed the cores).
A run that exceeds the timeout counts as a hang (it is killed, and its native stacks are not
collected here: the sweep's own watchdog writes them into the run directory). Prints and writes a
markdown table of outcomes and wall times.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

EXPERIMENTS = ("steerability", "latent-ambiguity", "instruction-clustering")


def run_once(experiment: str, n_devices: int, timeout_s: float, workdir: Path, hogs: int) -> tuple[str, float]:
    out = workdir / f"{experiment}-{n_devices}"
    shutil.rmtree(out, ignore_errors=True)
    env = dict(os.environ, XLA_FLAGS=f"--xla_force_host_platform_device_count={n_devices}")
    cmd = [sys.executable, "-m", "jaxlab", "run", experiment, "--preset", "quick", "--seeds", "8"]
    cmd += ["--out", str(out), "--quiet"]
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(hogs)]
    t0 = time.time()
    try:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout_s)
        outcome = "ok" if proc.returncode == 0 else f"exit {proc.returncode}: {proc.stderr.strip()[-200:]}"
    except subprocess.TimeoutExpired:
        outcome = f"HANG (killed after {timeout_s / 60:.0f} min)"
    finally:
        for b in busy:
            b.kill()
    return outcome, time.time() - t0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--devices", default="2,4")
    p.add_argument("--timeout-min", type=float, default=40.0)
    p.add_argument("--hogs", type=int, default=1, help="busy-looping processes beside each run (default 1)")
    p.add_argument("--experiments", default=",".join(EXPERIMENTS))
    p.add_argument("--out", type=Path, default=None, help="also write the markdown table here")
    args = p.parse_args()
    devices = [int(d) for d in args.devices.split(",")]
    experiments = args.experiments.split(",")
    rows = []
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for n in devices:
                for exp in experiments:
                    outcome, wall = run_once(exp, n, 60 * args.timeout_min, Path(tmp), args.hogs)
                    rows.append((exp, n, repeat + 1, outcome, wall))
                    print(f"{exp} devices={n} repeat={repeat + 1}: {outcome} ({wall:.0f} s)", flush=True)
    hangs = sum(r[3].startswith("HANG") for r in rows)
    failures = sum(r[3] != "ok" for r in rows)
    lines = [
        f"Machine: {platform.machine()}, {os.cpu_count()} cores; started {started}; "
        f"command: `python scripts/stress_presets.py --repeats {args.repeats} --devices {args.devices} "
        f"--hogs {args.hogs}`",
        "",
        "| experiment | host devices | repeat | outcome | wall (s) |",
        "|---|---|---|---|---|",
        *(f"| {e} | {n} | {r} | {o} | {w:.0f} |" for e, n, r, o, w in rows),
        "",
        f"{len(rows)} runs, {hangs} hangs, {failures - hangs} other failures.",
    ]
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out is not None:
        args.out.write_text(text)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
