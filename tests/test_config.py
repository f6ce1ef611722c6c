import dataclasses

import pytest

from jaxlab.config import (
    ModelConfig,
    OptimConfig,
    TrainConfig,
    apply_sweep_args,
    parse_seeds,
    split_top_level,
)
from jaxlab.errors import ConfigError
from jaxlab.registry import get_experiment
from jaxlab.tasks import regression


def test_heads_must_divide_d_model_and_error_lists_divisors():
    with pytest.raises(ConfigError) as err:
        ModelConfig(d_model=12, n_heads=5)
    assert err.value.field == "model.n_heads"
    assert "1, 2, 3, 4, 6, 12" in str(err.value)
    assert ModelConfig(d_model=12, n_heads=5, d_head=4).head_dim == 4


@pytest.mark.parametrize(
    ("cls", "kwargs", "field", "allowed"),
    [
        (ModelConfig, {"activation": "swish"}, "model.activation", "gelu, relu, solu"),
        (ModelConfig, {"mask": "sliding"}, "model.mask", "causal, context_keys, none"),
        (TrainConfig, {"steps": -5}, "train.steps", None),
        (TrainConfig, {"batch_size": 12, "micro_batch": 5}, "train.micro_batch", "0, 1, 2, 3, 4, 6, 12"),
        (OptimConfig, {"b2": 1.5}, "optim.b2", None),
        (OptimConfig, {"name": "lion"}, "optim.name", "adamw, adam, sgd"),
        (regression.Config, {"layout": "zigzag"}, "task.layout", "paired, interleaved"),
    ],
)
def test_invalid_values_name_field_and_allowed(cls, kwargs, field, allowed):
    with pytest.raises(ConfigError) as err:
        cls(**kwargs)
    assert err.value.field == field
    if allowed:
        assert allowed in str(err.value)


def test_wrong_types_are_refused():
    with pytest.raises(ConfigError, match="model.n_heads: expected int"):
        ModelConfig(n_heads=2.5)


def test_unknown_set_key_lists_valid_keys(smoke_cfg):
    with pytest.raises(ConfigError) as err:
        smoke_cfg.set("model.n_head", "2")
    msg = str(err.value)
    assert "model.n_head: unknown config key" in msg
    assert "model.n_heads" in msg and "optim.lr" in msg and "train.steps" in msg


def test_set_parses_by_field_type(smoke_cfg):
    cfg = smoke_cfg.set("model.n_layers", "3").set("optim.lr", "3e-4").set("model.tie_layers", "true")
    assert cfg.model.n_layers == 3 and cfg.optim.lr == pytest.approx(3e-4) and cfg.model.tie_layers is True
    assert cfg.set("model.d_head", "none").model.d_head is None
    with pytest.raises(ConfigError, match="train.steps: expected an integer"):
        smoke_cfg.set("train.steps", "many")
    with pytest.raises(ConfigError, match="train.steps: must be > 0"):
        smoke_cfg.set("train.steps", "-1")


@pytest.mark.parametrize(
    ("spec", "seeds"), [("4", (0, 1, 2, 3)), ("3,7,9", (3, 7, 9)), ("0:3", (0, 1, 2)), ("3:4", (3,))]
)
def test_parse_seeds(spec, seeds):
    assert parse_seeds(spec) == seeds


@pytest.mark.parametrize("spec", ["x", "5:2", "1,1", "-1,2"])
def test_parse_seeds_errors(spec):
    with pytest.raises(ConfigError, match="--seeds"):
        parse_seeds(spec)


def test_sweep_grid_product(smoke_cfg):
    cfg = apply_sweep_args(smoke_cfg, ["optim.lr=1e-3,1e-2", "model.n_layers=1,2,3"])
    points = cfg.sweep.points()
    assert len(points) == 6
    assert {p["model.n_layers"] for p in points} == {1, 2, 3}
    with pytest.raises(ConfigError, match="model.n_layers: must be > 0"):
        apply_sweep_args(smoke_cfg, ["model.n_layers=1,0"])
    assert split_top_level("[1,2],[3,4]") == ["[1,2]", "[3,4]"]


def test_resolve_fills_from_task_and_checks(smoke_cfg):
    cfg = smoke_cfg.resolve()
    assert cfg.model.d_input == cfg.task.n_dims + 1 == cfg.model.d_model
    assert cfg.model.max_len == cfg.task.n_context + 1
    bad = dataclasses.replace(smoke_cfg, model=dataclasses.replace(smoke_cfg.model, d_input=99))
    with pytest.raises(ConfigError, match="model.d_input"):
        bad.resolve()


def test_config_roundtrip(smoke_cfg):
    cfg = apply_sweep_args(smoke_cfg, ["optim.lr=1e-3,1e-2"]).resolve()
    again = get_experiment(cfg.experiment).config_from_dict(cfg.to_dict())
    assert again == cfg


def test_eval_steps_schedules():
    lin = TrainConfig(steps=100, eval_every=30).eval_steps()
    assert lin == (0, 30, 60, 90, 100)
    log = TrainConfig(steps=1000, eval_schedule="log", n_evals=4).eval_steps()
    assert log == (0, 1, 10, 100, 1000)
