"""The modsum task (modular addition with a spurious hint) against a NumPy reimplementation."""

import jax
import numpy as np
import pytest

from jaxlab.errors import ConfigError
from jaxlab.tasks import modsum, task_spec


def numpy_batch(a, b, hint, p):
    """Inputs, targets and mask written out item by item."""
    B, K = a.shape
    inputs = np.zeros((B, 3 * K), np.int64)
    targets = np.zeros((B, 3 * K), np.int64)
    mask = np.zeros((B, 3 * K))
    for i in range(B):
        for k in range(K):
            inputs[i, 3 * k : 3 * k + 3] = a[i, k], b[i, k], p + hint[i, k]
            targets[i, 3 * k + 2] = (a[i, k] + b[i, k]) % p
            mask[i, 3 * k + 2] = 1.0
    return inputs, targets, mask


SHORTCUTS = (0.0, 1.0, 0.5)
SMALL = modsum.Config(p=5, n_items=3)


@pytest.fixture(scope="module")
def batches():
    """Every batch the tests read, from one compiled function (compiles dominate this file's time)."""

    def draw(key):
        big = [modsum.sample(key, modsum.Config(p=7, n_items=5, shortcut=s), 400) for s in SHORTCUTS]
        keys = jax.random.split(key, 3)
        many = jax.vmap(lambda k: modsum.sample(k, SMALL, 4))(keys)
        return big, many, modsum.sample(keys[1], SMALL, 4)

    return jax.jit(draw)(jax.random.key(3))


@pytest.mark.parametrize("index", range(len(SHORTCUTS)))
def test_sample_matches_numpy_and_the_shortcut_holds_as_specified(batches, index):
    shortcut = SHORTCUTS[index]
    cfg = modsum.Config(p=7, n_items=5, shortcut=shortcut)
    batch = batches[0][index]
    aux = {k: np.asarray(v) for k, v in batch.aux.items()}
    a, b, hint, y = aux["a"], aux["b"], aux["hint"], aux["y"]
    inputs, targets, mask = numpy_batch(a, b, hint, cfg.p)
    np.testing.assert_array_equal(batch.inputs, inputs)
    np.testing.assert_array_equal(batch.targets, targets)
    np.testing.assert_array_equal(batch.loss_mask, mask)
    np.testing.assert_array_equal(y, (a + b) % cfg.p)
    assert a.min() == 0 and a.max() == cfg.p - 1 and hint.min() >= 0 and hint.max() < cfg.p
    agree = np.mean(hint == y)
    # P(hint = y) = s + (1 - s) / p; 2000 items: std <= 0.012
    expected = shortcut + (1 - shortcut) / cfg.p
    assert abs(agree - expected) < 0.04, (agree, expected)
    if shortcut == 0.0:  # broken shortcut: the hint is independent of the answer
        joint = np.histogram2d(hint.ravel(), y.ravel(), bins=cfg.p)[0] / hint.size
        assert np.abs(joint - 1 / cfg.p**2).max() < 0.015
    # loss positions are exactly where the mask is on
    assert np.flatnonzero(mask[0]).tolist() == list(modsum.loss_positions(cfg))


def test_spec_vmap_and_validation(batches):
    spec = task_spec(SMALL)
    assert (spec.seq_len, spec.vocab_size, spec.output_dim, spec.loss) == (9, 10, 10, "xent")
    _, many, one = batches
    assert many.inputs.shape == (3, 4, 9)
    np.testing.assert_array_equal(many.inputs[1], one.inputs)
    for field, bad in (("p", 1), ("n_items", 0), ("shortcut", 1.5)):
        with pytest.raises(ConfigError, match=f"task.{field}"):
            modsum.Config(**{field: bad}).validate()
