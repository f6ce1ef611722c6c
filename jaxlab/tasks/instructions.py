"""A simplified instruction-following task (Wu & Varshney, "Transformer-based Causal Language Models
Perform Clustering", 2024).

There are K tasks. Task k is a function f_k from a shared set of inputs to sequences of
`output_len` output tokens; all tasks share the inputs, so only the instruction tells them apart.
An input is `input_len` tokens over an alphabet of `n_inputs` (one token, by default).
`sequence_tasks` says what the functions are:
  ()        (the default) f_k is a fixed random table (an input's answer cannot be inferred from
            other inputs: there is no unseen-input split);
  names     task k is the rule `sequence_tasks[k]`, one of `SEQUENCE_TASKS`: copy, reverse, sort
            (ascending), shift (each symbol + 1 mod n_inputs), map (each symbol through a fixed
            random permutation of the alphabet); the output is as long as the input, and output
            token v is the output group's token v. A fraction `heldout_input_frac` of the input
            sequences is held out of training (`unseen_inputs`): rules, unlike tables, give an
            unseen input's answer from the seen ones.
Each task has M instruction distributions (`n_distributions` seen in training,
`n_unseen_distributions` held out). A distribution is a small regular grammar: a
template of `template_len` slots, each one of
  fixed        one token,                                 e.g.  "give"
  optional     a token or nothing (a filler token),       e.g.  "please"?
  alternative  one of `alt_width` tokens,                 e.g.  ("state" | "tell" | "name")
so one distribution produces 2^n_optional * alt_width^n_alternative surface strings. Fixed and
alternative slots draw their tokens from the task's own keywords with probability `keyword_prob`
(at least one slot always does) and otherwise from filler tokens shared by all tasks: the keywords
are what an unseen distribution of the same task has in common with the seen ones.

A sequence (instruction left-padded to `template_len`, so every position has one role):

    PAD .. PAD  i_1 .. i_n  SEP_IN  x_1 .. x_input_len  SEP_OUT  y_1 .. y_output_len

Inputs are the sequence without its last token; targets[t] is token t + 1 (the "xent" loss scores
the model's output at t against targets[t]); the loss counts only the positions whose next token is
an output token. The world (task functions, templates, the held-out strings) is a fixed function of
the config (`world_seed`), built once on the host; `sample` only draws from it, inside jit/vmap.

Splits (`sample_split`): "train" (seen distributions, strings not held out), "unseen_strings"
(held-out strings of seen distributions: a fraction `heldout_frac` of each), "unseen_distributions"
(every string of the held-out distributions), "unseen_inputs" (seen distributions and strings, held-out
input sequences). `aux` holds the labels: task, distribution (global index), input (index of the input
sequence, first token most significant), string (index within its distribution).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.config import TaskSection, _choice, _positive
from jaxlab.errors import ConfigError
from jaxlab.tasks.batch import Batch, TaskSpec

SPLITS = ("train", "unseen_strings", "unseen_distributions", "unseen_inputs")
SEQUENCE_TASKS = ("copy", "reverse", "sort", "shift", "map")
MAX_INPUT_SEQUENCES = 2**20  # the world holds every task's answer to every input sequence
PAD, SEP_IN, SEP_OUT = 0, 1, 2
N_SPECIAL = 3
FIXED, OPTIONAL, ALTERNATIVE = 0, 1, 2


@dataclass(frozen=True)
class Config(TaskSection):
    """The `task` section of the instruction-following task (`kind = "instructions"`; module docstring)."""

    kind: ClassVar[str] = "instructions"
    n_tasks: int = 8
    n_inputs: int = 5
    n_output_tokens: int = 16
    output_len: int = 2
    keywords_per_task: int = 4
    n_fillers: int = 24
    n_distributions: int = 4
    n_unseen_distributions: int = 2
    template_len: int = 8
    n_optional: int = 2
    n_alternative: int = 3
    alt_width: int = 3
    keyword_prob: float = 0.4
    heldout_frac: float = 0.2
    sequence_tasks: tuple[str, ...] = ()
    input_len: int = 1
    heldout_input_frac: float = 0.0
    world_seed: int = 0

    FIELD_DOCS: ClassVar[dict[str, str]] = {
        "n_tasks": "K tasks, each a fixed random map from the inputs to output sequences",
        "n_inputs": "input tokens, shared by all tasks",
        "n_output_tokens": "output tokens the answers are made of",
        "output_len": "output tokens per answer",
        "keywords_per_task": "keyword tokens each task owns",
        "n_fillers": "filler tokens, shared by all tasks",
        "n_distributions": "instruction distributions (small grammars) per task seen in training",
        "n_unseen_distributions": "further distributions per task, held out of training",
        "template_len": "slots of an instruction template (instructions are left-padded to it)",
        "n_optional": "optional slots per template (a token or nothing)",
        "n_alternative": "alternative slots per template (one of alt_width tokens)",
        "alt_width": "tokens an alternative slot chooses from",
        "keyword_prob": "probability that a fixed or alternative slot takes a task keyword rather than a filler",
        "heldout_frac": "fraction of the strings of each seen distribution held out of training",
        "sequence_tasks": "the rule of each task (copy, reverse, sort, shift, map), one per task; empty: random tables",
        "input_len": "input tokens per example (with sequence_tasks the output is as long)",
        "heldout_input_frac": "fraction of the input sequences held out of training (sequence_tasks only)",
        "world_seed": "seed of the world: task functions, templates, held-out strings",
    }

    def validate(self) -> None:
        n = self._name
        for name in (
            "n_tasks",
            "n_inputs",
            "n_output_tokens",
            "output_len",
            "keywords_per_task",
            "n_fillers",
            "n_distributions",
            "template_len",
            "alt_width",
            "input_len",
        ):
            _positive(n(name), getattr(self, name))
        for name in ("n_unseen_distributions", "n_optional", "n_alternative", "world_seed"):
            _positive(n(name), getattr(self, name), allow_zero=True)
        if self.n_tasks < 2:
            raise ConfigError(n("n_tasks"), f"needs at least 2 tasks to tell apart, got {self.n_tasks}")
        if self.n_optional + self.n_alternative > self.template_len or self.n_optional >= self.template_len:
            raise ConfigError(
                n("template_len"),
                f"must hold the n_optional={self.n_optional} optional and n_alternative={self.n_alternative} "
                f"alternative slots and at least one required slot, got {self.template_len}",
            )
        if not 0.0 <= self.keyword_prob <= 1.0:
            raise ConfigError(n("keyword_prob"), f"must be in [0, 1], got {self.keyword_prob!r}")
        if not 0.0 <= self.heldout_frac < 1.0:
            raise ConfigError(n("heldout_frac"), f"must be in [0, 1), got {self.heldout_frac!r}")
        n_strings = strings_per_distribution(self)
        n_held = heldout_count(self)
        if self.heldout_frac > 0 and n_held < 1:
            raise ConfigError(
                n("heldout_frac"),
                f"holds out no string: a distribution has only {n_strings} strings; "
                "raise heldout_frac, n_optional, n_alternative or alt_width",
            )
        if n_held >= n_strings:
            raise ConfigError(n("heldout_frac"), f"holds out all {n_strings} strings of a distribution")
        self._validate_functions()

    def _validate_functions(self) -> None:
        n = self._name
        if not 0.0 <= self.heldout_input_frac < 1.0:
            raise ConfigError(n("heldout_input_frac"), f"must be in [0, 1), got {self.heldout_input_frac!r}")
        if input_sequences(self) > MAX_INPUT_SEQUENCES:
            raise ConfigError(
                n("input_len"),
                f"n_inputs ** input_len = {input_sequences(self)} input sequences, more than {MAX_INPUT_SEQUENCES}",
            )
        for name in self.sequence_tasks:
            _choice(n("sequence_tasks"), name, SEQUENCE_TASKS)
        if len(set(self.sequence_tasks)) != len(self.sequence_tasks):
            raise ConfigError(n("sequence_tasks"), f"names repeat: {list(self.sequence_tasks)}", SEQUENCE_TASKS)
        if not self.sequence_tasks:
            if self.heldout_input_frac != 0.0:
                raise ConfigError(
                    n("heldout_input_frac"),
                    "must be 0 without sequence_tasks: a random table's answer to an unseen input cannot be inferred",
                )
            return
        if self.n_tasks != len(self.sequence_tasks):
            raise ConfigError(
                n("sequence_tasks"), f"names one rule per task: {len(self.sequence_tasks)} for n_tasks={self.n_tasks}"
            )
        if self.input_len < 2:
            raise ConfigError(
                n("input_len"),
                f"must be >= 2 with sequence_tasks (copy, reverse and sort differ), got {self.input_len}",
            )
        if self.output_len != self.input_len:
            raise ConfigError(
                n("output_len"),
                f"must equal input_len={self.input_len} with sequence_tasks, got {self.output_len}",
            )
        if self.n_output_tokens < self.n_inputs:
            raise ConfigError(
                n("n_output_tokens"),
                f"must be >= n_inputs={self.n_inputs} with sequence_tasks, got {self.n_output_tokens}",
            )
        if self.heldout_input_frac > 0 and not 1 <= heldout_input_count(self) < input_sequences(self):
            raise ConfigError(
                n("heldout_input_frac"),
                f"must hold out at least one and not all of the {input_sequences(self)} input sequences",
            )


InstructionsConfig = Config


def strings_per_distribution(cfg: Config) -> int:
    """2^n_optional * alt_width^n_alternative: the surface strings of one distribution."""
    return 2**cfg.n_optional * cfg.alt_width**cfg.n_alternative


def heldout_count(cfg: Config) -> int:
    """Strings held out of each seen distribution: round(heldout_frac * `strings_per_distribution`)."""
    return round(cfg.heldout_frac * strings_per_distribution(cfg))


def input_sequences(cfg: Config) -> int:
    """n_inputs ** input_len: the distinct inputs."""
    return cfg.n_inputs**cfg.input_len


def heldout_input_count(cfg: Config) -> int:
    """Input sequences held out of training: round(heldout_input_frac * `input_sequences`)."""
    return round(cfg.heldout_input_frac * input_sequences(cfg))


# -- vocabulary and layout ---------------------------------------------------------------------
def vocab_layout(cfg: Config) -> dict[str, int]:
    """First id of each token group: special, keywords (task-major), fillers, inputs, outputs."""
    keywords = N_SPECIAL
    fillers = keywords + cfg.n_tasks * cfg.keywords_per_task
    inputs = fillers + cfg.n_fillers
    outputs = inputs + cfg.n_inputs
    return {
        "keywords": keywords,
        "fillers": fillers,
        "inputs": inputs,
        "outputs": outputs,
        "size": outputs + cfg.n_output_tokens,
    }


def positions(cfg: Config) -> dict[str, int]:
    """Model-input positions of the roles (fixed thanks to left padding)."""
    L, n = cfg.template_len, cfg.input_len
    return {
        "last_instruction": L - 1,
        "sep_input": L,
        "input": L + 1,
        "last_input": L + n,
        "sep_output": L + n + 1,
        "first_output_target": L + n + 1,  # the model's output here is scored against y_1
    }


def seq_len(cfg: Config) -> int:
    """Tokens given to the model: instruction, SEP_IN, input, SEP_OUT, outputs except the last."""
    return cfg.template_len + cfg.input_len + 2 + cfg.output_len - 1


def spec(cfg: Config) -> TaskSpec:
    """The `TaskSpec`: `seq_len(cfg)` token ids from the whole vocabulary (`vocab_layout`), cross-entropy over it."""
    size = vocab_layout(cfg)["size"]
    return TaskSpec(kind=cfg.kind, seq_len=seq_len(cfg), output_dim=size, loss="xent", vocab_size=size)


# -- the world: a fixed function of the config, built once on the host --------------------------
@dataclass(frozen=True)
class World:
    """Arrays (NumPy) that define every task and every instruction distribution.

    D = n_tasks * (n_distributions + n_unseen_distributions); distribution d belongs to task
    d // (n_distributions + n_unseen_distributions) and is seen when d % that < n_distributions.
    """

    functions: np.ndarray  # [K, input_sequences, output_len] output token ids
    slot_kind: np.ndarray  # [D, template_len] FIXED | OPTIONAL | ALTERNATIVE
    slot_tokens: np.ndarray  # [D, template_len, alt_width] token ids (FIXED/OPTIONAL use column 0)
    slot_radix: np.ndarray  # [D, template_len] choices per slot (1, 2 or alt_width)
    dist_task: np.ndarray  # [D]
    seen: np.ndarray  # [D] bool
    train_strings: np.ndarray  # [D, S - H] string indices sampled in training
    heldout_strings: np.ndarray  # [D, max(H, 1)] held-out string indices (seen distributions)
    train_inputs: np.ndarray  # [X - H_x] input sequences sampled in training
    heldout_inputs: np.ndarray  # [max(H_x, 1)] held-out input sequences


@functools.cache
def world(cfg: Config) -> World:
    """The fixed world of `cfg` (task functions, grammars, held-out strings), from `world_seed`."""
    rng = np.random.default_rng([cfg.world_seed, 0x1257])
    lay = vocab_layout(cfg)
    K, L, A = cfg.n_tasks, cfg.template_len, cfg.alt_width
    per_task = cfg.n_distributions + cfg.n_unseen_distributions
    D = K * per_task
    functions = lay["outputs"] + (
        rng.integers(0, cfg.n_output_tokens, size=(K, input_sequences(cfg), cfg.output_len))
        if not cfg.sequence_tasks
        else sequence_functions(cfg)
    )
    slot_kind = np.zeros((D, L), np.int32)
    slot_tokens = np.zeros((D, L, A), np.int32)
    fillers = lay["fillers"] + np.arange(cfg.n_fillers)
    for d in range(D):
        task = d // per_task
        keywords = lay["keywords"] + task * cfg.keywords_per_task + np.arange(cfg.keywords_per_task)
        kinds = np.array([OPTIONAL] * cfg.n_optional + [ALTERNATIVE] * cfg.n_alternative)
        kinds = np.concatenate([kinds, np.full(L - kinds.size, FIXED)])
        kinds = rng.permutation(kinds)
        required = np.flatnonzero(kinds != OPTIONAL)
        is_keyword = (rng.random(L) < cfg.keyword_prob) & (kinds != OPTIONAL)
        is_keyword[rng.choice(required)] = True  # every string names its task at least once
        for s in range(L):
            pool = keywords if is_keyword[s] else fillers
            slot_tokens[d, s] = rng.choice(pool, size=A, replace=pool.size < A)
        slot_kind[d] = kinds
    slot_radix = np.where(slot_kind == ALTERNATIVE, A, np.where(slot_kind == OPTIONAL, 2, 1)).astype(np.int32)
    n_strings, n_held = strings_per_distribution(cfg), heldout_count(cfg)
    perms = np.stack([rng.permutation(n_strings) for _ in range(D)]).astype(np.int32)
    seen = (np.arange(D) % per_task) < cfg.n_distributions
    heldout = perms[:, :n_held] if n_held else perms[:, :1]
    n_inputs_held = heldout_input_count(cfg)
    inputs = np.random.default_rng([cfg.world_seed, 0x1258]).permutation(input_sequences(cfg)).astype(np.int32)
    return World(
        functions=functions.astype(np.int32),
        slot_kind=slot_kind,
        slot_tokens=slot_tokens,
        slot_radix=slot_radix,
        dist_task=(np.arange(D) // per_task).astype(np.int32),
        seen=seen,
        train_strings=perms[:, n_held:],
        heldout_strings=heldout,
        train_inputs=np.sort(inputs[n_inputs_held:]),
        heldout_inputs=np.sort(inputs[:n_inputs_held] if n_inputs_held else inputs[:1]),
    )


def input_digits(cfg: Config, x: np.ndarray | jax.Array) -> np.ndarray | jax.Array:
    """The `input_len` alphabet indices [..., input_len] of input sequence `x` (first token most significant)."""
    place = cfg.n_inputs ** np.arange(cfg.input_len - 1, -1, -1)
    return (x[..., None] // place) % cfg.n_inputs


def sequence_functions(cfg: Config) -> np.ndarray:
    """[K, input_sequences, input_len] alphabet indices of the answers of the sequence tasks (module docstring);
    the permutation of `map` comes from `world_seed`."""
    x_XN = input_digits(cfg, np.arange(input_sequences(cfg)))
    perm = np.random.default_rng([cfg.world_seed, 0x1259]).permutation(cfg.n_inputs)
    answers = {
        "copy": x_XN,
        "reverse": x_XN[:, ::-1],
        "sort": np.sort(x_XN, axis=1),
        "shift": (x_XN + 1) % cfg.n_inputs,
        "map": perm[x_XN],
    }
    return np.stack([answers[name] for name in cfg.sequence_tasks])


def decode_string(cfg: Config, w: World, dist: jax.Array, string: jax.Array) -> jax.Array:
    """Instruction tokens [template_len] of string `string` of distribution `dist`, left-padded.

    The string index is read as a mixed-radix number, one digit per slot (first slot least
    significant): the digit of an optional slot is 1 when its token is present, that of an
    alternative slot picks the token.
    """
    radix = jnp.asarray(w.slot_radix)[dist]
    kind = jnp.asarray(w.slot_kind)[dist]
    place = jnp.concatenate([jnp.ones((1,), jnp.int32), jnp.cumprod(radix)[:-1]])
    digit = (string // place) % radix
    column = jnp.where(kind == ALTERNATIVE, digit, 0)
    tokens = jnp.take_along_axis(jnp.asarray(w.slot_tokens)[dist], column[:, None], axis=1)[:, 0]
    present = (kind != OPTIONAL) | (digit == 1)
    # left-pack: present tokens keep their order and end at the last slot
    L = cfg.template_len
    target = L - jnp.sum(present) + jnp.cumsum(present) - 1
    target = jnp.where(present, target, L)  # absent tokens go to a dropped slot
    return jnp.full((L + 1,), PAD, jnp.int32).at[target].set(tokens)[:L]


def _local_distributions(cfg: Config, split: str) -> np.ndarray:
    """Indices, within a task, of the distributions that `split` draws from."""
    if split == "unseen_distributions":
        return np.arange(cfg.n_distributions, cfg.n_distributions + cfg.n_unseen_distributions)
    return np.arange(cfg.n_distributions)


def sample_split(key: jax.Array, cfg: Config, batch_size: int, split: str = "train", balanced: bool = False) -> Batch:
    """`batch_size` sequences of `split` (see the module docstring).

    With `balanced`, tasks cycle 0, 1, ..., K-1, 0, ... (equal class sizes for clustering);
    otherwise every task is equally likely. Distributions, strings and inputs are uniform.
    """
    _choice("split", split, SPLITS)
    if split == "unseen_distributions" and cfg.n_unseen_distributions == 0:
        raise ConfigError("task.n_unseen_distributions", "is 0: there is no unseen_distributions split")
    if split == "unseen_strings" and heldout_count(cfg) == 0:
        raise ConfigError("task.heldout_frac", "is 0: there is no unseen_strings split")
    if split == "unseen_inputs" and heldout_input_count(cfg) == 0:
        raise ConfigError("task.heldout_input_frac", "is 0: there is no unseen_inputs split")
    w = world(cfg)
    B, K = batch_size, cfg.n_tasks
    per_task = cfg.n_distributions + cfg.n_unseen_distributions
    # one uniform draw for every choice: each random call is a threefry graph to compile
    u = jax.random.uniform(key, (4, B))
    pick = lambda row, n: jnp.minimum(jnp.floor(u[row] * n).astype(jnp.int32), n - 1)
    task = jnp.arange(B, dtype=jnp.int32) % K if balanced else pick(0, K)
    local = jnp.asarray(_local_distributions(cfg, split), jnp.int32)
    dist = task * per_task + local[pick(1, local.size)]
    if split in ("train", "unseen_inputs"):
        table = jnp.asarray(w.train_strings)
    elif split == "unseen_strings":
        table = jnp.asarray(w.heldout_strings)
    else:
        table = jnp.tile(jnp.arange(strings_per_distribution(cfg), dtype=jnp.int32), (w.dist_task.size, 1))
    string = table[dist, pick(2, table.shape[1])]
    inputs = jnp.asarray(w.heldout_inputs if split == "unseen_inputs" else w.train_inputs)
    x = inputs[pick(3, inputs.size)]
    instr_BL = jax.vmap(lambda d, s: decode_string(cfg, w, d, s))(dist, string)
    lay = vocab_layout(cfg)
    y_BO = jnp.asarray(w.functions)[task, x]
    col = lambda v: jnp.full((B, 1), v, jnp.int32)
    x_BN = lay["inputs"] + input_digits(cfg, x)
    seq = jnp.concatenate([instr_BL, col(SEP_IN), x_BN, col(SEP_OUT), y_BO], axis=1)
    T = seq_len(cfg)
    start = positions(cfg)["first_output_target"]
    mask = jnp.zeros((T,)).at[start : start + cfg.output_len].set(1.0)
    aux = {"task": task, "distribution": dist, "input": x, "string": string}
    return Batch(inputs=seq[:, :-1], targets=seq[:, 1:], loss_mask=jnp.broadcast_to(mask, (B, T)), aux=aux)


def sample(key: jax.Array, cfg: Config, batch_size: int = 1) -> Batch:
    """`batch_size` training sequences (seen distributions, strings not held out)."""
    return sample_split(key, cfg, batch_size, "train")


def task_targets(cfg: Config, task: jax.Array, x: jax.Array) -> jax.Array:
    """Output tokens [..., output_len] that task `task` gives input `x` (for counterfactual checks)."""
    return jnp.asarray(world(cfg).functions)[task, x]
