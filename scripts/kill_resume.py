"""A default-settings sweep SIGKILLed partway, then `--resume`d, against the same sweep uninterrupted.

    python scripts/kill_resume.py [--experiment icl-regression] [--preset paper] [--kill-after 180]

Runs the sweep once without interruption (directory A), then again (B) killed with SIGKILL after
`--kill-after` seconds (or at 3/4 of A's wall time when A finished sooner, said in the output), then
`--resume` on B. Reports the step the resume continued from and whether B's metric table and final
metrics equal A's exactly (bit for bit). Exit status 0 only if the resume started past step 0 and
everything matched.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd


def jaxlab(*args: str) -> list[str]:
    return [sys.executable, "-m", "jaxlab", "run", *args, "--quiet"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--experiment", default="icl-regression")
    p.add_argument("--preset", default="paper")
    p.add_argument("--kill-after", type=float, default=180.0)
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        a, b = Path(tmp) / "a", Path(tmp) / "b"
        base = [args.experiment, "--preset", args.preset]
        t0 = time.time()
        subprocess.run(jaxlab(*base, "--out", str(a)), check=True, capture_output=True)
        wall_a = time.time() - t0
        kill_after = args.kill_after if wall_a > args.kill_after * 1.1 else 0.75 * wall_a
        proc = subprocess.Popen(jaxlab(*base, "--out", str(b)), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(kill_after)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        resumed = subprocess.run(jaxlab(*base, "--out", str(b), "--resume"), capture_output=True, text=True)
        if resumed.returncode != 0:
            print(resumed.stderr[-3000:])
            return 1
        steps = [int(m) for m in re.findall(r"resuming from step (\d+)", resumed.stderr)]
        ta, tb = pd.read_parquet(a / "metrics.parquet"), pd.read_parquet(b / "metrics.parquet")
        same_table = ta.equals(tb)  # exact, NaN equal to NaN
        fa = [r["final"] for r in json.loads((a / "summary.json").read_text())["runs"]]
        fb = [r["final"] for r in json.loads((b / "summary.json").read_text())["runs"]]
        same_final = fa == fb
        print(f"uninterrupted: {wall_a:.0f} s; killed after {kill_after:.0f} s (SIGKILL)")
        print("resume notices:", [line for line in resumed.stderr.splitlines() if "step" in line][:8])
        print(f"resumed from step(s) {steps or [0]}; metric table bit-identical: {same_table}; ", end="")
        print(f"finals equal: {same_final}")
        ok = bool(steps) and min(steps) > 0 and same_table and same_final
        print("bar met" if ok else "bar NOT met")
        return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
