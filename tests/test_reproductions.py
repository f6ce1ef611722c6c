"""The reproductions' verdict tables are generated from their summary.json, and every stored verdict
follows from its own interval and rule (jaxlab.reproductions, jaxlab.claims.check)."""

import importlib.util
import json
import shutil
import sys
from pathlib import Path

import pytest

from jaxlab import reproductions
from jaxlab.claims import VERDICTS, check
from jaxlab.registry import builtin_experiments

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs" / "reproductions"
FIELDS = {"id", "claim", "paper_ref", "paper_value", "statistic", "control", "median", "ci_low", "ci_high"}
FIELDS |= {"n_seeds", "rule", "verdict", "reason"}


def test_every_experiment_has_a_reproduction_whose_verdicts_follow_from_its_intervals():
    summaries = reproductions.load(DOCS)
    assert {s["experiment"] for s in summaries.values()} == set(builtin_experiments())
    for name, s in summaries.items():
        assert s["claims"], f"{name}: no claims"
        assert s["deviations"] and all(isinstance(d, str) for d in s["deviations"]), name
        for c in s["claims"]:
            assert FIELDS <= set(c), (name, FIELDS - set(c))
            assert c["verdict"] in VERDICTS and check(c) is None, (name, c["id"], check(c))
            if c["verdict"] == "reproduced":  # said directly too: the interval is on the claimed side
                assert c["ci_low"] is not None and c["n_seeds"] >= 5


@pytest.mark.parametrize(("path", "prefix", "with_runs"), reproductions.TARGETS)
def test_readme_tables_are_the_ones_the_summaries_generate(path, prefix, with_runs):
    assert reproductions.matches(ROOT / path, DOCS, prefix, with_runs), "run `python -m jaxlab.reproductions`"


def test_a_hand_edited_verdict_is_refused(tmp_path):
    name = "icl-regression"
    shutil.copytree(DOCS / name, tmp_path / name)
    path = tmp_path / name / "summary.json"
    s = json.loads(path.read_text())
    decided = next(c for c in s["claims"] if c["verdict"] in ("not_reproduced", "inconclusive", "reproduced"))
    decided["verdict"] = "reproduced" if decided["verdict"] != "reproduced" else "not_reproduced"
    path.write_text(json.dumps(s))
    with pytest.raises(ValueError, match="inconsistent"):
        reproductions.block(tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(f"intro\n{reproductions.BEGIN}\nold\n{reproductions.END}\ntail\n")
    assert not reproductions.matches(readme, DOCS)
    reproductions.update(readme, DOCS)
    assert reproductions.matches(readme, DOCS) and readme.read_text().startswith("intro\n")


def test_every_reproduction_report_opens_with_its_claims_then_its_deviations():
    for name in reproductions.load(DOCS):
        headings = [line for line in (DOCS / name / "report.md").read_text().splitlines() if line.startswith("## ")]
        assert headings[:2] == ["## Claims", "## Deviations from the paper's setup"], (name, headings[:3])


def test_an_identical_result_in_two_reproductions_is_counted_once():
    entry = {"id": "c", "verdict": "reproduced", "median": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n_seeds": 8}
    other = {**entry, "median": 0.45}  # the same claim measured differently: a second result
    summaries = {
        "a": {"experiment": "e", "claims": [entry]},
        "b": {"experiment": "e", "claims": [dict(entry)]},  # a deterministic re-run of the same runs
        "c": {"experiment": "e", "claims": [other]},
    }
    assert len(reproductions.claim_rows(summaries)) == 3  # every folder's row stays in the tables
    line = reproductions.counts(summaries)
    assert line.startswith("2 reproduced, 0 not_reproduced, 0 inconclusive, 0 untested")
    assert "1 more rows repeat an identical result" in line


def test_a_control_run_is_listed_but_not_counted():
    entry = {"id": "c", "verdict": "reproduced", "median": 0.5, "ci_low": 0.4, "ci_high": 0.6, "n_seeds": 8}
    summaries = {
        "a": {"experiment": "e", "claims": [{**entry, "verdict": "not_reproduced", "ci_low": 0.55}]},
        "a-decayed": {"experiment": "e", "claims": [entry]},  # the same claim, a training setting changed
    }
    assert len(reproductions.claim_rows(summaries)) == 2
    line = reproductions.counts(summaries, controls=("a-decayed",))
    assert line.startswith("0 reproduced, 1 not_reproduced, 0 inconclusive, 0 untested")
    assert "not counted: the rows of a-decayed" in line
    assert reproductions.counts(summaries, controls=()).startswith("1 reproduced, 1 not_reproduced")
    assert set(reproductions.CONTROLS) <= set(reproductions.ORDER)  # every control is a stored reproduction


def _refresh_claims():
    """scripts/refresh_claims.py as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("refresh_claims", ROOT / "scripts" / "refresh_claims.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_refresh_claims_restores_a_stored_claim_from_the_runs_in_its_summary(tmp_path, monkeypatch, capsys):
    """scripts/refresh_claims.py re-evaluates the chosen claims from summary.json's runs and the stored command,
    rewriting the entry and the report's Claims section only."""
    name = "representation-dissimilarity"
    folder = tmp_path / name
    shutil.copytree(DOCS / name, folder)
    path = folder / "summary.json"
    s = json.loads(path.read_text())
    entry = next(c for c in s["claims"] if c["id"] == "cka_block_structure")
    entry.update(median=0.5, ci_low=0.4, ci_high=0.6, n_seeds=10, verdict="reproduced")
    path.write_text(json.dumps(s))
    report = folder / "report.md"
    report.write_text(report.read_text().replace("(n=5)", "(n=10)", 1))
    script = _refresh_claims()

    def run(*argv: str) -> int:
        monkeypatch.setattr(sys, "argv", ["refresh_claims.py", *argv])
        return script.main()

    assert run("--check", "--only", "cka_block_structure", str(folder)) == 1
    assert run("--only", "cka_block_structure", str(folder)) == 0 and "rewrote" in capsys.readouterr().out
    assert json.loads(path.read_text())["claims"] == json.loads((DOCS / name / "summary.json").read_text())["claims"]
    assert report.read_text() == (DOCS / name / "report.md").read_text()
    assert run("--check", str(folder)) == 0  # every claim as the experiment has it now


def test_every_stored_claim_is_the_claim_as_the_code_defines_it():
    """Every stored reproduction's claims equal the experiment's claims evaluated now on the runs in its summary
    (a claim reworded or re-ruled in the code must be re-evaluated: scripts/refresh_claims.py)."""
    refresh_claims = _refresh_claims()
    stale = [name for name in reproductions.load(DOCS) if refresh_claims.refresh(DOCS / name, write=False)]
    assert stale == [], f"run: python scripts/refresh_claims.py docs/reproductions/{{{','.join(stale)}}}"
