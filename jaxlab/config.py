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


def _positive(name: str, value: float, *, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(name, f"must be {bound}, got {value!r}")


class Section:
    """Mixin for config sections: a name for error messages and field-wise validation."""

    section: ClassVar[str] = ""

    def _name(self, field_name: str) -> str:
        return f"{self.section}.{field_name}"

    def validate(self) -> None:  # overridden
        pass

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
    checkpoint_every: int = 0  # in evaluation intervals; 0: by time only (checkpoint_minutes) and at the end
    checkpoint_minutes: float = 10.0  # also checkpoint once this many minutes passed since the last; 0: off
    keep_checkpoints: int = 2  # 0: keep every checkpoint (e.g. a log-spaced series)
    prng_impl: str = "threefry2x32"
    max_runs_per_chunk: int = 0
    run_layout: str = "auto"  # how a program holds its runs: vmap | scan | auto (jaxlab.train.runmap)
    run_block: int = 0  # runs vmapped together in each step of the scan layout; 0: automatic
    micro_batch: int = 0  # sequences per gradient micro-batch (a divisor of batch_size); 0: automatic
    diverge_above: float = 1e6  # diverged: a step's loss above this x the run's first loss (0: non-finite only)
    stall_timeout: float = 15.0  # minutes with no progress (beyond the slowest interval seen) before the watchdog stops

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
        _positive(n("stall_timeout"), self.stall_timeout, allow_zero=True)
        if self.micro_batch and self.batch_size % self.micro_batch:
            raise ConfigError(
                n("micro_batch"),
                f"{self.micro_batch} does not divide batch_size {self.batch_size}",
                [0, *divisors(self.batch_size)],
            )

    def eval_steps(self) -> tuple[int, ...]:
        """Steps at which runs are evaluated (always including 0 and `steps`).

        `linear`: every `eval_every` steps. `log`: `n_evals` points log-spaced in [1, steps].
        """
        if self.eval_schedule == "linear":
            points = set(range(0, self.steps, self.eval_every))
        else:
            grid = [round(10**e) for e in _linspace(0.0, math.log10(self.steps), self.n_evals)]
            points = {0, *grid}
        points.add(self.steps)
        return tuple(sorted(p for p in points if 0 <= p <= self.steps))


def _linspace(a: float, b: float, n: int) -> list[float]:
    if n == 1:
        return [b]
    return [a + (b - a) * i / (n - 1) for i in range(n)]


@dataclass(frozen=True)
class ProbeConfig(Section):
    """Experiment-specific evaluation settings. Experiments subclass it with their own fields."""

    section: ClassVar[str] = "probe"


@dataclass(frozen=True)
class SweepConfig(Section):
    """Seeds x grid. Each grid entry is `(key, values)`; the runs are the product of all of them."""

    section: ClassVar[str] = "sweep"
    seeds: tuple[int, ...] = (0,)
    grid: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def validate(self) -> None:
        if not self.seeds:
            raise ConfigError("sweep.seeds", "needs at least one seed")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError("sweep.seeds", f"seeds repeat: {list(self.seeds)}")
        for seed in self.seeds:
            if seed < 0:
                raise ConfigError("sweep.seeds", f"seeds must be >= 0, got {seed}")
        keys = [k for k, _ in self.grid]
        if len(set(keys)) != len(keys):
            raise ConfigError("sweep.grid", f"a key is swept twice: {keys}")
        for key, values in self.grid:
            if not values:
                raise ConfigError(f"--sweep {key}", "needs at least one value")

    def points(self) -> list[dict[str, Any]]:
        """The hyperparameter points of the grid (one empty point when there is no grid)."""
        keys = [k for k, _ in self.grid]
        return [dict(zip(keys, combo)) for combo in itertools.product(*(v for _, v in self.grid))]


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
        from jaxlab.tasks import task_spec

        spec = task_spec(self.task)
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
    def from_dict(cls, data: Mapping[str, Any]) -> ExperimentConfig:
        from jaxlab.experiments import get_experiment
        from jaxlab.tasks import task_config_class

        exp = get_experiment(data["experiment"])
        probe_cls = exp.probe_class
        return cls(
            experiment=data["experiment"],
            preset=data["preset"],
            model=_build(ModelConfig, data["model"]),
            task=_build(task_config_class(data["task_kind"]), data["task"]),
            optim=_build(OptimConfig, data["optim"]),
            train=_build(TrainConfig, data["train"]),
            probe=_build(probe_cls, data["probe"]),
            sweep=SweepConfig(
                seeds=tuple(data["sweep"]["seeds"]),
                grid=tuple((k, tuple(v)) for k, v in data["sweep"]["grid"]),
            ),
        )


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
    """`N` -> 0..N-1; `3,7,9` -> those; `a:b` -> a..b-1."""
    text = spec.strip()
    try:
        if ":" in text:
            lo, hi = (int(p) for p in text.split(":"))
            seeds = tuple(range(lo, hi))
        elif "," in text:
            seeds = tuple(int(p) for p in text.split(",") if p.strip())
        else:
            seeds = tuple(range(int(text)))
    except ValueError:
        raise ConfigError("--seeds", f"cannot parse {spec!r}", ["N", "3,7,9", "0:64"]) from None
    if not seeds:
        raise ConfigError("--seeds", f"{spec!r} gives no seeds", ["N", "3,7,9", "0:64"])
    if len(set(seeds)) != len(seeds) or min(seeds) < 0:
        raise ConfigError("--seeds", f"{spec!r}: seeds must be distinct and >= 0")
    return seeds


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
    """Add `--sweep key=v1,v2` entries to the grid, parsing and validating each value."""
    grid = dict(cfg.sweep.grid)
    for item in sweeps:
        key, text = parse_assignment(item, "--sweep")
        section, name = cfg._split(key)
        hint = _field_type(type(getattr(cfg, section)), name)
        values = tuple(parse_value(key, v, hint) for v in split_top_level(text))
        for v in values:
            cfg.set(key, v)  # validates each value on its own
        grid[key] = values
    return dataclasses.replace(cfg, sweep=dataclasses.replace(cfg.sweep, grid=tuple(grid.items())))
