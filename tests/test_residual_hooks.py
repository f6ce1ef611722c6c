"""The residual stream's reading points (`jaxlab.models.residual_hooks`): names, and what they record."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.config import ModelConfig
from jaxlab.models import Transformer, hook_names, init_params, replace_at, residual_hooks, run_with_cache


def expected(n_layers, embeddings, name):
    """Point s = 0..L by the rule of the docstring, written out point by point."""
    out = []
    for s in range(n_layers + 1):
        if s == 0:
            if embeddings:
                out.append("blocks.0.hook_resid_pre")
        elif s == n_layers or name == "post":
            out.append(f"blocks.{s - 1}.hook_resid_post")
        else:
            out.append(f"blocks.{s}.hook_resid_pre")
    return out


@pytest.mark.parametrize("n_layers", [1, 2, 5])
@pytest.mark.parametrize("embeddings", [False, True])
@pytest.mark.parametrize("name", ["post", "pre"])
def test_names_follow_the_points(n_layers, embeddings, name):
    hooks = residual_hooks(n_layers, embeddings=embeddings, name=name)
    assert hooks == expected(n_layers, embeddings, name)
    assert len(hooks) == n_layers + embeddings
    cfg = ModelConfig(n_layers=n_layers, d_model=4, d_mlp=8)
    assert set(hooks) <= set(hook_names(cfg))  # hooks the model records, in execution order
    order = hook_names(cfg)
    assert [order.index(h) for h in hooks] == sorted(order.index(h) for h in hooks)


def test_the_three_readings_of_the_experiments():
    # steering: after each block; clustering: the embeddings too; stitching: before each block and after the last
    assert residual_hooks(2, embeddings=False) == ["blocks.0.hook_resid_post", "blocks.1.hook_resid_post"]
    assert residual_hooks(2, embeddings=True) == [
        "blocks.0.hook_resid_pre",
        "blocks.0.hook_resid_post",
        "blocks.1.hook_resid_post",
    ]
    assert residual_hooks(2, embeddings=True, name="pre") == [
        "blocks.0.hook_resid_pre",
        "blocks.1.hook_resid_pre",
        "blocks.1.hook_resid_post",
    ]


def test_both_names_of_a_point_record_the_same_stream_and_intervene_alike():
    cfg = ModelConfig(
        n_layers=3, n_heads=2, d_model=8, d_mlp=16, input="discrete", vocab_size=11, pos_encoding="learned", max_len=5
    )
    model = Transformer(cfg)
    tokens = jnp.asarray(np.random.default_rng(0).integers(0, 11, size=(3, 5)))
    params = init_params(model, jax.random.key(0), tokens)
    post = residual_hooks(3, embeddings=True, name="post")
    pre = residual_hooks(3, embeddings=True, name="pre")
    _, cache = run_with_cache(model, params, tokens, names=post + pre)
    for a, b in zip(post, pre):
        np.testing.assert_array_equal(cache[a], cache[b])
    value = jnp.ones((3, 5, 8))
    at = lambda hook: model.apply({"params": params}, tokens, (replace_at(hook, value, jnp.ones((5,))),))
    np.testing.assert_allclose(at(post[1]), at(pre[1]), atol=1e-6)


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="n_layers"):
        residual_hooks(0, embeddings=True)
    with pytest.raises(ValueError, match="name must be one of post, pre"):
        residual_hooks(2, embeddings=True, name="mid")
    with pytest.raises(TypeError):
        residual_hooks(2)  # which points: the caller says
