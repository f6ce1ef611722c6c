"""Re-evaluate the claims of stored reproductions with the claims as they are now.

    python scripts/refresh_claims.py docs/reproductions/NAME [...]   # rewrite where the claims changed
    python scripts/refresh_claims.py --check docs/reproductions/NAME  # exit 1 if a rewrite is due

A stored reproduction keeps its run's summary.json and report.md, not the run directory, so
`jaxlab report DIR` (which re-evaluates claims from the runs on disk) cannot reach it. Every claim
reads only what summary.json holds (the runs' final metrics and the cross-run `reference`) and the
config (its `untested` rule). The config is rebuilt from the stored command (`jaxlab run EXP --preset
P --seeds ... --set ... --sweep ...`), i.e. from the preset as it is today; the script refuses a
folder whose rebuilt sweep does not have the stored number of runs. It rewrites the summary's
`claims` and the report's Claims section (between `## Claims` and the next `## `), and nothing else:
the deviations and every other section stay those of the run.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from jaxlab.claims import evaluate
from jaxlab.cli import _parser, build_config
from jaxlab.reporting import claims_sections, render
from jaxlab.results import write_json
from jaxlab.train.groups import plan_groups


def stored_run_config(summary: dict[str, Any]) -> tuple[Any, Any]:
    """(experiment, config) of the stored command, with the preset as it is now."""
    argv = shlex.split(summary["command"])
    if argv[:2] != ["jaxlab", "run"]:
        raise ValueError(f"not a `jaxlab run` command: {summary['command']!r}")
    args = _parser().parse_args(argv[1:])
    exp, cfg = build_config(args)
    n_runs = sum(len(g.runs) for g in plan_groups(cfg))
    if n_runs != summary["n_runs"]:
        raise ValueError(f"the command gives {n_runs} runs today, the stored run had {summary['n_runs']}")
    return exp, cfg


def claims_block(report: str, summary: dict[str, Any]) -> str:
    """`report` with its Claims section rendered again from `summary`'s claims."""
    start = report.index("## Claims\n")
    end = report.index("\n## ", start + 1) + 1
    claims_only = {**summary, "deviations": []}
    return report[:start] + render(claims_sections(claims_only)) + "\n" + report[end:]


def refresh(folder: Path, ids: set[str] | None = None, write: bool = True) -> bool:
    """Re-evaluate `folder`'s claims (only those in `ids`, in the stored order, when given; else every
    claim of the experiment as it is now); rewrite its summary.json and report.md when they changed (if
    `write`). True when they changed."""
    path = folder / "summary.json"
    summary = json.loads(path.read_text())
    exp, cfg = stored_run_config(summary)
    chosen = [c for c in exp.claims if ids is None or c.id in ids]
    now = {c["id"]: c for c in evaluate(chosen, cfg, summary["runs"], summary.get("reference", {}))}
    if ids is None:
        claims = list(now.values())
    else:  # the stored entries, the chosen ones evaluated again (a new claim in the experiment's order)
        stored = {c["id"]: c for c in summary["claims"]}
        order = [c.id for c in exp.claims if c.id in stored or c.id in now]
        order += [i for i in stored if i not in order]
        claims = [now.get(i, stored.get(i)) for i in order]
    if claims == summary["claims"]:
        return False
    if write:
        summary["claims"] = claims
        report = folder / "report.md"
        report.write_text(claims_block(report.read_text(), summary))
        write_json(path, summary)
    return True


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("folders", nargs="+", type=Path)
    p.add_argument("--check", action="store_true", help="only say which folders a rewrite is due for (exit 1)")
    p.add_argument("--only", help="comma-separated claim ids: re-evaluate these, keep the other stored entries")
    args = p.parse_args()
    ids = set(args.only.split(",")) if args.only else None
    due = []
    for folder in args.folders:
        if refresh(folder, ids, write=not args.check):
            due.append(folder)
            print(f"{'due' if args.check else 'rewrote'}: {folder}")
    return 1 if args.check and due else 0


if __name__ == "__main__":
    sys.exit(main())
