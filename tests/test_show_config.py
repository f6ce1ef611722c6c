"""`jaxlab run EXP --show-config`: every key with its type, value and meaning (the sections' `FIELD_DOCS`),
and the allowed values of the sections' `CHOICES`, which must agree with what `validate` allows."""

import dataclasses
import re
import typing
from types import SimpleNamespace
from typing import ClassVar

import pytest

from jaxlab import tasks
from jaxlab.cli import main, show_config
from jaxlab.config import ATTENTIONS, ModelConfig, OptimConfig, SweepConfig, TaskSection, TrainConfig
from jaxlab.errors import ConfigError
from jaxlab.registry import experiments

# `key: type = value  # meaning` (types and values may hold spaces; the columns are padded)
LINE = re.compile(r"^(?P<key>[a-z_]+\.[a-z0-9_]+):\s+(?P<type>\S.*?)\s+= (?P<value>\S.*?)\s+# (?P<meaning>\S.*)$")


def shown(capsys, *args: str) -> dict[str, dict[str, str]]:
    """key -> {type, value, meaning} of `jaxlab run ARGS --show-config` (the first program's keys)."""
    assert main(["run", *args, "--show-config"]) == 0
    rows: dict[str, dict[str, str]] = {}
    for line in capsys.readouterr().out.splitlines():
        if line.startswith("# program "):
            continue
        m = LINE.match(line)
        assert m, f"not `key: type = value  # meaning`: {line!r}"
        rows.setdefault(m["key"], {k: m[k] for k in ("type", "value", "meaning")})
    return rows


@pytest.mark.parametrize("name", sorted(experiments()))
def test_every_key_of_every_smoke_preset_has_type_value_and_meaning(name, capsys):
    rows = shown(capsys, name, "--preset", "smoke")
    cfg = experiments()[name].preset("smoke")
    assert list(rows) == [*cfg.valid_keys(), "sweep.seeds", "sweep.grid"]
    for key, row in rows.items():
        assert row["type"].strip() and row["value"].strip(), key
        meaning = row["meaning"].strip()
        assert meaning and "no description" not in meaning, f"{key} has no meaning in its section's FIELD_DOCS"


def test_a_known_key_shows_its_type_value_meaning_and_choices(capsys):
    rows = shown(capsys, "icl-regression", "--preset", "paper", "--set", "model.n_layers=2")
    assert rows["model.n_layers"] == {
        "type": "int",
        "value": "2",
        "meaning": "transformer blocks (attention, then an MLP when d_mlp > 0)",
    }
    assert rows["model.n_layers"]["meaning"] == ModelConfig.FIELD_DOCS["n_layers"]
    assert rows["model.d_model"]["type"] == "int | None" and rows["model.d_model"]["value"] == "11"  # resolved
    attention = rows["model.attention"]
    assert attention["type"] == "str" and attention["value"] == "'linear'"
    assert attention["meaning"] == ModelConfig.FIELD_DOCS["attention"] + "; one of: " + ", ".join(ATTENTIONS)
    assert rows["train.batch_size"]["value"] == "2048"
    assert rows["sweep.seeds"]["type"] == "tuple[int, ...]" and rows["sweep.seeds"]["value"].startswith("[0, 1")


def _section_classes() -> list[type]:
    """The section classes of every preset of jaxlab's experiments, and every known task config class."""
    found = {ModelConfig, OptimConfig, TrainConfig, SweepConfig, *tasks.config_classes().values()}
    for exp in experiments().values():
        for preset in exp.presets:
            cfg = exp.preset(preset)
            found |= {type(cfg.task), type(cfg.probe)}
    return sorted(found, key=lambda c: f"{c.__module__}.{c.__qualname__}")


@pytest.mark.parametrize("cls", _section_classes(), ids=lambda c: f"{c.__module__}.{c.__qualname__}")
def test_field_docs_and_choices_agree_with_the_fields_and_validation(cls):
    names = [f.name for f in dataclasses.fields(cls)]
    assert sorted(cls.FIELD_DOCS) == sorted(names), "FIELD_DOCS must name exactly the section's fields"
    assert set(cls.CHOICES) <= set(names)
    default = cls()
    hints = typing.get_type_hints(cls)
    for name in names:
        choices = cls.field_choices(name)
        if hints[name] is not str:
            assert choices is None, name
            continue
        try:
            dataclasses.replace(default, **{name: "no-such-value"})
            err = None
        except ConfigError as e:
            err = e
        refused_as_unknown = err is not None and err.field == f"{cls.section}.{name}" and "unknown value" in err.problem
        if choices is None:  # validation does not restrict the field to a list
            assert not refused_as_unknown, f"{name}: validate checks a list of values that CHOICES does not declare"
            continue
        assert refused_as_unknown, f"{name}: CHOICES declares values that validate does not check"
        assert err.allowed == ", ".join(str(c) for c in choices), name
        for value in choices:
            dataclasses.replace(default, **{name: value})  # every declared value is accepted


@dataclasses.dataclass(frozen=True)
class _Undocumented(TaskSection):
    kind: ClassVar[str] = "undocumented"
    width: int = 3


def test_a_section_without_field_docs_says_so(smoke_cfg):
    """A plug-in's section without `FIELD_DOCS` still lists its keys, with a note where the meaning goes."""
    cfg = dataclasses.replace(smoke_cfg, task=_Undocumented())
    [doc] = [d for d in cfg.describe() if d.key == "task.width"]
    assert (doc.type, doc.value, doc.meaning, doc.choices) == ("int", 3, "", None)
    text = show_config(cfg, [SimpleNamespace(index=0, label="", cfg=cfg)])
    [line] = [line for line in text.splitlines() if line.startswith("task.width:")]
    assert LINE.match(line)["meaning"] == "(no description: add one to the section's FIELD_DOCS)"
