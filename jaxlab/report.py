"""report.md and its figures, made from a run directory alone (`jaxlab report DIR`).

The generic part (how to reproduce, the final metrics across runs, the per-run status, reference
values, the loss curves) and the experiment's own sections are written by
`jaxlab.reporting.write_report_of`; this module finds the run's experiment by the name in its
config.json (`jaxlab.registry`), which is all the command line needs.
"""

from __future__ import annotations

from pathlib import Path

from jaxlab import registry, results
from jaxlab.errors import UserError
from jaxlab.reporting import write_report_of


def write_report(run_dir: str | Path) -> Path:
    """(Re)write `run_dir/report.md` and its figures from the files of the run."""
    path = Path(run_dir) / "config.json"
    if not path.exists():
        raise UserError(f"{run_dir}: no config.json: is it a jaxlab run directory?")
    experiment = registry.get_experiment(results.read_config_data(path)["experiment"])
    return write_report_of(run_dir, experiment)


__all__ = ["write_report"]
