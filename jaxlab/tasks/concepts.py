"""A synthetic concept language: a base Markov chain plus latent concepts that prefer marker tokens.

Setting of She et al. (2025), "How Does Controllability Emerge In Language Models During
Pretraining?", scaled down to a language whose concepts ("emotions") are known exactly.

Tokens: `n_base` base tokens 0..n_base-1, then marker tokens. Concept k owns `n_markers` marker
tokens M_k; the two concepts of `close_pair` share `n_shared` of them (a "close pair", like anger
and sadness), so telling them apart needs their own markers only.

One sequence of T + 1 tokens (inputs: the first T, targets: the last T, next-token cross-entropy):
  z_k ~ Bernoulli(freqs[k]) independently (the latent concepts of the sequence);
  b_0 ~ U{base}, b_{t+1} ~ U{succ[b_t, 0..branching-1]}  (the base chain; `succ` is a fixed random
      successor table drawn from `world_seed`, the same for every run);
  x_t = a marker of concept k, uniform in M_k,  if u_t falls in concept k's slot of width
        strengths[k] * z_k;
      = a marker of a uniform concept, uniform in its markers, if u_t falls in the background slot
        of width `background` (markers also occur, rarely, without their concept);
      = b_t otherwise,
  with one u_t ~ U(0, 1) per position; the slots tile [0, background + sum_k strengths[k] z_k).
The base chain runs underneath: a marker replaces b_t in the text but not in the chain.

So P(x_t in M_k | z) = z_k strengths[k] + background / K (+ the partner's share for shared markers).
Concept frequency (`freqs`) and strength (`strengths`) set how much evidence for a concept training
provides, hence how early a model learns it.

Paired stimuli (`paired_stimuli`): the same base chain and the same draws u, marker choices and
background, with concept k off in one member and on in the other, every other concept off. The last
input token, where probes read, is a base token in both members (like the fixed template token at
the end of RepE's stimuli), so the pair differs only in the context before it. The "on" member
carries at least one marker: if no u_t (t < T - 1) falls in concept k's slot, the position of the
smallest such u_t is made to fire (the pair would otherwise be identical). `base_sequences` are
"off" members: every concept off, a base token last.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.config import TaskSection, _positive
from jaxlab.errors import ConfigError
from jaxlab.tasks.batch import Batch, TaskSpec

_NAME = re.compile(r"^[a-z][a-z0-9]*$")  # no [ ] , = : a concept is a metric parameter (`results.metric_name`)


def _reads_as_number(name: str) -> bool:
    try:
        float(name)
    except ValueError:
        return False
    return True


@dataclass(frozen=True)
class Config(TaskSection):
    """The `task` section of the concept language (`kind = "concepts"`; module docstring)."""

    kind: ClassVar[str] = "concepts"
    seq_len: int = 32
    n_base: int = 32
    branching: int = 3
    names: tuple[str, ...] = ("joy", "anger", "sadness", "fear")
    freqs: tuple[float, ...] = (0.4, 0.25, 0.25, 0.05)
    strengths: tuple[float, ...] = (0.15, 0.15, 0.08, 0.15)
    n_markers: int = 4
    close_pair: tuple[int, ...] = (1, 2)
    n_shared: int = 2
    background: float = 0.01
    world_seed: int = 0

    FIELD_DOCS: ClassVar[dict[str, str]] = {
        "seq_len": "tokens T per sequence (next-token targets)",
        "n_base": "base tokens of the underlying Markov chain",
        "branching": "successors of each base token in the chain's fixed random table",
        "names": "the concepts' names, one per concept",
        "freqs": "per concept, the probability that it is on in a sequence",
        "strengths": "per concept, the probability that a position shows one of its markers while it is on",
        "n_markers": "marker tokens per concept",
        "close_pair": "two concept indices that share n_shared markers (empty: no pair)",
        "n_shared": "markers the close pair shares",
        "background": "probability that a position shows a marker of a uniform concept, whatever is on",
        "world_seed": "seed of the base chain's successor table",
    }

    def validate(self) -> None:
        n = self._name
        _positive(n("seq_len"), self.seq_len)
        if self.seq_len < 2:
            raise ConfigError(n("seq_len"), f"must be >= 2, got {self.seq_len}")
        _positive(n("n_base"), self.n_base)
        _positive(n("n_markers"), self.n_markers)
        if not 1 <= self.branching <= self.n_base:
            raise ConfigError(n("branching"), f"must be in [1, n_base={self.n_base}], got {self.branching}")
        K = len(self.names)
        if K < 1:
            raise ConfigError(n("names"), "needs at least one concept")
        for name in self.names:
            if not _NAME.match(name):
                raise ConfigError(n("names"), f"{name!r} is not a lowercase identifier like 'joy' or 'c2'")
            if _reads_as_number(name):  # the tidy tables' `concept` column would read it as a float
                raise ConfigError(n("names"), f"{name!r} reads as a number; name the concept otherwise")
        if len(set(self.names)) != K:
            raise ConfigError(n("names"), f"names repeat: {list(self.names)}")
        for field in ("freqs", "strengths"):
            values = getattr(self, field)
            if len(values) != K:
                raise ConfigError(n(field), f"needs one value per concept ({K} names), got {len(values)}")
            for v in values:
                if not 0.0 < v <= 1.0:
                    raise ConfigError(n(field), f"values must be in (0, 1], got {v!r}")
        if not 0.0 <= self.background < 1.0:
            raise ConfigError(n("background"), f"must be in [0, 1), got {self.background!r}")
        if self.background + sum(self.strengths) > 1.0:
            raise ConfigError(
                n("strengths"), f"background + sum(strengths) must be <= 1, got {self.background + sum(self.strengths)}"
            )
        if self.close_pair:
            a_b = self.close_pair
            if len(a_b) != 2 or a_b[0] == a_b[1] or not all(0 <= i < K for i in a_b):
                raise ConfigError(n("close_pair"), f"needs two distinct concept indices in [0, {K}) or none, got {a_b}")
            if not 0 <= self.n_shared < self.n_markers:
                raise ConfigError(n("n_shared"), f"must be in [0, n_markers={self.n_markers}), got {self.n_shared}")

    @property
    def n_concepts(self) -> int:
        """K, the number of concepts (one per name)."""
        return len(self.names)


ConceptsConfig = Config


def marker_table(cfg: Config) -> np.ndarray:
    """[K, n_markers] token ids of each concept's markers (the close pair shares `n_shared` of them).

    Of the close pair, the concept with the larger index takes the other's last n_shared markers as
    its first ones; every other marker id is new.
    """
    K, M = cfg.n_concepts, cfg.n_markers
    table = np.zeros((K, M), np.int32)
    next_id = cfg.n_base
    first, second = sorted(cfg.close_pair) if cfg.close_pair else (-1, -1)
    for k in range(K):
        start = 0
        if k == second and cfg.n_shared:
            table[k, : cfg.n_shared] = table[first, M - cfg.n_shared :]
            start = cfg.n_shared
        for m in range(start, M):
            table[k, m] = next_id
            next_id += 1
    return table


def vocab_size(cfg: Config) -> int:
    """Base tokens plus every marker token: one more than the largest marker id."""
    return int(marker_table(cfg).max()) + 1


def marker_mask(cfg: Config) -> np.ndarray:
    """[K, V] float: 1 where token v is one of concept k's markers."""
    mask = np.zeros((cfg.n_concepts, vocab_size(cfg)), np.float32)
    for k, ids in enumerate(marker_table(cfg)):
        mask[k, ids] = 1.0
    return mask


def successor_table(cfg: Config) -> jax.Array:
    """[n_base, branching] distinct successors of each base token, fixed by `world_seed`."""
    key = jax.random.key(cfg.world_seed, impl="threefry2x32")
    scores = jax.random.uniform(key, (cfg.n_base, cfg.n_base))
    return jnp.argsort(scores, axis=-1)[:, : cfg.branching].astype(jnp.int32)


def spec(cfg: Config) -> TaskSpec:
    """The `TaskSpec`: `seq_len` token ids, next-token cross-entropy over the vocabulary (`vocab_size`)."""
    V = vocab_size(cfg)
    return TaskSpec(kind=cfg.kind, seq_len=cfg.seq_len, output_dim=V, loss="xent", vocab_size=V)


def _draws(key: jax.Array, cfg: Config, batch_size: int) -> dict[str, jax.Array]:
    """Everything random about a sequence except its concepts: base chain, slot draws, marker choices."""
    B, L, K = batch_size, cfg.seq_len + 1, cfg.n_concepts
    k0, k_succ, k_u, k_m, k_g = jax.random.split(key, 5)
    succ = successor_table(cfg)
    first = jax.random.randint(k0, (B,), 0, cfg.n_base)
    choices = jax.random.randint(k_succ, (L - 1, B), 0, cfg.branching)

    def step(b, j):
        nxt = succ[b, j]
        return nxt, nxt

    _, rest = jax.lax.scan(step, first, choices)
    base = jnp.concatenate([first[None], rest], axis=0).T  # [B, L]
    return {
        "base": base,
        "u": jax.random.uniform(k_u, (B, L)),
        "marker": jax.random.randint(k_m, (B, L), 0, cfg.n_markers),
        "bg_concept": jax.random.randint(k_g, (B, L), 0, K),
    }


def emit(cfg: Config, draws: dict[str, jax.Array], z_BK: jax.Array) -> jax.Array:
    """Token ids [B, L] from the draws and concept flags z [B, K] (see the module docstring)."""
    table = jnp.asarray(marker_table(cfg))
    strengths = jnp.asarray(cfg.strengths, jnp.float32)
    widths = z_BK.astype(jnp.float32) * strengths  # [B, K]
    upper = cfg.background + jnp.cumsum(widths, axis=-1)  # [B, K] right edge of each concept's slot
    u = draws["u"]  # [B, L]
    # concept k fires where upper[k] - width[k] <= u < upper[k]
    fires = (u[..., None] < upper[:, None, :]) & (u[..., None] >= (upper - widths)[:, None, :])  # [B, L, K]
    any_fire = jnp.any(fires, axis=-1)
    k_fire = jnp.argmax(fires, axis=-1)
    concept_tok = table[k_fire, draws["marker"]]
    bg_tok = table[draws["bg_concept"], draws["marker"]]
    is_bg = u < cfg.background
    return jnp.where(any_fire, concept_tok, jnp.where(is_bg, bg_tok, draws["base"])).astype(jnp.int32)


def _batch(tokens_BL: jax.Array, aux: dict) -> Batch:
    B, L = tokens_BL.shape
    return Batch(inputs=tokens_BL[:, :-1], targets=tokens_BL[:, 1:], loss_mask=jnp.ones((B, L - 1)), aux=aux)


def sample(key: jax.Array, cfg: Config, batch_size: int = 1) -> Batch:
    """`batch_size` sequences. aux["z"]: [B, K] concept flags (int32)."""
    k_z, k_d = jax.random.split(key)
    z = jax.random.uniform(k_z, (batch_size, cfg.n_concepts)) < jnp.asarray(cfg.freqs)
    tokens = emit(cfg, _draws(k_d, cfg, batch_size), z)
    return _batch(tokens, {"z": z.astype(jnp.int32)})


def _base_last(draws: dict[str, jax.Array], T: int) -> dict[str, jax.Array]:
    """The draws with input position T - 1 made a base token (u = 1 falls in no slot)."""
    return {**draws, "u": draws["u"].at[:, T - 1].set(1.0)}


def base_sequences(key: jax.Array, cfg: Config, n: int) -> jax.Array:
    """[n, T] input tokens with every concept off (background markers only) and a base token last."""
    z = jnp.zeros((n, cfg.n_concepts), jnp.int32)
    return emit(cfg, _base_last(_draws(key, cfg, n), cfg.seq_len), z)[:, :-1]


def paired_stimuli(key: jax.Array, cfg: Config, concept: int | jax.Array, n_pairs: int) -> tuple[jax.Array, jax.Array]:
    """(on [n, T], off [n, T]) input tokens: the same draws with `concept` on vs off, others off.

    `concept` may be traced (vmap over concepts). The "on" member has at least one marker of the
    concept; the last input token, where the probes read, is the same base token in both (module
    docstring).
    """
    T = cfg.seq_len
    draws = _base_last(_draws(key, cfg, n_pairs), T)
    K = cfg.n_concepts
    z_on = jnp.broadcast_to(jax.nn.one_hot(concept, K, dtype=jnp.int32), (n_pairs, K))
    strength = jnp.asarray(cfg.strengths, jnp.float32)[concept]
    lo = cfg.background  # with every other concept off, the concept's slot is [background, background + strength)
    u = draws["u"][:, : T - 1]  # the context before the reading position
    fired = jnp.any((u >= lo) & (u < lo + strength), axis=-1)
    first = jnp.argmin(u, axis=-1)
    forced = u.at[jnp.arange(n_pairs), first].set(lo + 0.5 * strength)  # mid-slot: no rounding at the edges
    draws = {**draws, "u": draws["u"].at[:, : T - 1].set(jnp.where(fired[:, None], u, forced))}
    on = emit(cfg, draws, z_on)[:, :-1]
    off = emit(cfg, draws, jnp.zeros_like(z_on))[:, :-1]
    chex.assert_equal_shape([on, off])
    return on, off
