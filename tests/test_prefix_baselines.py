"""Garg et al.'s baselines at every prefix length (`jaxlab.probes.prefix_baselines`) against
straightforward NumPy loops over tasks and prefix lengths (np.linalg.lstsq, a NumPy kNN, scikit-learn's
Lasso), their invariances and awkward inputs; the greedy sign-feature tree (`probes.prefix_tree`) under
an offset in y against a float64 NumPy tree."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from sklearn.linear_model import Lasso

from jaxlab import linalg
from jaxlab.probes import prefix_baselines as pb
from jaxlab.probes import prefix_tree as pt
from jaxlab.tasks import function_classes as fc
from jaxlab.tasks import sample

B, N, D = 5, 11, 4  # prefixes 0..10: under-determined (i < 4), square (i = 4) and over-determined


def _data(seed=0, b=B, n=N, d=D, noise=0.0, sparse=None):
    rs = np.random.default_rng(seed)
    x = rs.standard_normal((b, n, d)).astype(np.float32)
    w = rs.standard_normal((b, d))
    if sparse is not None:
        for t in range(b):
            w[t, rs.permutation(d)[sparse:]] = 0.0
    y = (np.einsum("bnd,bd->bn", x, w) + noise * rs.standard_normal((b, n))).astype(np.float32)
    return x, y


# -- NumPy references: loops over tasks and prefix lengths ------------------------------------------------


def _np_prefix(fit, x, y):
    """pred[t, i] = x[t, i] . fit(x[t, :i], y[t, :i]); 0 at i = 0."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    pred = np.zeros(y.shape)
    for t in range(x.shape[0]):
        for i in range(1, x.shape[1]):
            pred[t, i] = x[t, i] @ fit(x[t, :i], y[t, :i])
    return pred


def _np_lstsq(X, y):
    return np.linalg.lstsq(X, y, rcond=None)[0]  # the minimum-norm solution


def _np_ridge(lam):
    return lambda X, y: np.linalg.solve(X.T @ X + lam * np.eye(X.shape[1]), X.T @ y)


def _np_averaging(X, y):
    return (y[:, None] * X).mean(0)


def _np_knn(x, y, k=3):
    """Garg's NNModel (models.py:146-168): the mean y of the min(i, k) nearest earlier inputs."""
    x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
    pred = np.zeros(y.shape)
    for t in range(x.shape[0]):
        for i in range(1, x.shape[1]):
            dist = np.sqrt(((x[t, :i] - x[t, i]) ** 2).sum(-1))
            nearest = np.argsort(dist, kind="stable")[: min(i, k)]
            pred[t, i] = y[t, nearest].mean()
    return pred


def _sk_lasso(alpha):
    def fit(X, y):
        return Lasso(alpha=alpha, fit_intercept=False, max_iter=1_000_000, tol=1e-12).fit(X, y).coef_

    return fit


def _scale(y):
    return float(np.abs(y).max())


# -- against the references ---------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_least_squares_against_lstsq_float64():
    x, y = _data(1)
    with jax.enable_x64(True):
        pred = np.asarray(pb.least_squares_prefix(jnp.asarray(x, jnp.float64), jnp.asarray(y, jnp.float64)))
        assert pred.dtype == np.float64
    np.testing.assert_allclose(pred, _np_prefix(_np_lstsq, x, y), rtol=1e-7, atol=1e-7)


@pytest.mark.timeout(120)
def test_least_squares_against_lstsq_float32():
    x, y = _data(2, noise=0.5)
    pred = np.asarray(pb.least_squares_prefix(jnp.asarray(x), jnp.asarray(y)))
    assert pred.shape == (B, N) and pred.dtype == np.float32
    ref = _np_prefix(_np_lstsq, x, y)
    np.testing.assert_array_equal(pred[:, 0], 0)
    np.testing.assert_allclose(pred, ref, rtol=1e-3, atol=1e-3 * _scale(ref))


@pytest.mark.timeout(120)
def test_least_squares_underdetermined_is_min_norm_and_interpolates():
    """i <= d: the minimum-norm interpolant. A query equal to an earlier input gets that input's y; a
    query orthogonal to all earlier inputs gets 0 (the min-norm w lies in their span)."""
    rs = np.random.default_rng(3)
    d, n = 6, 5
    x = rs.standard_normal((2, n, d)).astype(np.float32)
    y = rs.standard_normal((2, n)).astype(np.float32)
    x[0, 3] = x[0, 1]  # query 3 repeats example 1
    q, _ = np.linalg.qr(x[1, :4].T, mode="complete")
    x[1, 4] = 3.0 * q[:, -1]  # query 4 is orthogonal to examples 0..3
    pred = np.asarray(pb.least_squares_prefix(jnp.asarray(x), jnp.asarray(y)))
    assert pred[0, 3] == pytest.approx(y[0, 1], abs=1e-4)
    assert pred[1, 4] == pytest.approx(0.0, abs=1e-4)
    np.testing.assert_allclose(pred, _np_prefix(_np_lstsq, x, y), rtol=1e-3, atol=1e-3)


@pytest.mark.timeout(120)
@pytest.mark.parametrize("lam", [0.1, 2.0])
def test_ridge_against_numpy(lam):
    x, y = _data(4, noise=0.3)
    pred = np.asarray(pb.ridge_prefix(jnp.asarray(x), jnp.asarray(y), lam))
    ref = _np_prefix(_np_ridge(lam), x, y)
    np.testing.assert_allclose(pred, ref, rtol=1e-4, atol=1e-4 * _scale(ref))


def test_averaging_against_numpy():
    x, y = _data(5)
    pred = np.asarray(pb.averaging_prefix(jnp.asarray(x), jnp.asarray(y)))
    ref = _np_prefix(_np_averaging, x, y)
    np.testing.assert_allclose(pred, ref, rtol=1e-5, atol=1e-5 * _scale(ref))


@pytest.mark.parametrize("k", [1, 3, 20])
def test_knn_against_numpy(k):
    x, y = _data(6)
    pred = np.asarray(pb.knn_prefix(jnp.asarray(x), jnp.asarray(y), k=k))
    np.testing.assert_allclose(pred, _np_knn(x, y, k), rtol=1e-6, atol=1e-6)
    # fewer than k examples: the mean of all of them (k = min(i, n_neighbors), models.py:163)
    np.testing.assert_allclose(pred[:, 1], y[:, 0], rtol=1e-6)
    if k >= 2:
        np.testing.assert_allclose(pred[:, 2], y[:, :2].mean(1), rtol=1e-5)


def test_knn_ties_go_to_the_earlier_example():
    x = np.zeros((1, 4, 2), np.float32)  # all inputs equal: every distance ties
    y = np.asarray([[1.0, 2.0, 4.0, 8.0]], np.float32)
    pred = np.asarray(pb.knn_prefix(jnp.asarray(x), jnp.asarray(y), k=2))
    np.testing.assert_allclose(pred, [[0.0, 1.0, 1.5, 1.5]])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("alpha", [0.1, 0.01])
def test_lasso_against_sklearn(alpha):
    """Garg's sparse linear regression (models.py:268: Lasso(alpha, fit_intercept=False)), k = 2 of d = 8,
    default iterations; prefixes 1..13 span under- and over-determined fits."""
    x, y = _data(7, b=4, n=14, d=8, sparse=2)
    pred = np.asarray(pb.lasso_prefix(jnp.asarray(x), jnp.asarray(y), alpha))
    ref = _np_prefix(_sk_lasso(alpha), x, y)
    np.testing.assert_allclose(pred, ref, rtol=0, atol=1e-4)
    np.testing.assert_array_equal(pred[:, 0], 0)


@pytest.mark.timeout(120)
def test_lasso_small_alpha_with_more_iterations():
    x, y = _data(8, b=3, n=12, d=6, sparse=2, noise=0.1)
    pred = np.asarray(pb.lasso_prefix(jnp.asarray(x), jnp.asarray(y), 0.001, n_iter=20000))
    np.testing.assert_allclose(pred, _np_prefix(_sk_lasso(0.001), x, y), rtol=0, atol=1e-4)


@pytest.mark.timeout(120)
def test_lasso_large_alpha_predicts_zero():
    """alpha >= max_j |X^T y / n|_j: w = 0 is the LASSO solution."""
    x, y = _data(9)
    pred = np.asarray(pb.lasso_prefix(jnp.asarray(x), jnp.asarray(y), 1e3, n_iter=50))
    np.testing.assert_array_equal(pred, 0)


@pytest.mark.timeout(120)
def test_lasso_solve_against_sklearn_coefficients():
    rs = np.random.default_rng(10)
    X = rs.standard_normal((3, 9, 5))
    w = np.zeros((3, 5))
    w[:, :2] = rs.standard_normal((3, 2))
    y = np.einsum("pnd,pd->pn", X, w) + 0.05 * rs.standard_normal((3, 9))
    gram = np.einsum("pnd,pne->pde", X, X) / 9
    xty = np.einsum("pnd,pn->pd", X, y) / 9
    got = np.asarray(jax.jit(pb.lasso_solve)(jnp.asarray(gram, jnp.float32), jnp.asarray(xty, jnp.float32), 0.05))
    ref = np.stack([_sk_lasso(0.05)(X[p], y[p]) for p in range(3)])
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-4)
    with pytest.raises(ValueError, match="n_iter"):
        pb.lasso_solve(jnp.asarray(gram), jnp.asarray(xty), 0.05, n_iter=pb.LASSO_STAGES - 1)


# -- invariances ----------------------------------------------------------------------------------------

ALL_FAST = ("least_squares", "ridge", "knn", "averaging")


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", pb.ALGORITHMS)
def test_permuting_earlier_examples_changes_nothing_from_i_on(name):
    x, y = _data(11, noise=0.2)
    i = 6
    perm = np.random.default_rng(0).permutation(i)
    xp, yp = x.copy(), y.copy()
    xp[:, :i], yp[:, :i] = x[:, perm], y[:, perm]
    kw = {"lasso_iters": 2000, "lasso_alpha": 0.1}
    a = np.asarray(pb.prefix_predictions(name, jnp.asarray(x), jnp.asarray(y), **kw))
    b = np.asarray(pb.prefix_predictions(name, jnp.asarray(xp), jnp.asarray(yp), **kw))
    np.testing.assert_allclose(a[:, i:], b[:, i:], rtol=1e-4, atol=1e-4 * _scale(a))


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", pb.ALGORITHMS)
def test_prediction_i_ignores_later_examples_and_y_i(name):
    x, y = _data(12)
    i = 5
    x2, y2 = x.copy(), y.copy()
    x2[:, i + 1 :] += 7.0
    y2[:, i:] = -y2[:, i:] + 3.0
    kw = {"lasso_iters": 500}
    a = np.asarray(pb.prefix_predictions(name, jnp.asarray(x), jnp.asarray(y), **kw))
    b = np.asarray(pb.prefix_predictions(name, jnp.asarray(x2), jnp.asarray(y2), **kw))
    np.testing.assert_array_equal(a[:, : i + 1], b[:, : i + 1])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("name", ALL_FAST)
def test_linear_in_y(name):
    x, y = _data(13, noise=0.3)
    a = np.asarray(pb.prefix_predictions(name, jnp.asarray(x), jnp.asarray(y)))
    b = np.asarray(pb.prefix_predictions(name, jnp.asarray(x), jnp.asarray(-2.5 * y)))
    np.testing.assert_allclose(b, -2.5 * a, rtol=1e-4, atol=1e-4 * _scale(b))


@pytest.mark.timeout(120)
def test_lasso_scaling_y_and_alpha_together():
    x, y = _data(14, sparse=2)
    a = np.asarray(pb.lasso_prefix(jnp.asarray(x), jnp.asarray(y), 0.1, n_iter=2000))
    b = np.asarray(pb.lasso_prefix(jnp.asarray(x), jnp.asarray(3.0 * y), 0.3, n_iter=2000))
    np.testing.assert_allclose(b, 3.0 * a, rtol=1e-4, atol=1e-4 * _scale(b))


@pytest.mark.timeout(120)
def test_least_squares_recovers_noiseless_linear_functions_and_is_invariant_to_linear_maps_of_x():
    x, y = _data(15)
    pred = np.asarray(pb.least_squares_prefix(jnp.asarray(x), jnp.asarray(y)))
    np.testing.assert_allclose(pred[:, D:], y[:, D:], rtol=1e-3, atol=1e-3 * _scale(y))  # i >= d: exact
    a = np.random.default_rng(1).standard_normal((D, D)).astype(np.float32) + 2 * np.eye(D, dtype=np.float32)
    pred_a = np.asarray(pb.least_squares_prefix(jnp.asarray(x @ a), jnp.asarray(y)))
    np.testing.assert_allclose(pred_a[:, D:], pred[:, D:], rtol=1e-3, atol=1e-3 * _scale(y))


def test_knn_and_its_neighbours_are_translation_invariant_under_a_large_offset():
    x, y = _data(16)
    a = np.asarray(pb.knn_prefix(jnp.asarray(x), jnp.asarray(y)))
    b = np.asarray(pb.knn_prefix(jnp.asarray(x + 100.0), jnp.asarray(y)))
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(b, _np_knn(x + 100.0, y), rtol=1e-6, atol=1e-6)


# -- awkward inputs ----------------------------------------------------------------------------------------


@pytest.mark.timeout(120)
@pytest.mark.parametrize("kind", ["zero", "constant", "duplicate"])
def test_degenerate_features(kind):
    """A zero column, a constant column (an intercept, with a large offset) and a duplicated column
    (rank-deficient for every prefix): least squares is still the minimum-norm solution, and ridge,
    averaging and LASSO match their references."""
    x, y = _data(17, noise=0.1)
    if kind == "zero":
        x[..., 0] = 0.0
    elif kind == "constant":
        x[..., 0] = 1.0
        y = y + 5.0
    else:
        x[..., 1] = x[..., 0]
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    ref = _np_prefix(_np_lstsq, x, y)
    np.testing.assert_allclose(pb.least_squares_prefix(xj, yj), ref, rtol=2e-3, atol=2e-3 * _scale(ref))
    ref = _np_prefix(_np_ridge(0.5), x, y)
    np.testing.assert_allclose(pb.ridge_prefix(xj, yj, 0.5), ref, rtol=1e-4, atol=1e-4 * _scale(ref))
    ref = _np_prefix(_np_averaging, x, y)
    np.testing.assert_allclose(pb.averaging_prefix(xj, yj), ref, rtol=1e-5, atol=1e-5 * _scale(ref))
    ref = _np_prefix(_sk_lasso(0.1), x, y)
    np.testing.assert_allclose(pb.lasso_prefix(xj, yj, 0.1), ref, rtol=0, atol=1e-4 * max(1.0, _scale(ref)))


@pytest.mark.timeout(120)
def test_single_example_and_single_dimension():
    x = jnp.asarray([[[2.0], [3.0], [-1.0]]])
    y = jnp.asarray([[4.0, 6.0, -2.0]])  # y = 2 x
    np.testing.assert_allclose(pb.least_squares_prefix(x, y), [[0.0, 6.0, -2.0]], rtol=1e-5)
    np.testing.assert_allclose(pb.averaging_prefix(x, y), [[0.0, 24.0, -(8 + 18) / 2]], rtol=1e-5)
    np.testing.assert_allclose(pb.knn_prefix(x, y), [[0.0, 4.0, 5.0]], rtol=1e-5)
    for name in pb.ALGORITHMS:
        one = pb.prefix_predictions(name, x[:, :1], y[:, :1], lasso_iters=10)
        assert one.shape == (1, 1) and float(one[0, 0]) == 0.0


# -- shapes, jit, vmap, LAPACK ----------------------------------------------------------------------------


@pytest.mark.timeout(120)
def test_jit_vmap_shapes_and_no_batched_lapack_calls():
    x, y = _data(18)
    xj, yj = jnp.asarray(x), jnp.asarray(y)
    for name in pb.ALGORITHMS:
        fn = jax.jit(lambda a, b, name=name: pb.prefix_predictions(name, a, b, lasso_iters=100))
        pred = fn(xj, yj)
        assert pred.shape == (B, N) and pred.dtype == jnp.float32
        assert np.all(np.isfinite(np.asarray(pred)))
        stacked = jax.vmap(fn)(xj[None].repeat(2, 0), yj[None].repeat(2, 0))
        np.testing.assert_allclose(stacked[1], pred, rtol=1e-5, atol=1e-5)
        hlo = fn.lower(xj, yj).compile().as_text()
        assert linalg.batched_lapack_calls(hlo) == [], name


def test_normalized_error_and_baseline_errors():
    x, y = _data(19)
    pred = np.asarray(pb.averaging_prefix(jnp.asarray(x), jnp.asarray(y)))
    err = np.asarray(pb.normalized_error(jnp.asarray(pred), jnp.asarray(y), 4))
    ref = np.array([np.mean([(pred[t, i] - y[t, i]) ** 2 for t in range(B)]) / 4 for i in range(N)])
    np.testing.assert_allclose(err, ref, rtol=1e-5)
    out = pb.baseline_errors(jnp.asarray(x), jnp.asarray(y), ("averaging", "knn"))
    assert set(out) == {"averaging", "knn"} and out["knn"].shape == (N,)
    np.testing.assert_allclose(out["averaging"], err, rtol=1e-6)  # normalized by d = x.shape[-1] = 4
    half = pb.baseline_errors(jnp.asarray(x), jnp.asarray(y), ("averaging",), normalizer=2)
    np.testing.assert_allclose(half["averaging"], 2 * err, rtol=1e-6)
    # i = 0: every baseline predicts 0, so the error there is E[y^2] / d
    np.testing.assert_allclose(err[0], np.mean(y[:, 0] ** 2) / 4, rtol=1e-5)
    with pytest.raises(ValueError, match="unknown algorithm"):
        pb.prefix_predictions("xgboost", jnp.asarray(x), jnp.asarray(y))
    with pytest.raises(ValueError, match="k must be"):
        pb.knn_prefix(jnp.asarray(x), jnp.asarray(y), k=0)
    with pytest.raises(ValueError, match="expected x"):
        pb.averaging_prefix(jnp.asarray(x), jnp.asarray(y[:, :-1]))


@pytest.mark.timeout(120)
def test_least_squares_error_curve_on_linear_regression():
    """Garg's Figure 2 shape: error 1 (E[y^2] / d) with no example, about (d - i) / d below d, 0 beyond."""
    x, y = _data(20, b=400, n=8, d=D)
    err = np.asarray(pb.normalized_error(pb.least_squares_prefix(jnp.asarray(x), jnp.asarray(y)), jnp.asarray(y), D))
    assert err[0] == pytest.approx(1.0, abs=0.25)
    for i in range(1, D):
        # the min-norm fit is the projection P w onto the span of i inputs: E[(x . (I - P) w)^2] = d - i
        assert err[i] == pytest.approx((D - i) / D, abs=0.25)
    assert np.all(err[D + 1 :] < 1e-6)


@pytest.mark.timeout(120)
def test_garg_baselines_on_sampled_sparse_linear_tasks():
    """End to end: the task's batch, split into x and y, through Garg's sparse-regression baselines."""
    cfg = fc.Config(function_class="sparse_linear", n_dims=8, n_context=14, sparsity=2)
    assert set(pb.GARG_BASELINES) == set(fc.FUNCTION_CLASSES)
    batch = jax.jit(sample, static_argnums=(1, 2))(jax.random.key(0), cfg, 64)
    x, y = fc.split_interleaved(batch, cfg)
    errs = pb.baseline_errors(x, y, pb.GARG_BASELINES["sparse_linear"], normalizer=fc.error_normalizer(cfg))
    assert set(errs) == {"least_squares", "knn", "averaging", "lasso"}
    for err in errs.values():
        assert err[0] == pytest.approx(1.0, abs=0.4)  # E[y^2] / k = 1 with no example
    assert np.all(np.asarray(errs["least_squares"])[9:] < 1e-6)  # exact once i > d
    lasso = np.asarray(errs["lasso"])
    assert lasso[6] < 0.2 * float(errs["least_squares"][6])  # k = 2 of d = 8: LASSO learns with i < d


# -- the greedy sign-feature tree (`probes.prefix_tree`) under an offset in y -----------------------------


def _np_sign_tree(s_JC, y_J, sq_C, depth):
    """Float64 CART on binary features (the lowest feature among splits within 1e-9 of the best SSE)."""
    if len(y_J) == 0:
        return 0.0
    idx = np.arange(len(y_J))
    for _ in range(depth):
        if len(idx) < 2:
            break
        costs = []
        for c in range(s_JC.shape[1]):
            right = s_JC[idx, c]
            if right.all() or not right.any():
                costs.append(np.inf)
                continue
            a, b = y_J[idx[right]], y_J[idx[~right]]
            costs.append(np.sum((a - a.mean()) ** 2) + np.sum((b - b.mean()) ** 2))
        costs = np.array(costs)
        if np.all(np.isinf(costs)):
            break
        best = int(np.flatnonzero(costs <= costs.min() + 1e-9 * max(1.0, costs.min()))[0])
        idx = idx[s_JC[idx, best] == sq_C[best]]
    return float(y_J[idx].mean())


@pytest.mark.timeout(120)
@pytest.mark.parametrize("offset", [1e3, 1e4])
def test_tree_prefix_is_invariant_to_an_offset_in_y(offset):
    # Targets on a 2^-8 grid, so y + offset is exact in float32 and the float64 tree of y + offset is that of y
    # shifted; the float32 tree used to lose its splits to cancellation in sum(y^2) - (sum y)^2 / n.
    cfg = fc.Config(function_class="decision_tree", n_dims=5, n_context=24, tree_depth=4)
    x, y = fc.split_interleaved(jax.jit(fc.sample, static_argnums=(1, 2))(jax.random.key(3), cfg, 12), cfg)
    x, y = np.asarray(x), np.round(np.asarray(y, np.float64) * 256) / 256
    y_off = np.float32(y + offset)
    assert np.all(y_off.astype(np.float64) - offset == y)
    got = np.asarray(pt.tree_prefix(jnp.asarray(x), jnp.asarray(y_off)), np.float64)
    base = np.asarray(pt.tree_prefix(jnp.asarray(x), jnp.asarray(y, jnp.float32)), np.float64)
    s = x > 0
    want = np.array([[_np_sign_tree(s[b, :i], y[b, :i], s[b, i], 4) for i in range(1, 24)] for b in range(12)])
    tol = 4 * np.finfo(np.float32).eps * offset  # the rounding of a mean of y + offset
    np.testing.assert_allclose(got[:, 1:] - offset, want, rtol=0, atol=tol)
    np.testing.assert_allclose(got[:, 1:] - offset, base[:, 1:], rtol=0, atol=tol)
    np.testing.assert_allclose(base[:, 1:], want, rtol=0, atol=1e-5)
    assert np.all(got[:, 0] == 0)  # no example: 0, as without the offset


@pytest.mark.timeout(120)
def test_tree_prefix_breaks_ties_and_near_ties_as_a_float64_tree():
    # 20 sign features and up to 40 examples: many features split a small node alike (exact ties, which float32
    # rounding used to break at random) and nodes whose points are nearly equal (cancellation in the SSEs)
    B, N, d = 24, 41, 20
    cfg = fc.Config(function_class="decision_tree", n_dims=d, n_context=N, tree_depth=4)
    x, y = fc.split_interleaved(jax.jit(fc.sample, static_argnums=(1, 2))(jax.random.key(0), cfg, B), cfg)
    s, y64 = np.asarray(x) > 0, np.asarray(y, np.float64)
    want = np.array([[_np_sign_tree(s[b, :i], y64[b, :i], s[b, i], 4) for i in range(1, N)] for b in range(B)])
    np.testing.assert_allclose(np.asarray(pt.tree_prefix(x, y))[:, 1:], want, rtol=0, atol=1e-5)
