"""Gradient accumulation over micro-batches: the whole batch's loss and gradient, and the automatic size."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.tasks import Batch
from jaxlab.train import default_hparams, make_train, seed_keys
from jaxlab.train.losses import masked_mean
from jaxlab.train.microbatch import MIN_TOKENS, WORK_BYTES, accumulate, auto_micro_batch, sequence_bytes


def linear_loss(w, batch):
    """Masked mean of 0.5 (x . w - y)^2 over [B, T] positions."""
    pred = jnp.einsum("btd,d->bt", batch.inputs, w)
    return masked_mean(0.5 * (pred - batch.targets) ** 2, batch.loss_mask)


def numpy_loss_and_grad(w, x, y, m):
    r = x @ w - y  # [B, T]
    count = max(m.sum(), 1.0)
    return float((m * 0.5 * r**2).sum() / count), np.einsum("bt,btd->d", m * r, x) / count


@pytest.mark.parametrize("micro", [1, 2, 3, 6, 12])
@pytest.mark.parametrize("mask_kind", ["ragged", "empty_part", "all_empty"])
def test_accumulated_loss_and_grad_equal_the_whole_batch(micro, mask_kind):
    rng = np.random.default_rng(0)
    B, T, D = 12, 5, 4
    x = rng.normal(size=(B, T, D)).astype(np.float32)
    y = rng.normal(size=(B, T)).astype(np.float32)
    w = rng.normal(size=D).astype(np.float32)
    m = (rng.random((B, T)) < 0.4).astype(np.float32)  # different counts in every micro-batch
    if mask_kind == "empty_part":
        m[:6] = 0.0
    elif mask_kind == "all_empty":
        m[:] = 0.0
    batch = Batch(inputs=jnp.asarray(x), targets=jnp.asarray(y), loss_mask=jnp.asarray(m))
    loss, grad = jax.jit(accumulate, static_argnums=(0, 4))(linear_loss, jnp.asarray(w), batch, batch.loss_mask, micro)
    want_loss, want_grad = numpy_loss_and_grad(w.astype(np.float64), x, y, m)
    np.testing.assert_allclose(float(loss), want_loss, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(np.asarray(grad), want_grad, rtol=1e-5, atol=1e-6)


def test_accumulate_refuses_a_size_that_does_not_divide_the_batch():
    batch = Batch(inputs=jnp.zeros((6, 2, 3)), targets=jnp.zeros((6, 2)), loss_mask=jnp.ones((6, 2)))
    with pytest.raises(ValueError, match="micro_batch 4 does not divide the batch size 6"):
        accumulate(linear_loss, jnp.zeros(3), batch, batch.loss_mask, 4)


def test_training_with_micro_batches_matches_the_whole_batch(smoke_cfg):
    # three adamw steps of the smoke model: only the float summation order differs
    cfg = dataclasses.replace(smoke_cfg, train=dataclasses.replace(smoke_cfg.train, batch_size=16, micro_batch=16))
    whole, parts = make_train(cfg), make_train(cfg.set("train.micro_batch", 4))
    assert (whole.micro_batch(), parts.micro_batch()) == (16, 4)
    key = seed_keys([0])[0]
    hp = default_hparams(whole.cfg)
    a, b = whole.init(key, hp), parts.init(key, hp)
    losses = []
    for _ in range(3):
        a, la = jax.jit(whole.step)(a, hp)
        b, lb = jax.jit(parts.step)(b, hp)
        losses.append((float(la), float(lb)))
    for la, lb in losses:
        assert lb == pytest.approx(la, rel=1e-5)
    for pa, pb in zip(jax.tree_util.tree_leaves(a.params), jax.tree_util.tree_leaves(b.params)):
        np.testing.assert_allclose(np.asarray(pb), np.asarray(pa), rtol=1e-4, atol=1e-6)
    assert losses[0][0] != losses[-1][0]  # the steps did change the model


def test_auto_micro_batch_fits_the_budget_with_a_token_floor():
    # the two benchmark workloads (benchmarks/results/train.md)
    softmax = sequence_bytes(80, 64, 256, 4, 2)
    assert softmax == 4 * 80 * (64 + 256 + 4 * 80) * 2
    assert auto_micro_batch(256, 80, softmax) == 8  # 4 fit in 2 MB; 8 reach 512 tokens
    assert auto_micro_batch(2048, 11, sequence_bytes(11, 11, 0, 1, 1)) == 2048  # 2 MB fits the whole batch
    assert auto_micro_batch(256, 15, sequence_bytes(15, 256, 1024, 8, 6)) == 64  # the token floor
    for batch, T, seq in [(64, 132, 1_850_000), (96, 40, 30_000), (7, 100, 10**6), (100, 3, 100), (1, 5, 10**9)]:
        m = auto_micro_batch(batch, T, seq)
        divisors = [d for d in range(1, batch + 1) if batch % d == 0]
        assert m in divisors
        fits = max(d for d in divisors if d == 1 or d * seq <= WORK_BYTES)
        floor = min(d for d in divisors if d * T >= MIN_TOKENS or d == batch)
        assert m == max(fits, floor)
        assert m * seq <= WORK_BYTES or m == 1 or m * T >= MIN_TOKENS
