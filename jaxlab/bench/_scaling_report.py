"""The markdown table and the figure of `jaxlab bench scaling` (`jaxlab.bench.scaling` measures).

The figure has three log-log panels against the axis's size: the cost (`step_s`, seconds per
optimizer step of all the point's runs; dotted: the same in CPU seconds) with its fitted line
cost = a * size^b, the compile time
(wall and CPU), and the peak memory (the point's RSS growth and XLA's per-device estimates of the
interval and start programs).
"""

from __future__ import annotations

import math
from typing import Any

import matplotlib
import matplotlib.ticker

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

COLUMNS = (
    ("size", "{:d}"),
    ("runs", "{:d}"),
    ("steps", "{:d}"),
    ("run_steps_per_s", "{:.1f}"),
    ("run_steps_per_cpu_s", "{:.1f}"),
    ("steps_per_s_per_run", "{:.3g}"),
    ("step_s", "{:.3g}"),
    ("compile_s", "{:.2f}"),
    ("compile_cpu_s", "{:.2f}"),
    ("peak_rss_gib", "{:.2f}"),
    ("rss_growth_mib", "{:.0f}"),
    ("xla_mib_per_device", "{:.3g}"),
    ("xla_start_mib_per_device", "{:.3g}"),
)


def _derived(p: dict[str, Any]) -> dict[str, Any]:
    rss, before = p.get("peak_rss_bytes"), p.get("rss_before_bytes")
    xla, start = p.get("xla_bytes_per_device"), p.get("xla_start_bytes_per_device")
    return {
        **{c: None for c, _ in COLUMNS},
        **p,
        "peak_rss_gib": rss / 2**30 if rss else None,
        "rss_growth_mib": (rss - before) / 2**20 if rss and before else None,
        "xla_mib_per_device": xla / 2**20 if xla else None,
        "xla_start_mib_per_device": start / 2**20 if start else None,
    }


def _cell(value: Any, fmt: str) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return fmt.format(value)


def format_markdown(r: dict[str, Any]) -> str:
    """One row per point (the `--json` point fields, memory in GiB/MiB), then the fitted exponents
    and, on the runs axis, the bar."""
    head = (
        f"`jaxlab bench scaling --axis {r['axis']}` ({r['axis_description']}), workload {r['workload']}, "
        f"{r['dtype']}, on {r['device']} x {r['n_devices']}, {r['date']}"
    )
    lines = [head, "", "| " + " | ".join(c for c, _ in COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for p in map(_derived, r["points"]):
        lines.append("| " + " | ".join(_cell(p[c], f) for c, f in COLUMNS) + " |")
    lines += ["", "| fitted exponent b of y = a * size^b | all points | three largest |", "|---|---|---|"]
    for name in ("step_s", "step_cpu_s", "compile_s", "compile_cpu_s", "rss_growth_bytes", "xla_bytes_per_device"):
        if name not in r["fit"]:
            continue
        whole, large = r["fit"][name], r["fit"][f"{name}_large"]
        lines.append(
            f"| {name} | {_cell(whole['exponent'], '{:.3f}')} (r2 {_cell(whole['r2'], '{:.3f}')}) | "
            f"{_cell(large['exponent'], '{:.3f}')} |"
        )
    b = r.get("bar")
    if b:
        verdict = "met" if b["met"] else "not met"
        lines += [
            "",
            f"Bar: run-steps/s at {b['sizes'][1]} runs / at {b['sizes'][0]} runs = {b['ratio']:.3f} "
            f"(per CPU second {b['ratio_cpu']:.3f}); >= {b['threshold']}: **{verdict}**",
        ]
    return "\n".join(lines)


def plot(r: dict[str, Any], path: str) -> None:
    """Write the figure (module docstring) as a PNG to `path`."""
    pts = [_derived(p) for p in r["points"]]
    x_P = np.array([p["size"] for p in pts], float)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    cost_P = np.array([p["step_s"] for p in pts])
    fit = r["fit"]["step_s"]
    ax = axes[0]
    ax.loglog(x_P, cost_P, "o-", label="measured")
    if math.isfinite(fit["exponent"]):
        ax.loglog(x_P, fit["prefactor"] * x_P ** fit["exponent"], "--", label=f"fit: size^{fit['exponent']:.2f}")
    if all(p.get("run_steps_per_cpu_s") for p in pts):
        cpu_P = np.array([p["runs"] / p["run_steps_per_cpu_s"] for p in pts])
        ax.loglog(x_P, cpu_P, "s:", label="per CPU second")
    ax.set_ylabel("s per optimizer step (all runs)")
    ax.set_title("cost")
    ax.legend()
    ax = axes[1]
    ax.loglog(x_P, [p["compile_s"] for p in pts], "o-", label="wall")
    if all(p["compile_cpu_s"] for p in pts):
        ax.loglog(x_P, [p["compile_cpu_s"] for p in pts], "o-", label="CPU time")
    ax.legend()
    ax.set_ylabel("compile s (interval program)")
    ax.set_title(f"compile (exponent {r['fit']['compile_s']['exponent']:.2f})")
    ax = axes[2]
    memory = (
        ("rss_growth_mib", "RSS growth of the point"),
        ("xla_mib_per_device", "XLA: interval program, per device"),
        ("xla_start_mib_per_device", "XLA: start program, per device"),
    )
    for key, label in memory:
        ys = [p[key] for p in pts]
        if any(y for y in ys):
            ax.loglog(x_P, [y if y else np.nan for y in ys], "o-", label=label)
    ax.set_ylabel("MiB")
    ax.set_title("peak memory")
    ax.legend()
    for ax in axes:
        ax.set_xticks(x_P, [f"{x:g}" for x in x_P])  # the measured sizes only: no crowded minor labels
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_xlabel(r["axis_description"])
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"{r['workload']} on {r['device']} x {r['n_devices']} ({r['date'][:10]})")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
