"""The fused softmax kernel (`jax.nn.dot_product_attention`, the GPU/TPU plans' choice) against a
plain softmax attention written here and against jaxlab's custom-vjp kernel, in outputs and
gradients; the hook condition under which it runs; bfloat16 training through it against float32."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.config import ModelConfig
from jaxlab.models import AttentionExecution, Transformer, ablate_at, init_params, run_with_cache
from jaxlab.models.attention import make_mask
from jaxlab.models.fused_attention import fused_attention
from jaxlab.registry import get_experiment
from jaxlab.train import default_hparams, make_train
from jaxlab.train.groups import plan_groups
from jaxlab.train.plan import make_plan

FUSED = AttentionExecution(kernel="fused")


def plain_attention(q, k, v, mask):
    """softmax_t(q . k_t / sqrt(Dh) | mask) v in float64 numpy, head by head, query by query."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    B, Q, H, Dh = q.shape
    z = np.zeros_like(q)
    for b in range(B):
        for h in range(H):
            for i in range(Q):
                s = k[b, :, h] @ q[b, i, h] / np.sqrt(Dh)
                s = np.where(mask[i], s, -np.inf)
                p = np.exp(s - s.max())
                z[b, i, h] = (p / p.sum()) @ v[b, :, h]
    return z


@pytest.mark.parametrize(("kind", "rows"), [("causal", None), ("context_keys", None), ("none", None),
                                            ("causal", [2, 5, 6])])  # fmt: skip
def test_fused_attention_equals_a_plain_softmax_attention(kind, rows):
    """Whole-sequence causal goes in as is_causal, every other mask (context keys, none, the rows of
    a few queries) as a boolean array: all equal the plain computation to float32 rounding."""
    T, H, Dh = 7, 3, 4
    kq, kk, kv = jax.random.split(jax.random.key(0), 3)
    k, v = (jax.random.normal(key, (2, T, H, Dh)) for key in (kk, kv))
    q = jax.random.normal(kq, (2, T, H, Dh))
    mask = np.asarray(make_mask(kind, T))
    if rows is not None:
        q, mask = q[:, rows], mask[rows]
    z = fused_attention(q, k, v, jnp.asarray(mask), causal=kind == "causal" and rows is None)
    assert z.dtype == jnp.float32
    np.testing.assert_allclose(z, plain_attention(q, k, v, mask), rtol=1e-5, atol=1e-6)


CASES = [("causal", 4, None), ("context_keys", 1, None), ("causal", 2, (1, 4, 7))]


@pytest.mark.parametrize(("mask", "n_heads", "outputs_at"), CASES)
def test_fused_kernel_equals_the_jaxlab_kernel_in_outputs_and_gradients(mask, n_heads, outputs_at):
    """A two-block softmax model with biases and MLP: the fused kernel and jaxlab's custom-vjp
    kernel give the same outputs (2e-5) and parameter gradients (1e-4 relative, or 3e-5 of the
    largest entry: the kernels sum in different orders) for causal and non-causal masks, 1, 2 and
    4 heads, and at a few outputs (keys-first queries: the mask's rows as an array)."""
    cfg = ModelConfig(d_model=12, d_input=5, d_output=2, max_len=8, n_heads=n_heads, d_head=4, n_layers=2,
                      d_mlp=8, attention="softmax", mask=mask)  # fmt: skip
    x = jax.random.normal(jax.random.key(1), (3, 8, 5))
    params = init_params(Transformer(cfg), jax.random.key(0), x)
    c = jax.random.normal(jax.random.key(2), (3, 8 if outputs_at is None else len(outputs_at), 2))
    execution = AttentionExecution("keys_first", 0, "fused")

    @jax.jit
    def both(p):
        def loss(model):
            def f(q):
                out = model.apply({"params": q}, x, (), outputs_at)
                return jnp.sum(c * out), out

            return jax.value_and_grad(f, has_aux=True)(p)

        return loss(Transformer(cfg, execution)), loss(Transformer(cfg))

    ((v_fused, o_fused), g_fused), ((v_jaxlab, o_jaxlab), g_jaxlab) = both(params)
    np.testing.assert_allclose(o_fused, o_jaxlab, rtol=2e-5, atol=2e-5)
    assert float(v_fused) == pytest.approx(float(v_jaxlab), rel=2e-5, abs=2e-5)
    for a, b in zip(jax.tree_util.tree_leaves(g_fused), jax.tree_util.tree_leaves(g_jaxlab)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=3e-5 * float(np.abs(b).max()))
    calls = lambda model: str(jax.make_jaxpr(lambda p: model.apply({"params": p}, x, (), outputs_at))(params))
    assert "name=fused_attention" in calls(Transformer(cfg, execution))
    assert "name=fused_attention" not in calls(Transformer(cfg))


def test_hooks_and_interventions_at_attention_take_the_explicit_path():
    """Recording or an intervention at an attention point: the pattern is computed explicitly (no
    fused call); without them the fused kernel runs."""
    cfg = ModelConfig(d_model=8, d_input=5, d_output=2, max_len=6, n_heads=2, attention="softmax", mask="causal")
    x = jax.random.normal(jax.random.key(1), (2, 6, 5))
    model = Transformer(cfg, FUSED)
    params = init_params(model, jax.random.key(0), x)
    fused_calls = lambda f: str(jax.make_jaxpr(f)(params)).count("name=fused_attention")
    plain = lambda p: model.apply({"params": p}, x)
    cached = lambda p: run_with_cache(model, p, x, ["blocks.0.attn.hook_pattern"])
    ablate = ablate_at("blocks.0.attn.hook_z", heads=jnp.arange(2) == 1)
    intervened = lambda p: model.apply({"params": p}, x, (ablate,))
    assert (fused_calls(plain), fused_calls(cached), fused_calls(intervened)) == (1, 0, 0)
    pattern = jax.eval_shape(cached, params)[1]["blocks.0.attn.hook_pattern"]
    assert pattern.shape == (2, 2, 6, 6)  # recorded: [B, H, T, T]


def test_bfloat16_training_through_the_fused_kernel_agrees_with_float32():
    """The GPU plan's program (vmap, whole batch, fused kernel) of the latent-ambiguity smoke model,
    trained 30 steps with bfloat16 matmul inputs (float32 accumulation), against float32: the loss
    on a fixed batch of 64 sequences agrees within 2% before and after (bfloat16 rounds every input
    to 8 mantissa bits, 2^-9 relative; averaged over the batch's tokens the losses differ by about
    1e-4 relative, measured), is not identical (the bfloat16 products did run), while training lowers
    it by more than 10%."""
    cfg = next(iter(plan_groups(get_experiment("latent-ambiguity").preset("smoke"), check=False))).cfg
    losses = {}
    for dtype in ("float32", "bfloat16"):
        c = cfg.set("model.dtype", dtype)
        train = make_train(c, plan=make_plan(c, backend="cuda", n_devices=1))
        assert (train.plan.attention_kernel, train.plan.dtype) == ("fused", dtype)
        hparams = default_hparams(train.cfg)

        def run(key, train=train, hparams=hparams):
            state, batch = train.init(key), train.sample(jax.random.key(1), 64)
            return train.loss(state.params, batch), train.loss(train.advance(state, hparams, 30)[0].params, batch)

        losses[dtype] = [float(v) for v in jax.jit(run)(jax.random.key(0))]
    (f32_start, f32_end), (bf16_start, bf16_end) = losses["float32"], losses["bfloat16"]
    assert f32_end < 0.9 * f32_start
    assert bf16_end == pytest.approx(f32_end, rel=0.02) and bf16_start == pytest.approx(f32_start, rel=0.02)
    assert bf16_end != f32_end
