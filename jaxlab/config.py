"""Configuration: frozen dataclasses, validation, `--set section.field=value` overrides, sweep grids.

An experiment's configuration has the sections `model`, `task`, `optim`, `train`, `probe` and
`sweep`. Presets are Python functions returning an `ExperimentConfig` (config as code, as in
big_vision). Every section validates itself on construction, so an invalid value can never reach
the training code; errors name the field (`model.n_heads`) and the allowed values.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import numbers
import sys
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from jaxlab.errors import ConfigError

ATTENTIONS = ("linear", "softmax", "positional")
ATTN_NORMS = ("none", "n_keys")
MASKS = ("causal", "context_keys", "none")
ACTIVATIONS = ("gelu", "relu", "solu")
INPUTS = ("continuous", "discrete")
READ_INS = ("identity", "linear")
READOUTS = ("linear", "y_block", "neg_y_block")
POS_ENCODINGS = ("none", "learned", "sinusoidal")
DTYPES = ("float32", "bfloat16")
OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULES = ("constant", "cosine", "warmup_cosine", "warmup_constant", "linear_decay")
EVAL_SCHEDULES = ("linear", "log")
PRNG_IMPLS = ("threefry2x32", "rbg", "unsafe_rbg")
RUN_LAYOUTS = ("auto", "vmap", "scan")  # jaxlab.train.runmap


def _choice(name: str, value: object, allowed: Sequence[object]) -> None:
    if value not in allowed:
        raise ConfigError(name, f"unknown value {value!r}", allowed)


def divisors(n: int) -> list[int]:
    """The positive divisors of n, ascending."""
    return [d for d in range(1, n + 1) if n % d == 0]


INT32_MAX = 2**31 - 1  # step counters and seeds travel to the device as int32
# Every evaluation is a host round trip and a row of the on-device history [n_evals, R] of
# every metric; presets use at most a few dozen.
MAX_EVALS = 10_000
# Seeds x grid points of one sweep: every run's records (summary.json, the metric table, the
# report) pass through one host process. Split larger studies into several sweeps.
MAX_RUNS = 100_000
SEED_LIMIT = 2**32  # PRNG keys hold 32-bit seeds: seed s and s + 2^32 would give the same key
_EXECUTION = "sets how the sweep runs, not what a run computes"


def _int_range(name: str, value: int, lo: int, hi: int, why: str) -> None:
    """Refuse an integer outside [lo, hi] (values the device or the PRNG cannot hold exactly)."""
    if not lo <= value <= hi:
        raise ConfigError(name, f"{value!r} is out of range: {why}", f"integers {lo}..{hi}")


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(name, f"must be {bound}, got {value!r}")


@dataclass(frozen=True)
class Inert:
    """A rule: `field` has no effect on a run while every field named in `when` holds one of its values.

    Each section declares its rules as data (`Section.INERT`, built with `inert`) next to its
    fields; tests/test_bounds.py builds the training programs and evaluation data with two values
    of every declared field and checks they are identical (traced values and programs that may
    differ in form: the same numbers), and that with the condition off they differ, so the table
    cannot drift from the code that reads the fields.
    """

    field: str
    when: tuple[tuple[str, tuple[Any, ...]], ...]

    def holds(self, section: Any) -> bool:
        return all(getattr(section, name) in values for name, values in self.when)


def inert(field_name: str, **when: tuple[Any, ...]) -> Inert:
    """`inert("momentum", name=("adam", "adamw"))`: momentum has no effect with those optimizers."""
    return Inert(field_name, tuple(when.items()))


class Section:
    """Mixin for config sections: a name for error messages and field-wise validation.

    `INERT`: rules for fields that have no effect given the section's other fields (`inert_fields`);
    `SWEEP_WIDE`: fields that hold one value for the whole sweep (how it runs, or analyses across
    its programs), field -> why. Neither may be swept: every point would give the same runs.
    """

    section: ClassVar[str] = ""
    INERT: ClassVar[tuple[Inert, ...]] = ()
    SWEEP_WIDE: ClassVar[dict[str, str]] = {}

    def _name(self, field_name: str) -> str:
        return f"{self.section}.{field_name}"

    def validate(self) -> None:  # overridden
        pass

    def inert_fields(self) -> dict[str, str]:
        """Fields with no effect given this section's other values: field -> why (first rule that holds)."""
        out: dict[str, str] = {}
        for rule in self.INERT:
            if rule.field not in out and rule.holds(self):
                cond = ", ".join(f"{self._name(k)}={getattr(self, k)!r}" for k, _ in rule.when)
                out[rule.field] = f"{self._name(rule.field)} has no effect with {cond}"
        return out

    def __post_init__(self) -> None:
        _check_types(self)
        self.validate()


@dataclass(frozen=True)
class ModelConfig(Section):
    """One transformer family member (see `jaxlab.models.Transformer`).

    Fields left `None` are filled from the task (`d_input`, `d_output`, `vocab_size`, `max_len`) or
    from the read-in (`d_model` = `d_input` when `read_in="identity"`) by `ExperimentConfig.resolve`.
    """

    section: ClassVar[str] = "model"
    n_layers: int = 1
    n_heads: int = 1
    d_model: int | None = None
    d_head: int | None = None
    attention: str = "softmax"
    attn_norm: str = "none"
    mask: str = "causal"
    tie_layers: bool = False
    d_mlp: int = 0
    activation: str = "gelu"
    layernorm: bool = True
    use_bias: bool = True
    input: str = "continuous"
    d_input: int | None = None
    vocab_size: int | None = None
    read_in: str = "linear"
    readout: str = "linear"
    d_output: int | None = None
    pos_encoding: str = "none"
    max_len: int | None = None
    init_scale: float = 1.0
    dtype: str = "float32"

    # read by jaxlab.models: the MLP's activation, linear/positional attention's normalization,
    # the shared block, the embedding or read-in, the learned positions (sinusoidal ones do not
    # depend on the table's length)
    INERT: ClassVar[tuple[Inert, ...]] = (
        inert("activation", d_mlp=(0,)),
        inert("attn_norm", attention=("softmax",)),
        inert("tie_layers", n_layers=(1,)),
        inert("vocab_size", input=("continuous",)),
        inert("d_input", input=("discrete",)),
        inert("max_len", pos_encoding=("none", "sinusoidal"), attention=("linear", "softmax")),
    )

    def validate(self) -> None:
        n = self._name
        _positive(n("n_layers"), self.n_layers)
        _positive(n("n_heads"), self.n_heads)
        _choice(n("attention"), self.attention, ATTENTIONS)
        _choice(n("attn_norm"), self.attn_norm, ATTN_NORMS)
        _choice(n("mask"), self.mask, MASKS)
        _positive(n("d_mlp"), self.d_mlp, allow_zero=True)
        _choice(n("activation"), self.activation, ACTIVATIONS)
        _choice(n("input"), self.input, INPUTS)
        _choice(n("read_in"), self.read_in, READ_INS)
        _choice(n("readout"), self.readout, READOUTS)
        _choice(n("pos_encoding"), self.pos_encoding, POS_ENCODINGS)
        _choice(n("dtype"), self.dtype, DTYPES)
        _positive(n("init_scale"), self.init_scale)
        for name in ("d_model", "d_head", "d_input", "vocab_size", "d_output", "max_len"):
            value = getattr(self, name)
            if value is not None:
                _positive(n(name), value)
        if self.d_model is not None and self.d_head is None and self.d_model % self.n_heads:
            raise ConfigError(
                n("n_heads"),
                f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                "set model.d_head to choose the head width explicitly",
                divisors(self.d_model),
            )
        if self.input == "discrete" and self.read_in == "identity":
            raise ConfigError(n("read_in"), "discrete inputs need an embedding", ["linear"])
        if self.read_in == "identity" and None not in (self.d_model, self.d_input):
            if self.d_model != self.d_input:
                raise ConfigError(
                    n("d_model"),
                    f"read_in='identity' needs d_model == d_input ({self.d_input}), got {self.d_model}",
                )

    @property
    def head_dim(self) -> int:
        assert self.d_model is not None, "resolve the config first"
        return self.d_head if self.d_head is not None else self.d_model // self.n_heads


@dataclass(frozen=True)
class OptimConfig(Section):
    """optax optimizer. `lr`, `weight_decay`, `b1`, `b2` can vary across the runs of one program."""

    section: ClassVar[str] = "optim"
    name: str = "adamw"
    lr: float = 1e-3
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8
    weight_decay: float = 0.0
    momentum: float = 0.0
    clip_norm: float = 0.0
    schedule: str = "constant"
    warmup_steps: int = 0

    # read by jaxlab.train.optim: sgd has no Adam moments, Adam no momentum, and only the warmup
    # schedules warm up
    INERT: ClassVar[tuple[Inert, ...]] = (
        inert("momentum", name=("adamw", "adam")),
        inert("b1", name=("sgd",)),
        inert("b2", name=("sgd",)),
        inert("eps", name=("sgd",)),
        inert("warmup_steps", schedule=("constant", "cosine", "linear_decay")),
    )

    def validate(self) -> None:
        n = self._name
        _choice(n("name"), self.name, OPTIMIZERS)
        _choice(n("schedule"), self.schedule, SCHEDULES)
        _positive(n("lr"), self.lr)
        _positive(n("eps"), self.eps)
        _positive(n("weight_decay"), self.weight_decay, allow_zero=True)
        _positive(n("clip_norm"), self.clip_norm, allow_zero=True)
        _positive(n("warmup_steps"), self.warmup_steps, allow_zero=True)
        for name in ("b1", "b2", "momentum"):
            value = getattr(self, name)
            if not 0.0 <= value < 1.0:
                raise ConfigError(n(name), f"must be in [0, 1), got {value!r}")


@dataclass(frozen=True)
class TrainConfig(Section):
    """The step loop. Evaluation points are chunk boundaries: the host sees nothing in between."""

    section: ClassVar[str] = "train"
    steps: int = 1000
    batch_size: int = 256
    eval_every: int = 100
    eval_schedule: str = "linear"
    n_evals: int = 20
    eval_batch_size: int = 1024
    eval_seed: int = 1_000_003
    # checkpoints (jaxlab.train.checkpoint.SaveSchedule): after every `checkpoint_every` evaluation
    # intervals (0: none by count), after the first interval that ends `checkpoint_minutes` or more
    # after the run chunk started or last saved (0: none by time; a killed run loses at most about
    # that much work), and always at the end of a chunk and on SIGINT / SIGTERM
    checkpoint_every: int = 0
    checkpoint_minutes: float = 1.0
    keep_checkpoints: int = 2  # 0: keep every checkpoint (e.g. a log-spaced series)
    prng_impl: str = "threefry2x32"
    max_runs_per_chunk: int = 0
    run_layout: str = "auto"  # how a program holds its runs: vmap | scan | auto (jaxlab.train.runmap)
    run_block: int = 0  # runs vmapped together in each step of the scan layout; 0: automatic
    micro_batch: int = 0  # sequences per gradient micro-batch (a divisor of batch_size); 0: automatic
    # diverged: a step's loss is not finite or above diverge_above x max(the loss of step 0, 1e-3)
    # (jaxlab.train.engine); 0: non-finite only. 0 or a factor > 1.
    diverge_above: float = 1e6
    stall_timeout: float = 15.0  # minutes with no progress (beyond the slowest interval seen) before the watchdog stops

    # evaluation points come from one schedule's fields only (`eval_steps`)
    INERT: ClassVar[tuple[Inert, ...]] = (
        inert("eval_every", eval_schedule=("log",)),
        inert("n_evals", eval_schedule=("linear",)),
    )
    SWEEP_WIDE: ClassVar[dict[str, str]] = {
        "checkpoint_every": _EXECUTION,
        "checkpoint_minutes": _EXECUTION,
        "keep_checkpoints": _EXECUTION,
        "max_runs_per_chunk": _EXECUTION,
        "run_layout": _EXECUTION + " (the same numbers up to float summation order)",
        "run_block": _EXECUTION + " (the same numbers up to float summation order)",
        "micro_batch": _EXECUTION + " (the same numbers up to float summation order)",
        "stall_timeout": _EXECUTION,
    }

    def validate(self) -> None:
        n = self._name
        _positive(n("steps"), self.steps)
        _positive(n("batch_size"), self.batch_size)
        _positive(n("eval_every"), self.eval_every)
        _choice(n("eval_schedule"), self.eval_schedule, EVAL_SCHEDULES)
        _positive(n("n_evals"), self.n_evals)
        _positive(n("eval_batch_size"), self.eval_batch_size)
        _positive(n("checkpoint_every"), self.checkpoint_every, allow_zero=True)
        _positive(n("checkpoint_minutes"), self.checkpoint_minutes, allow_zero=True)
        _positive(n("keep_checkpoints"), self.keep_checkpoints, allow_zero=True)
        _choice(n("prng_impl"), self.prng_impl, PRNG_IMPLS)
        _positive(n("max_runs_per_chunk"), self.max_runs_per_chunk, allow_zero=True)
        _choice(n("run_layout"), self.run_layout, RUN_LAYOUTS)
        _positive(n("run_block"), self.run_block, allow_zero=True)
        _positive(n("micro_batch"), self.micro_batch, allow_zero=True)
        _positive(n("diverge_above"), self.diverge_above, allow_zero=True)
        if 0 < self.diverge_above <= 1:
            raise ConfigError(
                n("diverge_above"),
                f"{self.diverge_above!r} would count step 0 itself as diverged",
                "0 (non-finite losses only) or a factor > 1",
            )
        _int_range(n("eval_seed"), self.eval_seed, 0, INT32_MAX, "it seeds the evaluation PRNG key")
        _int_range(n("steps"), self.steps, 1, INT32_MAX, "the step counter is an int32 on the device")
        _positive(n("stall_timeout"), self.stall_timeout, allow_zero=True)
        if self.micro_batch and self.batch_size % self.micro_batch:
            raise ConfigError(
                n("micro_batch"),
                f"{self.micro_batch} does not divide batch_size {self.batch_size}",
                [0, *divisors(self.batch_size)],
            )
        if self.n_eval_points() > MAX_EVALS:
            fields = (n("steps"), n("eval_every")) if self.eval_schedule == "linear" else (n("n_evals"),)
            raise ConfigError(
                " and ".join(fields),
                f"{self.n_eval_points()} evaluations (steps={self.steps}, "
                + (f"eval_every={self.eval_every}" if self.eval_schedule == "linear" else f"n_evals={self.n_evals}")
                + f"); at most {MAX_EVALS}: each is a host round trip and a row of every run's "
                "on-device metric history; evaluate less often (a larger train.eval_every, or "
                "train.eval_schedule=log with train.n_evals)",
            )

    def n_eval_points(self) -> int:
        """How many evaluation points `eval_steps` has (an upper bound for `log`), without listing them.

        `linear`: ceil(steps / eval_every) + 1 (steps 0, e, 2e, ... below `steps`, and `steps`).
        """
        if self.eval_schedule == "linear":
            return len(range(0, self.steps, self.eval_every)) + 1
        return self.n_evals + 1

    def eval_steps(self) -> tuple[int, ...]:
        """Steps at which runs are evaluated (always including 0 and `steps`).

        `linear`: every `eval_every` steps. `log`: `n_evals` points log-spaced in [1, steps].
        At most `MAX_EVALS` points (`validate`).
        """
        if self.eval_schedule == "linear":
            return (*range(0, self.steps, self.eval_every), self.steps)
        grid = [round(10**e) for e in _linspace(0.0, math.log10(self.steps), self.n_evals)]
        points = {0, self.steps, *grid}
        return tuple(sorted(p for p in points if 0 <= p <= self.steps))


def _linspace(a: float, b: float, n: int) -> list[float]:
    if n == 1:
        return [b]
    return [a + (b - a) * i / (n - 1) for i in range(n)]


@dataclass(frozen=True)
class TaskSection(Section):
    """The base of every task's `Config` (the task protocol, `jaxlab.tasks`): a class attribute `kind`
    naming the task, and the module that defines the subclass defines `spec(cfg) -> TaskSpec` and
    `sample(key, cfg, batch_size) -> Batch`. A task is found from its config alone, so a task
    defined in a user's file works like jaxlab's own."""

    section: ClassVar[str] = "task"
    kind: ClassVar[str] = ""

    def module(self) -> types.ModuleType:
        """The module that defines this task (its `spec` and `sample`)."""
        return sys.modules[type(self).__module__]

    def spec(self) -> Any:
        """The task's `TaskSpec`: sequence length, token width or vocabulary, output width, loss."""
        return self.module().spec(self)


@dataclass(frozen=True)
class ProbeConfig(Section):
    """Experiment-specific evaluation settings. Experiments subclass it with their own fields.

    Besides `INERT` and `SWEEP_WIDE` for its own fields, a subclass declares in `UNREAD_KEYS` the
    keys of other sections its experiment never reads (`section.field` -> why).
    """

    section: ClassVar[str] = "probe"
    UNREAD_KEYS: ClassVar[dict[str, str]] = {}


@dataclass(frozen=True)
class SweepConfig(Section):
    """Seeds x grid. Each grid entry is `(key, values)`; the runs are the product of all of them."""

    section: ClassVar[str] = "sweep"
    seeds: tuple[int, ...] = (0,)
    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def validate(self) -> None:
        if not self.seeds:
            raise ConfigError("sweep.seeds", "needs at least one seed")
        keys = [k for k, _ in self.grid]
        if len(set(keys)) != len(keys):
            raise ConfigError("sweep.grid", f"a key is swept twice: {keys}")
        if self.n_runs > MAX_RUNS:
            sizes = " x ".join([f"{len(self.seeds)} seeds", *(f"{len(v)} {k}" for k, v in self.grid)])
            raise ConfigError(
                "sweep",
                f"{self.n_runs} runs ({sizes}); at most {MAX_RUNS} runs per sweep: every run's results "
                "pass through one host process; split the study into several sweeps (--seeds, --sweep)",
            )
        for key, values in self.grid:
            if not values:
                raise ConfigError(f"--sweep {key}", "needs at least one value")
            repeat = _first_repeat(values)
            if repeat is not None:
                raise ConfigError(f"--sweep {key}", f"the value {repeat[0]!r} is given twice (identical runs)")
        for seed in self.seeds:
            if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or not 0 <= seed < SEED_LIMIT:
                raise ConfigError(
                    "sweep.seeds",
                    f"{seed!r} is not a PRNG seed: keys hold 32 bits, so seed s and s + 2^32 give the same runs",
                    f"integers 0..{SEED_LIMIT - 1}",
                )
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("sweep.seeds", f"seeds repeat: {list(self.seeds)}")

    @property
    def n_runs(self) -> int:
        """Seeds x grid points: len(seeds) * prod(len(values) per grid key)."""
        return len(self.seeds) * math.prod(len(v) for _, v in self.grid)

    def points(self) -> list[dict[str, Any]]:
        """The hyperparameter points of the grid (one empty point when there is no grid)."""
        keys = [k for k, _ in self.grid]
        return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in self.grid))]


def _first_repeat(values: Sequence[Any]) -> tuple[Any] | None:
    """(v,) for the first value equal to an earlier one (lists compared by their repr), else None."""
    seen: set[Any] = set()
    for v in values:
        try:
            hash(v)
            key = (0, v)
        except TypeError:  # a list value
            key = (1, repr(v))
        if key in seen:
            return (v,)
        seen.add(key)
    return None


SECTIONS = ("model", "task", "optim", "train", "probe")


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one sweep depends on. `task` is the task's own config dataclass."""

    experiment: str
    preset: str
    model: ModelConfig
    task: Any
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)

    # -- overrides -----------------------------------------------------------------------------
    def valid_keys(self) -> list[str]:
        return [f"{s}.{f.name}" for s in SECTIONS for f in dataclasses.fields(getattr(self, s))]

    def inert_keys(self) -> dict[str, str]:
        """`section.field` -> why it has no effect here (each section's `INERT` rules).

        Model fields that follow from the task are only known after `resolve()`: call it on a
        resolved config.
        """
        out: dict[str, str] = {}
        for s in SECTIONS:
            obj = getattr(self, s)
            if isinstance(obj, Section):
                out.update({f"{s}.{k}": why for k, why in obj.inert_fields().items()})
        out.update({key: f"{key} has no effect: {why}" for key, why in getattr(self.probe, "UNREAD_KEYS", {}).items()})
        return out

    def sweep_wide_keys(self) -> dict[str, str]:
        """`section.field` -> why one value serves the whole sweep (each section's `SWEEP_WIDE`)."""
        return {f"{s}.{k}": why for s in SECTIONS for k, why in getattr(getattr(self, s), "SWEEP_WIDE", {}).items()}

    def get(self, key: str) -> Any:
        section, name = self._split(key)
        return getattr(getattr(self, section), name)

    def set(self, key: str, value: Any) -> ExperimentConfig:
        """A copy with `section.field` set to `value` (parsed from a string when it is one)."""
        section, name = self._split(key)
        obj = getattr(self, section)
        if isinstance(value, str):
            value = parse_value(key, value, _field_type(type(obj), name))
        return dataclasses.replace(self, **{section: dataclasses.replace(obj, **{name: value})})

    def with_overrides(self, overrides: Mapping[str, Any]) -> ExperimentConfig:
        cfg = self
        for key, value in overrides.items():
            cfg = cfg.set(key, value)
        return cfg

    def derive(self, preset: str, overrides: Mapping[str, Any] | None = None, **sections: Any) -> ExperimentConfig:
        """A preset built from this one: a new name, `section.field` overrides, whole sections replaced."""
        cfg = dataclasses.replace(self, preset=preset, **sections)
        return cfg.with_overrides(overrides or {})

    def _split(self, key: str) -> tuple[str, str]:
        section, _, name = key.partition(".")
        if section not in SECTIONS or not name or not _has_field(getattr(self, section), name):
            raise ConfigError(key, "unknown config key", self.valid_keys())
        return section, name

    # -- resolution ----------------------------------------------------------------------------
    def resolve(self) -> ExperimentConfig:
        """Fill the model fields that follow from the task, then check model and task agree."""
        spec = self.task.spec()
        model = self.model
        fill: dict[str, Any] = {}
        if model.max_len is None:
            fill["max_len"] = spec.seq_len
        if model.d_output is None:
            fill["d_output"] = spec.output_dim
        if spec.vocab_size is not None:
            if model.input != "discrete":
                raise ConfigError("model.input", f"task {spec.kind!r} has discrete tokens", ["discrete"])
            if model.vocab_size is None:
                fill["vocab_size"] = spec.vocab_size
        else:
            if model.input != "continuous":
                raise ConfigError("model.input", f"task {spec.kind!r} has continuous tokens", ["continuous"])
            if model.d_input is None:
                fill["d_input"] = spec.token_dim
        model = dataclasses.replace(model, **fill)
        if model.d_model is None:
            if model.read_in != "identity":
                raise ConfigError("model.d_model", "must be set unless model.read_in='identity'")
            model = dataclasses.replace(model, d_model=model.d_input)
        cfg = dataclasses.replace(self, model=model)
        cfg.check_compatible(spec)
        return cfg

    def check_compatible(self, spec: Any) -> None:
        m = self.model
        if m.max_len is not None and m.max_len < spec.seq_len:
            raise ConfigError("model.max_len", f"shorter than the task's sequences ({spec.seq_len} tokens)")
        if spec.vocab_size is None and m.d_input != spec.token_dim:
            raise ConfigError("model.d_input", f"the task's tokens have width {spec.token_dim}, got {m.d_input}")
        if spec.vocab_size is not None and m.vocab_size is not None and m.vocab_size < spec.vocab_size:
            raise ConfigError("model.vocab_size", f"the task uses {spec.vocab_size} tokens, got {m.vocab_size}")
        if m.readout in ("y_block", "neg_y_block") and (m.d_output or 0) > (m.d_model or 0):
            raise ConfigError("model.readout", "y_block readouts need d_output <= d_model", READOUTS)
        if m.mask == "context_keys" and spec.seq_len < 2:
            raise ConfigError("model.mask", "context_keys needs at least one context token", MASKS)

    # -- serialization -------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"experiment": self.experiment, "preset": self.preset}
        for s in SECTIONS:
            out[s] = dataclasses.asdict(getattr(self, s))
        out["task_kind"] = type(self.task).kind
        out["probe_class"] = type(self.probe).__name__
        out["sweep"] = {"seeds": list(self.sweep.seeds), "grid": [[k, list(v)] for k, v in self.sweep.grid]}
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(
        cls, data: Mapping[str, Any], probe_class: type, task_classes: Mapping[str, type]
    ) -> ExperimentConfig:
        """The config of `to_dict`'s JSON form, given the experiment's probe class and the task
        config classes by kind (`Experiment.config_from_dict` and `jaxlab.registry` supply them)."""
        experiment, preset, kind = data["experiment"], data["preset"], data["task_kind"]
        if kind not in task_classes:
            raise ConfigError("task", f"unknown task {kind!r}", sorted(task_classes))
        return cls(
            experiment=experiment,
            preset=preset,
            model=_build(ModelConfig, data["model"]),
            task=_build(task_classes[kind], data["task"]),
            optim=_build(OptimConfig, data["optim"]),
            train=_build(TrainConfig, data["train"]),
            probe=_build(probe_class, data["probe"]),
            sweep=SweepConfig(
                seeds=tuple(data["sweep"]["seeds"]),
                grid=tuple((k, tuple(v)) for k, v in data["sweep"]["grid"]),
            ),
        )


def require_config(value: Any, where: str) -> ExperimentConfig:
    """`value` if it is an `ExperimentConfig`, else a TypeError that says what `where` expects.

    Passing something else (None, a dict, a preset function) to a public entry point is a
    programming error, so a TypeError, but one that names the entry point instead of an
    AttributeError deep inside it.
    """
    if not isinstance(value, ExperimentConfig):
        raise TypeError(
            f"{where}: expected a jaxlab.config.ExperimentConfig (e.g. get_experiment('icl-regression')"
            f".preset('smoke')), got {type(value).__name__}"
        )
    return value


def _build(cls: type, data: Mapping[str, Any]) -> Any:
    kwargs = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in data:
            value = data[f.name]
            if isinstance(value, list):
                value = _to_tuple(value, hints[f.name])
            kwargs[f.name] = value
    return cls(**kwargs)


def _to_tuple(value: list, hint: Any) -> tuple:
    return tuple(tuple(v) if isinstance(v, list) else v for v in value)


def _has_field(obj: Any, name: str) -> bool:
    return any(f.name == name for f in dataclasses.fields(obj))


def _field_type(cls: type, name: str) -> Any:
    return typing.get_type_hints(cls)[name]


# -- value parsing -------------------------------------------------------------------------------
_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def parse_value(key: str, text: str, hint: Any) -> Any:
    """Parse `text` as a value of the field's annotated type; errors name `key`."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.strip().lower() in ("none", "null"):
            return None
        inner = [a for a in args if a is not type(None)]
        return parse_value(key, text, inner[0])
    if hint is bool:
        low = text.strip().lower()
        if low in _TRUE:
            return True
        if low in _FALSE:
            return False
        raise ConfigError(key, f"expected a boolean, got {text!r}", ["true", "false"])
    if hint is int:
        try:
            as_float = float(text)
        except ValueError:
            raise ConfigError(key, f"expected an integer, got {text!r}") from None
        if not as_float.is_integer():
            raise ConfigError(key, f"expected an integer, got {text!r}")
        return int(as_float)
    if hint is float:
        try:
            return float(text)
        except ValueError:
            raise ConfigError(key, f"expected a number, got {text!r}") from None
    if hint is str:
        return text
    if origin is tuple:
        body = text.strip()
        if body.startswith("["):
            try:
                items = json.loads(body)
            except json.JSONDecodeError:
                raise ConfigError(key, f"expected a list like [1, 2], got {text!r}") from None
            items = [json.dumps(i) if not isinstance(i, str) else i for i in items]
        else:
            items = [i for i in body.split(",") if i.strip()]
        elem = args[0] if args else str
        return tuple(parse_value(key, i, elem) for i in items)
    if hint is Any:
        try:
            return json.loads(text)
        except json.JSONDecodeError:
            return text
    raise ConfigError(key, f"cannot be set from the command line (type {hint})")


def _check_types(obj: Any) -> None:
    """Reject values of the wrong type early (a float for n_heads, a string for lr, ...)."""
    hints = typing.get_type_hints(type(obj))
    for f in dataclasses.fields(obj):
        hint = hints[f.name]
        value = getattr(obj, f.name)
        if not _is_instance(value, hint):
            name = f"{obj.section}.{f.name}" if getattr(obj, "section", "") else f.name
            raise ConfigError(name, f"expected {_type_name(hint)}, got {value!r}")


def _is_instance(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (typing.Union, types.UnionType):
        return any(_is_instance(value, a) for a in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if origin is tuple:
        return isinstance(value, tuple)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _type_name(hint: Any) -> str:
    return getattr(hint, "__name__", None) or str(hint).replace("typing.", "")


# -- seeds and sweeps ----------------------------------------------------------------------------
def parse_seeds(spec: str) -> tuple[int, ...]:
    """`N` -> 0..N-1; `3,7,9` -> those; `a:b` -> a..b-1.

    Seeds are PRNG seeds in [0, 2^32) (a key holds 32 bits: s and s + 2^32 would be the same
    run), distinct, at most `MAX_RUNS` of them; counts are checked before any range is listed.
    """
    forms = ["N", "3,7,9", "0:64"]
    text = spec.strip()
    if not text:
        raise ConfigError("--seeds", "is empty (it would silently mean the preset's seeds)", forms)
    try:
        if ":" in text:
            lo, hi = (int(p) for p in text.split(":"))
            bounds = (lo, hi)
        elif "," in text:
            listed = tuple(int(p) for p in text.split(",") if p.strip())
            bounds = None
        else:
            bounds = (0, int(text))
    except ValueError:
        raise ConfigError("--seeds", f"cannot parse {spec!r}", forms) from None
    if bounds is not None:
        lo, hi = bounds
        if hi - lo > MAX_RUNS:
            raise ConfigError("--seeds", f"{spec!r} gives {hi - lo} seeds; at most {MAX_RUNS} runs per sweep")
        listed = tuple(range(lo, hi))
    if not listed:
        raise ConfigError("--seeds", f"{spec!r} gives no seeds", forms)
    bad = [s for s in listed if not 0 <= s < SEED_LIMIT]
    if bad:
        raise ConfigError(
            "--seeds",
            f"{spec!r}: {bad[0]} is outside the key range (a key holds 32 bits: s and s + 2^32 give the same run)",
            f"integers 0..{SEED_LIMIT - 1}",
        )
    if len(set(listed)) != len(listed):
        raise ConfigError("--seeds", f"{spec!r}: seeds must be distinct")
    return listed


def split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on `sep` outside brackets, so `model.x=[1,2],[3,4]` keeps its lists."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "[(":
            depth += 1
        elif ch in "])":
            depth -= 1
        if ch == sep and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts if p.strip()]


def parse_assignment(text: str, flag: str) -> tuple[str, str]:
    key, eq, value = text.partition("=")
    if not eq or not key.strip():
        raise ConfigError(flag, f"expected key=value, got {text!r}")
    return key.strip(), value.strip()


def apply_sweep_args(cfg: ExperimentConfig, sweeps: Iterable[str]) -> ExperimentConfig:
    """Add `--sweep key=v1,v2` entries to the grid, parsing and validating each value.

    A `--sweep` of a key the preset's grid already sweeps replaces those values; two `--sweep`
    flags for one key are refused (the second would silently replace the first).
    """
    grid = dict(cfg.sweep.grid)
    given: set[str] = set()
    for item in sweeps:
        key, text = parse_assignment(item, "--sweep")
        section, name = cfg._split(key)
        if key in given:
            raise ConfigError(
                f"--sweep {key}", "is given twice; list every value in one flag", [f"--sweep {key}=v1,v2,v3"]
            )
        given.add(key)
        hint = _field_type(type(getattr(cfg, section)), name)
        values = tuple(parse_value(key, v, hint) for v in split_top_level(text))
        for v in values:
            cfg.set(key, v)  # validates each value on its own
        grid[key] = values
    return dataclasses.replace(cfg, sweep=dataclasses.replace(cfg.sweep, grid=tuple(grid.items())))
