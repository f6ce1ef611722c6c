"""What a model that knows the concept language exactly would score: steerability's learning reference.

`concept_gap[concept=k]` (the model's next-token mass on concept k's partner of the last start token, 'on'
minus 'off' stimuli) has a ceiling set by the language: the gap of the exact Bayes predictor
(`jaxlab.tasks.concepts_bayes`) on the same held-out stimuli. Its ratio to that ceiling says how much of
a concept a run has learned, independent of the probes and thresholds the claims read; the quick preset's
learning criterion is stated in it (`steerability.quick`). Setting: She et al. (2025).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.config import ExperimentConfig
from jaxlab.reporting import ReportContext, Section, finals, spread, table
from jaxlab.results import metric_name
from jaxlab.tasks import concepts, concepts_bayes


@functools.partial(jax.jit, static_argnames=("task", "n_pairs", "eval_seed", "prng_impl"))
def _stimuli(task: concepts.Config, n_pairs: int, eval_seed: int, prng_impl: str) -> tuple[jax.Array, jax.Array]:
    """All stimulus pairs (on, off) [K, n_pairs, T], drawn as the training program draws them (JAX's default
    threefry layout); one compiled program per config, reused by every caller (claims, report)."""
    k_stim = jax.random.split(jax.random.key(eval_seed, impl=prng_impl), 3)[0]
    return jax.vmap(lambda c: concepts.paired_stimuli(k_stim, task, c, n_pairs))(jnp.arange(task.n_concepts))


def heldout_stimuli(cfg: ExperimentConfig) -> tuple[np.ndarray, np.ndarray]:
    """(on, off) [K, n_pairs - n_fit, T]: the held-out stimulus pairs the run's `concept_gap` is scored on
    (`steerability.eval_data`'s, from the key `train.eval_seed`)."""
    on, off = _stimuli(cfg.task, cfg.probe.n_pairs, cfg.train.eval_seed, cfg.train.prng_impl)
    n_fit = cfg.probe.n_fit
    return np.asarray(on)[:, n_fit:], np.asarray(off)[:, n_fit:]


def bayes_gaps(cfg: ExperimentConfig) -> np.ndarray | None:
    """[K] the Bayes predictor's concept gap per concept on the held-out stimuli; None for the marker language
    (its ideal gap is the concept's strength)."""
    if cfg.task.language != "cooccur":
        return None
    on, off = heldout_stimuli(cfg)
    return np.array([concepts_bayes.concept_gap(cfg.task, on[k], off[k], k) for k in range(cfg.task.n_concepts)])


def count_separability(cfg: ExperimentConfig) -> np.ndarray | None:
    """[K] accuracy on the held-out stimuli of the best threshold (chosen on them) on one number, the pair starts
    in a stimulus's context, at telling 'on' from 'off' (balanced: (P(count_on > t) + P(count_off <= t)) / 2,
    maximised over t): a separability no concept knowledge is needed for (the 'on' member carries the concept's
    pairs, the 'off' member background ones only). None for the marker language."""
    if cfg.task.language != "cooccur":
        return None
    on, off = heldout_stimuli(cfg)
    starts = concepts.start_tokens(cfg.task)
    n_on = np.isin(on[:, :, :-1], starts).sum(-1)  # [K, N]: the last token, the same in both, left out
    n_off = np.isin(off[:, :, :-1], starts).sum(-1)
    ts = np.arange(cfg.task.seq_len + 1)[:, None, None]
    acc = ((n_on[None] > ts).mean(-1) + (n_off[None] <= ts).mean(-1)) / 2  # [T + 1, K]
    return acc.max(0)


def learning_section(ctx: ReportContext) -> Section:
    """Per concept: the runs' concept_gap at the last checkpoint against the Bayes predictor's on the same
    stimuli, and their ratio (how much of the concept the models learned)."""
    gaps = bayes_gaps(ctx.cfg)
    if gaps is None:
        return Section("How much of each concept is learned", "Marker language: the ideal gap is the strength.")
    counts = count_separability(ctx.cfg)
    rows = []
    for k, c in enumerate(ctx.cfg.task.names):
        gap = finals(ctx, metric_name("concept_gap", concept=c))
        sep = finals(ctx, metric_name("separability", concept=c))
        rows.append([c, spread(gap), f"{gaps[k]:.4g}", spread(gap / gaps[k]), spread(sep), f"{counts[k]:.4g}"])
    header = ["concept", "concept_gap (runs)", "Bayes gap", "ratio", "separability (runs)", "pair-count separability"]
    body = (
        "`concept_gap` (the model's next-token mass on the concept's partner of the last start token, 'on' minus "
        "'off' held-out stimuli) at the last checkpoint, median [min, max] over runs, against the gap of the exact "
        "Bayes predictor of the language on the same stimuli (`jaxlab.tasks.concepts_bayes`: the ceiling a model "
        "that knows the concepts reaches), and their ratio. Beside them, the runs' best-layer separability at the "
        "last checkpoint and what one number separates with no concept knowledge: the count of pair starts in "
        "the stimulus's context, the best threshold on it (balanced accuracy on the same held-out stimuli, the "
        "threshold chosen on them; the 'on' member carries "
        "the concept's pairs, the 'off' member background pairs only). Where that count reaches "
        f"probe.sep_threshold ({ctx.cfg.probe.sep_threshold}), a separability onset needs no concept learning.\n\n"
        + table(header, rows)
    )
    return Section("How much of each concept is learned", body)
