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

The co-occurrence language (`language = "cooccur"`): a concept is a set of token *pairs*, not of
tokens. There are F = `n_markers` start tokens a_0..a_{F-1} and Q = max(K, F) pool tokens
b_0..b_{Q-1}; concept k's features are the pairs (a_i, b_{(i + k) mod Q}) (a Latin square: every
concept uses every start token once, and two concepts never share a pair). The close pair (p, q)
shares its first `n_shared` features (p's row) and each of the two has its own fresh b token for
each other feature, so the two are mirror images (swapping those fresh tokens swaps the concepts:
neither is favoured by the language). A position whose draw falls in a slot (as above; concept k's
slot is on only when z_k = 1) *starts a pair* unless the position before it drew a slot too:
x_t = a, x_{t+1} = b, the pair (a, b) a uniform feature of the firing concept, or for the
background slot a uniform start token and an independent uniform b (pool and fresh tokens). No
single token tells a concept: every concept uses every start token, and the pool tokens occur in
every concept's pairs; which b follows which a does, so a model must learn the pairs, and infer
from earlier pairs in the context which concepts are on, to predict the b after an a.
For probes (paired stimuli, base sequences) the co-occurrence language ends every sequence with a
pair start: positions T - 2 and T - 1 draw no slot, x_{T-1} is a uniform start token (the same in
both members of a pair, where probes read) and x_T an independent uniform b (the off text's
continuation). The concept's next-token mass there is the probability of its own partner of that
start token (`next_token_masks`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import ClassVar

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.config import TaskSection, _choice, _positive
from jaxlab.errors import ConfigError
from jaxlab.tasks.batch import Batch, TaskSpec

LANGUAGES = ("markers", "cooccur")
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
    language: str = "markers"

    FIELD_DOCS: ClassVar[dict[str, str]] = {
        "seq_len": "tokens T per sequence (next-token targets)",
        "n_base": "base tokens of the underlying Markov chain",
        "branching": "successors of each base token in the chain's fixed random table",
        "names": "the concepts' names, one per concept",
        "freqs": "per concept, the probability that it is on in a sequence",
        "strengths": "per concept, the probability that a position shows one of its markers while it is on",
        "n_markers": "marker tokens per concept (cooccur: token pairs per concept)",
        "close_pair": "two concept indices that share n_shared markers (empty: no pair)",
        "n_shared": "markers (cooccur: token pairs) the close pair shares",
        "background": "probability that a position shows a marker of a uniform concept, whatever is on",
        "world_seed": "seed of the base chain's successor table",
        "language": "markers: a concept prefers its own marker tokens; cooccur: a concept is a set of token pairs "
        "(module docstring)",
    }
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"language": LANGUAGES}

    def validate(self) -> None:
        n = self._name
        _choice(n("language"), self.language, LANGUAGES)
        _positive(n("seq_len"), self.seq_len)
        least = 4 if self.language == "cooccur" else 2  # cooccur: a context, two quiet positions, a pair start
        if self.seq_len < least:
            raise ConfigError(n("seq_len"), f"must be >= {least} for language {self.language!r}, got {self.seq_len}")
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


def feature_table(cfg: Config) -> np.ndarray:
    """[K, F, 2] token ids (a, b) of each concept's pairs in the co-occurrence language (module docstring).

    Start tokens a_i = n_base + i (i < F = n_markers), pool tokens b_j = n_base + F + j (j < Q = max(K, F));
    concept k's pair i is (a_i, b_{(i + k) mod Q}). Of the close pair (p, q), q takes p's first n_shared pairs,
    and each of p and q gets fresh b tokens (after the pool: p's first, then q's) for its other pairs.
    """
    K, F = cfg.n_concepts, cfg.n_markers
    Q = max(K, F)
    a0, b0 = cfg.n_base, cfg.n_base + F
    table = np.zeros((K, F, 2), np.int32)
    for k in range(K):
        for i in range(F):
            table[k, i] = (a0 + i, b0 + (i + k) % Q)
    if cfg.close_pair:
        p, q = sorted(cfg.close_pair)
        table[q, :, 1] = table[p, :, 1]
        fresh = b0 + Q
        for k in (p, q):
            for i in range(cfg.n_shared, F):
                table[k, i, 1] = fresh
                fresh += 1
    return table


def start_tokens(cfg: Config) -> np.ndarray:
    """[F] the start tokens a_i of the co-occurrence language."""
    return np.arange(cfg.n_base, cfg.n_base + cfg.n_markers, dtype=np.int32)


def pool_tokens(cfg: Config) -> np.ndarray:
    """The b tokens of the co-occurrence language (pool and fresh), ascending: the background's b draws."""
    return np.unique(feature_table(cfg)[:, :, 1]).astype(np.int32)


def vocab_size(cfg: Config) -> int:
    """Base tokens plus every marker (cooccur: start and b) token: one more than the largest id."""
    table = feature_table(cfg) if cfg.language == "cooccur" else marker_table(cfg)
    return int(table.max()) + 1


def marker_mask(cfg: Config) -> np.ndarray:
    """[K, V] float: 1 where token v is one of concept k's markers (cooccur: a token of one of its pairs)."""
    mask = np.zeros((cfg.n_concepts, vocab_size(cfg)), np.float32)
    table = feature_table(cfg).reshape(cfg.n_concepts, -1) if cfg.language == "cooccur" else marker_table(cfg)
    for k, ids in enumerate(table):
        mask[k, ids] = 1.0
    return mask


def partner_table(cfg: Config) -> np.ndarray:
    """[K, V] int: concept k's b token after start token v (cooccur), -1 where v starts none of its pairs."""
    out = np.full((cfg.n_concepts, vocab_size(cfg)), -1, np.int32)
    for k, pairs in enumerate(feature_table(cfg)):
        out[k, pairs[:, 0]] = pairs[:, 1]
    return out


def next_token_masks(cfg: Config, tokens_NT: jax.Array) -> jax.Array:
    """[K, N, V] float: the tokens that show concept k next, after each sequence's last token.

    markers: concept k's markers (the same for every sequence); cooccur: concept k's partner of the last
    token (none when the last token starts no pair).
    """
    chex.assert_rank(tokens_NT, 2)
    N, V = tokens_NT.shape[0], vocab_size(cfg)
    if cfg.language != "cooccur":
        return jnp.broadcast_to(jnp.asarray(marker_mask(cfg))[:, None, :], (cfg.n_concepts, N, V))
    partner_KN = jnp.asarray(partner_table(cfg))[:, tokens_NT[:, -1]]
    return jax.nn.one_hot(partner_KN, V, dtype=jnp.float32)  # -1 -> a zero row


def concept_hits(cfg: Config, tokens_NS: jax.Array, start: int) -> jax.Array:
    """[N, K] occurrences of each concept at positions t >= start of the sequences.

    markers: positions holding one of concept k's markers; cooccur: positions t >= max(start, 1) where
    (x_{t-1}, x_t) is one of concept k's pairs (the pair may start just before `start`).
    """
    chex.assert_rank(tokens_NS, 2)
    if cfg.language != "cooccur":
        mask_KV = jnp.asarray(marker_mask(cfg))
        return jnp.sum(mask_KV[:, tokens_NS[:, start:]], axis=-1).T
    first = max(start, 1)
    prev, cur = tokens_NS[:, first - 1 : -1], tokens_NS[:, first:]
    partner_KV = jnp.asarray(partner_table(cfg))
    return jnp.sum(partner_KV[:, prev] == cur[None], axis=-1).T.astype(jnp.float32)


def successor_table(cfg: Config) -> jax.Array:
    """[n_base, branching] distinct successors of each base token, fixed by `world_seed`."""
    key = jax.random.key(cfg.world_seed, impl="threefry2x32")
    scores = jax.random.uniform(key, (cfg.n_base, cfg.n_base))
    return jnp.argsort(scores, axis=-1)[:, : cfg.branching].astype(jnp.int32)


def spec(cfg: Config) -> TaskSpec:
    """The `TaskSpec`: `seq_len` token ids, next-token cross-entropy over the vocabulary (`vocab_size`)."""
    V = vocab_size(cfg)
    return TaskSpec(kind=cfg.kind, seq_len=cfg.seq_len, output_dim=V, loss="xent", vocab_size=V)


def _draws(key: jax.Array, cfg: Config, batch_size: int, seq_len: int | None = None) -> dict[str, jax.Array]:
    """Everything random about a sequence except its concepts: base chain, slot draws, marker choices."""
    B, L, K = batch_size, (cfg.seq_len if seq_len is None else seq_len) + 1, cfg.n_concepts
    k0, k_succ, k_u, k_m, k_g = jax.random.split(key, 5)
    succ = successor_table(cfg)
    first = jax.random.randint(k0, (B,), 0, cfg.n_base)
    choices = jax.random.randint(k_succ, (L - 1, B), 0, cfg.branching)

    def step(b, j):
        nxt = succ[b, j]
        return nxt, nxt

    _, rest = jax.lax.scan(step, first, choices)
    base = jnp.concatenate([first[None], rest], axis=0).T  # [B, L]
    out = {
        "base": base,
        "u": jax.random.uniform(k_u, (B, L)),
        "marker": jax.random.randint(k_m, (B, L), 0, cfg.n_markers),
        "bg_concept": jax.random.randint(k_g, (B, L), 0, K),
    }
    if cfg.language == "cooccur":  # drawn from their own keys: the markers language's draws stay as they were
        k_a, k_b = jax.random.split(jax.random.fold_in(k_g, 1))
        out["bg_a"] = jax.random.randint(k_a, (B, L), 0, cfg.n_markers)
        out["bg_b"] = jax.random.randint(k_b, (B, L), 0, len(pool_tokens(cfg)))
    return out


def _fires(cfg: Config, u_BL: jax.Array, z_BK: jax.Array) -> jax.Array:
    """[B, L, K]: concept k's slot holds u, upper[k] - width[k] <= u < upper[k] (module docstring)."""
    strengths = jnp.asarray(cfg.strengths, jnp.float32)
    widths = z_BK.astype(jnp.float32) * strengths  # [B, K]
    upper = cfg.background + jnp.cumsum(widths, axis=-1)  # [B, K] right edge of each concept's slot
    return (u_BL[..., None] < upper[:, None, :]) & (u_BL[..., None] >= (upper - widths)[:, None, :])


def _emit_pairs(cfg: Config, draws: dict[str, jax.Array], z_BK: jax.Array) -> jax.Array:
    """Token ids [B, L] of the co-occurrence language: a drawn slot starts a pair unless the position before it
    drew one too; the pair's b takes the next position (module docstring)."""
    feats = jnp.asarray(feature_table(cfg))
    starts, pool = jnp.asarray(start_tokens(cfg)), jnp.asarray(pool_tokens(cfg))
    u = draws["u"]
    fires = _fires(cfg, u, z_BK)
    any_fire = jnp.any(fires, axis=-1)
    drawn = any_fire | (u < cfg.background)
    no = jnp.zeros_like(drawn[:, :1])
    start = drawn & ~jnp.concatenate([no, drawn[:, :-1]], axis=1)
    k_fire = jnp.argmax(fires, axis=-1)
    a_tok = jnp.where(any_fire, feats[k_fire, draws["marker"], 0], starts[draws["bg_a"]])
    b_tok = jnp.where(any_fire, feats[k_fire, draws["marker"], 1], pool[draws["bg_b"]])
    second = jnp.concatenate([no, start[:, :-1]], axis=1)
    b_prev = jnp.concatenate([jnp.zeros_like(b_tok[:, :1]), b_tok[:, :-1]], axis=1)
    return jnp.where(start, a_tok, jnp.where(second, b_prev, draws["base"])).astype(jnp.int32)


def emit(cfg: Config, draws: dict[str, jax.Array], z_BK: jax.Array) -> jax.Array:
    """Token ids [B, L] from the draws and concept flags z [B, K] (see the module docstring)."""
    if cfg.language == "cooccur":
        return _emit_pairs(cfg, draws, z_BK)
    table = jnp.asarray(marker_table(cfg))
    u = draws["u"]  # [B, L]
    fires = _fires(cfg, u, z_BK)  # [B, L, K]
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


def _base_last(cfg: Config, draws: dict[str, jax.Array], T: int) -> dict[str, jax.Array]:
    """The draws with input position T - 1 made a base token (u = 1 falls in no slot); cooccur: T - 2 too,
    so that no pair runs into T - 1 (`_end_with_start` then puts a pair start there)."""
    quiet = 2 if cfg.language == "cooccur" else 1
    return {**draws, "u": draws["u"].at[:, T - quiet : T].set(1.0)}


def _end_with_start(cfg: Config, draws: dict[str, jax.Array], tokens_BL: jax.Array, T: int) -> jax.Array:
    """cooccur: x_{T-1} a uniform start token and x_T (if present) an independent uniform b, from the
    background's draws at T - 1 (module docstring); markers: the tokens as they are."""
    if cfg.language != "cooccur":
        return tokens_BL
    a = jnp.asarray(start_tokens(cfg))[draws["bg_a"][:, T - 1]]
    tokens_BL = tokens_BL.at[:, T - 1].set(a)
    if tokens_BL.shape[1] > T:
        tokens_BL = tokens_BL.at[:, T].set(jnp.asarray(pool_tokens(cfg))[draws["bg_b"][:, T - 1]])
    return tokens_BL


def base_sequences(key: jax.Array, cfg: Config, n: int, seq_len: int | None = None) -> jax.Array:
    """[n, T] input tokens with every concept off (background markers only) and a base token last
    (cooccur: a pair start last). `seq_len` (default cfg.seq_len) sets T."""
    return base_texts(key, cfg, n, seq_len)[:, :-1]


def base_texts(key: jax.Array, cfg: Config, n: int, seq_len: int | None = None) -> jax.Array:
    """[n, T + 1] tokens of `base_sequences` with their next token: inputs [:, :-1], targets [:, 1:]
    (non-concept text, for the loss under steering)."""
    T = cfg.seq_len if seq_len is None else seq_len
    z = jnp.zeros((n, cfg.n_concepts), jnp.int32)
    draws = _base_last(cfg, _draws(key, cfg, n, T), T)
    return _end_with_start(cfg, draws, emit(cfg, draws, z), T)


def paired_stimuli(key: jax.Array, cfg: Config, concept: int | jax.Array, n_pairs: int) -> tuple[jax.Array, jax.Array]:
    """(on [n, T], off [n, T]) input tokens: the same draws with `concept` on vs off, others off.

    `concept` may be traced (vmap over concepts). The "on" member has at least one marker (cooccur: one
    pair) of the concept; the last input token, where the probes read, is the same in both: a base
    token (cooccur: a pair start; module docstring).
    """
    T = cfg.seq_len
    draws = _base_last(cfg, _draws(key, cfg, n_pairs), T)
    K = cfg.n_concepts
    z_on = jnp.broadcast_to(jax.nn.one_hot(concept, K, dtype=jnp.int32), (n_pairs, K))
    strength = jnp.asarray(cfg.strengths, jnp.float32)[concept]
    lo = cfg.background  # with every other concept off, the concept's slot is [background, background + strength)
    ctx = T - 2 if cfg.language == "cooccur" else T - 1  # the context before the quiet end
    u = draws["u"][:, :ctx]
    rows = jnp.arange(n_pairs)
    in_slot = (u >= lo) & (u < lo + strength)
    if cfg.language == "cooccur":  # a fire counts only where it starts a pair: the position before drew no slot
        drawn = jnp.concatenate([jnp.zeros_like(in_slot[:, :1]), (u < lo + strength)[:, :-1]], axis=1)
        in_slot = in_slot & ~drawn
    fired = jnp.any(in_slot, axis=-1)
    first = jnp.argmin(u, axis=-1)
    forced = u
    if cfg.language == "cooccur":  # the forced start's predecessor draws no slot, so the pair is not dropped
        before = jnp.maximum(first - 1, 0)
        forced = forced.at[rows, before].set(jnp.where(first > 0, 1.0, forced[rows, before]))
    forced = forced.at[rows, first].set(lo + 0.5 * strength)  # mid-slot: no rounding at the edges
    draws = {**draws, "u": draws["u"].at[:, :ctx].set(jnp.where(fired[:, None], u, forced))}
    on = _end_with_start(cfg, draws, emit(cfg, draws, z_on), T)[:, :-1]
    off = _end_with_start(cfg, draws, emit(cfg, draws, jnp.zeros_like(z_on)), T)[:, :-1]
    chex.assert_equal_shape([on, off])
    return on, off
