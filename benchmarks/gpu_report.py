"""Write benchmarks/results/gpu-<device>.md from the work directory of benchmarks/gpu.sh.

usage: python benchmarks/gpu_report.py WORK_DIR OUT.md DEVICE DRY_RUN(0|1) TOTAL_SECONDS

Every step of gpu.sh left WORK_DIR/<step>.{json,err,rc,cmd,s}; a step that failed or timed out
(exit status 124) is listed with the tail of its log instead of its figures.
"""

from __future__ import annotations

import datetime
import json
import platform
import sys
from pathlib import Path
from typing import Any

from jaxlab.bench import fit, train
from jaxlab.bench._scaling_report import format_markdown


def _step(work: Path, name: str) -> tuple[dict[str, Any] | None, str]:
    """(the step's JSON or None, a one-line status)."""
    rc_file = work / f"{name}.rc"
    if not rc_file.exists():
        return None, "not run"
    rc = rc_file.read_text().strip()
    seconds = (work / f"{name}.s").read_text().strip() if (work / f"{name}.s").exists() else "?"
    if rc != "0":
        tail = (work / f"{name}.err").read_text().strip().splitlines()[-3:] if (work / f"{name}.err").exists() else []
        why = {"124": "timed out", "125": "skipped (no time left)"}.get(rc, f"exit status {rc}")
        return None, f"{why} after {seconds} s: " + " / ".join(tail)[-600:]
    try:
        lines = [ln for ln in (work / f"{name}.json").read_text().splitlines() if ln.strip()]
        return json.loads(lines[-1]), f"ok in {seconds} s"
    except (ValueError, IndexError) as e:
        return None, f"exit 0 but no JSON ({e})"


def _train_rows(work: Path) -> list[str]:
    rows = ["| workload | dtype | runs | run-steps/s | model GFLOP/s | peak GFLOP/s (kind) | utilization | "
            "vs loop (a) | vs single scan (b) | compile s |", "|---|---|---|---|---|---|---|---|---|---|"]  # fmt: skip
    details = []
    for f in sorted(work.glob("train-*.rc")):
        name = f.stem
        r, status = _step(work, name)
        if r is None:
            rows.append(f"| {name} | | | {status} | | | | | | |")
            continue
        speed = lambda k: f"{r[k]:.1f}x" if k in r else "-"
        rows.append(
            f"| {r['workload']} | {r['dtype']} | {r['runs']} | {r['run_steps_per_s']:.1f} | "
            f"{r['model_flops_per_s'] / 1e9:.1f} | "
            f"{r['peak_flops_per_s'] / 1e9:.1f} ({r['peak_kind']}) | {r['utilization']:.3f} | "
            f"{speed('speedup_vs_loop')} | {speed('speedup_vs_single_scan')} | {r['compile_s']:.2f} |"
        )
        details += ["```", f"$ {(work / f'{name}.cmd').read_text().strip()}", train.format_result(r), "```"]
    return [*rows, "", *details]


def render(work: Path, device: str, dry: bool, total_s: str) -> str:
    """The markdown of one gpu.sh call."""
    dev, dev_status = _step(work, "device")
    peaks, peaks_status = _step(work, "peaks")
    smi = (work / "nvidia-smi.txt").read_text().strip() if (work / "nvidia-smi.txt").exists() else "(no nvidia-smi)"
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    out = [
        f"# `benchmarks/gpu.sh` on {device}{' (DRY RUN: tiny sizes, not figures)' if dry else ''}",
        "",
        f"Date {now}, host {platform.node()}, total {total_s} s. Every figure below is from this one call "
        "(same machine, same processes as listed).",
        "",
        "## Device",
        "```",
        smi,
        json.dumps(dev) if dev else dev_status,
        "```",
        "",
        "## Matmul peaks (one process: float32 HIGHEST, tf32 = float32 default precision on a GPU, bfloat16)",
    ]
    if peaks:
        out += ["| kind | TFLOP/s |", "|---|---|"]
        out += [f"| {k} | {v / 1e12:.2f} |" for k, v in peaks.items() if not k.endswith("_cpu")]
    else:
        out.append(peaks_status)
    out += ["", "## `jaxlab bench train`, every workload, float32 and bfloat16", *_train_rows(work)]
    out += ["", "## Scaling (`jaxlab bench scaling`)"]
    for axis in ("runs", "seq_len", "depth"):
        r, status = _step(work, f"scaling-{axis}")
        out += ["", f"### {axis}", ""]
        if r is None:
            out.append(status)
            continue
        out += [format_markdown(r), "", f"![{axis}]({device}-scaling-{axis}.png)"]
    r, status = _step(work, "fit")
    out += ["", "## Largest run chunk that fits (`jaxlab bench fit`)", ""]
    out += ["```", fit.format_result(r), "```"] if r else [status]
    return "\n".join(out) + "\n"


def main(argv: list[str]) -> int:
    """Render the work directory into the markdown file; 0."""
    work, out, device, dry, total_s = Path(argv[0]), Path(argv[1]), argv[2], argv[3] == "1", argv[4]
    out.write_text(render(work, device, dry, total_s))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
