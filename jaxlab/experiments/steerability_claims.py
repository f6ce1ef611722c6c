"""The claims of She, Li, Xing, Liu & Ho, "How Does Controllability Emerge In Language Models During
Pretraining?" (arXiv 2508.01892, 2025), as steerability tests them, and how a config's setup
differs from the paper's.

Where the claims come from. The authors (MBZUAI; the LLM360 team) read concept directions with
their "Intervention Detector" (last-token hidden states of paired stimuli, PCA of the differences,
the first component as the steering direction) from the released intermediate checkpoints of
LLM360's pretrained models, Amber and CrystalCoder, two model families for the generality of the
findings. Their claims (abstract): linear steerability emerges during intermediate stages of
training; even closely related concepts (anger and sadness) become steerable at distinct stages;
concepts become increasingly linearly separable as training progresses, which strongly correlates
with the emergence of steerability; issue 22 adds that intervening too early hurts the model. The
paper states these qualitatively (heatmaps and curves over checkpoints); we quote no number from
it, so every `paper_value` is None.

Thresholds, fixed before any jaxlab number was compared with them:
- "steerability emerges at intermediate stages" is two claims: not in the first tenth of training
  (that is "from the start") and not in the last tenth ("at the end"); "intermediate" is the
  paper's word, the band [0.1, 0.9] of the training steps our reading of it (the paper's
  checkpoint axis is linear in tokens). A concept's steering onset is only known to lie in the
  interval (last evaluation below the threshold, first evaluation at or above it]; on a log-spaced
  grid that interval is wide (16 log-spaced checkpoints of 2000 steps fall at 96, 159, 263, 437:
  the interval (159, 263] straddles 0.1), and recording its upper end biases the onset late.
  Both claims therefore read the whole bracket (`jaxlab.claims.bracketed`: the interval runs from
  the bootstrap lower bound of the lower ends to the upper bound of the upper ends), so a verdict
  is reached only when every part of the bracket is on one side of the band edge:
  `steerability_emerges_after_first_tenth` `Above(0.1)`, `steerability_emerges_before_last_tenth`
  `Below(0.9)` (median over the non-rare concepts; an onset at the first evaluation has lower end 0;
  a concept never steerable has lower end the last evaluation and upper end 1.0). A bracket that
  straddles the edge is `inconclusive`: a finer evaluation grid, not more seeds, would decide;
- onset differences are counted in evaluations (the index of the onset checkpoint), with the
  equivalence band of one evaluation interval, `Outside(-1, 1)`: onsets at the same or adjacent
  checkpoints are not told apart by the evaluation grid, so such a difference is `not_reproduced`;
  a concept that never reaches its threshold is censored one evaluation past the last;
- `separability_rises`: `Above(0)`, the interval of the per-seed gain must exclude 0;
- `separability_correlates_with_steerability`: the Pearson r, over a run's checkpoints, of the
  first differences of layer-mean separability and layer-mean steering effect, mean over concepts
  (`sep_steer_diff_corr`), `Above(0)`. The r of the series themselves cannot fail: both rise over
  training, and a common trend alone makes it positive. The first differences over the checkpoints
  are changes per checkpoint interval (per equal step in log(step) on a log-spaced grid, in step on an
  even one), so a trend shared as a linear function of the checkpoint index is removed (it becomes a
  constant, which r ignores); what is left asks whether the two move in the same checkpoint intervals.
  The claim is a direction, so the rule is the sign, 0. A shared non-linear trend (both rising in
  the same few intervals) still pushes r above 0: that is the claim's reading, not a control. Needs
  at least `jaxlab.stats.MIN_DIFFS` + 1 evaluations (the r of two differences is +-1 by construction);
  fewer: `untested`.

- "close concepts become steerable at distinct stages": the per-run |onset gap| of the close pair in
  evaluations (either may come first: the co-occurrence language makes the pair mirror images, so a
  signed gap would be zero in expectation by construction), `Above(1.5)`: gaps are whole
  evaluations, |gap| <= 1 (same or adjacent checkpoints) is the equivalence band. It is `untested`
  while the pair shares features: the steering score counts the mass moved onto the concept's own next
  tokens, which for the shared features are the same tokens for both, so the two scores are largely one
  measurement (on the stored quick runs the within-run r of their best-layer steering series is 0.97,
  against 0.55-0.71 for every other pair) and equal onsets are built in; a test would score only the
  features they do not share. The report still gives the pair's |gap| and, beside it, the |onset gap|
  of the close pair's concepts against the concepts of the same frequency and strength that share no
  feature with them (`distant_pairs`, `median_pair_absgap`; per run the median over those pairs), and
  the close pair's |gap| minus it, paired per run: how far apart onsets fall in these runs;
- "steering too early hurts": the loss change on non-concept text (the steered base sequences' own
  next tokens) under steering at alpha_eval x the layer's RMS norm, against the unsteered model at
  the same checkpoint, averaged over layers and concepts: E at the early checkpoints (0 < step <=
  0.1 of training), F at the last one; the per-seed statistic min(E, E - F), `Above(0)`, is
  positive only when early steering raises the loss *and* raises it more than late steering (the
  quick run's first reading, E - F alone, was positive from late steering *lowering* the loss while
  E stayed near 0: not 'early steering hurts', so the statistic asks for both);
- the emergence claims need an emergence: when the median run's onset is not within training (no
  common concept ever steerable) "after the first tenth" is `untested` (it would hold vacuously).

What the preset decides is not a measurement. The marker language sets each concept's frequency
and strength by hand: the rare concept's later onset follows from its frequency, and a difference
within the close pair follows from their different strengths (the weaker concept gets less evidence
per occurrence, which favours a later steering onset, and its separability ceiling sits near the
threshold). Those claims are `untested` when the config makes them so. The co-occurrence language
of the presets gives every concept the same frequency and strength (the rare-concept claim is then
untested: there is none) and makes the close pair mirror images, which the language favours neither of;
but their steering scores overlap where they share pairs, so their onset gap is untested (above).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from jaxlab.claims import Above, Below, Claim, NotApplicable, Outside, bracketed, final, one_per_seed, per_seed
from jaxlab.config import ExperimentConfig
from jaxlab.experiments.steerability_bayes import count_separability
from jaxlab.results import split_metric
from jaxlab.stats import too_few_differences
from jaxlab.tasks.concepts import ConceptsConfig

PAPER = "She et al. 2025"
MID_BAND = (0.1, 0.9)
ONSET_BAND = 1.0  # evaluations
CONCEPT_KEYS = ("concept", "concept_a", "concept_b", "layer")  # the metric parameters of steerability


# -- metric names ----------------------------------------------------------------------------------
def parse_concept_metric(name: str, concepts: Sequence[str]) -> tuple[str, dict[str, str | int]] | None:
    """(metric, {concept: c, layer: l}) of a metric measured per concept (and layer): `id_score[concept=joy,layer=0]`,
    `sep_onset_step[concept=joy]`, `cos[concept_a=joy,concept_b=anger,layer=0]`, or the older forms of run
    directories written before metric parameters, `id_score_joy_l0`, `sep_onset_step_joy`, `cos_joy_anger_l0`
    (`concepts`: the task's concept names, which tell `separability_joy` from `separability_gain`); None for any
    other metric. `results.metric_name(metric, **params)` gives the new name."""
    base, params = split_metric(name)
    if params and set(params) <= set(CONCEPT_KEYS) and ("concept" in params) != ("concept_a" in params):
        layer = params.get("layer", 0.0)
        if isinstance(layer, float) and layer.is_integer() and layer >= 0:
            return base, {k: int(v) if k == "layer" else str(v) for k, v in params.items()}
        return None
    c = "|".join(re.escape(x) for x in sorted(concepts, key=len, reverse=True))
    if not c:
        return None
    pair = re.match(rf"^(?P<base>(?:.+_)?cos)_(?P<a>{c})_(?P<b>{c})_l(?P<layer>\d+)$", name)
    if pair:
        return pair["base"], {"concept_a": pair["a"], "concept_b": pair["b"], "layer": int(pair["layer"])}
    one = re.match(rf"^(?P<base>.+?)_(?P<concept>{c})(?:_l(?P<layer>\d+))?$", name)
    if one is None:
        return None
    params_out: dict[str, str | int] = {"concept": one["concept"]}
    if one["layer"] is not None:
        params_out["layer"] = int(one["layer"])
    return one["base"], params_out


# -- which concepts the preset makes special (used by `steerability.from_history` too) --------------
def rare_concepts(task: ConceptsConfig) -> tuple[int, ...]:
    """Indices of the concepts whose frequency is the lowest one, when it is below the others'
    (none when every concept has the same frequency)."""
    freqs = np.asarray(task.freqs, np.float64)
    if freqs.min() == freqs.max():
        return ()
    return tuple(int(k) for k in np.flatnonzero(freqs == freqs.min()))


def common_concepts(task: ConceptsConfig) -> tuple[int, ...]:
    """Indices of the concepts that are not rare (`rare_concepts`)."""
    rare = set(rare_concepts(task))
    return tuple(k for k in range(len(task.names)) if k not in rare)


def early_evaluations(steps: np.ndarray, total_steps: int) -> np.ndarray:
    """[n_evals] bool: the early evaluations, 0 < step <= MID_BAND[0] x total_steps (after initialization, within
    the first tenth of training: 'from the start' in the mid-training claims)."""
    steps = np.asarray(steps, np.float64)
    return (steps > 0) & (steps <= MID_BAND[0] * total_steps)


def censored_gap(a_R: np.ndarray, b_R: np.ndarray, n_evals: int) -> np.ndarray:
    """[R] onset index a minus onset index b (in evaluations); a concept that never reaches its
    threshold (NaN) counts as `n_evals` (one past the last evaluation); NaN where neither does."""
    a, b = np.asarray(a_R, np.float64), np.asarray(b_R, np.float64)
    gap = np.where(np.isnan(a), n_evals, a) - np.where(np.isnan(b), n_evals, b)
    return np.where(np.isnan(a) & np.isnan(b), np.nan, gap)


def onset_interval(onset_index_KR: np.ndarray, steps: np.ndarray, total_steps: int) -> tuple[np.ndarray, np.ndarray]:
    """([R] lower, [R] upper): the steering onset's interval (step of the last evaluation below the
    threshold, step of the first at or above it], as fractions of `total_steps`, median over the
    concepts (rows of `onset_index_KR`: the index of the onset evaluation, NaN when never reached).
    An onset at the first evaluation has lower end 0; a concept that never reaches the threshold has
    lower end the last evaluation's step and upper end 1.0 (not within training)."""
    idx = np.asarray(onset_index_KR, np.float64)
    frac = np.asarray(steps, np.float64) / float(total_steps)
    never = np.isnan(idx)
    i = np.where(never, 0, idx).astype(np.int64)
    upper = np.where(never, 1.0, frac[i])
    lower = np.where(never, frac[-1], np.where(i > 0, frac[np.maximum(i - 1, 0)], 0.0))
    return np.median(lower, axis=0), np.median(upper, axis=0)


def distant_pairs(task: ConceptsConfig) -> list[tuple[int, int]]:
    """The control pairs of the close pair (p, q): (c, d) for c in (p, q) and every other concept d with c's
    frequency and strength. No other concept shares a feature with p or q in either language (cooccur: a Latin
    square of pairs; markers: fresh marker tokens), so these pairs differ from the close one in sharing nothing,
    and their onset gaps show how far apart the onsets of concepts the language makes alike fall in a run."""
    if not task.close_pair:
        return []
    p, q = (int(k) for k in task.close_pair)
    return [
        (c, d)
        for c in (p, q)
        for d in range(len(task.names))
        if d not in (p, q) and task.freqs[d] == task.freqs[c] and task.strengths[d] == task.strengths[c]
    ]


def onset_indices(onset_steps_R: np.ndarray, eval_steps: Sequence[int]) -> np.ndarray:
    """[R] the index of each run's onset step in the evaluation grid `eval_steps` (NaN: never reached)."""
    steps = np.asarray(eval_steps, np.float64)
    x = np.asarray(onset_steps_R, np.float64)
    idx = np.searchsorted(steps, np.where(np.isnan(x), steps[0], x))
    if not np.all(np.isnan(x) | (steps[np.minimum(idx, len(steps) - 1)] == x)):
        raise ValueError(f"onset steps {x} are not all on the evaluation grid {steps}")
    return np.where(np.isnan(x), np.nan, idx)


def median_pair_absgap(onset_index_KR: np.ndarray, pairs: Sequence[tuple[int, int]], n_evals: int) -> np.ndarray:
    """[R] per run, the median over `pairs` of |onset c - onset d| in evaluations (`censored_gap`: a concept
    never reached counts as one past the last evaluation; a pair where neither is reached is left out); NaN
    where no pair counts."""
    onsets = np.asarray(onset_index_KR, np.float64)
    if not pairs:
        return np.full(onsets.shape[1], np.nan)
    gaps = np.abs(np.stack([censored_gap(onsets[c], onsets[d], n_evals) for c, d in pairs]))  # [P, R]
    out = np.full(onsets.shape[1], np.nan)
    counted = ~np.all(np.isnan(gaps), axis=0)
    out[counted] = np.nanmedian(gaps[:, counted], axis=0)
    return out


# -- untested reasons --------------------------------------------------------------------------------
def _pair(cfg: ExperimentConfig) -> tuple[int, int] | None:
    pair = cfg.task.close_pair
    return (int(pair[0]), int(pair[1])) if pair else None


def _close_pair_untested(cfg: ExperimentConfig) -> str | None:
    pair, t = _pair(cfg), cfg.task
    if pair is None:
        return "the concept language has no close pair (task.close_pair is empty)"
    a, b = pair
    if t.freqs[a] != t.freqs[b]:
        return (
            f"{t.names[a]} and {t.names[b]} differ in frequency ({t.freqs[a]} vs {t.freqs[b]}), which the preset "
            "sets: an onset difference would be an input, not a measurement"
        )
    if t.strengths[a] != t.strengths[b]:
        weak = a if t.strengths[a] < t.strengths[b] else b
        return (
            f"{t.names[b]}'s strength {t.strengths[b]} against {t.names[a]}'s {t.strengths[a]} is set by the preset: "
            f"the weaker {t.names[weak]} gives less evidence per occurrence, which favours a later steering onset "
            "and sets its separability ceiling (hence whether and when it reaches "
            f"probe.sep_threshold={cfg.probe.sep_threshold}); an onset difference would be an input, not a measurement"
        )
    return None


def _count_separable(cfg: ExperimentConfig) -> str | None:
    """The separability claims are untested when one number that needs no concept knowledge, the count of pair
    starts in a stimulus's context, already separates some concept's held-out 'on' and 'off' stimuli at
    probe.sep_threshold or better (`steerability_bayes.count_separability`): the probe's separability then
    reads that count, which the stimuli set, not the concepts."""
    counts = count_separability(cfg)
    if counts is None or counts.max() < cfg.probe.sep_threshold:
        return None
    k = int(np.argmax(counts))
    return (
        f"the count of pair starts alone separates {cfg.task.names[k]}'s 'on' and 'off' stimuli at "
        f"{counts[k]:.3g} >= probe.sep_threshold={cfg.probe.sep_threshold} (the 'on' member carries the concept's "
        "pairs, the 'off' member background ones): separability measures that count, set by the stimuli, not "
        "the concepts"
    )


def _close_pair_steer_untested(cfg: ExperimentConfig) -> str | None:
    """The close pair's steering onsets are untested when their steering scores count the same tokens: the score
    is the mass moved onto the concept's own next tokens (cooccur: its partner of the prompt's last start token;
    markers: its markers), and the close pair shares `n_shared` of its `n_markers` features, so for that share
    the two scores are one measurement and equal onsets are built in. A test would score the features the two
    do not share."""
    reason = _close_pair_untested(cfg)
    t = cfg.task
    if reason is not None or t.n_shared == 0:
        return reason
    a, b = _pair(cfg)
    what = (
        f"partner of the prompt's last start token, which is the same token for {t.n_shared} of the {t.n_markers} "
        "start tokens"
        if t.language == "cooccur"
        else f"markers, {t.n_shared} of whose {t.n_markers} are the same tokens"
    )
    return (
        f"the steering scores of {t.names[a]} and {t.names[b]} count the mass moved onto each concept's own {what}: "
        "for that share the two scores are one measurement (their onsets coincide by construction); a test would "
        "score only the features they do not share"
    )


def _close_pair_sep_untested(cfg: ExperimentConfig) -> str | None:
    return _close_pair_untested(cfg) or _count_separable(cfg)


def _sep_correlation_untested(cfg: ExperimentConfig) -> str | None:
    return _too_few_evaluations(cfg) or _count_separable(cfg)


def _too_few_evaluations(cfg: ExperimentConfig) -> str | None:
    return too_few_differences(len(cfg.train.eval_steps()))


def _rare_untested(cfg: ExperimentConfig) -> str | None:
    t = cfg.task
    rare = rare_concepts(t)
    if not rare:
        return "every concept has the same frequency: there is no rare concept"
    frequent = int(np.argmax(t.freqs))
    return (
        f"{t.names[rare[0]]}'s frequency {t.freqs[rare[0]]} against {t.names[frequent]}'s {t.freqs[frequent]} is set "
        "by the preset: a later onset of the rare concept is an input, not a measurement"
    )


def _no_early_evaluations(cfg: ExperimentConfig) -> str | None:
    if not early_evaluations(np.asarray(cfg.train.eval_steps()), cfg.train.steps).any():
        return f"no evaluation falls in 0 < step <= {MID_BAND[0]} x train.steps ({cfg.train.steps})"
    return None


def emerged_bracket(lower: str, upper: str):
    """interval(): `jaxlab.claims.bracketed(lower, upper)`, but `NotApplicable` when the median run's onset is not
    within training (upper end 1.0: no common concept ever reaches probe.steer_threshold): an onset that never
    comes is not an emergence 'after the first tenth', so that claim would hold vacuously."""
    inner = bracketed(lower, upper)

    def interval(runs: Sequence[Mapping[str, Any]], reference: Mapping[str, Any]) -> tuple[float, float, float, int]:
        highs = np.array([final(r, upper) for r in one_per_seed(runs)], np.float64)
        highs = highs[np.isfinite(highs)]
        if highs.size and np.median(highs) >= 1.0:
            raise NotApplicable(
                "steerability never emerges within training in the median run (no common concept reaches "
                "probe.steer_threshold): an emergence after the first tenth is not measured"
            )
        return inner(runs, reference)

    return interval


def early_harm_margin(runs: Sequence[Mapping[str, Any]], reference: Mapping[str, Any]) -> list[float]:
    """values(): per seed, min(early_steer_harm, early_steer_harm - late_steer_harm): positive only when steering
    at the early checkpoints raises the loss on non-concept text (against the unsteered model) and raises it more
    than steering at the last checkpoint does."""
    out = []
    for r in one_per_seed(runs):
        early, late = final(r, "early_steer_harm"), final(r, "late_steer_harm")
        out.append(min(early, early - late) if np.isfinite(early) and np.isfinite(late) else np.nan)
    return out


GRID_NOTE = (
    "the onset brackets straddle the band edge: a finer evaluation grid (train.eval_every, or more "
    "evaluations), not more seeds, would decide"
)

CLAIMS: tuple[Claim, ...] = (
    Claim(
        id="steerability_emerges_after_first_tenth",
        claim="Linear steerability emerges at intermediate stages of training: not from the start (not in the "
        "first tenth of training).",
        paper_ref=f"{PAPER}, abstract; steerability over checkpoints (Amber, CrystalCoder)",
        paper_value=None,
        statistic="steering onset as a fraction of training, bracketed by the last evaluation below the threshold "
        "and the first at or above it (steer_onset_frac_before_common, steer_onset_frac_at_common; median over the "
        "non-rare concepts); estimate: median midpoint; interval: lower ends' lower bound to upper ends' upper bound",
        control="none: the band edge 0.1 of training separates 'from the start' from 'intermediate'; the whole "
        "bracket must clear it, so the evaluation grid cannot push a verdict",
        rule=Above(MID_BAND[0]),
        interval=emerged_bracket("steer_onset_frac_before_common", "steer_onset_frac_at_common"),
        undecided=GRID_NOTE,
    ),
    Claim(
        id="steerability_emerges_before_last_tenth",
        claim="Linear steerability emerges at intermediate stages of training: not at the end (before the last "
        "tenth of training).",
        paper_ref=f"{PAPER}, abstract; steerability over checkpoints (Amber, CrystalCoder)",
        paper_value=None,
        statistic="steering onset as a fraction of training, bracketed as for the claim above (a concept never "
        "steerable: upper end 1.0)",
        control="none: the band edge 0.9 of training separates 'intermediate' from 'at the end'; the whole "
        "bracket must clear it",
        rule=Below(MID_BAND[1]),
        interval=bracketed("steer_onset_frac_before_common", "steer_onset_frac_at_common"),
        undecided=GRID_NOTE,
    ),
    Claim(
        id="close_concepts_distinct_steer_onsets",
        claim="Closely related concepts (anger, sadness) become steerable at distinct stages of training.",
        paper_ref=f"{PAPER}, abstract; anger vs sadness over checkpoints",
        paper_value=None,
        statistic="|steering onset of the close pair's first concept minus its second's| per run, in evaluations "
        "(close_pair_steer_onset_absgap): distinct stages whichever comes first",
        control="equivalence band of one evaluation interval (same or adjacent checkpoints: |gap| <= 1); onset gaps "
        "are whole evaluations, so the edge sits at 1.5. The report's onset section sets beside it the |gap| of "
        "concepts of the same frequency and strength that share no feature (whether these runs separate alike "
        "concepts' onsets at all)",
        rule=Above(ONSET_BAND + 0.5),
        values=per_seed("close_pair_steer_onset_absgap"),
        untested=_close_pair_steer_untested,
    ),
    Claim(
        id="close_concepts_distinct_sep_onsets",
        claim="The close pair also becomes linearly separable at distinct stages.",
        paper_ref=f"{PAPER}, separability over checkpoints",
        paper_value=None,
        statistic="|separability onset gap of the close pair| per run, in evaluations (close_pair_sep_onset_absgap)",
        control="equivalence band of one evaluation interval (|gap| <= 1; edge at 1.5)",
        rule=Above(ONSET_BAND + 0.5),
        values=per_seed("close_pair_sep_onset_absgap"),
        untested=_close_pair_sep_untested,
    ),
    Claim(
        id="rare_concept_later",
        claim="Distinct concepts become steerable at distinct stages (rare concept against the most frequent one).",
        paper_ref=f"{PAPER}, abstract",
        paper_value=None,
        statistic="steering onset, rarest minus most frequent concept (evaluations)",
        control="equivalence band of one evaluation interval",
        rule=Outside(-ONSET_BAND, ONSET_BAND),
        values=per_seed("rare_steer_onset_gap"),
        untested=_rare_untested,
    ),
    Claim(
        id="separability_rises",
        claim="Concepts become increasingly linearly separable in the hidden space as training progresses.",
        paper_ref=f"{PAPER}, abstract; ID heatmaps over checkpoints",
        paper_value=None,
        statistic="best-layer separability, final minus step 0, mean over concepts",
        control="the same probe on the same run at initialization (step 0), paired per seed; a random "
        "network already separates the on and off stimuli partly",
        rule=Above(0.0),
        values=per_seed("separability_gain"),
        untested=_count_separable,
    ),
    Claim(
        id="separability_correlates_with_steerability",
        claim="Linear separability strongly correlates with the emergence of linear steerability.",
        paper_ref=f"{PAPER}, abstract",
        paper_value=None,
        statistic="Pearson r over a run's checkpoints of the first differences of layer-mean separability and "
        "layer-mean steering effect, mean over concepts (sep_steer_diff_corr)",
        control="differencing removes a trend linear in the checkpoint index (in log(step) on a log grid, in step "
        "on an even one) that both series share (the r of the series themselves is positive from a common trend "
        "alone); a shared rise in the same intervals still counts",
        rule=Above(0.0),
        values=per_seed("sep_steer_diff_corr"),
        untested=_sep_correlation_untested,
    ),
    Claim(
        id="early_steering_hurts",
        claim="Steering too early in training hurts the model.",
        paper_ref=f"{PAPER}, as issue 22 lists it (not in the abstract; not verified in the text)",
        paper_value=None,
        statistic="per seed, min(E, E - F) (nats): E the loss change on non-concept text under steering (alpha_eval "
        "x RMS norm, the concept's own direction; layer mean, concept mean) averaged over the early checkpoints (0 < "
        "step <= 0.1 of training; early_steer_harm), F the same at the last checkpoint (late_steer_harm); positive "
        "only when early steering raises the loss and raises it more than late steering does",
        control="the unsteered model at the same checkpoint on the same text (each loss change is against it), and "
        "the same steering at the last checkpoint (so a harm steering does at every stage does not count)",
        rule=Above(0.0),
        values=early_harm_margin,
        untested=_no_early_evaluations,
    ),
)


def deviations(cfg: ExperimentConfig) -> list[str]:
    """How this config's setup differs from She et al.'s, one line each."""
    m, t, p, tr = cfg.model, cfg.task, cfg.probe, cfg.train
    cooccur = t.language == "cooccur"
    if cooccur:
        data = (
            f"Data: a synthetic Markov language ({t.n_base} base tokens, sequences of {t.seq_len}) whose "
            f"{len(t.names)} latent concepts ({', '.join(t.names)}) are sets of {t.n_markers} token pairs (which b "
            "follows which start token; every concept uses every start token, so no single token tells a concept, "
            f"and a model must infer the concepts on from earlier pairs), frequencies {list(t.freqs)}, strengths "
            f"{list(t.strengths)}; the paper: natural-language pretraining data, emotion stimuli in natural language."
        )
    else:
        data = (
            f"Data: a synthetic Markov language ({t.n_base} base tokens, sequences of {t.seq_len}) whose "
            f"{len(t.names)} latent concepts ({', '.join(t.names)}) emit their own marker tokens, with frequencies "
            f"{list(t.freqs)} and strengths {list(t.strengths)} set by the preset; the paper: natural-language "
            "pretraining data, emotion stimuli in natural language."
        )
    mass = "its own partner of the prompt's last start token" if cooccur else "the concept's marker tokens"
    out = [
        f"Models: {len(cfg.sweep.seeds)} seeds of a {m.n_layers}-block causal transformer (d_model {m.d_model}) "
        f"trained here from scratch for {tr.steps} steps at batch {tr.batch_size}; She et al. read the released "
        "pretraining checkpoint series of LLM360's 7B models Amber and CrystalCoder.",
        data,
        f"Checkpoints: {len(tr.eval_steps())} evaluations, {tr.eval_schedule}-spaced in steps; the paper's "
        "checkpoint series is spaced in tokens. Onset differences are counted in evaluations.",
        f"Onsets as a fraction of training are in raw optimizer steps over train.steps ({tr.steps}): they depend on "
        "the training length, and a concept's onset is only known to lie between two checkpoints, so the "
        "mid-training claims decide only when the whole bracket is on one side of 0.1 (or 0.9).",
        f"Steering is scored as the probability mass moved onto {mass} at the next position (alpha {p.alpha_eval} x "
        f"the layer's RMS norm, at {p.positions} positions; the onsets and claims use it), and beside it on "
        f"generations: the concept's rate in {p.n_gen_tokens} tokens sampled after {p.n_steer} non-concept prompts, "
        "steered at every position, minus the unsteered rate with the same sampling noise; the paper scores "
        "steered generations of natural text.",
        f"Onsets are the first checkpoint where the best layer's steering effect reaches {p.steer_threshold} or its "
        f"held-out ridge separability reaches {p.sep_threshold}: jaxlab's thresholds, not the paper's.",
        "'Steering too early hurts' is read as the loss change on non-concept text under steering at equal relative "
        "strength (alpha x the layer's RMS norm) at the early checkpoints against the last one; the paper's "
        "wording is not verified.",
    ]
    if cooccur:
        out.append(
            "How much of each concept a run learned is read against the exact Bayes predictor of the language (its "
            "concept_gap on the same stimuli: 'How much of each concept is learned'); the quick preset's concept "
            "strength and training length were set by a learning criterion on that ratio in pilot seeds outside the "
            "sweep (steerability.quick's docstring), never by an onset, a steering effect or a claim."
        )
        out.append(
            "Separability is read on 'on' / 'off' stimuli whose contexts differ in how many pairs they hold (the 'on' "
            "member carries the concept's pairs, the 'off' member background pairs only), so the count of pair starts "
            "alone separates them, with no concept knowledge ('pair-count separability' in 'How much of each concept "
            "is learned'); where it reaches probe.sep_threshold, separability onsets and the separability claims read "
            "that count, not the concepts; the paper's stimuli differ in the concept's words."
        )
    if not cooccur:
        out.append(
            "Concepts are lexical (marker tokens): a randomly initialized network's last-token state already orders "
            "most stimulus pairs and separates them partly."
        )
    pair = _pair(cfg)
    if pair is not None:
        a, b = pair
        if cooccur:
            out.append(
                f"Close pair {t.names[a]} / {t.names[b]}: share {t.n_shared} of {t.n_markers} token pairs, each has "
                f"its own fresh b token for the rest, frequencies {t.freqs[a]} / {t.freqs[b]}, strengths "
                f"{t.strengths[a]} / {t.strengths[b]}: mirror images (swapping their own tokens swaps them), so the "
                "language favours neither; the claims read |onset gap| per run, so an order is not required."
            )
        else:
            out.append(
                f"Close pair {t.names[a]} / {t.names[b]}: share {t.n_shared} of {t.n_markers} markers, frequencies "
                f"{t.freqs[a]} / {t.freqs[b]}, strengths {t.strengths[a]} / {t.strengths[b]} (set by the preset; a "
                "strength difference alone can make their onsets differ)."
            )
    rare = rare_concepts(t)
    if rare:
        out.append(
            f"Rare concept {', '.join(t.names[k] for k in rare)} (frequency {t.freqs[rare[0]]}): its later onset is "
            "set by the preset and is not counted as a finding."
        )
    return out


__all__ = [
    "CLAIMS",
    "MID_BAND",
    "censored_gap",
    "common_concepts",
    "deviations",
    "distant_pairs",
    "early_evaluations",
    "median_pair_absgap",
    "onset_indices",
    "onset_interval",
    "parse_concept_metric",
    "rare_concepts",
]
