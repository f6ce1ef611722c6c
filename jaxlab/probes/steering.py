"""Concept directions, their readability and their steering effect (She et al. 2025, "Intervention Detector").

For one concept, paired stimuli (the same text with the concept on / off) give last-token hidden
states h_on_i, h_off_i [D] at every residual-stream layer, and differences d_i = h_on_i - h_off_i.
The pairs are split into a fitting part (directions, probes) and a held-out part (scores).

ID reader (after Zou et al. 2023's RepE reading vectors, as She et al. use it):
  PCA direction v: the first principal component of the sign-symmetrized differences {+d_i, -d_i}
      (RepE shuffles the pair order, i.e. randomizes the sign of d_i, before PCA; symmetrizing is
      the deterministic version of that), i.e. the top eigenvector of S = (1/n) sum_i d_i d_i^T,
      oriented so that mean_i(d_i) . v >= 0;
  explained-variance ratio: lambda_1(S) / trace(S);
  difference-of-means direction: mean_i(d_i) / ||mean_i(d_i)||;
  ID score: the fraction of held-out pairs whose projected difference is positive, ties (a pair
      the layer does not tell apart, d_i . v = 0) counting one half,
      mean_i ([d_i . v > 0] + [d_i . v = 0] / 2)  (0.5 for an uninformative direction, 1 for a perfect one).
Linear separability: held-out accuracy of the closed-form ridge classifier
  (`jaxlab.probes.linear_probe`) trained on {(h_on_i, 1), (h_off_i, 0)} of the fitting pairs.
Steering effect: on base sequences x_b (concept off), add alpha * s_l * v_l to the residual stream at
  layer l (all positions, or the last one), s_l = sqrt(mean_b ||h_l(x_b)_last||^2) the RMS norm of the
  last-token state there (so alpha is relative to the stream's own scale), and measure
      delta(alpha) = mean_b [ m_alpha(x_b) - m_0(x_b) ],   m(x) = sum_{j in M_k} p(next = j | x),
  the change of the next-token probability mass on the concept's marker tokens at the last position.
  delta(0) = 0 exactly (m_0 is the alpha = 0 lane of the same computation). Reported: delta at a
  fixed alpha and the least-squares slope through the origin, sum_a alpha_a delta_a / sum_a alpha_a^2.
Direction stability: the cosine between two directions (across checkpoints or concepts,
  `jaxlab.probes.cosine`); the directions are oriented (above), so the signed cosine is meaningful.

Layers are residual-stream reading points: layer l is the stream after block l
(`blocks.{l}.hook_resid_post`, TransformerLens names), l = 0..n_layers-1, i.e.
`jaxlab.models.residual_hooks(n_layers, embeddings=False)`; `embeddings=True` there adds the
embedding stream (`blocks.0.hook_resid_pre`) in front. Every function works for one model; vmap
over runs and checkpoints (params with leading axes). The layer axis is vmapped inside
`read_concept`; `steering_deltas` folds its (layer, alpha) grid into the batch, selecting each
lane's hook with a one-hot weight (pure-data interventions, no Python loop over layers).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import NamedTuple

import chex
import jax
import jax.numpy as jnp

from jaxlab import linalg
from jaxlab.models import Transformer, add_at, residual_hooks, run_with_cache
from jaxlab.probes.linear_probe import ridge_classifier_accuracy

POSITIONS = ("all", "last")
DIRECTIONS = ("pca", "mean_diff")


def last_token_states(
    model: Transformer, params: chex.ArrayTree, tokens_NT: jax.Array, hooks: Sequence[str] | None = None
) -> tuple[jax.Array, jax.Array]:
    """(states [L, N, D] at the reading points (default: after each block), logits [N, V]), last token only."""
    hooks = tuple(residual_hooks(model.cfg.n_layers, embeddings=False) if hooks is None else hooks)
    logits, cache = run_with_cache(model, params, tokens_NT, names=hooks)
    return jnp.stack([cache[h][:, -1] for h in hooks]).astype(jnp.float32), logits[:, -1].astype(jnp.float32)


# -- reading ---------------------------------------------------------------------------------------
def pca_direction(diffs_ND: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(v [D] unit, explained-variance ratio []) of the sign-symmetrized differences (module docstring)."""
    chex.assert_rank(diffs_ND, 2)
    d = diffs_ND.astype(jnp.float32)
    second = d.T @ d / d.shape[0]
    evals, evecs = linalg.eigh(second)  # ascending
    v = evecs[:, -1]
    sign = jnp.where(d.mean(0) @ v < 0, -1.0, 1.0)
    ratio = evals[-1] / jnp.maximum(jnp.sum(jnp.clip(evals, 0.0)), 1e-30)
    return sign * v, ratio


def mean_diff_direction(diffs_ND: jax.Array) -> jax.Array:
    """mean_i(d_i) / ||mean_i(d_i)|| (zero when the mean is zero)."""
    m = diffs_ND.astype(jnp.float32).mean(0)
    return m / jnp.maximum(jnp.linalg.norm(m), 1e-30)


def id_score(diffs_ND: jax.Array, v_D: jax.Array) -> jax.Array:
    """mean_i ([d_i . v > 0] + [d_i . v = 0] / 2): the fraction of pairs the direction orders correctly."""
    chex.assert_rank([diffs_ND, v_D], [2, 1])
    proj = diffs_ND.astype(jnp.float32) @ v_D
    return jnp.mean(jnp.where(proj > 0, 1.0, jnp.where(proj == 0, 0.5, 0.0)))


def separability(
    on_fit_ND: jax.Array, off_fit_ND: jax.Array, on_test_ND: jax.Array, off_test_ND: jax.Array, lam: float = 1e-2
) -> jax.Array:
    """Held-out accuracy of the ridge classifier on / off (linear separability)."""
    x_fit = jnp.concatenate([on_fit_ND, off_fit_ND])
    y_fit = jnp.concatenate([jnp.ones(on_fit_ND.shape[0], jnp.int32), jnp.zeros(off_fit_ND.shape[0], jnp.int32)])
    x_test = jnp.concatenate([on_test_ND, off_test_ND])
    y_test = jnp.concatenate([jnp.ones(on_test_ND.shape[0], jnp.int32), jnp.zeros(off_test_ND.shape[0], jnp.int32)])
    return ridge_classifier_accuracy(x_fit, y_fit, x_test, y_test, 2, lam)


class Reading(NamedTuple):
    """What the ID reader finds for one concept at every layer ([L] scores, [L, D] directions)."""

    id_score: jax.Array
    id_score_mean_diff: jax.Array
    ev_ratio: jax.Array
    separability: jax.Array
    v_pca: jax.Array
    v_mean_diff: jax.Array


def read_concept(h_on_LND: jax.Array, h_off_LND: jax.Array, n_fit: int, lam: float = 1e-2) -> Reading:
    """The ID reader and the separability probe at every layer; pairs [:n_fit] fit, the rest score."""
    chex.assert_rank([h_on_LND, h_off_LND], 3)
    chex.assert_equal_shape([h_on_LND, h_off_LND])
    if not 0 < n_fit < h_on_LND.shape[1]:
        raise ValueError(f"n_fit must be in (0, {h_on_LND.shape[1]}), got {n_fit}")

    def one_layer(on, off):
        d = on - off
        v, ratio = pca_direction(d[:n_fit])
        m = mean_diff_direction(d[:n_fit])
        sep = separability(on[:n_fit], off[:n_fit], on[n_fit:], off[n_fit:], lam)
        return id_score(d[n_fit:], v), id_score(d[n_fit:], m), ratio, sep, v, m

    out = jax.vmap(one_layer)(h_on_LND.astype(jnp.float32), h_off_LND.astype(jnp.float32))
    return Reading(*out)


# -- steering --------------------------------------------------------------------------------------
def rms_norm(h_ND: jax.Array) -> jax.Array:
    """sqrt(mean_n ||h_n||^2): the scale that makes steering strengths relative."""
    return jnp.sqrt(jnp.mean(jnp.sum(h_ND.astype(jnp.float32) ** 2, -1)))


def position_mask(kind: str, seq_len: int) -> jax.Array:
    """[T] float: 1 at the steered positions ("all" or "last")."""
    if kind == "all":
        return jnp.ones(seq_len)
    if kind == "last":
        return jnp.zeros(seq_len).at[-1].set(1.0)
    raise ValueError(f"positions: unknown value {kind!r} (allowed: {', '.join(POSITIONS)})")


def marker_mass(logits_NTV: jax.Array, mask_V: jax.Array) -> jax.Array:
    """[N] next-token probability mass on the marked tokens at the last position."""
    p = jax.nn.softmax(logits_NTV[:, -1].astype(jnp.float32), axis=-1)
    return p @ mask_V.astype(jnp.float32)


def steering_deltas(
    apply_fn: Callable[..., jax.Array],
    tokens_NT: jax.Array,
    hooks: Sequence[str],
    vectors_LD: jax.Array,
    alphas_A: jax.Array,
    positions_T: jax.Array,
    mask_V: jax.Array,
) -> jax.Array:
    """delta [L, A]: change of marker mass when alpha * vectors[l] is added at hooks[l].

    `apply_fn(tokens, interventions) -> logits` is one model (e.g. `partial(train.apply, params)`).
    The (layer, alpha) grid, with an alpha = 0 lane first, is folded into the batch: lane g adds
    its own vector at every hook with a one-hot weight (unselected hooks add exact zeros), as pure
    data, so one forward pass covers the grid and there is no Python loop over layers or alphas.
    """
    L, N = len(hooks), tokens_NT.shape[0]
    chex.assert_shape(vectors_LD, (L, None))
    alphas = jnp.concatenate([jnp.zeros(1), jnp.asarray(alphas_A, jnp.float32)])
    A1 = alphas.shape[0]
    layer_G = jnp.repeat(jnp.arange(L), A1)  # G = L * (A + 1) lanes, layer-major
    vec_GD = jnp.tile(alphas, L)[:, None] * vectors_LD.astype(jnp.float32)[layer_G]
    tokens = jnp.tile(tokens_NT, (L * A1, 1))  # [G * N, T], lane-major
    ivs = []
    for j, hook in enumerate(hooks):
        value_GD = jnp.where((layer_G == j)[:, None], vec_GD, 0.0)
        ivs.append(add_at(hook, jnp.repeat(value_GD, N, axis=0)[:, None, :], positions_T))
    mass = marker_mass(apply_fn(tokens, ivs), mask_V).reshape(L, A1, N).mean(-1)
    return mass[:, 1:] - mass[:, :1]


def effect_and_slope(alphas_A: jax.Array, deltas_A: jax.Array, alpha_eval: float) -> tuple[jax.Array, jax.Array]:
    """(delta at alpha_eval, least-squares slope through the origin) over the last axis.

    `alpha_eval` must be one of the alphas; deltas may have leading axes ([..., A]).
    """
    alphas = jnp.asarray(alphas_A, jnp.float32)
    at = jnp.argmin(jnp.abs(alphas - alpha_eval))
    slope = jnp.sum(alphas * deltas_A, -1) / jnp.maximum(jnp.sum(alphas**2), 1e-30)
    return deltas_A[..., at], slope
