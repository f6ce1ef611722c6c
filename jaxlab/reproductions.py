"""The summary of the reproductions, generated from their verdicts (docs/reproductions/*/summary.json).

Every reproduction folder holds the summary.json of one run, whose `claims` carry verdicts computed
from the runs (`jaxlab.claims`). The README's summary and docs/reproductions/README.md's table are
rendered from those files alone, between the markers

    <!-- claims:begin -->  ...  <!-- claims:end -->

so no verdict in them is written by hand: `update(path, root)` rewrites the block,
`matches(path, root)` says whether it is current (a test asserts it).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from jaxlab.claims import check

BEGIN, END = "<!-- claims:begin -->", "<!-- claims:end -->"
ORDER = (
    "icl-regression",
    "icl-regression-recurrent",
    "icl-regression-deep",
    "icl-regression-recurrent-context",
    "icl-regression-recurrent-context-5000",
    "icl-regression-recurrent-context-5000-cosine",
    "icl-regression-softmax",
    "icl-regression-softmax-mlp",
    "icl-regression-depth",
    "icl-regression-depth-noisy",
    "icl-autoregressive",
    "icl-autoregressive-non-augmented",
    "icl-autoregressive-pe-only",
    "icl-autoregressive-constrained",
    "icl-autoregressive-constrained-gd",
    "icl-autoregressive-gd-start",
    "icl-autoregressive-paper-fig5",
    "icl-autoregressive-non-augmented-64",
    "instruction-clustering",
    "steerability",
    "steerability-ablation",
    "latent-ambiguity",
    "latent-ambiguity-paper-small",
    "representation-dissimilarity",
)


def load(root: str | Path) -> dict[str, dict[str, Any]]:
    """Folder name -> its reproduction's summary.json (its `experiment` says which experiment), for
    every folder of `root` that has one."""
    out = {}
    for path in sorted(Path(root).glob("*/summary.json")):
        out[path.parent.name] = json.loads(path.read_text())
    return dict(sorted(out.items(), key=lambda kv: (ORDER.index(kv[0]) if kv[0] in ORDER else len(ORDER), kv[0])))


def _num(x: float | None) -> str:
    return "—" if x is None else f"{x:.3g}"


def claim_rows(summaries: Mapping[str, Mapping[str, Any]]) -> list[tuple[str, Mapping[str, Any]]]:
    """(folder, claim entry) once per claim of every experiment: where the claim is tested (not
    `untested`) in some folder, each folder that tests it; otherwise the first folder's entry
    (an experiment reproduced with several presets lists each claim once, not once per preset)."""
    by_experiment: dict[str, list[tuple[str, Mapping[str, Any]]]] = {}
    for name, s in summaries.items():
        for c in s.get("claims") or []:
            by_experiment.setdefault(s["experiment"], []).append((name, c))
    out = []
    for entries in by_experiment.values():
        ids = list(dict.fromkeys(c["id"] for _, c in entries))
        for claim_id in ids:
            mine = [(n, c) for n, c in entries if c["id"] == claim_id]
            tested = [(n, c) for n, c in mine if c["verdict"] != "untested"]
            out += tested or mine[:1]
    return out


def _measured(c: Mapping[str, Any]) -> str:
    if c.get("median") is None:
        return "—"
    return f"{_num(c['median'])} [{_num(c['ci_low'])}, {_num(c['ci_high'])}] ({c['n_seeds']})"


def claims_table(summaries: Mapping[str, Mapping[str, Any]], link_prefix: str = "") -> str:
    """One row per claim (`claim_rows`): reproduction | claim | paper | statistic: jaxlab median
    [95% CI] (seeds) | verdict (with the reason when untested or inconclusive)."""
    rows = ["| reproduction | claim | paper | jaxlab median [95% CI] (seeds) | verdict |", "|---|---|---|---|---|"]
    for name, c in claim_rows(summaries):
        paper = c["paper_ref"] + (f": {c['paper_value']}" if c.get("paper_value") is not None else "")
        measured = _measured(c)
        if measured != "—":
            measured = f"{c['statistic']}: {measured}"
        verdict = f"**{c['verdict']}**" + (f": {c['reason']}" if c["verdict"] in ("untested", "inconclusive") else "")
        link = f"[{name}]({link_prefix}{name}/report.md)"
        rows.append(f"| {link} | `{c['id']}`: {c['claim']} | {paper} | {measured} | {verdict} |")
    return "\n".join(rows)


def short_table(summaries: Mapping[str, Mapping[str, Any]], link_prefix: str = "") -> str:
    """The README's table: reproduction | claim id | jaxlab median [95% CI] (seeds) | verdict, one row
    per claim (`claim_rows`); the statistics, the paper's numbers and the reasons are in the reports."""
    rows = ["| reproduction | claim | jaxlab median [95% CI] (seeds) | verdict |", "|---|---|---|---|"]
    for name, c in claim_rows(summaries):
        link = f"[{name}]({link_prefix}{name}/report.md)"
        rows.append(f"| {link} | `{c['id']}` | {_measured(c)} | **{c['verdict']}** |")
    return "\n".join(rows)


def _result(c: Mapping[str, Any]) -> tuple[Any, ...]:
    """What a claim entry measured: two entries with the same are one result (a deterministic re-run of
    the same runs in another reproduction, e.g. a preset that shares seeds and data with another)."""
    return (c["id"], c["verdict"], c.get("median"), c.get("ci_low"), c.get("ci_high"), c.get("n_seeds"))


# Runs that change a training setting of their preset away from the paper's to test an explanation of
# another reproduction's result (the setting is printed among their deviations): their rows are listed
# in the tables but not counted in the tally, which is about the papers' setups.
CONTROLS = ("icl-regression-recurrent-context-5000-cosine",)


def counts(summaries: Mapping[str, Mapping[str, Any]], controls: Sequence[str] = CONTROLS) -> str:
    """One line: how many results got each verdict (`claim_rows`, an identical result of another
    reproduction counted once, `_result`; the rows of `controls` not counted), and how many rows repeat
    an earlier one."""
    tally: dict[str, int] = {}
    seen: set[tuple[Any, ...]] = set()
    repeats = 0
    skipped = [name for name in summaries if name in controls]
    for name, c in claim_rows(summaries):
        if name in controls:
            continue
        if c.get("median") is not None and _result(c) in seen:
            repeats += 1
            continue
        seen.add(_result(c))
        tally[c["verdict"]] = tally.get(c["verdict"], 0) + 1
    order = ("reproduced", "not_reproduced", "inconclusive", "untested")
    line = ", ".join(f"{tally.get(v, 0)} {v}" for v in order)
    if repeats:
        line += f" ({repeats} more rows repeat an identical result of another reproduction, counted once)"
    if skipped:
        line += (
            f" (not counted: the rows of {', '.join(skipped)}, a control run with a training setting changed "
            "from the paper's to test an explanation)"
        )
    return line


def runs_table(summaries: Mapping[str, Mapping[str, Any]]) -> str:
    """One row per reproduction: reproduction | command | runs (diverged) | wall | device."""
    rows = ["| reproduction | command | runs (diverged) | wall | device |", "|---|---|---|---|---|"]
    for name, s in summaries.items():
        rows.append(
            f"| [{name}]({name}/report.md) | `{s.get('command')}` | {s['n_runs']} ({s['n_diverged']}) "
            f"| {s['wall_s']:.0f} s | {s['device']} x {s['n_devices']} |"
        )
    return "\n".join(rows)


def block(root: str | Path, link_prefix: str = "", with_runs: bool = False) -> str:
    """The generated block (markers included) for the reproductions under `root`; `with_runs` (the
    docs page) adds the table of the commands that made them and gives every claim in full, else
    (the README) the short table."""
    summaries = load(root)
    problems = [p for s in summaries.values() for c in s.get("claims") or [] if (p := check(c))]
    if problems:
        raise ValueError("verdicts inconsistent with their own intervals: " + "; ".join(problems))
    body = (
        f"{counts(summaries)} (verdicts computed from the runs: median and 95% bootstrap interval over "
        "seeds against each claim's stated rule; generated from docs/reproductions/*/summary.json by "
        "`python -m jaxlab.reproductions`).\n\n"
        + (claims_table(summaries, link_prefix) if with_runs else short_table(summaries, link_prefix))
    )
    if with_runs:
        body = runs_table(summaries) + "\n\n" + body
    return f"{BEGIN}\n{body}\n{END}"


def _split(text: str, path: Path) -> tuple[str, str, str]:
    if BEGIN not in text or END not in text:
        raise ValueError(f"{path}: no {BEGIN} ... {END} block")
    head, rest = text.split(BEGIN, 1)
    mid, tail = rest.split(END, 1)
    return head, BEGIN + mid + END, tail


def matches(path: str | Path, root: str | Path, link_prefix: str = "", with_runs: bool = False) -> bool:
    """Whether the block in `path` is the one `root`'s summaries generate."""
    _, current, _ = _split(Path(path).read_text(), Path(path))
    return current == block(root, link_prefix, with_runs)


def update(path: str | Path, root: str | Path, link_prefix: str = "", with_runs: bool = False) -> None:
    """Rewrite the block in `path` from `root`'s summaries."""
    path = Path(path)
    head, _, tail = _split(path.read_text(), path)
    path.write_text(head + block(root, link_prefix, with_runs) + tail)


# (file, link prefix from it to docs/reproductions/, with the runs table)
TARGETS = (("README.md", "docs/reproductions/", False), ("docs/reproductions/README.md", "", True))


def main() -> None:
    """Regenerate the blocks of README.md and docs/reproductions/README.md (run from the repository root)."""
    for path, prefix, with_runs in TARGETS:
        update(path, "docs/reproductions", prefix, with_runs)
        print(f"updated {path}")


if __name__ == "__main__":
    main()


__all__ = [
    "TARGETS",
    "block",
    "claim_rows",
    "claims_table",
    "counts",
    "load",
    "main",
    "matches",
    "runs_table",
    "short_table",
    "update",
]
