"""Latent-intention languages (Jiang 2023, "A Latent Space Theory for Emergent Abilities in LLMs").

A language is a sparse joint distribution over latent intentions theta in {0..K-1} and messages.
Each intention owns `letters_per_intention` = l letters (letter v belongs to intention v // l;
V = K l letters) and a random l x l row-stochastic block B_theta (rows of i.i.d. U(0, 1) entries,
normalized; drawn from `language_seed` by NumPy's default generator, or with `language_rng="legacy"`
by NumPy's legacy Mersenne Twister, `RandomState(seed).rand(K, l, l)`: the blocks of Jiang's
generate_data.py, which seeds it with 1713 and draws one l x l block per intention in order). With c = `ambiguity`,
c_1 = `first_letter_ambiguity` (c when None) and rows renormalized after adding the constant,

  first letter:  F_theta[v]    = (U_theta[v] + c_1) / (1 + V c_1),   U_theta uniform on theta's letters
  transitions:   T_theta[u, v] = (B_theta[u, v] + c) / (1 + V c)      for u, v among theta's letters,
                 T_theta[u, v] = c / (V c) = 1 / V                    for u outside theta's letters
                 (B_theta is 0 off the block; a row that is 0 everywhere, c = 0 off the block, is
                 uniform: such letters never occur unless c_1 > 0),
  a message:     x_1 ~ F_theta, x_{j+1} ~ T_theta[x_j, .], j < L = `message_len`,
  intentions:    theta_1 ~ uniform, theta_{k+1} ~ Pi[theta_k, .] with Pi = `chain_stay` on the
                 diagonal and the rest on (theta + 1) mod K (`chain_move="next"`, the author's chain)
                 or spread evenly over the other intentions (`"uniform"`). Both chains are doubly
                 stochastic, so the uniform start is stationary.

Jiang's simulation: K = 6, l = 3, L = 21 (a first letter and 20 transitions), stay 0.5 / next 0.5,
and a noise-free first letter (c_1 = 0), which identifies theta exactly; here the first letter is
as ambiguous as the transitions unless `first_letter_ambiguity=0.0` asks for the author's setup.
His noise is this `ambiguity` c: generate_data.py adds epsilon to every entry of the K x V x V
transition matrices and renormalizes the rows, which gives the formulas above (a row outside
theta's block is 0 before the noise and uniform after it). So his language is exactly
`latent.Config(ambiguity=epsilon, first_letter_ambiguity=0.0, language_rng="legacy",
language_seed=1713)` with the defaults above.

A sequence is `n_messages` = M messages separated by a delimiter (token id V), starting with one:
z = [D, msg_1, D, msg_2, ..., D, msg_M, D]; inputs z[:-1] and targets z[1:] have T = M (L + 1)
tokens, every position in the loss. Position t = k (L + 1) + j holds, for j = 0, the delimiter
that precedes message k (0-based) and predicts its first letter; for 1 <= j < L letter j - 1,
predicting letter j; for j = L the last letter, predicting the delimiter. aux["theta"]: [B, M].

The language (F, T, Pi) is a pure function of the config (`language_seed` draws the blocks), built
once in NumPy and used as constants. The exact Bayes-optimal predictor is in `latent_bayes`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from typing import ClassVar, NamedTuple

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.config import TaskSection, _choice, _positive
from jaxlab.errors import ConfigError
from jaxlab.tasks.batch import Batch, TaskSpec

CHAIN_MOVES = ("next", "uniform")
LANGUAGE_RNGS = ("default", "legacy")


@dataclass(frozen=True)
class Config(TaskSection):
    """The `task` section of a latent-intention language (`kind = "latent"`; module docstring)."""

    kind: ClassVar[str] = "latent"
    n_intentions: int = 6
    letters_per_intention: int = 3
    message_len: int = 21
    n_messages: int = 6
    chain_stay: float = 0.5
    chain_move: str = "next"
    ambiguity: float = 0.0
    first_letter_ambiguity: float | None = None
    language_seed: int = 0
    language_rng: str = "default"

    FIELD_DOCS: ClassVar[dict[str, str]] = {
        "n_intentions": "K latent intentions",
        "letters_per_intention": "letters l each intention owns (V = K l letters)",
        "message_len": "letters L per message",
        "n_messages": "messages M per sequence, each preceded by a delimiter",
        "chain_stay": "probability that the next message keeps the current intention",
        "chain_move": "otherwise the intention moves to the next one (next) or to any other evenly (uniform)",
        "ambiguity": "c, added to every transition probability before the rows are renormalized (0: unambiguous)",
        "first_letter_ambiguity": "the same constant for a message's first letter (None: ambiguity)",
        "language_seed": "seed of the random transition blocks of the language",
        "language_rng": (
            "generator of the blocks: NumPy's default (default) or legacy RandomState (legacy; with seed 1713 "
            "Jiang's blocks)"
        ),
    }
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"chain_move": CHAIN_MOVES, "language_rng": LANGUAGE_RNGS}

    def validate(self) -> None:
        n = self._name
        if self.n_intentions < 2:
            raise ConfigError(n("n_intentions"), f"needs at least 2 intentions, got {self.n_intentions}")
        _positive(n("letters_per_intention"), self.letters_per_intention)
        _positive(n("message_len"), self.message_len)
        _positive(n("n_messages"), self.n_messages)
        if not (0.0 <= self.chain_stay <= 1.0) or not math.isfinite(self.chain_stay):
            raise ConfigError(n("chain_stay"), f"must be a probability in [0, 1], got {self.chain_stay!r}")
        _choice(n("chain_move"), self.chain_move, CHAIN_MOVES)
        _positive(n("ambiguity"), self.ambiguity, allow_zero=True)
        if self.first_letter_ambiguity is not None:
            _positive(n("first_letter_ambiguity"), self.first_letter_ambiguity, allow_zero=True)
        _positive(n("language_seed"), self.language_seed, allow_zero=True)
        _choice(n("language_rng"), self.language_rng, LANGUAGE_RNGS)

    @property
    def n_letters(self) -> int:
        """V = n_intentions * letters_per_intention letters."""
        return self.n_intentions * self.letters_per_intention

    @property
    def delimiter(self) -> int:
        """The delimiter's token id, V (after the letters)."""
        return self.n_letters

    @property
    def vocab_size(self) -> int:
        """V + 1: the letters and the delimiter."""
        return self.n_letters + 1

    @property
    def seq_len(self) -> int:
        """T = n_messages (message_len + 1): the input positions of a sequence."""
        return self.n_messages * (self.message_len + 1)


LatentConfig = Config


class Language(NamedTuple):
    """Probabilities of one language (NumPy float64; see the module docstring for the formulas)."""

    prior: np.ndarray  # [K] distribution of theta_1
    chain: np.ndarray  # [K, K] Pi[theta, theta']
    first: np.ndarray  # [K, V] F_theta[v]
    trans: np.ndarray  # [K, V, V] T_theta[u, v]


def _normalize_rows(x: np.ndarray) -> np.ndarray:
    total = x.sum(-1, keepdims=True)
    uniform = np.full_like(x, 1.0 / x.shape[-1])
    return np.where(total > 0, x / np.where(total > 0, total, 1.0), uniform)


def intention_chain(cfg: Config) -> np.ndarray:
    """Pi [K, K]: stay with `chain_stay`, else move to the next intention or to any other evenly."""
    K, s = cfg.n_intentions, cfg.chain_stay
    if cfg.chain_move == "next":
        move = np.roll(np.eye(K), 1, axis=1)
    else:
        move = (np.ones((K, K)) - np.eye(K)) / (K - 1)
    return s * np.eye(K) + (1.0 - s) * move


def raw_blocks(cfg: Config) -> np.ndarray:
    """[K, l, l] i.i.d. U(0, 1) entries of the blocks, before normalization: `default_rng(seed).random`,
    or (`language_rng="legacy"`) `RandomState(seed).rand`, the legacy generator Jiang's generate_data.py
    seeds with `np.random.seed(1713)` and draws one `rand(l, l)` per intention from (the same stream)."""
    K, l = cfg.n_intentions, cfg.letters_per_intention
    if cfg.language_rng == "legacy":
        return np.random.RandomState(cfg.language_seed).rand(K, l, l)
    return np.random.default_rng(cfg.language_seed).random((K, l, l))


@functools.cache
def language(cfg: Config) -> Language:
    """The language of `cfg`: a pure function of the config (blocks drawn from `language_seed`)."""
    K, l, V = cfg.n_intentions, cfg.letters_per_intention, cfg.n_letters
    blocks = _normalize_rows(raw_blocks(cfg))
    c = cfg.ambiguity
    c1 = c if cfg.first_letter_ambiguity is None else cfg.first_letter_ambiguity
    base_first = np.zeros((K, V))
    base_trans = np.zeros((K, V, V))
    for theta in range(K):
        own = slice(theta * l, (theta + 1) * l)
        base_first[theta, own] = 1.0 / l
        base_trans[theta, own, own] = blocks[theta]
    lang = Language(
        prior=np.full(K, 1.0 / K),
        chain=intention_chain(cfg),
        first=_normalize_rows(base_first + c1),
        trans=_normalize_rows(base_trans + c),
    )
    for a in lang:
        a.setflags(write=False)
    return lang


def spec(cfg: Config) -> TaskSpec:
    """The `TaskSpec`: T token ids from a vocabulary of V + 1, cross-entropy over V + 1 classes."""
    return TaskSpec(
        kind=cfg.kind, seq_len=cfg.seq_len, output_dim=cfg.vocab_size, loss="xent", vocab_size=cfg.vocab_size
    )


def positions(cfg: Config) -> tuple[np.ndarray, np.ndarray]:
    """(message index k [T], slot j [T]) of every input position t = k (L + 1) + j."""
    t = np.arange(cfg.seq_len)
    return t // (cfg.message_len + 1), t % (cfg.message_len + 1)


class Cdfs(NamedTuple):
    """Cumulative distributions of a language (device arrays) for inverse-CDF sampling."""

    prior: jax.Array  # [K]
    chain: jax.Array  # [K, K]
    first: jax.Array  # [K, V]
    trans: jax.Array  # [K, V, V]


def _cdf(p: np.ndarray) -> jax.Array:
    """Cumulative distribution along the last axis, exactly 1 from the last positive entry on, so
    inverse-CDF sampling with u in [0, 1) never returns an impossible token (even after rounding)."""
    cdf = np.cumsum(p, axis=-1)
    last = (p.shape[-1] - 1) - np.argmax((p > 0)[..., ::-1], axis=-1)
    cdf = np.where(np.arange(p.shape[-1]) >= last[..., None], 1.0, cdf)
    return jnp.asarray(cdf, jnp.float32)


def cdfs(cfg: Config) -> Cdfs:
    """The language's distributions (`language`) as cumulative distributions on the device, for inverse-CDF sampling."""
    return Cdfs(*(_cdf(a) for a in language(cfg)))


def shape_config(cfg: Config) -> Config:
    """`cfg` with every field that only changes probabilities reset: programs that take the
    language as arrays (`Cdfs`, `latent_bayes.LogLanguage`) compile once per shape."""
    return dataclasses.replace(
        cfg,
        chain_stay=0.5,
        chain_move="next",
        ambiguity=0.0,
        first_letter_ambiguity=None,
        language_seed=0,
        language_rng="default",
    )


def _draw(cdf: jax.Array, u: jax.Array) -> jax.Array:
    """Inverse-CDF sampling: the index v with cdf[v - 1] <= u < cdf[v] (u broadcasts over cdf[:-1])."""
    return jnp.sum(u[..., None] >= cdf, axis=-1).astype(jnp.int32)


def sample_intentions(
    key: jax.Array, cfg: Config, batch_size: int, same_intention: bool = False, cdf: Cdfs | None = None
) -> jax.Array:
    """theta [B, M] from the chain (or one intention repeated M times when `same_intention`)."""
    cdf = cdfs(cfg) if cdf is None else cdf
    u = jax.random.uniform(key, (batch_size, cfg.n_messages))
    theta0 = _draw(cdf.prior, u[:, 0])
    if same_intention or cfg.n_messages == 1:
        return jnp.repeat(theta0[:, None], cfg.n_messages, axis=1)

    def step(theta, u_B):
        nxt = _draw(cdf.chain[theta], u_B)
        return nxt, nxt

    _, rest = jax.lax.scan(step, theta0, u[:, 1:].T)
    return jnp.concatenate([theta0[:, None], rest.T], axis=1)


def sample_letters(key: jax.Array, cfg: Config, theta_BM: jax.Array, cdf: Cdfs | None = None) -> jax.Array:
    """Letters [B, M, L] of messages whose intentions are `theta_BM` (one uniform draw per letter)."""
    chex.assert_rank(theta_BM, 2)
    cdf = cdfs(cfg) if cdf is None else cdf
    u = jax.random.uniform(key, (cfg.message_len, *theta_BM.shape))
    x1 = _draw(cdf.first[theta_BM], u[0])

    def step(prev, u_BM):
        nxt = _draw(cdf.trans[theta_BM, prev], u_BM)
        return nxt, nxt

    _, rest = jax.lax.scan(step, x1, u[1:])  # [L - 1, B, M]
    return jnp.concatenate([x1[None], rest]).transpose(1, 2, 0)


def assemble(cfg: Config, letters_BML: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(inputs [B, T], targets [B, T]) of the token stream [D, msg_1, D, ..., D, msg_M, D]."""
    B = letters_BML.shape[0]
    delim = jnp.full((B, cfg.n_messages, 1), cfg.delimiter, jnp.int32)
    body = jnp.concatenate([delim, letters_BML], axis=-1).reshape(B, cfg.seq_len)
    stream = jnp.concatenate([body, jnp.full((B, 1), cfg.delimiter, jnp.int32)], axis=1)
    return stream[:, :-1], stream[:, 1:]


def sample_sequences(
    key: jax.Array, cfg: Config, batch_size: int, same_intention: bool = False, cdf: Cdfs | None = None
) -> Batch:
    """`batch_size` sequences; with `same_intention` every message of a sequence shares one theta
    (in-context-learning prompts: M - 1 demonstrations of the intention of the last message).
    `cdf` (default: the language of `cfg`) supplies the probabilities as arrays."""
    k_theta, k_letters = jax.random.split(key)
    theta = sample_intentions(k_theta, cfg, batch_size, same_intention, cdf)
    inputs, targets = assemble(cfg, sample_letters(k_letters, cfg, theta, cdf))
    return Batch(inputs=inputs, targets=targets, loss_mask=jnp.ones(inputs.shape, jnp.float32), aux={"theta": theta})


def sample(key: jax.Array, cfg: Config, batch_size: int = 1) -> Batch:
    """`batch_size` sequences of the language (intentions from the chain). aux["theta"]: [B, M]."""
    return sample_sequences(key, cfg, batch_size)
