"""The exact Bayes-optimal next-pair predictor of the co-occurrence concept language, and its concept gap.

The language (`jaxlab.tasks.concepts`, `language = "cooccur"`): concepts z_k ~ Bernoulli(freqs[k]); at
each position a draw d_t ~ Bernoulli(p_z), p_z = background + sum_k strengths[k] z_k; position t starts a
pair when d_t = 1 and d_{t-1} = 0, and the pair (x_t, x_{t+1}) = (a, b) is concept k's feature with
probability strengths[k] z_k / p_z (a uniform among the F start tokens, b its partner) or the background's
with probability background / p_z (a uniform start token, b uniform among the Q' pool tokens). Start tokens
occur only as pair starts, so which positions are pairs is observed; the base chain under the other
positions does not depend on z and cancels from the posterior.

Forward algorithm over the hidden draw d_{t-1} in {0, 1} (alpha_t(d) = p(x_{<t}, d_{t-1} = d | z)), per z:
  pair start at t:  alpha_{t+1}(1) = alpha_t(0) * q_z(x_t, x_{t+1}),  alpha_{t+1}(0) = 0,
                    q_z(a, b) = p_z p(a, b | drawn, z) = (1 / F) [sum_k s_k z_k 1(b = partner_k(a)) + bg / Q'];
  the pair's b:     alpha_{t+1}(d) = (alpha_t(0) + alpha_t(1)) p_z^d (1 - p_z)^(1 - d);
  any other token:  alpha_{t+1}(0) = (alpha_t(0) + alpha_t(1)) (1 - p_z),  alpha_{t+1}(1) = alpha_t(1) p_z,
from alpha_0 = (1, 0). After a sequence whose last token a (position T - 1) starts a pair, the predictive
of the next token is
  p(x_T = b | x_{<=T-1}) oc sum_z P(z) alpha_{T-1}(0; z) q_z(a, b).
The Bayes concept gap of concept k on paired stimuli (on, off) is the mean over pairs of
p(partner_k(a) | on) - p(partner_k(a) | off): `concept_gap` of a model that knows the language exactly
(the steerability experiment's `concept_gap[concept=k]`). Setting: She et al. (2025), steerability.
"""

from __future__ import annotations

import itertools

import numpy as np

from jaxlab.tasks import concepts

# No `Config` name here: the task registry takes any module defining `Config` for a task.


def concept_configs(cfg: concepts.Config) -> tuple[np.ndarray, np.ndarray]:
    """(z [2^K, K] every on/off assignment of the concepts, log prior [2^K])."""
    K = cfg.n_concepts
    z_ZK = np.array(list(itertools.product((0, 1), repeat=K)), np.float64)
    f = np.asarray(cfg.freqs, np.float64)
    log_prior = (z_ZK * np.log(f) + (1 - z_ZK) * np.log1p(-np.minimum(f, 1 - 1e-12))).sum(-1)
    return z_ZK, log_prior


def _pair_weight(cfg: concepts.Config, z_ZK: np.ndarray, a_N: np.ndarray, b_N: np.ndarray) -> np.ndarray:
    """[Z, N] q_z(a, b) (module docstring) for pairs (a_n, b_n)."""
    partner_KV = concepts.partner_table(cfg)
    hit_KN = (partner_KV[:, a_N] == b_N[None]).astype(np.float64)
    s_ZK = z_ZK * np.asarray(cfg.strengths, np.float64)
    n_pool = len(concepts.pool_tokens(cfg))
    return (s_ZK @ hit_KN + cfg.background / n_pool) / cfg.n_markers


def log_evidence(cfg: concepts.Config, tokens_NT: np.ndarray) -> np.ndarray:
    """[N, Z] log p(x_{<T-1}, d_{T-2} = 0 | z) + log P(z): the weight of each concept assignment before the
    last token, which must start a pair (module docstring's forward algorithm, scaled per position)."""
    tokens_NT = np.asarray(tokens_NT)
    N, T = tokens_NT.shape
    z_ZK, log_prior = concept_configs(cfg)
    p_Z = cfg.background + z_ZK @ np.asarray(cfg.strengths, np.float64)
    starts = concepts.start_tokens(cfg)
    is_start = np.isin(tokens_NT, starts)
    if not is_start[:, -1].all():
        raise ValueError("log_evidence: every sequence must end with a pair start (cooccur stimuli)")
    is_b = np.concatenate([np.zeros((N, 1), bool), is_start[:, :-1]], axis=1)
    alpha = np.zeros((2, len(p_Z), N))
    alpha[0] = 1.0
    log_scale = np.zeros((len(p_Z), N))
    p = p_Z[:, None]
    for t in range(T - 1):
        total = alpha[0] + alpha[1]
        if_start = np.stack(
            [np.zeros_like(total), alpha[0] * _pair_weight(cfg, z_ZK, tokens_NT[:, t], tokens_NT[:, t + 1])]
        )
        if_b = np.stack([total * (1 - p), total * p])
        other = np.stack([total * (1 - p), alpha[1] * p])
        alpha = np.where(is_start[None, None, :, t], if_start, np.where(is_b[None, None, :, t], if_b, other))
        scale = alpha.sum(0)
        alpha = alpha / scale
        log_scale += np.log(scale)
    return (log_scale + np.log(np.maximum(alpha[0], 1e-300)) + log_prior[:, None]).T


def next_token_probs(cfg: concepts.Config, tokens_NT: np.ndarray) -> np.ndarray:
    """[N, V] the Bayes predictive p(x_T = v | x_{<=T-1}) after sequences that end with a pair start."""
    tokens_NT = np.asarray(tokens_NT)
    z_ZK, _ = concept_configs(cfg)
    w_NZ = log_evidence(cfg, tokens_NT)
    w_NZ = np.exp(w_NZ - w_NZ.max(-1, keepdims=True))
    V = concepts.vocab_size(cfg)
    a_N = tokens_NT[:, -1]
    out = np.zeros((len(a_N), V))
    for b in concepts.pool_tokens(cfg):
        q_ZN = _pair_weight(cfg, z_ZK, a_N, np.full_like(a_N, b))
        out[:, b] = np.einsum("nz,zn->n", w_NZ, q_ZN)
    return out / out.sum(-1, keepdims=True)


def concept_mass(cfg: concepts.Config, tokens_NT: np.ndarray, concept: int) -> np.ndarray:
    """[N] the Bayes predictive's mass on concept k's partner of each sequence's last (start) token."""
    probs = next_token_probs(cfg, tokens_NT)
    partner_N = concepts.partner_table(cfg)[concept, np.asarray(tokens_NT)[:, -1]]
    return probs[np.arange(len(partner_N)), partner_N]


def concept_gap(cfg: concepts.Config, on_NT: np.ndarray, off_NT: np.ndarray, concept: int) -> float:
    """The Bayes concept gap of one concept: mean over pairs of its partner's mass on 'on' minus 'off'."""
    return float(np.mean(concept_mass(cfg, on_NT, concept) - concept_mass(cfg, off_NT, concept)))
