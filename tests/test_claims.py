"""Claims as data (jaxlab.claims): bootstrap intervals, decision rules, verdicts, and the mechanical check."""

import dataclasses
import json
import math

import jax
import numpy as np
import pytest

from jaxlab.claims import (
    MIN_SEEDS,
    REPLICATE_PREFIX,
    Above,
    Below,
    Between,
    Claim,
    NotApplicable,
    Outside,
    bootstrap_median_ci,
    bracketed,
    check,
    evaluate,
    model_bootstrap,
    paired_across,
    paired_difference,
    per_seed,
    seeds_needed,
    where,
)
from jaxlab.registry import get_experiment
from jaxlab.train import run_sweep, with_seeds
from jaxlab.train.replicate import replicate_config


def test_bootstrap_interval_holds_the_median_and_covers_the_truth_about_95_percent():
    x = np.random.default_rng(1).normal(size=25)
    med, lo, hi = bootstrap_median_ci(x)
    assert med == np.median(x) and lo <= med <= hi
    assert bootstrap_median_ci(x) == (med, lo, hi)  # the same runs give the same interval
    covered = 0
    for seed in range(300):
        sample = np.random.default_rng(100 + seed).normal(loc=3.0, size=15)
        _, lo, hi = bootstrap_median_ci(sample)
        covered += lo <= 3.0 <= hi
    assert 0.88 <= covered / 300 <= 0.995  # percentile bootstrap of a median: roughly nominal
    # more seeds, a narrower interval
    rng = np.random.default_rng(7)
    w8 = np.diff(bootstrap_median_ci(rng.normal(size=8))[1:])[0]
    w200 = np.diff(bootstrap_median_ci(rng.normal(size=200))[1:])[0]
    assert w200 < w8 / 2


@pytest.mark.parametrize(
    ("rule", "interval", "verdict"),
    [
        (Above(0.0), (0.1, 0.3), "reproduced"),
        (Above(0.0), (-0.3, -0.1), "not_reproduced"),
        (Above(0.0), (-0.1, 0.2), "inconclusive"),
        (Above(0.0), (0.0, 0.2), "inconclusive"),  # touching the threshold is not above it
        (Below(0.01), (0.0, 0.005), "reproduced"),
        (Below(0.01), (0.02, 0.03), "not_reproduced"),
        (Below(0.01), (0.005, 0.02), "inconclusive"),
        (Between(0.99, 1.0), (0.995, 0.999), "reproduced"),
        (Between(0.99, 1.0), (0.5, 0.7), "not_reproduced"),
        (Between(0.99, 1.0), (0.98, 0.999), "inconclusive"),
    ],
)
def test_rules_decide_on_the_interval(rule, interval, verdict):
    assert rule.decide(*interval) == verdict


def runs(values, control=None, status=None):
    out = []
    for i, v in enumerate(values):
        final = {"m": v, **({} if control is None else {"c": control[i]})}
        out.append({"run": i, "seed": i, "status": (status or {}).get(i, "ok"), "final": final})
    return out


PER_SEED_M = per_seed("m")


def claim(rule, values=PER_SEED_M, untested=lambda cfg: None):
    return Claim(
        id="c1",
        claim="m is high",
        paper_ref="Fig. 1",
        statistic="final m",
        control="none",
        rule=rule,
        values=values,
        paper_value=0.9,
        untested=untested,
    )


def test_evaluate_computes_verdicts_from_the_runs():
    high = runs([0.95, 0.97, 0.96, 0.99, 0.94, 0.98])
    (e,) = evaluate([claim(Above(0.5))], None, high, {})
    assert e["verdict"] == "reproduced" and e["n_seeds"] == 6 and e["median"] == pytest.approx(0.965)
    assert e["ci_low"] > 0.5 and check(e) is None
    (e,) = evaluate([claim(Above(0.99))], None, high, {})
    assert e["verdict"] == "not_reproduced" and check(e) is None
    # diverged runs never enter; NaN values are dropped
    mixed = runs([0.95, 0.97, 0.1, math.nan, 0.96, 0.99, 0.94], status={2: "diverged"})
    (e,) = evaluate([claim(Above(0.5))], None, mixed, {})
    assert e["n_seeds"] == 5 and e["verdict"] == "reproduced"


def test_too_few_seeds_or_an_untestable_setup_are_said_so():
    (e,) = evaluate([claim(Above(0.5))], None, runs([0.9] * (MIN_SEEDS - 1)), {})
    assert e["verdict"] == "inconclusive" and f"at least {MIN_SEEDS}" in e["reason"]
    assert e["median"] == 0.9 and check(e) is None
    why = "the probed position is identical for every sequence"
    (e,) = evaluate([claim(Above(0.5), untested=lambda cfg: why)], None, runs([0.9] * 8), {})
    assert e["verdict"] == "untested" and e["reason"] == why and e["median"] is None and check(e) is None


def test_paired_difference_against_the_runs_own_control():
    r = runs([1.0, 1.2, 0.9, 1.1, 1.05], control=[0.5, 0.6, 0.5, 0.4, 0.55])
    (e,) = evaluate([claim(Above(0.0), values=paired_difference("m", "c"))], None, r, {})
    assert e["median"] == pytest.approx(np.median([0.5, 0.6, 0.4, 0.7, 0.5])) and e["verdict"] == "reproduced"


def test_check_finds_a_verdict_its_own_interval_does_not_support():
    (e,) = evaluate([claim(Above(0.5))], None, runs([0.95, 0.97, 0.96, 0.99, 0.94]), {})
    assert check(e) is None
    assert "give 'reproduced'" in check({**e, "verdict": "not_reproduced"})
    assert "unknown verdict" in check({**e, "verdict": "yes"})
    assert "from 3 seeds" in check({**e, "n_seeds": 3})
    assert "without a reason" in check({**e, "verdict": "untested", "reason": ""})


def with_replicate(rs, replicate):
    """The runs with final metric m also scored on a replicate evaluation set (values `replicate`)."""
    return [{**r, "final": {**r["final"], REPLICATE_PREFIX + "m": v}} for r, v in zip(rs, replicate, strict=True)]


def test_a_claim_is_evaluated_again_on_the_replicate_evaluation_set():
    rs = with_replicate(runs([0.95, 0.97, 0.96, 0.99, 0.94]), [0.91, 0.93, 0.92, 0.90, 0.94])
    (e,) = evaluate([claim(Above(0.5))], None, rs, {})
    rep = e["replicate"]
    assert e["verdict"] == "reproduced" and rep["verdict"] == "reproduced" and check(e) is None
    assert rep["median"] == pytest.approx(0.92) and rep["n_seeds"] == 5 and rep["ci_low"] <= 0.92 <= rep["ci_high"]
    # the paired difference reads the replicate of m and the control c, which has none: not re-evaluated
    rs = [{**r, "final": {**r["final"], "c": 0.1}} for r in rs]
    (e,) = evaluate([claim(Above(0.0), values=paired_difference("m", "c"))], None, rs, {})
    assert e["replicate"] is None and "reads c," in e["replicate_note"] and e["verdict"] == "reproduced"
    # runs without replicate metrics (summaries written before jaxlab scored one) say so
    (e,) = evaluate([claim(Above(0.5))], None, runs([0.95] * 5), {})
    assert e["replicate"] is None and "no replicate" in e["replicate_note"]
    # a statistic that reads only the cross-run reference (computed once, on the shared set) has nothing to
    # re-evaluate: no replicate, rather than its own numbers again labelled as a replicate
    from_reference = lambda runs_, ref: [ref[f"pen{i}"] for i in range(5)]
    ref = {f"pen{i}": v for i, v in enumerate([0.2, 0.3, 0.25, 0.28, 0.22])}
    (e,) = evaluate([claim(Above(0.0), values=from_reference)], None, rs, ref)
    assert e["verdict"] == "reproduced" and e["replicate"] is None
    assert "reads no metric that the replicate set scores" in e["replicate_note"] and check(e) is None


def test_a_verdict_the_replicate_set_does_not_give_is_inconclusive():
    # every seed above 0.95 on the shared set, every seed below it on the replicate set: the
    # evaluation set, not the models, decides
    rs = with_replicate(runs([0.96, 0.97, 0.965, 0.98, 0.975]), [0.93, 0.94, 0.935, 0.92, 0.945])
    (e,) = evaluate([claim(Above(0.95))], None, rs, {})
    assert e["ci_low"] > 0.95 and e["replicate"]["verdict"] == "not_reproduced"
    assert e["verdict"] == "inconclusive" and "evaluation set's sampling error decides" in e["reason"]
    assert check(e) is None
    assert "give 'inconclusive'" in check({**e, "verdict": "reproduced"})
    # the check re-derives the replicate's verdict from its interval too
    assert check({**e, "replicate": {**e["replicate"], "ci_low": 0.951, "ci_high": 0.99}}) is not None


@pytest.mark.timeout(600)
def test_a_sweep_writes_claims_and_deviations_and_the_report_opens_with_them(tmp_path):
    base = get_experiment("icl-regression")
    claims = [
        claim(Above(-1.0), values=per_seed("eval_loss")),  # a loss is > -1: reproduced from 5 seeds
        claim(Below(0.0), values=per_seed("eval_loss"), untested=lambda cfg: "the smoke preset is too short"),
    ]
    exp = dataclasses.replace(base, claims=claims, deviations=lambda cfg: [f"{cfg.train.steps} steps, not 5000"])
    cfg = with_seeds(base.preset("smoke"), tuple(range(5)))
    result = run_sweep(exp, cfg, tmp_path / "r", progress=False)
    stored = json.loads((tmp_path / "r" / "summary.json").read_text())
    assert stored["claims"] == result.summary["claims"]
    first, second = stored["claims"]
    assert first["verdict"] == "reproduced" and first["n_seeds"] == 5 and check(first) is None
    finals = [r["final"]["eval_loss"] for r in stored["runs"]]
    assert first["median"] == pytest.approx(float(np.median(finals)))
    assert second["verdict"] == "untested" and second["reason"] == "the smoke preset is too short"
    assert stored["deviations"] == [f"{cfg.train.steps} steps, not 5000"]
    report = (tmp_path / "r" / "report.md").read_text()
    assert report.index("## Claims") < report.index("## Deviations") < report.index("## Setup")
    assert "**reproduced**" in report and "**untested**" in report
    # the replicate evaluation set: every run's final parameters scored again, by the engine's own
    # evaluate on data drawn from the replicate key, independently of the shared set
    rt = exp.make_train(replicate_config(cfg))
    data = rt.make_eval_batch()
    params = result.groups[0].state.params
    for i, r in enumerate(stored["runs"]):
        one = jax.tree_util.tree_map(lambda x, i=i: x[i], params)
        expected = float(rt.evaluate(one, data)["eval_loss"])
        assert r["final"][REPLICATE_PREFIX + "eval_loss"] == pytest.approx(expected, rel=1e-5)
        assert r["final"][REPLICATE_PREFIX + "eval_loss"] != r["final"]["eval_loss"]
    replicated = [r["final"][REPLICATE_PREFIX + "eval_loss"] for r in stored["runs"]]
    assert first["replicate"]["median"] == pytest.approx(float(np.median(replicated)))
    assert "## Evaluation-set sampling error" in report


@pytest.mark.parametrize(
    ("interval", "verdict"),
    [
        ((0.2, 0.5), "reproduced"),
        ((-0.5, -0.2), "reproduced"),
        ((-0.05, 0.05), "not_reproduced"),
        ((0.0, 0.3), "inconclusive"),
    ],
)
def test_outside_rule_is_an_equivalence_test(interval, verdict):
    assert Outside(-0.1, 0.1).decide(*interval) == verdict


def test_an_interval_straddling_the_threshold_says_how_many_seeds_would_decide():
    # half-width 0.2, median 0.1 above the threshold: about n (0.2 / 0.1)^2 = 4 n seeds
    assert seeds_needed(8, 0.1, -0.1, 0.3, Above(0.0)) == 32
    assert seeds_needed(8, 0.0, -0.1, 0.1, Above(0.0)) is None
    # an asymmetric interval: the extent on the threshold's side counts (0.3 below the median 0.1)
    assert seeds_needed(8, 0.1, -0.2, 0.12, Above(0.0)) == 72
    values = np.random.default_rng(3).normal(loc=0.05, scale=1.0, size=6)
    [entry] = evaluate([claim(Above(0.0))], None, runs(values), {})
    assert entry["verdict"] == "inconclusive" and "seeds would decide" in entry["reason"]


def test_values_at_swept_points_pair_runs_by_seed():
    rs = [
        {"run": 0, "seed": 0, "hparams": {"task.a": 1}, "final": {"m": 5.0}},
        {"run": 1, "seed": 1, "hparams": {"task.a": 1}, "final": {"m": 7.0}},
        {"run": 2, "seed": 0, "hparams": {"task.a": 2}, "final": {"m": 1.0}},
        {"run": 3, "seed": 2, "hparams": {"task.a": 2}, "final": {"m": 9.0}},
    ]
    assert per_seed("m", task__a=2)(rs, {}) == [1.0, 9.0]
    assert paired_across("m", {"task.a": 1}, {"task.a": 2})(rs, {}) == [4.0]  # only seed 0 is on both sides
    assert where(rs, task__a=3) == []


def test_several_runs_per_seed_make_a_per_seed_claim_untested_not_pooled():
    rs = [
        {"run": 0, "seed": 0, "hparams": {"optim.lr": 1e-3}, "final": {"m": 1.0}},
        {"run": 1, "seed": 0, "hparams": {"optim.lr": 1e-2}, "final": {"m": 2.0}},
    ]
    with pytest.raises(NotApplicable):
        per_seed("m")(rs, {})
    [entry] = evaluate([claim(Above(0.0))], None, rs, {})
    assert entry["verdict"] == "untested" and "several runs per seed" in entry["reason"]
    assert check(entry) is None
    assert per_seed("m", optim__lr=1e-2)(rs, {}) == [2.0]  # one point named: one run per seed again


def test_model_bootstrap_resamples_models_not_pairs():
    # penalty of sender i into receiver j for 6 models of one family: a model effect (row) dominates
    rng = np.random.default_rng(0)
    n = 6
    effect = rng.normal(size=n)
    pen = effect[:, None] + 0.01 * rng.normal(size=(n, n))

    def one(i):
        sub = pen[np.ix_(i, i)]
        off = i[:, None] != i[None, :]
        return float(sub[off].mean()) if off.any() else float("nan")

    def stat(idx):  # the batched protocol: [B, n] indices -> [B] values
        return np.array([one(i) for i in idx["a"]])

    est, lo, hi, units = model_bootstrap(stat, {"a": n})
    off = ~np.eye(n, dtype=bool)
    assert units == n and est == pytest.approx(pen[off].mean())
    # the same resampling written out directly, one resample at a time
    draws = []
    g = np.random.default_rng(0)
    for _ in range(4000):
        i = g.integers(0, n, size=n)
        draws.append(one(i))
    draws = np.array(draws)
    draws = draws[np.isfinite(draws)]
    assert (lo, hi) == pytest.approx(tuple(np.quantile(draws, [0.025, 0.975])))
    # pairs treated as independent units would give a far narrower interval than the models allow
    _, plo, phi = bootstrap_median_ci(pen[off])
    assert (hi - lo) > 2 * (phi - plo)
    with pytest.raises(ValueError, match="shape"):  # a statistic that is not vectorized is refused
        model_bootstrap(lambda idx: float(one(idx["a"][0])), {"a": n})


def test_a_claim_with_its_own_interval_is_decided_on_it():
    c = Claim(
        id="c2",
        claim="x",
        paper_ref="-",
        statistic="s",
        control="-",
        rule=Above(0.0),
        interval=lambda runs, ref: (0.5, 0.2, 0.8, 6),
    )
    [entry] = evaluate([c], None, [], {})
    assert (entry["median"], entry["ci_low"], entry["ci_high"], entry["n_seeds"]) == (0.5, 0.2, 0.8, 6)
    assert entry["verdict"] == "reproduced" and check(entry) is None
    few = Claim(**{**c.__dict__, "interval": lambda runs, ref: (0.5, 0.2, 0.8, 3)})
    assert evaluate([few], None, [], {})[0]["verdict"] == "inconclusive"


def test_a_bracketed_value_decides_only_when_the_whole_bracket_clears_the_threshold():
    def rs(lows, highs):
        return [{"run": i, "seed": i, "final": {"lo": a, "hi": b}} for i, (a, b) in enumerate(zip(lows, highs))]

    interval = bracketed("lo", "hi")
    straddling = rs([0.08] * 6, [0.13] * 6)  # an onset between checkpoints at 8% and 13% of training
    est, lo, hi, n = interval(straddling, {})
    assert (est, lo, hi, n) == (pytest.approx(0.105), 0.08, 0.13, 6)
    c = Claim(
        id="c3", claim="x", paper_ref="-", statistic="s", control="-", rule=Above(0.1), interval=interval, undecided="a finer grid would decide",
    )  # fmt: skip
    [entry] = evaluate([c], None, straddling, {})
    assert entry["verdict"] == "inconclusive" and entry["reason"].endswith("a finer grid would decide")
    assert evaluate([c], None, rs([0.2] * 6, [0.3] * 6), {})[0]["verdict"] == "reproduced"
    assert evaluate([c], None, rs([0.01] * 6, [0.05] * 6), {})[0]["verdict"] == "not_reproduced"
    # the interval comes from the lower ends' lower bound and the upper ends' upper bound
    lows, highs = np.linspace(0.1, 0.2, 7), np.linspace(0.3, 0.5, 7)
    _, lo, hi, _ = interval(rs(lows, highs), {})
    assert lo == bootstrap_median_ci(lows)[1] and hi == bootstrap_median_ci(highs)[2]


def test_the_median_interval_is_min_max_at_5_seeds_and_the_2nd_6th_order_statistics_at_7():
    """What the module docstring says of the nominal 95%: the exact coverage at n = 5 and 7 follows from these."""
    x5 = np.array([3.0, -1.0, 7.0, 0.5, 2.0])
    assert bootstrap_median_ci(x5)[1:] == (-1.0, 7.0)  # coverage 1 - 2 / 2^5 = 93.75%
    x7 = np.array([3.0, -1.0, 7.0, 0.5, 2.0, 9.0, -4.0])
    assert bootstrap_median_ci(x7)[1:] == (-1.0, 7.0)  # x(2), x(6): coverage 1 - 2 * 8 / 2^7 = 87.5%
