"""The exact Bayes predictor of the co-occurrence concept language: brute force and sampling agree with it."""

import itertools

import jax
import numpy as np
import pytest

from jaxlab.tasks import concepts
from jaxlab.tasks import concepts_bayes as cb

CO = concepts.Config(
    language="cooccur",
    seq_len=8,
    n_base=6,
    freqs=(0.3, 0.3, 0.3, 0.3),
    strengths=(0.15, 0.15, 0.15, 0.15),
    n_markers=4,
    n_shared=3,
    background=0.05,
)


def brute_force_next(cfg, x):
    """p(next | x) by summing over every draw sequence d and every concept assignment z."""
    K, F, T = cfg.n_concepts, cfg.n_markers, len(x)
    starts = set(concepts.start_tokens(cfg).tolist())
    pairs = concepts.feature_table(cfg)
    pool = concepts.pool_tokens(cfg)
    observed_start = [int(v) in starts for v in x]
    out = np.zeros(concepts.vocab_size(cfg))
    for z in itertools.product((0, 1), repeat=K):
        prior = np.prod([f if on else 1 - f for f, on in zip(cfg.freqs, z)])
        p = cfg.background + sum(s for s, on in zip(cfg.strengths, z) if on)

        def pair_prob(a, b):  # p(a, b | the position drew a slot, z)
            w = cfg.background / p / F / len(pool)
            for k in range(K):
                if z[k] and (a, b) in {tuple(r) for r in pairs[k].tolist()}:
                    w += cfg.strengths[k] / p / F
            return w

        for d in itertools.product((0, 1), repeat=T):
            starts_d = [d[t] == 1 and (t == 0 or d[t - 1] == 0) for t in range(T)]
            if starts_d != observed_start:
                continue
            w = prior * np.prod([p if dt else 1 - p for dt in d])
            w *= np.prod([pair_prob(int(x[t]), int(x[t + 1])) for t in range(T - 1) if observed_start[t]])
            for b in pool:
                out[b] += w * pair_prob(int(x[-1]), int(b))
    return out / out.sum()


def test_forward_algorithm_matches_brute_force_enumeration():
    on, off = concepts.paired_stimuli(jax.random.key(3), CO, 1, 6)
    x_NT = np.concatenate([np.asarray(on), np.asarray(off)])
    got = cb.next_token_probs(CO, x_NT)
    for n in range(len(x_NT)):
        np.testing.assert_allclose(got[n], brute_force_next(CO, x_NT[n]), rtol=1e-9, atol=1e-12)
    # the on member carries the concept: its partner's mass is higher than in the off member
    gap = cb.concept_mass(CO, np.asarray(on), 1) - cb.concept_mass(CO, np.asarray(off), 1)
    assert (gap > 0.1).all()


def test_bayes_masses_are_calibrated_on_sampled_text_with_and_without_the_concept_in_context():
    batch = jax.jit(lambda k: concepts.sample(k, CO, 40000))(jax.random.key(5))
    x = np.asarray(batch.inputs)
    target = np.asarray(batch.targets[:, -1])
    keep = np.isin(x[:, -1], concepts.start_tokens(CO))
    x, target = x[keep], target[keep]
    assert len(x) > 2000
    partner = concepts.partner_table(CO)
    for k in (0, 1):
        mass = cb.concept_mass(CO, x, k)
        hit = target == partner[k, x[:, -1]]
        seen = np.asarray(concepts.concept_hits(CO, x, 0))[:, k] >= 1  # the concept's pair earlier in context
        for group in (seen, ~seen):
            se = np.sqrt(hit[group].mean() * (1 - hit[group].mean()) / group.sum())
            assert abs(hit[group].mean() - mass[group].mean()) < 4 * se + 1e-3
        assert mass[seen].mean() > mass[~seen].mean() + 0.2  # the context matters, and the predictor uses it


def test_stimuli_must_end_with_a_pair_start():
    x = np.zeros((2, CO.seq_len), np.int32)
    with pytest.raises(ValueError, match="pair start"):
        cb.next_token_probs(CO, x)
