"""Paper claims as data, and verdicts computed from the runs, never written by hand.

An experiment declares its paper's claims (`Claim`): an id, the claim in one sentence, where the
paper makes it and its number, the statistic that tests it (a function of the finished runs giving
one value per seed, paired against the control where there is one), the control, and the decision
`Rule`. jaxlab evaluates every claim on the runs (`evaluate`):

    median of the per-seed values, and its 95% percentile-bootstrap confidence interval over seeds
    (`BOOTSTRAP_RESAMPLES` resamples of the seeds with replacement, a fixed generator: the same
    runs give the same interval)

The 95% is nominal: with few seeds the percentile interval of a median covers the true median
less often. For odd n it is a pair of order statistics, covering with probability P(i <= B < j),
B ~ Binomial(n, 1/2): at n = 5 it is [min, max], 93.75%; at n = 7, [x(2), x(6)], 87.5%. Simulated
(normal seeds, 1500 draws; tests/test_claims.py checks n = 5 and 7): n = 6, 8, 10, 19 gave 94.8%,
93.7%, 94.6%, 94.1%. The reports print n beside every interval.

and applies the rule to the interval:

    Above(t)       reproduced if ci_low > t; not_reproduced if ci_high < t; else inconclusive
    Below(t)       reproduced if ci_high < t; not_reproduced if ci_low > t; else inconclusive
    Between(a, b)  reproduced if a <= ci_low and ci_high <= b; not_reproduced if the interval misses
                   [a, b]; else inconclusive
    Outside(a, b)  reproduced if the interval misses [a, b] (a difference is there, either sign);
                   not_reproduced if a <= ci_low and ci_high <= b (equivalent within the band);
                   else inconclusive

With fewer than `MIN_SEEDS` finite values the verdict is `inconclusive` (the reason says how many
seeds there are and how many the rule needs). An interval that straddles the threshold is
`inconclusive` too, and the reason estimates the seeds a decision would need, from the interval's
extent h on the threshold's side of the median, the median's distance to the threshold g and the
n seeds: about n (h / g)^2 (the interval narrows as 1/sqrt(n)). A claim the setup cannot test (the statistic is
decided by the preset's parameters, the quantity is not measured, a probe is off) is `untested`,
with the reason its `untested` function gives for the config. Diverged runs are excluded from the
run records a claim reads (an experiment's cross-run `reference` values are its own: a claim that
reads them says how they treat diverged runs).

The seed bootstrap does not see the evaluation set's own sampling error where every seed is scored
on the same evaluation data (the engine's set, key `train.eval_seed`): an error of that set is
common to all seeds. So the engine also scores every run's final parameters on a replicate set, of
the same size and drawn the same way from another key (`REPLICATE_PREFIX` metrics,
`jaxlab.train.replicate`), and every claim whose statistic reads only metrics that have a replicate
is evaluated again on it (`replicate` in the entry). A decisive verdict that the replicate set does
not give as well becomes `inconclusive`: the evaluation set, not the models, would decide it. A
statistic that reads a metric without a replicate (computed after training or from the history,
e.g. on fresh per-seed sets or from onsets) says which (`replicate_note`).

`check(entry)` re-derives a stored verdict from its own interval, rule and replicate: the mechanical
check of a summary.json.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

VERDICTS = ("reproduced", "not_reproduced", "inconclusive", "untested")
BOOTSTRAP_RESAMPLES = 4000
MIN_SEEDS = 5
CONFIDENCE = 0.95
# final metrics on the replicate evaluation set are named REPLICATE_PREFIX + metric
REPLICATE_PREFIX = "replicate_"
# (runs, reference) -> one value per seed (`Claim.values`)
Values = Callable[[Sequence[Mapping[str, Any]], Mapping[str, Any]], Sequence[float]]


@dataclass(frozen=True)
class Rule:
    """The decision rule on the statistic's confidence interval (module docstring)."""

    op: str  # "above" | "below" | "between" | "outside"
    low: float = -math.inf
    high: float = math.inf

    def describe(self) -> str:
        """The rule in words, as the report's Claims table shows it: `95% CI above 0.5`, `95% CI within [a, b]`, ..."""
        if self.op == "above":
            return f"95% CI above {self.low:g}"
        if self.op == "below":
            return f"95% CI below {self.high:g}"
        if self.op == "outside":
            return f"95% CI outside [{self.low:g}, {self.high:g}]"
        return f"95% CI within [{self.low:g}, {self.high:g}]"

    def thresholds(self) -> tuple[float, ...]:
        """The finite thresholds the interval is compared with."""
        return tuple(t for t in (self.low, self.high) if math.isfinite(t))

    def decide(self, ci_low: float, ci_high: float) -> str:
        """The verdict for an interval [ci_low, ci_high]."""
        if self.op == "above":
            return "reproduced" if ci_low > self.low else "not_reproduced" if ci_high < self.low else "inconclusive"
        if self.op == "below":
            return "reproduced" if ci_high < self.high else "not_reproduced" if ci_low > self.high else "inconclusive"
        inside = self.low <= ci_low and ci_high <= self.high
        missed = ci_high < self.low or ci_low > self.high
        if self.op == "outside":
            return "reproduced" if missed else "not_reproduced" if inside else "inconclusive"
        return "reproduced" if inside else "not_reproduced" if missed else "inconclusive"

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (infinite bounds as null); `from_dict` reads it back."""
        return {"op": self.op, "low": _json_float(self.low), "high": _json_float(self.high)}

    @staticmethod
    def from_dict(data: Mapping[str, Any]) -> Rule:
        """The rule of `as_dict`'s JSON form (a null bound is infinite)."""
        low, high = data.get("low"), data.get("high")
        return Rule(data["op"], -math.inf if low is None else float(low), math.inf if high is None else float(high))


def Above(threshold: float) -> Rule:
    """Reproduced when the whole interval lies above `threshold`, not reproduced when it lies below."""
    return Rule("above", low=float(threshold))


def Below(threshold: float) -> Rule:
    """Reproduced when the whole interval lies below `threshold`, not reproduced when it lies above."""
    return Rule("below", high=float(threshold))


def Between(low: float, high: float) -> Rule:
    """Reproduced when the interval lies within [low, high], not reproduced when it misses it (ValueError if low >
    high)."""
    if not low <= high:
        raise ValueError(f"Between: low {low} > high {high}")
    return Rule("between", low=float(low), high=float(high))


def Outside(low: float, high: float) -> Rule:
    """A difference in either direction: the interval must miss the equivalence band [low, high]."""
    if not low <= high:
        raise ValueError(f"Outside: low {low} > high {high}")
    return Rule("outside", low=float(low), high=float(high))


def seeds_needed(n: int, median: float, ci_low: float, ci_high: float, rule: Rule) -> int | None:
    """About how many seeds would make an interval that straddles the rule's nearest threshold t
    decide: n (h / g)^2, with g = |median - t| and h the interval's extent on t's side of the median
    (median - ci_low when t is below it, ci_high - median when above); None when the median sits on t."""
    thresholds = rule.thresholds()
    if not thresholds:
        return None
    t = min(thresholds, key=lambda x: abs(median - x))
    gap = abs(median - t)
    if gap == 0.0:
        return None
    half = median - ci_low if t < median else ci_high - median
    return max(n + 1, math.ceil(round(n * (half / gap) ** 2, 9)))  # round: 0.1 - -0.2 is not 0.3 in floats


@dataclass(frozen=True)
class Claim:
    """One claim of the paper, tested on the runs (module docstring).

    values(runs) -> [n] per-seed values of the statistic (not needed with `interval`, or for a claim
    that is always untested), from the summary's run records (each
    with `seed`, `hparams`, `status`, `final`) and its `reference` values; NaN entries are dropped.
    A values function that finds the runs unfit for the claim raises `NotApplicable(reason)`: the
    claim is then `untested` with that reason.
    interval(runs, reference) -> (estimate, ci_low, ci_high, n_units), when the units of the
    statistic are not independent per-seed values (e.g. penalties of model pairs that share models:
    `model_bootstrap`); it replaces `values` and the bootstrap over seeds, and `n_units` plays the
    part of the number of seeds.
    untested(cfg) -> None when this config can test the claim, else the reason it cannot.
    """

    id: str
    claim: str
    paper_ref: str
    statistic: str
    control: str
    rule: Rule
    values: Values = lambda runs, reference: ()  # none given: `interval` says it, or the claim is untested
    paper_value: float | str | None = None
    untested: Callable[[Any], str | None] = field(default=lambda cfg: None)
    interval: Callable[[Sequence[Mapping[str, Any]], Mapping[str, Any]], tuple[float, float, float, int]] | None = None
    # said instead of the seeds-needed estimate when the verdict is inconclusive (e.g. for a value
    # known only up to an interval, where a finer measurement, not more seeds, would decide)
    undecided: str | None = None


class NotApplicable(Exception):
    """Raised by a claim's `values` or `interval` when these runs cannot test it (the message says why)."""


def model_bootstrap(
    statistic: Callable[[Mapping[str, np.ndarray]], np.ndarray],
    sizes: Mapping[str, int],
    confidence: float = CONFIDENCE,
) -> tuple[float, float, float, int]:
    """(estimate, ci_low, ci_high, n): a statistic of groups of models, with a percentile interval
    from resampling the models of every group independently (with replacement).

    statistic({group: [B, n_group] model indices}) -> [B] values, one per row of indices (vectorized
    over the B resamples), is evaluated at the identity indices (B = 1) for the estimate and at
    `BOOTSTRAP_RESAMPLES` resamples (a fixed generator, drawn resample by resample and group by group)
    for the interval. Resampling models rather than model pairs keeps every model's contribution
    together, as a sender and as a receiver alike, so pairs that share a model are not counted as
    independent. n is the smallest group's size (the count the `MIN_SEEDS` rule applies to).
    """
    rng = np.random.default_rng(0)
    estimate = float(np.asarray(statistic({g: np.arange(n)[None] for g, n in sizes.items()})).reshape(()))
    rows = [{g: rng.integers(0, n, size=n) for g, n in sizes.items()} for _ in range(BOOTSTRAP_RESAMPLES)]
    draws = np.asarray(statistic({g: np.stack([r[g] for r in rows]) for g in sizes}), np.float64)
    if draws.shape != (BOOTSTRAP_RESAMPLES,):
        raise ValueError(f"model_bootstrap: the statistic returned shape {draws.shape}, not [{BOOTSTRAP_RESAMPLES}]")
    draws = draws[np.isfinite(draws)]
    tail = (1.0 - confidence) / 2
    lo, hi = np.quantile(draws, [tail, 1.0 - tail]) if draws.size else (math.nan, math.nan)
    return estimate, float(lo), float(hi), int(min(sizes.values()))


def bootstrap_median_ci(values: Sequence[float], confidence: float = CONFIDENCE) -> tuple[float, float, float]:
    """(median, ci_low, ci_high): the median of `values` and its percentile-bootstrap interval."""
    x = np.asarray(values, np.float64)
    rng = np.random.default_rng(0)
    idx = rng.integers(0, x.size, size=(BOOTSTRAP_RESAMPLES, x.size))
    medians = np.median(x[idx], axis=1)
    tail = (1.0 - confidence) / 2
    lo, hi = np.quantile(medians, [tail, 1.0 - tail])
    return float(np.median(x)), float(lo), float(hi)


def _statistic(c: Claim, runs: Sequence[Mapping[str, Any]], reference: Mapping[str, Any]) -> tuple[float, ...]:
    """(median, ci_low, ci_high, n) of claim `c` on `runs` (n = 0: no finite value); may raise NotApplicable."""
    if c.interval is not None:
        median, lo, hi, n = c.interval(runs, reference)
        finite = all(math.isfinite(v) for v in (median, lo, hi))
        return (float(median), float(lo), float(hi), int(n)) if finite else (math.nan, math.nan, math.nan, 0)
    x = np.asarray(c.values(runs, reference), np.float64).ravel()
    x = x[np.isfinite(x)]
    if not x.size:
        return math.nan, math.nan, math.nan, 0
    return (*bootstrap_median_ci(x), int(x.size))


def _decide(rule: Rule, lo: float, hi: float, n: int) -> str:
    """The verdict of an interval from n seeds: `inconclusive` below MIN_SEEDS, else the rule's."""
    return "inconclusive" if n < MIN_SEEDS else rule.decide(lo, hi)


class _ReadsFinal(dict):
    """A run's final metrics, each replaced by its replicate-set value where it has one, which
    records the metrics read that have none (`without`) and those that have one (`with_`)."""

    def __init__(self, final_metrics: Mapping[str, Any], without: set[str], with_: set[str]):
        replicated = {
            k: final_metrics.get(REPLICATE_PREFIX + k, v)
            for k, v in final_metrics.items()
            if not k.startswith(REPLICATE_PREFIX)
        }
        super().__init__(replicated)
        self._has = {k for k in replicated if REPLICATE_PREFIX + k in final_metrics}
        self._without, self._with = without, with_

    def _read(self, key: Any) -> None:
        (self._with if key in self._has else self._without).add(str(key))

    def __getitem__(self, key: Any) -> Any:
        self._read(key)
        return super().__getitem__(key)

    def get(self, key: Any, default: Any = None) -> Any:
        self._read(key)
        return super().get(key, default)


def on_replicate(runs: Sequence[Mapping[str, Any]]) -> tuple[list[dict[str, Any]], set[str], set[str]]:
    """(the runs with their final metrics taken from the replicate evaluation set, the set that
    collects the names of metrics read that have no replicate value, the set of those read that have one)."""
    without: set[str] = set()
    with_: set[str] = set()
    return [{**r, "final": _ReadsFinal(r.get("final", {}), without, with_)} for r in runs], without, with_


def _replicate(
    c: Claim, runs: Sequence[Mapping[str, Any]], reference: Mapping[str, Any]
) -> tuple[dict[str, Any] | None, str]:
    """(the claim's statistic and verdict on the replicate evaluation set, or None; a note)."""
    if not any(k.startswith(REPLICATE_PREFIX) for r in runs for k in r.get("final", {})):
        return None, "these runs have no replicate evaluation set"
    replicate_runs, without, with_ = on_replicate(runs)
    try:
        median, lo, hi, n = _statistic(c, replicate_runs, reference)
    except NotApplicable as err:
        return None, str(err)
    if without:
        names = ", ".join(sorted(without)[:4]) + (", ..." if len(without) > 4 else "")
        return None, f"not re-evaluated: the statistic reads {names}, which the replicate set does not score"
    if not with_:  # e.g. cross-program analyses in `reference`, computed once on the shared evaluation set
        return None, (
            "not re-evaluated: the statistic reads no metric that the replicate set scores (only data computed "
            "once, on the shared evaluation set)"
        )
    if n == 0:
        return None, "no finite value on the replicate evaluation set"
    verdict = _decide(c.rule, lo, hi, n)
    return {"median": median, "ci_low": lo, "ci_high": hi, "n_seeds": n, "verdict": verdict}, ""


def evaluate(
    claims: Sequence[Claim], cfg: Any, runs: Sequence[Mapping[str, Any]], reference: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """The `claims` entries of summary.json for these runs (diverged runs excluded)."""
    ok = [r for r in runs if r.get("status", "ok") == "ok"]
    out = []
    for c in claims:
        entry: dict[str, Any] = {
            "id": c.id,
            "claim": c.claim,
            "paper_ref": c.paper_ref,
            "paper_value": c.paper_value,
            "statistic": c.statistic,
            "control": c.control,
            "median": None,
            "ci_low": None,
            "ci_high": None,
            "n_seeds": 0,
            "rule": c.rule.describe(),
            "rule_spec": c.rule.as_dict(),
            "verdict": "untested",
            "reason": "",
            "replicate": None,
            "replicate_note": "",
        }
        why = c.untested(cfg)
        if why:
            entry["reason"] = why
            out.append(entry)
            continue
        try:
            median, lo, hi, n = _statistic(c, ok, reference)
        except NotApplicable as err:
            entry["reason"] = str(err)
            out.append(entry)
            continue
        entry["n_seeds"] = n
        if n == 0:
            entry["verdict"], entry["reason"] = "inconclusive", "no finite value of the statistic"
            out.append(entry)
            continue
        entry.update(median=median, ci_low=lo, ci_high=hi)
        entry["replicate"], entry["replicate_note"] = _replicate(c, ok, reference)
        if n < MIN_SEEDS:
            entry["verdict"] = "inconclusive"
            entry["reason"] = f"{n} seeds; a bootstrap interval over seeds needs at least {MIN_SEEDS}"
            out.append(entry)
            continue
        entry["verdict"] = c.rule.decide(lo, hi)
        entry["reason"] = f"median {median:.4g}, 95% CI [{lo:.4g}, {hi:.4g}]"
        rep = entry["replicate"]
        if entry["verdict"] != "inconclusive" and rep is not None and rep["verdict"] != entry["verdict"]:
            entry["reason"] += (
                f"; {entry['verdict']} on the shared evaluation set but {rep['verdict']} on a replicate set of the "
                f"same size (median {rep['median']:.4g}, 95% CI [{rep['ci_low']:.4g}, {rep['ci_high']:.4g}]): the "
                "evaluation set's sampling error decides; a larger evaluation set would"
            )
            entry["verdict"] = "inconclusive"
        elif entry["verdict"] == "inconclusive" and c.undecided:
            entry["reason"] += f"; {c.undecided}"
        elif entry["verdict"] == "inconclusive":
            need = seeds_needed(n, median, lo, hi, c.rule)
            entry["reason"] += (
                f"; the interval straddles a threshold: about {need} seeds would decide"
                if need is not None
                else "; the median sits on the threshold: more seeds would not decide"
            )
        out.append(entry)
    return out


def check(entry: Mapping[str, Any]) -> str | None:
    """None when a stored claim's verdict follows from its own interval, rule and replicate, else what is wrong."""
    verdict = entry.get("verdict")
    if verdict not in VERDICTS:
        return f"{entry.get('id')}: unknown verdict {verdict!r}"
    if verdict == "untested":
        return None if entry.get("reason") else f"{entry.get('id')}: untested without a reason"
    if entry.get("ci_low") is None or entry.get("ci_high") is None:
        return None if verdict == "inconclusive" else f"{entry.get('id')}: {verdict} without an interval"
    if entry.get("n_seeds", 0) < MIN_SEEDS:
        return None if verdict == "inconclusive" else f"{entry.get('id')}: {verdict} from {entry['n_seeds']} seeds"
    rule = Rule.from_dict(entry["rule_spec"])
    want = rule.decide(entry["ci_low"], entry["ci_high"])
    rep = entry.get("replicate")
    if rep is not None and want != "inconclusive":
        if _decide(rule, rep["ci_low"], rep["ci_high"], rep["n_seeds"]) != want:
            want = "inconclusive"
    return (
        None
        if want == verdict
        else f"{entry.get('id')}: verdict {verdict!r}, but its interval, rule and replicate give {want!r}"
    )


def final(run: Mapping[str, Any], metric: str) -> float:
    """A run's final `metric` (NaN when it has none)."""
    value = run["final"].get(metric)
    return math.nan if value is None else float(value)


def where(runs: Sequence[Mapping[str, Any]], **hparams: Any) -> list[Mapping[str, Any]]:
    """The runs at these swept values (keys with dots written as `__`: `task__ambiguity=0.5`)."""
    want = {k.replace("__", "."): v for k, v in hparams.items()}
    return [r for r in runs if all(r.get("hparams", {}).get(k) == v for k, v in want.items())]


def bracketed(
    lower: str, upper: str, **hparams: Any
) -> Callable[[Sequence[Mapping[str, Any]], Mapping[str, Any]], tuple[float, float, float, int]]:
    """interval(): a per-seed value known only to lie in [final `lower`, final `upper`] (e.g. an onset
    between two checkpoints). The estimate is the median of the midpoints; the interval runs from the
    lower bootstrap bound of the lower ends to the upper bound of the upper ends, so a rule decides
    only when the whole bracket is on one side of its threshold (the grid cannot push a verdict)."""

    def interval(runs: Sequence[Mapping[str, Any]], reference: Mapping[str, Any]) -> tuple[float, float, float, int]:
        picked = one_per_seed(where(runs, **hparams))
        lo_x = np.array([final(r, lower) for r in picked])
        hi_x = np.array([final(r, upper) for r in picked])
        ok = np.isfinite(lo_x) & np.isfinite(hi_x)
        if not ok.any():
            return math.nan, math.nan, math.nan, 0
        lo_x, hi_x = lo_x[ok], hi_x[ok]
        ci_low = bootstrap_median_ci(lo_x)[1]
        ci_high = bootstrap_median_ci(hi_x)[2]
        return float(np.median((lo_x + hi_x) / 2)), ci_low, ci_high, int(ok.sum())

    return interval


def one_per_seed(runs: Sequence[Mapping[str, Any]]) -> Sequence[Mapping[str, Any]]:
    """`runs`, checked to hold one run per seed (else `NotApplicable`: the points of a sweep are not
    seeds, and a claim must say which point it reads)."""
    seeds = [r.get("seed") for r in runs]
    if len(set(seeds)) < len(seeds):
        raise NotApplicable(
            "several runs per seed (a swept grid): this claim reads one run per seed and does not say which point"
        )
    return runs


def per_seed(metric: str, **hparams: Any) -> Values:
    """values(): each run's final `metric` (one run per seed), at the swept values `hparams` if given."""
    return lambda runs, reference: [final(r, metric) for r in one_per_seed(where(runs, **hparams))]


def paired_difference(metric: str, control: str, **hparams: Any) -> Values:
    """values(): each run's final `metric` minus its own final `control` (paired within the run)."""
    return lambda runs, reference: [final(r, metric) - final(r, control) for r in one_per_seed(where(runs, **hparams))]


def paired_across(metric: str, a: Mapping[str, Any], b: Mapping[str, Any]) -> Values:
    """values(): per seed, final `metric` at swept values `a` minus at swept values `b` (runs paired
    by seed; a seed missing on either side is dropped). Keys are the dotted config paths."""

    def values(runs: Sequence[Mapping[str, Any]], reference: Mapping[str, Any]) -> list[float]:
        def by_seed(point: Mapping[str, Any]) -> dict[int, float]:
            hits = one_per_seed([r for r in runs if all(r.get("hparams", {}).get(k) == v for k, v in point.items())])
            return {int(r["seed"]): final(r, metric) for r in hits}

        left, right = by_seed(a), by_seed(b)
        return [left[s] - right[s] for s in sorted(left) if s in right]

    return values


def _json_float(x: float) -> float | None:
    return None if math.isinf(x) else float(x)


__all__ = [
    "BOOTSTRAP_RESAMPLES",
    "MIN_SEEDS",
    "REPLICATE_PREFIX",
    "VERDICTS",
    "Above",
    "Below",
    "Between",
    "Claim",
    "NotApplicable",
    "Outside",
    "Rule",
    "Values",
    "bootstrap_median_ci",
    "bracketed",
    "check",
    "evaluate",
    "final",
    "model_bootstrap",
    "on_replicate",
    "one_per_seed",
    "paired_across",
    "paired_difference",
    "per_seed",
    "seeds_needed",
    "where",
]
