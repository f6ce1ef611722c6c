"""A greedy depth-D regression tree on sign features, fitted to every prefix of every task at once: the
matched learner for Garg et al.'s decision-tree class (Garg, Tsipras, Liang & Valiant 2022, "What Can
Transformers Learn In-Context?", Fig. 5; code github.com/dtsip/in-context-learning, `src/models.py`,
`DecisionTreeModel`, commit 3383371).

Garg et al.'s tree functions split on the sign of one coordinate at every node
(`function_classes.tree_leaf_index`), so the matched learner is CART restricted to those splits:
features s_c = [x_c > 0]; at a node with training points S (|S| >= 2) and depth < D, the split on
feature c minimizes the children's summed squared error

  SSE(S_L) + SSE(S_R),   S_L = {j in S: x_jc <= 0}, S_R = S \\ S_L, both non-empty,
  SSE(A) = sum_{j in A} y_j^2 - (sum_{j in A} y_j)^2 / |A|

(ties: the lowest c among the costs within TIE_RTOL eps SSE(S) of the least, i.e. equal up to float
rounding); a node with no such split, or at depth D, is a leaf predicting the mean y of its points.
This is scikit-learn's `DecisionTreeRegressor(max_depth=D)` (squared error, min_samples_split 2,
min_samples_leaf 1) fitted to the sign features (its thresholds at 0.5 are the splits at x_c = 0),
except for ties between features, which scikit-learn breaks by a random feature order; its rule
that a pure node is a leaf changes no prediction (every leaf below a pure node predicts the same
mean), so it is not applied. Garg et al. fit scikit-learn's tree (depth 4 and unbounded) and
XGBoost on the raw x, thresholds anywhere; those are not implemented here.

Prefix i of task b fits on the examples j < i (the others masked) and predicts y_i at x_i; with no
example (i = 0) it predicts 0, as Garg's baselines do. Level by level, every point (training and
query) carries the heap index of its node (root 0, children 2n + 1 and 2n + 2); a point whose node
became a leaf stops moving, so the query ends in its leaf, whose training points are those with
the same final index. Static shapes throughout: jit/vmap-able, P = B * N problems at once.

Precision. The sums above are taken of y minus the mean of the node being split (y minus the
problem's training mean for the prediction), so SSE(A) = sum y^2 - (sum y)^2 / |A| does not cancel
when y has an offset or a node's points are close to each other: the tree of y + c is that of y,
its predictions moved by c, up to the rounding of y + c itself.
"""

from __future__ import annotations

from functools import partial

import jax
import jax.numpy as jnp

from jaxlab.probes.prefix_baselines import prefix_mask

TREE_DEPTH = 4  # Garg et al.'s DecisionTreeModel(max_depth=4), the depth of their tree class
TIE_RTOL = 16.0  # split costs within TIE_RTOL eps SSE(node) of the least are ties (equal up to float rounding)


def _check(x_BND: jax.Array, y_BN: jax.Array) -> None:
    if x_BND.ndim != 3 or y_BN.ndim != 2 or x_BND.shape[:2] != y_BN.shape:
        raise ValueError(f"expected x [B, N, d] and y [B, N], got {x_BND.shape} and {y_BN.shape}")


def fit_predict(
    s_PJC: jax.Array, y_PJ: jax.Array, m_PJ: jax.Array, sq_PC: jax.Array, depth: int = TREE_DEPTH
) -> jax.Array:
    """pred [P]: for every problem p, the greedy sign-feature tree (module docstring) of depth `depth`
    fitted to the training points j with m[p, j] = 1 (binary features s [P, J, C] in {0, 1}, targets
    y [P, J]), evaluated at the query's features sq [P, C]; 0 where a problem has no training point."""
    dtype = y_PJ.dtype
    P, J, C = s_PJC.shape
    m_PJ = m_PJ.astype(dtype)
    # y minus its training mean (added back to the prediction: a tree is invariant to an offset in y), so
    # that neither the node means below nor the leaf means round at the scale of an offset
    mean_P = jnp.sum(m_PJ * y_PJ, axis=-1) / jnp.maximum(jnp.sum(m_PJ, axis=-1), 1.0)
    y_PJ = (y_PJ - mean_P[:, None]) * m_PJ
    pos_PJ = jnp.zeros((P, J), jnp.int32)
    pos_P = jnp.zeros((P,), jnp.int32)
    for level in range(depth):
        K, first = 2**level, 2**level - 1
        in_PJK = (pos_PJ[..., None] == first + jnp.arange(K)).astype(dtype) * m_PJ[..., None]
        # y minus the mean of its node: each SSE below is then accurate to rounding of the node's own spread
        count_PK = jnp.sum(in_PJK, axis=1)
        mean_PK = jnp.einsum("pjk,pj->pk", in_PJK, y_PJ) / jnp.maximum(count_PK, 1.0)
        yn_PJ = (y_PJ - jnp.einsum("pjk,pk->pj", in_PJK, mean_PK)) * m_PJ
        right_PJC = s_PJC.astype(dtype)
        stats = {}
        for side, w_PJC in (("r", right_PJC), ("l", 1.0 - right_PJC)):
            n_PKC = jnp.einsum("pjk,pjc->pkc", in_PJK, w_PJC)
            s_PKC = jnp.einsum("pjk,pjc,pj->pkc", in_PJK, w_PJC, yn_PJ)
            q_PKC = jnp.einsum("pjk,pjc,pj->pkc", in_PJK, w_PJC, yn_PJ * yn_PJ)
            stats[side] = (n_PKC, q_PKC - s_PKC**2 / jnp.maximum(n_PKC, 1.0))
        (n_r, sse_r), (n_l, sse_l) = stats["r"], stats["l"]
        valid_PKC = (n_r >= 1) & (n_l >= 1)
        cost_PKC = jnp.where(valid_PKC, sse_l + sse_r, jnp.inf)
        # ties: the lowest feature whose cost is within rounding (TIE_RTOL eps SSE of the node) of the least
        tol_PK = TIE_RTOL * jnp.finfo(dtype).eps * jnp.einsum("pjk,pj->pk", in_PJK, yn_PJ * yn_PJ)
        feat_PK = jnp.argmax(cost_PKC <= jnp.min(cost_PKC, axis=-1, keepdims=True) + tol_PK[..., None], axis=-1)
        split_PK = jnp.any(valid_PKC, axis=-1)

        def descend(pos: jax.Array, s_C: jax.Array) -> jax.Array:
            """The points' next heap index: a child of their node where it splits at this level, else unchanged."""
            k = pos - first
            here = (k >= 0) & (k < K)
            k = jnp.clip(k, 0, K - 1)
            f, split = jnp.take_along_axis(feat_PK, k, axis=1), jnp.take_along_axis(split_PK, k, axis=1)
            go_right = jnp.take_along_axis(s_C, f[..., None], axis=-1)[..., 0].astype(jnp.int32)
            return jnp.where(here & split, 2 * pos + 1 + go_right, pos)

        pos_PJ = descend(pos_PJ, s_PJC)
        pos_P = descend(pos_P[:, None], sq_PC[:, None, :])[:, 0]
    leaf_PJ = (pos_PJ == pos_P[:, None]).astype(dtype) * m_PJ
    count_P = jnp.sum(leaf_PJ, axis=-1)
    return jnp.where(count_P > 0, mean_P + jnp.sum(leaf_PJ * y_PJ, axis=-1) / jnp.maximum(count_P, 1.0), 0.0)


@partial(jax.jit, static_argnames=("depth",))
def tree_prefix(x_BND: jax.Array, y_BN: jax.Array, depth: int = TREE_DEPTH) -> jax.Array:
    """pred [B, N]: the greedy depth-`depth` sign-feature tree (module docstring) fitted to the examples before
    i, at x_i (0 at i = 0)."""
    _check(x_BND, y_BN)
    B, N, d = x_BND.shape
    s_BNC = (x_BND > 0).astype(x_BND.dtype)
    m_IJ = prefix_mask(N, x_BND.dtype)
    s_PJC = jnp.broadcast_to(s_BNC[:, None], (B, N, N, d)).reshape(B * N, N, d)
    y_PJ = jnp.broadcast_to(y_BN[:, None], (B, N, N)).reshape(B * N, N)
    m_PJ = jnp.broadcast_to(m_IJ[None], (B, N, N)).reshape(B * N, N)
    pred_P = fit_predict(s_PJC, y_PJ, m_PJ, s_BNC.reshape(B * N, d), depth)
    return pred_P.reshape(B, N)


__all__ = ["TIE_RTOL", "TREE_DEPTH", "fit_predict", "tree_prefix"]
