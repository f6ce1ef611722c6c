"""The matched learners of function-classes against references written here: the greedy sign-feature tree
(`probes.prefix_tree`) against a recursive NumPy CART and scikit-learn's DecisionTreeRegressor on sign
features, and the Adam-trained 2-layer ReLU network (`probes.prefix_relu_net`) against a NumPy network
trained by a NumPy Adam from the same initial weights."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxlab.probes import prefix_relu_net as prn
from jaxlab.probes import prefix_tree as pt
from jaxlab.tasks import function_classes as fc


# -- the tree ------------------------------------------------------------------------------------------
def numpy_tree_predict(s_JC, y_J, sq_C, depth):
    """CART on binary features, written recursively: split a node (>= 2 points, depth left) on the feature
    with the smallest children's SSE (the lowest on ties; both children non-empty), else predict its mean."""
    if len(y_J) == 0:
        return 0.0

    def sse(y):
        return float(np.sum((y - y.mean()) ** 2)) if len(y) else 0.0

    def grow(idx, level):
        if level == depth or len(idx) < 2:
            return y_J[idx].mean()
        best, best_c = np.inf, None
        for c in range(s_JC.shape[1]):
            right = s_JC[idx, c] > 0
            if right.all() or not right.any():
                continue
            cost = sse(y_J[idx[~right]]) + sse(y_J[idx[right]])
            if best_c is None or cost < best - 1e-9 * max(1.0, best):
                best, best_c = cost, c
        if best_c is None:
            return y_J[idx].mean()
        right = s_JC[idx, best_c] > 0
        child = idx[right] if sq_C[best_c] > 0 else idx[~right]
        return grow(child, level + 1)

    return grow(np.arange(len(y_J)), 0)


def _tree_tasks(B=48, N=24, d=5, depth=4, seed=0):
    cfg = fc.Config(function_class="decision_tree", n_dims=d, n_context=N, tree_depth=depth)
    b = jax.jit(fc.sample, static_argnums=(1, 2))(jax.random.key(seed), cfg, B)
    x, y = fc.split_interleaved(b, cfg)
    return np.asarray(x, np.float64), np.asarray(y, np.float64), x, y


def test_tree_prefix_equals_a_numpy_cart_on_sign_features():
    x, y, xj, yj = _tree_tasks()
    got = np.asarray(pt.tree_prefix(xj, yj))
    B, N, _ = x.shape
    want = np.array([[numpy_tree_predict(x[b, :i] > 0, y[b, :i], x[b, i] > 0, 4) for i in range(N)] for b in range(B)])
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
    assert np.all(got[:, 0] == 0)
    # noise-free depth-4 sign trees: with enough examples the matched learner is mostly exact
    assert np.mean(np.abs(got[:, -1] - y[:, -1]) < 1e-5) > 0.5


def test_tree_prefix_is_sklearns_tree_on_sign_features_up_to_its_random_tie_breaks():
    tree = pytest.importorskip("sklearn.tree")
    x, y, xj, yj = _tree_tasks(B=16, N=20, seed=1)
    got = np.asarray(pt.tree_prefix(xj, yj))
    first_state_agrees, total = 0, 0
    for b in range(x.shape[0]):
        for i in (3, 12, 19):
            s = (x[b, :i] > 0).astype(np.float64)
            q = (x[b, i : i + 1] > 0).astype(np.float64)
            # scikit-learn visits the features in a random order and keeps the first best split, so features
            # that split the points alike are tied differently per random_state: ours must be one of its trees
            sk = [
                tree.DecisionTreeRegressor(max_depth=4, random_state=r).fit(s, y[b, :i]).predict(q)[0]
                for r in range(16)
            ]
            assert min(abs(v - got[b, i]) for v in sk) < 1e-5, (b, i, got[b, i], sorted(set(np.round(sk, 5))))
            first_state_agrees += abs(sk[0] - got[b, i]) < 1e-5
            total += 1
    assert first_state_agrees / total > 0.7  # ties are the exception


def test_tree_depth_limits_the_fit():
    x = jnp.asarray(np.random.default_rng(0).normal(size=(1, 40, 3)), jnp.float32)
    y = jnp.asarray((np.asarray(x[0, :, 0]) > 0) * 1.0 + (np.asarray(x[0, :, 1]) > 0) * 2.0, jnp.float32)[None]
    depth1 = np.asarray(pt.tree_prefix(x, y, depth=1))[0, -1]
    depth2 = np.asarray(pt.tree_prefix(x, y, depth=2))[0, -1]
    assert depth2 == pytest.approx(float(y[0, -1]), abs=1e-6)  # two sign splits recover y exactly
    assert depth1 != pytest.approx(float(y[0, -1]), abs=1e-3)


# -- the ReLU network ----------------------------------------------------------------------------------
def numpy_adam_net(p, x_JD, y_J, xq_D, steps, lr, b1=0.9, b2=0.999, eps=1e-8):
    """The 2-layer ReLU network trained by Adam on the mean squared error, gradients by hand, in float64."""
    p = {k: np.array(v, np.float64) for k, v in p.items()}
    m = {k: np.zeros_like(v) for k, v in p.items()}
    v = {k: np.zeros_like(val) for k, val in p.items()}
    n = len(y_J)
    for t in range(1, steps + 1):
        pre = x_JD @ p["W1"] + p["b1"]
        h = np.maximum(pre, 0.0)
        err = h @ p["w2"] + p["b2"] - y_J
        g_out = 2.0 * err / n
        g = {"w2": h.T @ g_out, "b2": np.sum(g_out)}
        g_pre = np.outer(g_out, p["w2"]) * (pre > 0)
        g["W1"], g["b1"] = x_JD.T @ g_pre, g_pre.sum(axis=0)
        for k in p:
            m[k] = b1 * m[k] + (1 - b1) * g[k]
            v[k] = b2 * v[k] + (1 - b2) * g[k] ** 2
            p[k] = p[k] - lr * (m[k] / (1 - b1**t)) / (np.sqrt(v[k] / (1 - b2**t)) + eps)
    return float(np.maximum(xq_D @ p["W1"] + p["b1"], 0.0) @ p["w2"] + p["b2"])


def test_relu_net_prefix_equals_a_numpy_network_trained_by_numpy_adam():
    cfg = fc.Config(function_class="relu_2nn", n_dims=4, n_context=9, hidden=16)
    b = jax.jit(fc.sample, static_argnums=(1, 2))(jax.random.key(3), cfg, 6)
    xj, yj = fc.split_interleaved(b, cfg)
    B, N, d = xj.shape
    key = jax.random.key(11)
    got = np.asarray(prn.relu_net_prefix(xj, yj, key, hidden=20, steps=30))
    init = jax.tree_util.tree_map(np.asarray, prn.init_params(key, B * N, d, 20))
    x, y = np.asarray(xj, np.float64), np.asarray(yj, np.float64)
    for bi in range(B):
        assert got[bi, 0] == 0.0
        for i in range(1, N):
            p = {k: v[bi * N + i] for k, v in init.items()}
            want = numpy_adam_net(p, x[bi, :i], y[bi, :i], x[bi, i], steps=30, lr=prn.LR)
            assert got[bi, i] == pytest.approx(want, rel=2e-3, abs=2e-3), (bi, i)


def test_relu_net_init_is_torchs_uniform_and_training_fits_the_examples():
    p = prn.init_params(jax.random.key(0), 200, 5, 100)
    for name, bound in (("W1", 1 / np.sqrt(5)), ("b1", 1 / np.sqrt(5)), ("w2", 0.1), ("b2", 0.1)):
        a = np.asarray(p[name])
        assert np.abs(a).max() <= bound and np.abs(a).max() > 0.9 * bound
        assert abs(np.std(a) - bound / np.sqrt(3)) < 0.1 * bound
    # a long fit on few points interpolates them: the training error falls far below the targets' variance
    x_JD = jax.random.normal(jax.random.key(1), (6, 3))
    y_J = jnp.sum(x_JD, axis=-1)
    one = prn.init_params(jax.random.key(2), 1, 3, 100)
    params = jax.tree_util.tree_map(lambda v: jnp.repeat(v, 6, axis=0), one)  # the same network, 6 queries
    x_PJD, y_PJ = jnp.broadcast_to(x_JD, (6, 6, 3)), jnp.broadcast_to(y_J, (6, 6))
    fitted = jax.jit(prn.fit_predict, static_argnums=5)(params, x_PJD, y_PJ, jnp.ones((6, 6)), x_JD, 300)
    untrained = prn.net(jax.tree_util.tree_map(lambda v: v[0], one), x_JD)
    assert float(jnp.mean((fitted - y_J) ** 2)) < 0.05 * float(jnp.var(y_J)) < float(jnp.mean((untrained - y_J) ** 2))
