"""The function classes of Garg et al. 2022 (`jaxlab.tasks.function_classes`): every target against a
NumPy computation written here from Garg's src/tasks.py, the interleaved layout, and the scales."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.errors import ConfigError
from jaxlab.tasks import function_classes as fc
from jaxlab.tasks import regression, sample, task_config_class

CLASSES = fc.FUNCTION_CLASSES

# one compiled program per (config, batch size): eager sampling dispatches (and compiles) op by op
_sample_jit = jax.jit(sample, static_argnums=(1, 2))


_evaluate = jax.jit(fc.evaluate, static_argnums=0)


def _sample(seed, cfg, batch_size):
    return _sample_jit(jax.random.key(seed), cfg, batch_size)


def _xy(batch, d):
    x = np.asarray(batch.inputs, np.float64)
    return x[:, 0::2, :d], x[:, 1::2, d]


def _within_sigmas(per_task, expected, n_sigma=5.0, slack=0.0):
    """The mean of i.i.d. per-task statistics is within n_sigma standard errors (plus slack) of `expected`."""
    per_task = np.asarray(per_task, np.float64)
    se = per_task.std(ddof=1) / np.sqrt(per_task.size)
    assert abs(per_task.mean() - expected) <= n_sigma * se + slack, (per_task.mean(), expected, se)


# -- layout, shapes, dtypes ---------------------------------------------------------------------------


@pytest.mark.parametrize("function_class", CLASSES)
def test_interleaved_layout_shapes_and_dtypes(function_class):
    cfg = fc.Config(function_class=function_class, n_dims=4, n_context=6, tree_depth=2, hidden=8)
    b = _sample(0, cfg, 5)
    assert b.inputs.shape == (5, 12, 5) and b.targets.shape == (5, 12, 1) and b.loss_mask.shape == (5, 12)
    assert b.inputs.dtype == jnp.float32 and b.targets.dtype == jnp.float32
    inputs, targets, mask = np.asarray(b.inputs), np.asarray(b.targets), np.asarray(b.loss_mask)
    np.testing.assert_array_equal(inputs[:, 0::2, 4], 0)  # x-tokens (x_i, 0)
    np.testing.assert_array_equal(inputs[:, 1::2, :4], 0)  # y-tokens (0_d, y_i)
    np.testing.assert_array_equal(targets[:, 0::2, 0], inputs[:, 1::2, 4])  # y_i is the target at x_i
    np.testing.assert_array_equal(targets[:, 1::2, 0], 0)
    np.testing.assert_array_equal(mask, np.tile([1.0, 0.0], (5, 6)))
    assert list(np.flatnonzero(mask[0])) == list(fc.loss_positions(cfg))
    spec = fc.spec(cfg)
    assert (spec.kind, spec.seq_len, spec.token_dim, spec.output_dim, spec.loss) == ("function-class", 12, 5, 1, "mse")
    x, y = fc.split_interleaved(b, cfg)
    assert x.shape == (5, 6, 4) and y.shape == (5, 6)
    np.testing.assert_array_equal(x, inputs[:, 0::2, :4])
    expected = {
        "linear": {"w": (5, 1, 4)},
        "noisy_linear": {"w": (5, 1, 4)},
        "sparse_linear": {"w": (5, 1, 4), "support": (5, 4)},
        "decision_tree": {"tree_coords": (5, 7), "tree_values": (5, 7)},
        "relu_2nn": {"w1": (5, 4, 8), "w2": (5, 8)},
    }[function_class]
    assert {k: tuple(v.shape) for k, v in b.aux.items()} == expected
    if function_class == "decision_tree":
        assert b.aux["tree_coords"].dtype == jnp.int32
    if function_class != "noisy_linear":  # `evaluate` is the noise-free function
        np.testing.assert_allclose(_evaluate(cfg, b.aux, x), y, rtol=1e-6, atol=1e-6)


def test_layout_is_regressions_interleaved_layout():
    cfg = fc.Config(function_class="linear", n_dims=3, n_context=5)
    b = _sample(1, cfg, 4)
    x, y = fc.split_interleaved(b, cfg)
    reg = regression.Config(n_dims=3, n_context=5, layout="interleaved")
    ref = regression.assemble(reg, b.aux["w"], x, y[..., None])
    for field in ("inputs", "targets", "loss_mask"):
        np.testing.assert_array_equal(getattr(b, field), getattr(ref, field))


# -- targets against NumPy ------------------------------------------------------------------------------


@pytest.mark.parametrize("function_class", ["linear", "sparse_linear"])
def test_linear_targets_are_the_weights_times_x(function_class):
    cfg = fc.Config(function_class=function_class, n_dims=6, n_context=9, sparsity=2)
    b = _sample(3, cfg, 16)
    x, y = _xy(b, 6)
    w = np.asarray(b.aux["w"], np.float64)[:, 0]
    ref = np.stack([x[t] @ w[t] for t in range(16)])
    np.testing.assert_allclose(y, ref, rtol=1e-5, atol=1e-5)


def test_sparse_weights_have_exactly_k_nonzeros_on_a_uniform_support():
    d, k, B = 7, 3, 4000
    cfg = fc.Config(function_class="sparse_linear", n_dims=d, n_context=2, sparsity=k)
    aux = _sample(4, cfg, B).aux
    w, support = np.asarray(aux["w"])[:, 0], np.asarray(aux["support"])
    assert set(np.unique(support)) <= {0.0, 1.0}
    np.testing.assert_array_equal(support.sum(-1), k)
    np.testing.assert_array_equal(np.count_nonzero(w, axis=-1), k)  # N(0, 1) draws are nonzero
    np.testing.assert_array_equal(w != 0, support == 1)
    # every coordinate is in the support with probability k/d (binomial standard error)
    freq, p = support.mean(0), k / d
    assert np.all(np.abs(freq - p) < 5 * np.sqrt(p * (1 - p) / B))
    # the nonzero weights are N(0, 1): no rescaling in Garg's SparseLinearRegression
    nz = w[support == 1]
    assert abs(nz.mean()) < 5 / np.sqrt(nz.size) and abs(nz.var() - 1) < 5 * np.sqrt(2 / nz.size)


def test_sparsity_equal_to_the_dimension_is_dense():
    cfg = fc.Config(function_class="sparse_linear", n_dims=3, n_context=2, sparsity=3)
    aux = _sample(5, cfg, 50).aux
    np.testing.assert_array_equal(np.asarray(aux["support"]), 1)


def _np_tree(coords, values, x, depth):
    """Garg's DecisionTree.evaluate (tasks.py:310-330), one point at a time."""
    out = np.zeros(x.shape[:2])
    for b in range(x.shape[0]):
        for n in range(x.shape[1]):
            node = 0
            for _ in range(depth):
                node = 2 * node + 1 + int(x[b, n, coords[b, node]] > 0)
            out[b, n] = values[b, node]
    return out


@pytest.mark.parametrize("depth", [1, 4])
def test_decision_tree_targets_against_numpy(depth):
    d = 5
    cfg = fc.Config(function_class="decision_tree", n_dims=d, n_context=12, tree_depth=depth)
    b = _sample(6, cfg, 20)
    x, y = _xy(b, d)
    coords, values = np.asarray(b.aux["tree_coords"]), np.asarray(b.aux["tree_values"], np.float64)
    assert coords.shape == (20, 2 ** (depth + 1) - 1) and coords.min() >= 0 and coords.max() < d
    np.testing.assert_allclose(y, _np_tree(coords, values, x, depth), rtol=0, atol=1e-6)


def test_decision_tree_branches_on_x_positive():
    """A hand-built depth-2 tree: root splits on x[1], its children on x[0] and x[2]; leaves 3..6."""
    cfg = fc.Config(function_class="decision_tree", n_dims=3, n_context=4, tree_depth=2)
    coords = jnp.asarray([[1, 0, 2, 0, 0, 0, 0]], jnp.int32)
    values = jnp.asarray([[9.0, 9.0, 9.0, 3.0, 4.0, 5.0, 6.0]])
    x = jnp.asarray([[[-1.0, -1.0, 5.0], [1.0, -2.0, 5.0], [5.0, 0.5, -1.0], [-5.0, 3.0, 0.0]]])
    y = _evaluate(cfg, {"tree_coords": coords, "tree_values": values}, x)
    # x[1] <= 0 -> node 1 (x[0] <= 0 -> 3, > 0 -> 4); x[1] > 0 -> node 2 (x[2] <= 0 -> 5, > 0 -> 6); 0 goes left
    np.testing.assert_array_equal(np.asarray(y), [[3.0, 4.0, 5.0, 5.0]])


def test_decision_tree_coordinates_uniform_and_values_standard_normal():
    d, B = 6, 3000
    cfg = fc.Config(function_class="decision_tree", n_dims=d, n_context=2, tree_depth=2)
    aux = _sample(7, cfg, B).aux
    coords, values = np.asarray(aux["tree_coords"]).ravel(), np.asarray(aux["tree_values"]).ravel()
    freq = np.bincount(coords, minlength=d) / coords.size
    assert np.all(np.abs(freq - 1 / d) < 5 * np.sqrt((1 / d) * (1 - 1 / d) / coords.size))
    assert abs(values.mean()) < 5 / np.sqrt(values.size) and abs(values.var() - 1) < 5 * np.sqrt(2 / values.size)


def test_relu_2nn_targets_against_numpy():
    d, h = 4, 9
    cfg = fc.Config(function_class="relu_2nn", n_dims=d, n_context=7, hidden=h)
    b = _sample(8, cfg, 6)
    x, y = _xy(b, d)
    w1, w2 = np.asarray(b.aux["w1"], np.float64), np.asarray(b.aux["w2"], np.float64)
    ref = np.zeros((6, 7))
    for t in range(6):
        for n in range(7):
            hidden = np.maximum(x[t, n] @ w1[t], 0.0)  # relu(xs_b @ W1), tasks.py:251
            ref[t, n] = np.sqrt(2 / h) * hidden @ w2[t]  # @ W2 * sqrt(2 / hidden_layer_size), tasks.py:252
    np.testing.assert_allclose(y, ref, rtol=1e-4, atol=1e-5)


def test_noisy_linear_residual_is_the_noise():
    d, sigma = 4, 0.7
    cfg = fc.Config(function_class="noisy_linear", n_dims=d, n_context=50, noise_std=sigma)
    b = _sample(9, cfg, 400)
    x, y = _xy(b, d)
    resid = y - np.einsum("bd,bnd->bn", np.asarray(b.aux["w"], np.float64)[:, 0], x)
    n = resid.size
    assert abs(resid.mean()) < 5 * sigma / np.sqrt(n)
    assert abs(resid.var() - sigma**2) < 5 * sigma**2 * np.sqrt(2 / n)
    # the noise is independent across examples: lag-1 correlation within a sequence ~ 0
    r = np.corrcoef(resid[:, :-1].ravel(), resid[:, 1:].ravel())[0, 1]
    assert abs(r) < 5 / np.sqrt(n)


def test_noisy_linear_without_noise_is_linear():
    cfg = fc.Config(function_class="noisy_linear", n_dims=3, n_context=5, noise_std=0.0)
    b = _sample(10, cfg, 8)
    x, y = _xy(b, 3)
    np.testing.assert_allclose(y, np.einsum("bd,bnd->bn", np.asarray(b.aux["w"])[:, 0], x), rtol=1e-5, atol=1e-5)


def test_noisy_linear_renormalized_has_batch_std_sqrt_d():
    d = 5
    cfg = fc.Config(function_class="noisy_linear", n_dims=d, n_context=10, noise_std=1.0, renormalize_ys=True)
    b = _sample(11, cfg, 32)
    _, y = _xy(b, d)
    assert y.std(ddof=1) == pytest.approx(np.sqrt(d), rel=1e-5)  # torch .std() is unbiased (tasks.py:195)
    plain = _sample(11, dataclasses.replace(cfg, renormalize_ys=False), 32)
    _, y0 = _xy(plain, d)
    np.testing.assert_allclose(y, y0 * np.sqrt(d) / y0.std(ddof=1), rtol=1e-5, atol=1e-6)


# -- scales ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("function_class", "expected"),
    [
        ("linear", "d"),  # E[(w . x)^2] = E|w|^2 = d
        ("sparse_linear", "k"),  # only k weights: E[y^2] = k
        ("noisy_linear", "d+s2"),  # d + noise_std^2
        ("decision_tree", "1"),  # a leaf value ~ N(0, 1)
        ("relu_2nn", "d"),  # (2/h) sum_j E[a_j^2] E[relu(W_j . x)^2] = 2 E[(W_j . x)^2] / 2 = d
    ],
)
def test_target_second_moment(function_class, expected):
    d, k, s = 6, 2, 0.5
    cfg = fc.Config(function_class=function_class, n_dims=d, n_context=20, sparsity=k, noise_std=s, hidden=50)
    b = _sample(12, cfg, 3000)
    x, y = _xy(b, d)
    # x ~ N(0, I_d)
    _within_sigmas(x.reshape(-1, d * 20).mean(-1), 0.0)
    _within_sigmas((x**2).reshape(-1, d * 20).mean(-1), 1.0)
    target = {"d": d, "k": k, "d+s2": d + s**2, "1": 1.0}[expected]
    _within_sigmas((y**2).mean(-1), target)  # tasks are i.i.d.: the per-task mean of y^2 is an i.i.d. sample
    assert fc.error_normalizer(cfg) == {"d": d, "k": k, "d+s2": d, "1": 1}[expected]  # plot_utils.py:97-102


# -- keys, jit, vmap ------------------------------------------------------------------------------------


@pytest.mark.parametrize("function_class", CLASSES)
def test_deterministic_and_vmap(function_class):
    cfg = fc.Config(function_class=function_class, n_dims=3, n_context=4, tree_depth=2, hidden=5)
    b1, b2 = _sample(13, cfg, 3), _sample(13, cfg, 3)
    np.testing.assert_array_equal(b1.inputs, b2.inputs)
    assert not np.array_equal(np.asarray(b1.inputs), np.asarray(_sample(14, cfg, 3).inputs))
    keys = jax.random.split(jax.random.key(15), 2)
    many = jax.jit(jax.vmap(lambda k: sample(k, cfg, 3)))(keys)
    assert many.inputs.shape == (2, 3, 8, 4)
    np.testing.assert_allclose(many.inputs[1], _sample_jit(keys[1], cfg, 3).inputs, rtol=1e-6, atol=1e-6)


# -- config ---------------------------------------------------------------------------------------------


def test_config_validation_and_registry():
    assert task_config_class("function-class") is fc.Config
    names = [f.name for f in dataclasses.fields(fc.Config)]
    assert sorted(fc.Config.FIELD_DOCS) == sorted(names)
    with pytest.raises(ConfigError, match="unknown value"):
        fc.Config(function_class="quadratic")
    with pytest.raises(ConfigError, match="sparsity"):
        fc.Config(function_class="sparse_linear", n_dims=2, sparsity=3)
    fc.Config(function_class="linear", n_dims=2, sparsity=3)  # sparsity has no effect there
    for bad in ({"n_dims": 0}, {"n_context": 0}, {"noise_std": -1.0}, {"tree_depth": 0}, {"hidden": 0}):
        with pytest.raises(ConfigError):
            fc.Config(**bad)
    with pytest.raises(ConfigError, match="tree_depth"):
        fc.Config(function_class="decision_tree", tree_depth=fc.MAX_TREE_DEPTH + 1)
    defaults = fc.Config()
    assert (defaults.n_dims, defaults.n_context, defaults.sparsity, defaults.tree_depth, defaults.hidden) == (
        20,
        40,
        3,
        4,
        100,
    )
    assert set(fc.Config(function_class="relu_2nn").inert_fields()) == {
        "sparsity",
        "noise_std",
        "renormalize_ys",
        "tree_depth",
    }
