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
