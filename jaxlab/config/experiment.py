"""`ExperimentConfig`: the sections of one sweep together; `section.field` overrides, the model
fields that follow from the task (`resolve`), and the JSON form of `config.json` (`to_dict`,
`from_dict`).
"""

from __future__ import annotations

import dataclasses
import json
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from jaxlab.config.base import Section
from jaxlab.config.sections import MASKS, READOUTS, ModelConfig, OptimConfig, ProbeConfig, TrainConfig
from jaxlab.config.sweep import SweepConfig
from jaxlab.config.values import _field_type, parse_value, type_text
from jaxlab.errors import ConfigError

SECTIONS = ("model", "task", "optim", "train", "probe")


@dataclass(frozen=True)
class KeyDoc:
    """One `section.field` key of a config as `jaxlab run --show-config` lists it (`ExperimentConfig.describe`).

    `type`: the field's annotation as text; `meaning`: the section's `FIELD_DOCS` entry ("" when it
    has none); `choices`: the values validation allows, when it restricts the field to a list.
    """

    key: str
    type: str
    value: Any
    meaning: str
    choices: tuple[Any, ...] | None = None


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
        """Every `section.field` key that `get`, `set` and the command line's `--set` / `--sweep` accept."""
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

    def describe(self, sections: Sequence[str] = SECTIONS) -> list[KeyDoc]:
        """Every field of `sections` (any of `SECTIONS` and "sweep") with its type, value, meaning
        and allowed values, in `valid_keys` order."""
        out = []
        for s in sections:
            obj = getattr(self, s)
            cls = type(obj)
            hints = typing.get_type_hints(cls)
            for f in dataclasses.fields(obj):
                doc = cls.field_doc(f.name) if isinstance(obj, Section) else ""
                choices = cls.field_choices(f.name) if isinstance(obj, Section) else None
                out.append(KeyDoc(f"{s}.{f.name}", type_text(hints[f.name]), getattr(obj, f.name), doc, choices))
        return out

    def sweep_wide_keys(self) -> dict[str, str]:
        """`section.field` -> why one value serves the whole sweep (each section's `SWEEP_WIDE`)."""
        return {f"{s}.{k}": why for s in SECTIONS for k, why in getattr(getattr(self, s), "SWEEP_WIDE", {}).items()}

    def get(self, key: str) -> Any:
        """The value of `section.field` (ConfigError for an unknown key)."""
        section, name = self._split(key)
        return getattr(getattr(self, section), name)

    def set(self, key: str, value: Any) -> ExperimentConfig:
        """A copy with `section.field` set to `value` (parsed from a string when it is one)."""
        return self.with_overrides({key: value})

    def with_overrides(self, overrides: Mapping[str, Any]) -> ExperimentConfig:
        """A copy with every `section.field` -> value of `overrides` (values parsed as `set` parses them).

        The fields of one section change together, so a section is validated once, with all its new
        values: the order of the overrides does not matter (`train.n_evals` then `train.steps` is
        the same config as the other order, never refused for a state in between)."""
        by_section: dict[str, dict[str, Any]] = {}
        for key, value in overrides.items():
            section, name = self._split(key)
            if isinstance(value, str):
                value = parse_value(key, value, _field_type(type(getattr(self, section)), name))
            by_section.setdefault(section, {})[name] = value
        changed = {sec: dataclasses.replace(getattr(self, sec), **fields) for sec, fields in by_section.items()}
        return dataclasses.replace(self, **changed)

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
        """Raise `ConfigError` when the model cannot read the task of `spec` (its `TaskSpec`):
        positions, token width, vocabulary, a y-block readout wider than the stream, the mask."""
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
        """The JSON form of config.json: every section's fields, the task's kind, the probe's class
        name and the sweep (`from_dict` reads it back)."""
        out: dict[str, Any] = {"experiment": self.experiment, "preset": self.preset}
        for s in SECTIONS:
            out[s] = dataclasses.asdict(getattr(self, s))
        out["task_kind"] = type(self.task).kind
        out["probe_class"] = type(self.probe).__name__
        out["sweep"] = {"seeds": list(self.sweep.seeds), "grid": [[k, list(v)] for k, v in self.sweep.grid]}
        return out

    def to_json(self) -> str:
        """`to_dict` as indented JSON text."""
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
