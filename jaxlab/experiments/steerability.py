"""steerability: when do concept directions become readable and steerable during training?

She et al. (2025), "How Does Controllability Emerge In Language Models During Pretraining?" (the
LLM360 team at MBZUAI), read concept directions from the released pretraining checkpoint series of
LLM360's Amber and CrystalCoder models with an "Intervention Detector" (last-token hidden states of
paired stimuli, PCA of their differences) and find that linear steerability (adding alpha * v to
the residual stream moves generations toward the concept) emerges at intermediate training stages,
at different stages for related concepts (anger vs sadness), and that linear separability grows
with training and correlates with steerability.

Here: a 4-6 block causal softmax transformer learns the `concepts` language (jaxlab.tasks.concepts).
The presets use its co-occurrence form (`task.language = "cooccur"`): four latent "emotions", each
a set of token pairs over shared tokens (which b follows which start token), all with the same
frequency and strength, anger and sadness mirror images sharing 3 of 4 pairs; the language puts no
difference between concepts, so the order and spacing of their onsets is a measurement. The
`ablation` preset makes concepts differ from a reference in one property each (frequency, strength,
a shared-pair twin) to show which property moves the onset. The marker form (`language = "markers"`,
concepts that prefer their own marker tokens, frequencies and strengths set by hand) is what runs
before the co-occurrence form used; `steerability_claims` says which claims a config leaves
untested). Many seeds train
as one program; evaluations (and orbax checkpoints, every one kept) are evenly spaced in steps. At
every evaluation, on device and vmapped over runs, `jaxlab.probes.steering` reads each concept at
every residual layer (ID score, explained variance, separability) and steers with the direction
found (see that module for the formulas), measures what that steering costs on non-concept text
(the loss change against the unsteered model) and samples a few tokens with and without it (the
concept's rate in generations). The report reads the checkpoint series again for direction
stability (`steerability_report.checkpoint_directions`).

Metrics (c: concept name, l: residual layer 0..n_layers-1, the stream after block l), named with
their parameters (`results.metric_name`: `id_score[concept=joy,layer=0]`; the tidy tables have the
metric `id_score` and columns `concept`, `layer`):
  per evaluation: eval_loss; {id_score, id_score_mean_diff, ev_ratio, separability, steer_effect,
  steer_slope, steer_loss_delta, gen_effect}[concept=c,layer=l]; concept_gap[concept=c] and
  gen_rate_unsteered[concept=c] (the model's own next-token mass on the concept, on minus off, held-out
  pairs; the concept's rate in unsteered samples); cos[concept_a=a,concept_b=b,layer=l] (between the
  PCA directions of two concepts).
  final (summary.json): sep_onset_step[concept=c], steer_onset_step[concept=c] (first evaluation step
  whose best-layer separability / steering effect reaches probe.sep_threshold /
  probe.steer_threshold; null if never), {id_score, separability, steer_effect}[concept=c] (best
  layer, last evaluation: no layer), sep_steer_corr[concept=c] (Pearson correlation over evaluations
  of the layer-mean separability and the layer-mean steering effect) and sep_steer_corr (its mean
  over concepts); for the claims: sep_steer_diff_corr[concept=c] / sep_steer_diff_corr (the same
  correlation of the first differences over the evaluations: a trend both share is removed),
  separability_gain, steer_onset_frac_before_common / steer_onset_frac_at_common (the onset
  interval's ends), close_pair_{steer,sep}_onset_gap and their absolute values, rare_steer_onset_gap,
  steer_onset_gap_vs_first[concept=c], gen_effect[concept=c], early_steer_harm, late_steer_harm,
  early_steer_harm_excess (METRICS defines them).
  Run directories written before metric parameters (`id_score_joy_l0`, `sep_onset_step_joy`) are
  read by the report too (`steerability_claims.parse_concept_metric`).
"""

from __future__ import annotations

import functools
import warnings
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.config import ExperimentConfig
from jaxlab.experiments import steerability_claims as claims
from jaxlab.experiments import steerability_report as _report
from jaxlab.experiments.steerability_config import (
    SteerabilityProbe,
    ablation,
    paper,
    quick,
    smoke,
)
from jaxlab.models import residual_hooks
from jaxlab.probes import steering
from jaxlab.probes.cosine import cosine
from jaxlab.results import metric_name
from jaxlab.stats import diff_corr_rows, onset_steps, pearson_rows
from jaxlab.tasks import concepts
from jaxlab.train.experiment import Experiment

READINGS = ("id_score", "id_score_mean_diff", "ev_ratio", "separability")
STEERINGS = ("steer_effect", "steer_slope", "steer_loss_delta", "gen_effect")


# -- evaluation data and on-device probes ----------------------------------------------------------
def eval_data(train: Any) -> dict[str, Any]:
    """Stimulus pairs [K, n_pairs, T] per concept, steered base sequences [n_steer, T] with their next tokens
    (non-concept text: the loss under steering), the concepts' next-token masks [K, 2 n_pairs + n_steer, V]
    (`concepts.next_token_masks`) of the stimuli and the steered sequences, generation prompts [n_steer, T]
    (T - n_gen_tokens prompt tokens, then zeros) with their Gumbel noise [n_gen_tokens, n_steer, V], and a loss
    batch; fixed by train.eval_seed, the same for every run."""
    cfg, probe = train.cfg.task, train.cfg.probe
    k_stim, k_steer, k_loss = jax.random.split(train.eval_key(), 3)
    k_gen, k_noise = jax.random.split(jax.random.fold_in(k_steer, 1))  # steer/loss keys as before
    on, off = jax.vmap(lambda c: concepts.paired_stimuli(k_stim, cfg, c, probe.n_pairs))(jnp.arange(cfg.n_concepts))
    steer = concepts.base_texts(k_steer, cfg, probe.n_steer)
    T, G, S = cfg.seq_len, probe.n_gen_tokens, probe.n_steer
    prompt = concepts.base_sequences(k_gen, cfg, S, seq_len=T - G)
    V = concepts.vocab_size(cfg)

    def masks(on_NT, off_NT, k):
        return concepts.next_token_masks(cfg, jnp.concatenate([on_NT, off_NT, steer[:, :-1]]))[k]

    return {
        "on": on,
        "off": off,
        "steer": steer[:, :-1],
        "steer_targets": steer[:, 1:],
        "masks": jax.vmap(masks)(on, off, jnp.arange(cfg.n_concepts)),
        "concept": jnp.arange(cfg.n_concepts),
        "gen": jnp.concatenate([prompt, jnp.zeros((S, G), prompt.dtype)], axis=1),
        "gen_noise": jax.random.gumbel(k_noise, (G, S, V)),
        "loss": train.sample(k_loss, probe.n_loss),
    }


def probe_one_concept(
    train: Any,
    params: chex.ArrayTree,
    on_NT: jax.Array,
    off_NT: jax.Array,
    data: dict[str, Any],
    mask_MV: jax.Array,
    concept: jax.Array,
) -> tuple[dict[str, jax.Array], jax.Array]:
    """({metric: [L] or []}, PCA directions [L, D]) for one concept of one model.

    `data`: `eval_data`'s steered sequences, their targets, the generation prompts and noise; `mask_MV`: the
    concept's next-token masks of [on, off, steered] sequences; `concept`: its index (for `concept_hits`).
    """
    probe, task = train.cfg.probe, train.cfg.task
    steer_ST = data["steer"]
    n, n_fit = on_NT.shape[0], probe.n_fit
    chex.assert_shape(mask_MV, (2 * n + steer_ST.shape[0], None))
    # one forward pass for the stimuli and the steered base sequences
    h, logits = steering.last_token_states(train.model, params, jnp.concatenate([on_NT, off_NT, steer_ST]))
    h_on, h_off, h_steer = h[:, :n], h[:, n : 2 * n], h[:, 2 * n :]
    reading = steering.read_concept(h_on, h_off, n_fit, probe.ridge_lam)
    p_markers = jnp.sum(jax.nn.softmax(logits, -1) * mask_MV, -1)
    gap = jnp.mean(p_markers[n_fit:n] - p_markers[n + n_fit : 2 * n])
    v = reading.v_pca if probe.direction == "pca" else reading.v_mean_diff
    scale = jax.vmap(steering.rms_norm)(h_steer)
    hooks = residual_hooks(train.cfg.model.n_layers, embeddings=False)
    positions = steering.position_mask(probe.positions, on_NT.shape[1])
    apply_fn = functools.partial(train.apply, params)
    alphas = jnp.asarray(probe.alphas, jnp.float32)
    deltas, harms = steering.steering_outcomes(
        apply_fn, steer_ST, hooks, scale[:, None] * v, alphas, positions, mask_MV[2 * n :], data["steer_targets"]
    )
    effect, slope = steering.effect_and_slope(alphas, deltas, probe.alpha_eval)
    harm, _ = steering.effect_and_slope(alphas, harms, probe.alpha_eval)
    # steering on generations: the concept's events per sampled token, steered lanes minus the unsteered one
    G = probe.n_gen_tokens
    vectors = probe.alpha_eval * scale[:, None] * v
    gen = steering.steered_generation(apply_fn, data["gen"], G, hooks, vectors, data["gen_noise"])
    L1, S, T = gen.shape
    hits = concepts.concept_hits(task, gen.reshape(L1 * S, T), T - G).reshape(L1, S, -1)
    rate = jnp.take(hits, concept, axis=-1).mean(-1) / G  # [L + 1]
    metrics = {
        "id_score": reading.id_score,
        "id_score_mean_diff": reading.id_score_mean_diff,
        "ev_ratio": reading.ev_ratio,
        "separability": reading.separability,
        "steer_effect": effect,
        "steer_slope": slope,
        "steer_loss_delta": harm,
        "gen_effect": rate[1:] - rate[0],
        "gen_rate_unsteered": rate[0],
        "concept_gap": gap,
    }
    return metrics, reading.v_pca


def make_evaluate(cfg: ExperimentConfig):
    """The on-device evaluation: the evaluation loss, and per concept and residual layer the readings
    (ID scores, explained variance, separability), the steering effect and slope, the concept gap,
    and the cosines between concepts' PCA directions (`probe_one_concept`; metric names in the
    module docstring).
    """
    names = cfg.task.names

    def evaluate(train: Any, params: chex.ArrayTree, data: dict[str, Any]) -> dict[str, jax.Array]:
        # lax.map over concepts bounds memory: the (layer x alpha) steering grid is already vmapped
        per, v_KLD = jax.lax.map(
            lambda a: probe_one_concept(train, params, a[0], a[1], data, a[2], a[3]),
            (data["on"], data["off"], data["masks"], data["concept"]),
        )
        out = {"eval_loss": train.loss(params, data["loss"])}
        L = v_KLD.shape[1]
        for k, c in enumerate(names):
            out[metric_name("concept_gap", concept=c)] = per["concept_gap"][k]
            out[metric_name("gen_rate_unsteered", concept=c)] = per["gen_rate_unsteered"][k]
            for name in READINGS + STEERINGS:
                for l in range(L):
                    out[metric_name(name, concept=c, layer=l)] = per[name][k, l]
        cos = cosine(v_KLD[:, None], v_KLD[None, :])  # [K, K, L]
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                for l in range(L):
                    out[metric_name("cos", concept_a=names[a], concept_b=names[b], layer=l)] = cos[a, b, l]
        return out

    return evaluate


# -- finals from the evaluation history ------------------------------------------------------------
def layer_series(history: dict[str, np.ndarray], name: str, concept: str, n_layers: int) -> np.ndarray:
    """[R, n_evals, L] values of `{name}[concept={concept},layer=l]`."""
    return np.stack(
        [np.asarray(history[metric_name(name, concept=concept, layer=l)], np.float64) for l in range(n_layers)], -1
    )


def from_history(train: Any, history: dict[str, np.ndarray], steps: np.ndarray) -> dict[str, np.ndarray]:
    """The per-run finals of a run chunk's evaluation history (METRICS defines them)."""
    cfg = train.cfg
    probe, task, L = cfg.probe, cfg.task, cfg.model.n_layers
    out: dict[str, np.ndarray] = {}
    corrs, diff_corrs, gains, harms = [], [], [], []
    index = np.arange(len(steps), dtype=np.float64)  # onsets counted in evaluations, for the claims
    sep_index, steer_index = {}, {}
    for c in task.names:
        sep = layer_series(history, "separability", c, L)
        steer = layer_series(history, "steer_effect", c, L)
        ids = layer_series(history, "id_score", c, L)
        at = functools.partial(metric_name, concept=c)
        # onsets "reach" their thresholds (>=), as METRICS defines them
        out[at("sep_onset_step")] = onset_steps(sep.max(-1), steps, probe.sep_threshold, strict=False)
        out[at("steer_onset_step")] = onset_steps(steer.max(-1), steps, probe.steer_threshold, strict=False)
        sep_index[c] = onset_steps(sep.max(-1), index, probe.sep_threshold, strict=False)
        steer_index[c] = onset_steps(steer.max(-1), index, probe.steer_threshold, strict=False)
        out[at("separability")] = sep[:, -1].max(-1)
        out[at("steer_effect")] = steer[:, -1].max(-1)
        out[at("gen_effect")] = layer_series(history, "gen_effect", c, L)[:, -1].max(-1)
        harms.append(layer_series(history, "steer_loss_delta", c, L).mean(-1))  # [R, n_evals]
        out[at("id_score")] = ids[:, -1].max(-1)
        out[at("sep_steer_corr")] = pearson_rows(sep.mean(-1), steer.mean(-1))
        corrs.append(out[at("sep_steer_corr")])
        out[at("sep_steer_diff_corr")] = diff_corr_rows(sep.mean(-1), steer.mean(-1))
        diff_corrs.append(out[at("sep_steer_diff_corr")])
        gains.append(sep[:, -1].max(-1) - sep[:, 0].max(-1))
    with np.errstate(invalid="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # a run with no finite correlation: NaN
        out["sep_steer_corr"] = np.nanmean(np.stack(corrs), axis=0)
        out["sep_steer_diff_corr"] = np.nanmean(np.stack(diff_corrs), axis=0)
    # the per-run statistics of the claims (steerability_claims)
    out["separability_gain"] = np.mean(np.stack(gains), axis=0)
    common = [task.names[k] for k in claims.common_concepts(task)]
    out["steer_onset_frac_before_common"], out["steer_onset_frac_at_common"] = claims.onset_interval(
        np.stack([steer_index[c] for c in common]), steps, cfg.train.steps
    )
    if task.close_pair:
        a, b = (task.names[k] for k in task.close_pair)
        out["close_pair_steer_onset_gap"] = claims.censored_gap(steer_index[a], steer_index[b], len(steps))
        out["close_pair_sep_onset_gap"] = claims.censored_gap(sep_index[a], sep_index[b], len(steps))
        out["close_pair_steer_onset_absgap"] = np.abs(out["close_pair_steer_onset_gap"])
        out["close_pair_sep_onset_absgap"] = np.abs(out["close_pair_sep_onset_gap"])
    first = task.names[0]
    for c in task.names[1:]:
        out[metric_name("steer_onset_gap_vs_first", concept=c)] = claims.censored_gap(
            steer_index[c], steer_index[first], len(steps)
        )
    # the harm of steering on non-concept text: early checkpoints against the last one (steerability_claims)
    harm_RN = np.mean(np.stack(harms), axis=0)  # mean over concepts of the layer-mean loss change
    early = claims.early_evaluations(steps, cfg.train.steps)
    out["late_steer_harm"] = harm_RN[:, -1]
    if early.any():
        out["early_steer_harm"] = harm_RN[:, early].mean(-1)
        out["early_steer_harm_excess"] = out["early_steer_harm"] - out["late_steer_harm"]
    rare = claims.rare_concepts(task)
    if rare:
        a, b = task.names[rare[0]], task.names[int(np.argmax(task.freqs))]
        out["rare_steer_onset_gap"] = claims.censored_gap(steer_index[a], steer_index[b], len(steps))
    return out


METRICS = {
    "eval_loss": "next-token cross-entropy (nats) on a fixed batch of the concept language",
    "train_loss": "next-token cross-entropy (nats), mean over the steps since the last evaluation",
    "id_score[concept=c,layer=l]": "fraction of held-out stimulus pairs whose last-token difference projects "
    "positively on the PCA direction read at layer l (tidy tables: metric id_score, columns concept and layer; "
    "likewise below)",
    "id_score_mean_diff[concept=c,layer=l]": "the same with the difference-of-means direction",
    "ev_ratio[concept=c,layer=l]": "explained-variance ratio of the first principal component of the differences",
    "separability[concept=c,layer=l]": "held-out accuracy of the ridge classifier on/off on last-token states",
    "steer_effect[concept=c,layer=l]": "change of next-token probability mass on the concept's markers (cooccur: "
    "its partner of the last start token) when alpha_eval x RMS norm x v is added at layer l (base sequences with "
    "every concept off)",
    "steer_slope[concept=c,layer=l]": "least-squares slope through the origin of that change over probe.alphas",
    "concept_gap[concept=c]": "model's next-token mass on the concept (markers; cooccur: its partner of the last "
    "start token) on 'on' minus 'off' stimuli (held-out pairs)",
    "cos[concept_a=a,concept_b=b,layer=l]": "cosine between the PCA directions of concepts a and b at layer l",
    "sep_onset_step[concept=c]": "first evaluation step where max over layers of separability >= probe.sep_threshold",
    "steer_onset_step[concept=c]": "first evaluation step where max over layers of steer_effect >= "
    "probe.steer_threshold",
    "id_score[concept=c], separability[concept=c], steer_effect[concept=c]": "max over layers at the last "
    "evaluation (tidy tables: the metric with column concept and no layer)",
    "sep_steer_corr[concept=c]": "Pearson r over evaluations of layer-mean separability and layer-mean steer_effect",
    "sep_steer_corr": "mean of sep_steer_corr[concept=c] over concepts (tidy tables: the row without a concept)",
    "separability_gain": "best-layer separability at the last minus the first evaluation (step 0), mean over concepts",
    "sep_steer_diff_corr[concept=c]": "Pearson r over the evaluations n of the first differences dS_n = S_{n+1} - S_n "
    "(layer-mean separability) and dE_n = E_{n+1} - E_n (layer-mean steer_effect): sum (dS - mean dS)(dE - mean "
    "dE) / sqrt(sum (dS - mean dS)^2 sum (dE - mean dE)^2); NaN with fewer than 3 finite differences",
    "sep_steer_diff_corr": "mean of sep_steer_diff_corr[concept=c] over concepts (NaN ones left out; tidy tables: "
    "the row without a concept)",
    "steer_onset_frac_before_common": "lower end of the steering onset interval: step of the evaluation before "
    "steer_onset_step[concept=c] (the last one below probe.steer_threshold) / train.steps, median over the concepts "
    "that are not the rare one (lowest frequency); onset at the first evaluation: 0; never reached: the last "
    "evaluation's step / train.steps",
    "steer_onset_frac_at_common": "upper end: steer_onset_step[concept=c] / train.steps, median over the same "
    "concepts; never reached: 1.0",
    "close_pair_steer_onset_gap": "steering onset of the close pair's first concept minus its second's, in "
    "evaluations (never reached: one past the last evaluation; NaN if neither reaches it)",
    "close_pair_sep_onset_gap": "the same for the separability onsets",
    "rare_steer_onset_gap": "steering onset of the rarest concept minus the most frequent one's, in evaluations "
    "(likewise censored)",
    "steer_loss_delta[concept=c,layer=l]": "change of the next-token loss (nats, mean over positions) on the "
    "steered base sequences (non-concept text) when alpha_eval x RMS norm x v is added at layer l, against the "
    "unsteered model on the same sequences",
    "gen_effect[concept=c,layer=l]": "the concept's rate in probe.n_gen_tokens tokens sampled after n_steer "
    "non-concept prompts (markers: its marker tokens per sampled token; cooccur: its pairs completed per sampled "
    "token), steered at layer l (alpha_eval x RMS norm x v, all positions) minus unsteered, with the same sampling "
    "noise in both",
    "gen_rate_unsteered[concept=c]": "that rate without steering",
    "gen_effect[concept=c]": "max over layers of gen_effect at the last evaluation",
    "close_pair_steer_onset_absgap": "|close_pair_steer_onset_gap|: whether the pair's onsets differ, whichever "
    "comes first",
    "close_pair_sep_onset_absgap": "|close_pair_sep_onset_gap|",
    "steer_onset_gap_vs_first[concept=c]": "steering onset of concept c minus the first concept's (task.names[0]), "
    "in evaluations (likewise censored)",
    "early_steer_harm": "steer_loss_delta averaged over layers and concepts, then over the early evaluations (0 < "
    "step <= 0.1 train.steps)",
    "late_steer_harm": "the same at the last evaluation",
    "early_steer_harm_excess": "early_steer_harm - late_steer_harm",
}


EXPERIMENT = Experiment(
    name="steerability",
    description=(
        "Emergence of linear readability and steerability of concepts during training "
        "(She et al. 2025, 'How Does Controllability Emerge In Language Models During Pretraining?')."
    ),
    presets={"smoke": smoke, "quick": quick, "paper": paper, "ablation": ablation},
    probe_class=SteerabilityProbe,
    make_evaluate=make_evaluate,
    eval_data=eval_data,
    from_history=from_history,
    report=_report.sections,
    metrics=METRICS,
    claims=claims.CLAIMS,
    deviations=claims.deviations,
)
