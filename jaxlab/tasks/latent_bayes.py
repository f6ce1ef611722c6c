"""The exact Bayes-optimal predictor of a `latent` language, and its measured ambiguity.

Forward algorithm (in log space). The hidden state of the generator while it writes message k is
(theta_k, previous letter); the previous letter is observed, so the forward variable over
(intention x previous letter) is concentrated on the observed letter and reduces to a vector over
theta. With a_t(theta) = log p(theta | z_{<=t}) for the intention of the message that token t + 1
belongs to (the next message at a delimiter), at input position t in slot j (see `latent`):

  predictive   log p(z_{t+1} = v | z_{<=t}) = logsumexp_theta [a_t(theta) + log E_t(theta, v)],
               E_t = F (j = 0: the delimiter before a message), T[:, z_t, :] (0 < j < L);
               the delimiter with probability 1 when j = L (messages have a fixed length);
  update       a_{t+1} = normalize(a_t + log E_t(., z_{t+1}))               when j < L,
               a_{t+1}(theta') = logsumexp_theta [a_t(theta) + log Pi(theta, theta')]   when j = L,

starting from a_0 = log prior. One `lax.scan` over positions per sequence, `vmap` over sequences.
`posterior[t]` is a_t: the belief about the intention that governs the prediction at t.

Truth: the generator's own next-token distribution given the whole intention path,
p(z_{t+1} | z_{<=t}, theta_{1..M}) = F_{theta_k} (j = 0), T_{theta_k}[z_t] (0 < j < L), delimiter (j = L).

Measured ambiguity (Jiang's epsilon): for one message x, eps(x) = 1 - max_theta p(theta | x) under the
uniform prior; `measured_ambiguity` averages it over messages of the language, and over m messages
sharing one intention (posterior with Pi = I), eps_m, which Jiang argues falls roughly multiplicatively.
Jiang's own measure (generate_data.py, `message2intention`) classifies a message by the arg-max over
theta of the product of its transition probabilities T_theta[x_j, x_{j+1}], the first letter left out,
and reports the error rate over the generated corpus: `transition_ambiguity` (the product is a
likelihood given the first letter, which itself depends on theta, so it is not a posterior and its
1 - max is not his error rate: the error rate is computed as he does). With his noise-free first
letter the full posterior names theta and jaxlab's eps is 0, while his measure (his own script, his
seed, 100000 messages) is 0.0648 / 0.1570 at epsilon 0.02 / 0.04.

Jiang's in-context-learning metric (ICL.py): after m >= 1 messages of one intention theta and the
delimiter, the next message's first letter is scored against his chain's prediction,
  target_theta(v) = 1 / (2 l) for v among the letters of theta and of (theta + 1) mod K, else 0
(`first_letter_target`), KL(target || q) at the delimiter after message m (input position
m (L + 1), `first_letter_positions`). With a noise-free first letter (c_1 = 0) the Bayes posterior on
theta_{m-1} after its first letter is a point mass at the true theta, so the Bayes predictive there is
exactly sum_theta' Pi(theta, theta') F_theta', and `noise_free_bayes_kls` gives the Bayes predictor's
KL under both metrics in closed form (no sampling); under Jiang's chain and language the first-letter
KL is exactly 0.
"""

from __future__ import annotations

import functools
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.rng import rng_scope
from jaxlab.tasks import latent

# No `Config` name here: the task registry takes any module defining `Config` for a task.


class LogLanguage(NamedTuple):
    """Log-probabilities of a language as device arrays (see `latent.Language`)."""

    prior: jax.Array  # [K]
    chain: jax.Array  # [K, K]
    first: jax.Array  # [K, V]
    trans: jax.Array  # [K, V, V]


def log_language(cfg: latent.Config, dtype: jnp.dtype = jnp.float32, chain: np.ndarray | None = None) -> LogLanguage:
    """The language of `cfg` in log space; `chain` replaces the intention chain Pi (e.g. the identity)."""
    lang = latent.language(cfg)
    chain = lang.chain if chain is None else chain
    with np.errstate(divide="ignore"):
        return LogLanguage(*(jnp.asarray(np.log(a), dtype) for a in (lang.prior, chain, lang.first, lang.trans)))


def _slots(cfg: latent.Config) -> jax.Array:
    return jnp.asarray(latent.positions(cfg)[1], jnp.int32)


def _delimiter_row(cfg: latent.Config, dtype: jnp.dtype) -> jax.Array:
    return jnp.where(jnp.arange(cfg.vocab_size) == cfg.delimiter, 0.0, -jnp.inf).astype(dtype)


def _next_tokens(cfg: latent.Config, inputs_T: jax.Array) -> jax.Array:
    return jnp.concatenate([inputs_T[1:], jnp.full((1,), cfg.delimiter, inputs_T.dtype)])


def forward(cfg: latent.Config, inputs_T: jax.Array, lang: LogLanguage) -> tuple[jax.Array, jax.Array]:
    """(log predictive [T, V + 1], log posterior [T, K]) of one sequence (module docstring)."""
    chex.assert_shape(inputs_T, (cfg.seq_len,))
    L, V = cfg.message_len, cfg.n_letters
    dtype = lang.first.dtype
    delim_row = _delimiter_row(cfg, dtype)
    minus_inf = jnp.full((1,), -jnp.inf, dtype)

    def step(a_K, x):
        z, nxt, j = x
        table_KV = jnp.where(j == 0, lang.first, lang.trans[:, jnp.clip(z, 0, V - 1), :])
        letters_V = jax.nn.logsumexp(a_K[:, None] + table_KV, axis=0)
        pred = jnp.where(j == L, delim_row, jnp.concatenate([letters_V, minus_inf]))
        after_letter = a_K + table_KV[:, jnp.clip(nxt, 0, V - 1)]
        after_letter = after_letter - jax.nn.logsumexp(after_letter)
        after_delim = jax.nn.logsumexp(a_K[:, None] + lang.chain, axis=0)
        return jnp.where(j == L, after_delim, after_letter), (pred, a_K)

    xs = (inputs_T, _next_tokens(cfg, inputs_T), _slots(cfg))
    _, (pred_TV, post_TK) = jax.lax.scan(step, lang.prior - jax.nn.logsumexp(lang.prior), xs)
    return pred_TV, post_TK


def bayes_predictive(
    cfg: latent.Config, inputs_BT: jax.Array, lang: LogLanguage | None = None
) -> tuple[jax.Array, jax.Array]:
    """(log predictive [B, T, V + 1], log posterior [B, T, K]) of the Bayes-optimal predictor."""
    chex.assert_rank(inputs_BT, 2)
    lang = log_language(cfg) if lang is None else lang
    return jax.vmap(lambda x: forward(cfg, x, lang))(inputs_BT)


def true_predictive(
    cfg: latent.Config, inputs_BT: jax.Array, theta_BM: jax.Array, lang: LogLanguage | None = None
) -> jax.Array:
    """log p(z_{t+1} | z_{<=t}, theta path) [B, T, V + 1]: the generator's own distribution."""
    chex.assert_rank([inputs_BT, theta_BM], 2)
    chex.assert_shape(theta_BM, (inputs_BT.shape[0], cfg.n_messages))
    lang = log_language(cfg) if lang is None else lang
    k_T, j_T = (jnp.asarray(a) for a in latent.positions(cfg))
    theta_BT = theta_BM[:, k_T]
    z_BT = jnp.clip(inputs_BT, 0, cfg.n_letters - 1)
    letters = jnp.where((j_T == 0)[None, :, None], lang.first[theta_BT], lang.trans[theta_BT, z_BT])
    minus_inf = jnp.full((*letters.shape[:2], 1), -jnp.inf, letters.dtype)
    full = jnp.concatenate([letters, minus_inf], axis=-1)
    return jnp.where((j_T == cfg.message_len)[None, :, None], _delimiter_row(cfg, letters.dtype), full)


def kl(logp: jax.Array, logq: jax.Array) -> jax.Array:
    """KL(p || q) = sum_v p_v (log p_v - log q_v) over the last axis, with 0 log 0 = 0 (nats)."""
    p = jnp.exp(logp)
    return jnp.sum(jnp.where(p > 0, p * (logp - logq), 0.0), axis=-1)


def message_end_posteriors(cfg: latent.Config, post_BTK: jax.Array) -> jax.Array:
    """log p(theta_k | z up to the end of message k) [B, M, K]: the posterior at each slot j = L."""
    ends = np.arange(cfg.n_messages) * (cfg.message_len + 1) + cfg.message_len
    return post_BTK[:, ends]


@functools.partial(jax.jit, static_argnums=(0, 2))
def _max_posterior(shape_cfg: latent.Config, key: jax.Array, n: int, cdf: latent.Cdfs, lang: LogLanguage) -> jax.Array:
    batch = latent.sample_sequences(key, shape_cfg, n, same_intention=True, cdf=cdf)
    _, post = bayes_predictive(shape_cfg, batch.inputs, lang)
    return jnp.exp(message_end_posteriors(shape_cfg, post)).max(-1)


def measured_ambiguity(cfg: latent.Config, key: jax.Array, n: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """(eps_m [M], standard error [M]): E[1 - max_theta p(theta | m messages of one intention)].

    eps_1 is Jiang's epsilon of the language (one message, uniform prior); messages are sampled
    from the language, the posterior is exact (forward algorithm with Pi = I). Languages of the
    same shapes share one compiled program (the probabilities are arguments).
    """
    lang = log_language(cfg, chain=np.eye(cfg.n_intentions))
    with rng_scope():
        top = _max_posterior(latent.shape_config(cfg), key, n, latent.cdfs(cfg), lang)
    eps = 1.0 - np.asarray(top, np.float64)  # [n, M]
    return eps.mean(0), eps.std(0, ddof=1) / np.sqrt(n)


def first_letter_positions(cfg: latent.Config) -> np.ndarray:
    """[M - 1] input positions t = m (L + 1), m = 1..M - 1: the delimiter after m messages, which
    predicts the first letter of message m (0-based) after m demonstrations (Jiang's ICL.py position)."""
    return np.arange(1, cfg.n_messages) * (cfg.message_len + 1)


def first_letter_target(cfg: latent.Config, theta_BM: jax.Array) -> jax.Array:
    """log target [B, M - 1, V + 1] of Jiang's ICL metric for messages m = 1..M - 1: uniform over the
    2 l letters of theta_{m-1} and (theta_{m-1} + 1) mod K, 0 on the other letters and the delimiter
    (ICL.py's `trueprob`; theta_{m-1} is the intention of the last demonstration)."""
    chex.assert_rank(theta_BM, 2)
    chex.assert_shape(theta_BM, (None, cfg.n_messages))
    K, l = cfg.n_intentions, cfg.letters_per_intention
    owner_V = jnp.arange(cfg.n_letters) // l
    last_BM1 = theta_BM[:, :-1, None]
    mask = (owner_V == last_BM1) | (owner_V == (last_BM1 + 1) % K)
    letters = jnp.where(mask, -jnp.log(2.0 * l), -jnp.inf)
    minus_inf = jnp.full((*letters.shape[:2], 1), -jnp.inf, letters.dtype)
    return jnp.concatenate([letters, minus_inf], axis=-1)


def first_letter_kl(cfg: latent.Config, theta_BM: jax.Array, logq_BTV: jax.Array) -> jax.Array:
    """[B, M - 1]: Jiang's ICL KL(target || q) after m = 1..M - 1 demonstrations, q = exp(`logq_BTV`) a
    predictor's next-token distribution at every input position (model softmax or Bayes predictive)."""
    chex.assert_rank([theta_BM, logq_BTV], [2, 3])
    chex.assert_shape(logq_BTV, (theta_BM.shape[0], cfg.seq_len, cfg.vocab_size))
    logq = logq_BTV[:, first_letter_positions(cfg)]
    return kl(first_letter_target(cfg, theta_BM), logq)


def noise_free_bayes_kls(cfg: latent.Config) -> tuple[float, float]:
    """(first-letter KL, all-letter KL) of the exact Bayes predictor, in closed form, on prompts whose
    messages share one intention (the ICL prompts), for m >= 1, when the first letter is noise-free.

    With c_1 = 0 the posterior on theta is a point mass from the message's first letter on, so at a
    letter position the Bayes predictive is the truth, and at the delimiter after message m - 1 it is
    P_theta = sum_theta' Pi(theta, theta') F_theta'. Hence (uniform theta)
      first letter:  mean_theta KL(target_theta || P_theta)
      all letters:   mean_theta KL(F_theta || P_theta) / L   (the truth at j = 0 is F_theta, same intention).
    """
    c1 = cfg.ambiguity if cfg.first_letter_ambiguity is None else cfg.first_letter_ambiguity
    if c1 != 0:
        raise ValueError(f"the closed form needs a noise-free first letter, got first-letter constant {c1}")
    lang = latent.language(cfg)
    K, l, V = cfg.n_intentions, cfg.letters_per_intention, cfg.n_letters
    pred_KV = lang.chain @ lang.first
    owner = np.arange(V) // l
    target_KV = np.stack([((owner == t) | (owner == (t + 1) % K)) / (2.0 * l) for t in range(K)])

    def np_kl(p: np.ndarray, q: np.ndarray) -> float:
        with np.errstate(divide="ignore", invalid="ignore"):
            terms = np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)
        return float(terms.sum(-1).mean())

    return np_kl(target_KV, pred_KV), np_kl(lang.first, pred_KV) / cfg.message_len


def transition_ambiguity(cfg: latent.Config, key: jax.Array, n: int = 16384) -> tuple[float, float]:
    """(eps, standard error): Jiang's measured ambiguity, the error rate of his classifier
    argmax_theta prod_j T_theta[x_j, x_{j+1}] (the first letter left out; generate_data.py's
    `message2intention`, ties to the lowest theta as `np.argmax`) over `n` messages of uniformly drawn
    intentions, with the binomial standard error sqrt(eps (1 - eps) / n)."""
    k_theta, k_letters = jax.random.split(key)
    lang = latent.language(cfg)
    with rng_scope():
        theta = jax.random.randint(k_theta, (n, 1), 0, cfg.n_intentions)
        x = np.asarray(latent.sample_letters(k_letters, cfg, theta))[:, 0]  # [n, L]
    with np.errstate(divide="ignore"):
        log_t = np.log(lang.trans)  # [K, V, V]
    ll_Kn = log_t[:, x[:, :-1], x[:, 1:]].sum(-1)
    eps = float(np.mean(np.argmax(ll_Kn, axis=0) != np.asarray(theta)[:, 0]))
    return eps, float(np.sqrt(eps * (1.0 - eps) / n))
