"""The shared model presets (`jaxlab.models.presets`): the family's shape, sizes and overrides."""

import dataclasses

import pytest

from jaxlab.config import ModelConfig
from jaxlab.errors import ConfigError
from jaxlab.models.presets import gpt_model, linear_attention_model
from jaxlab.registry import get_experiment

GPT_SHAPE = dict(
    attention="softmax",
    mask="causal",
    activation="gelu",
    layernorm=True,
    use_bias=True,
    input="discrete",
    read_in="linear",
    readout="linear",
    pos_encoding="learned",
)
SIZES = ("n_layers", "n_heads", "d_model", "d_mlp")


def test_gpt_model_has_the_gpt_shape_and_the_given_sizes():
    m = gpt_model(n_layers=3, n_heads=2, d_model=24)
    assert {k: getattr(m, k) for k in GPT_SHAPE} == GPT_SHAPE
    assert (m.n_layers, m.n_heads, m.d_model, m.d_mlp) == (3, 2, 24, 96)  # d_mlp = 4 d_model by default
    assert gpt_model(n_layers=1, n_heads=1, d_model=8, d_mlp=5).d_mlp == 5
    # everything else is ModelConfig's default
    untouched = {f.name for f in dataclasses.fields(ModelConfig)} - set(GPT_SHAPE) - set(SIZES)
    assert all(getattr(m, k) == getattr(ModelConfig(), k) for k in untouched)


def test_overrides_replace_any_field_and_bad_values_are_refused():
    m = gpt_model(n_layers=2, n_heads=4, d_model=64, activation="solu", input="continuous")
    assert (m.activation, m.input, m.attention) == ("solu", "continuous", "softmax")
    with pytest.raises(TypeError):
        gpt_model(n_layers=2, n_heads=4)  # the sizes are the caller's
    with pytest.raises(TypeError):
        gpt_model(n_layers=2, n_heads=4, d_model=8, colour="red")
    with pytest.raises(ConfigError, match="model.attention"):
        gpt_model(n_layers=2, n_heads=4, d_model=8, attention="sparse")


@pytest.mark.parametrize(
    "experiment", ["instruction-clustering", "steerability", "latent-ambiguity", "representation-dissimilarity"]
)
def test_the_language_model_experiments_use_the_gpt_shape(experiment):
    exp = get_experiment(experiment)
    for name in exp.presets:
        m = exp.preset(name).model
        assert {k: getattr(m, k) for k in GPT_SHAPE} == GPT_SHAPE, (experiment, name)


def test_linear_attention_model_and_the_icl_experiments():
    m = linear_attention_model(mask="causal", readout="y_block", init_scale=0.01)
    assert (m.n_layers, m.n_heads, m.attention, m.d_mlp, m.layernorm, m.use_bias) == (1, 1, "linear", 0, False, False)
    assert (m.read_in, m.pos_encoding, m.mask, m.readout, m.init_scale) == (
        "identity",
        "none",
        "causal",
        "y_block",
        0.01,
    )
    assert linear_attention_model(mask="causal", readout="y_block", init_scale=0.01, n_layers=3).n_layers == 3
    reg = get_experiment("icl-regression").preset("paper").model
    assert (reg.mask, reg.readout, reg.init_scale, reg.attention, reg.read_in) == (
        "context_keys",
        "neg_y_block",
        0.002,
        "linear",
        "identity",
    )
    ar = get_experiment("icl-autoregressive").preset("paper").model
    assert ar == linear_attention_model(mask="causal", readout="y_block", init_scale=0.01)
