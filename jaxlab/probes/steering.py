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
Harm of steering: the same grid's change of the loss on the steered text (`steering_outcomes`).
Steering on generations: the prompts continued a few tokens by sampling with and without steering, with
  the same noise in every lane (`steered_generation`); the caller counts the concept's events in them.
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
    """[N] next-token probability mass on the marked tokens at the last position.

    `mask_V` is [V] (the same tokens for every sequence) or [N, V] (a mask per sequence).
    """
    p = jax.nn.softmax(logits_NTV[:, -1].astype(jnp.float32), axis=-1)
    mask = mask_V.astype(jnp.float32)
    return p @ mask if mask.ndim == 1 else jnp.sum(p * mask, axis=-1)


def _grid_interventions(
    hooks: Sequence[str], vec_GD: jax.Array, layer_G: jax.Array, N: int, positions_T: jax.Array
) -> list:
    """One intervention per hook for lanes g of N sequences each: lane g adds vec_GD[g] at hooks[layer_G[g]] (a
    one-hot weight: unselected hooks add exact zeros)."""
    ivs = []
    for j, hook in enumerate(hooks):
        value_GD = jnp.where((layer_G == j)[:, None], vec_GD, 0.0)
        ivs.append(add_at(hook, jnp.repeat(value_GD, N, axis=0)[:, None, :], positions_T))
    return ivs


def _grid_logits(
    apply_fn: Callable[..., jax.Array],
    tokens_NT: jax.Array,
    hooks: Sequence[str],
    vectors_LD: jax.Array,
    alphas_A: jax.Array,
    positions_T: jax.Array,
) -> jax.Array:
    """Logits [L, A + 1, N, T, V] with alpha * vectors[l] added at hooks[l], an alpha = 0 lane first."""
    L, N = len(hooks), tokens_NT.shape[0]
    chex.assert_shape(vectors_LD, (L, None))
    alphas = jnp.concatenate([jnp.zeros(1), jnp.asarray(alphas_A, jnp.float32)])
    A1 = alphas.shape[0]
    layer_G = jnp.repeat(jnp.arange(L), A1)  # G = L * (A + 1) lanes, layer-major
    vec_GD = jnp.tile(alphas, L)[:, None] * vectors_LD.astype(jnp.float32)[layer_G]
    tokens = jnp.tile(tokens_NT, (L * A1, 1))  # [G * N, T], lane-major
    logits = apply_fn(tokens, _grid_interventions(hooks, vec_GD, layer_G, N, positions_T))
    return logits.reshape(L, A1, N, *logits.shape[1:])


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
    `mask_V`: [V], or [N, V] per sequence (`marker_mass`).
    """
    return steering_outcomes(apply_fn, tokens_NT, hooks, vectors_LD, alphas_A, positions_T, mask_V)[0]


def steering_outcomes(
    apply_fn: Callable[..., jax.Array],
    tokens_NT: jax.Array,
    hooks: Sequence[str],
    vectors_LD: jax.Array,
    alphas_A: jax.Array,
    positions_T: jax.Array,
    mask_V: jax.Array,
    targets_NT: jax.Array | None = None,
) -> tuple[jax.Array, jax.Array]:
    """(delta [L, A] as `steering_deltas`, loss change [L, A]) from one forward pass of the grid.

    The loss change is the harm of steering on the text itself: with targets y (the next tokens of
    `tokens_NT`), mean_{n,t} [-log p_alpha(y_nt | x) + log p_0(y_nt | x)] in nats, the steered model
    against the unsteered one (the alpha = 0 lane) on the same sequences; zeros without targets.
    """
    logits = _grid_logits(apply_fn, tokens_NT, hooks, vectors_LD, alphas_A, positions_T)
    L, A1, N = logits.shape[:3]
    mask = mask_V if mask_V.ndim == 1 else jnp.tile(mask_V, (L * A1, 1))
    mass = marker_mass(logits.reshape(L * A1 * N, *logits.shape[3:]), mask).reshape(L, A1, N).mean(-1)
    delta = mass[:, 1:] - mass[:, :1]
    if targets_NT is None:
        return delta, jnp.zeros_like(delta)
    chex.assert_equal_shape([tokens_NT, targets_NT])
    logp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
    nll = -jnp.take_along_axis(logp, targets_NT[None, None, ..., None], axis=-1)[..., 0].mean((-1, -2))  # [L, A1]
    return delta, nll[:, 1:] - nll[:, :1]


def steered_generation(
    apply_fn: Callable[..., jax.Array],
    prompt_NT: jax.Array,
    n_new: int,
    hooks: Sequence[str],
    vectors_LD: jax.Array,
    gumbel_GNV: jax.Array,
) -> jax.Array:
    """tokens [L + 1, N, T]: the prompts continued by sampling, unsteered (lane 0) and with vectors[l] added at
    hooks[l] at every position (lane l + 1).

    The model sees T tokens; the first T - n_new of `prompt_NT` are the prompt and positions T - n_new .. T - 1
    are sampled one by one, x_t ~ softmax(logits_{t-1}) (the causal mask keeps the unfilled positions out of
    every earlier logit). Every lane draws with the same Gumbel noise at each position (common random numbers:
    x_t = argmax_v(logits_{t-1,v} + g_{n,t,v}), g = `gumbel_GNV` [n_new, N, V], standard Gumbel draws from a
    fixed key), so lanes differ only through the steering.
    """
    L, (N, T) = len(hooks), prompt_NT.shape
    chex.assert_shape(vectors_LD, (L, None))
    if not 0 < n_new < T:
        raise ValueError(f"n_new must be in (0, {T}), got {n_new}")
    layer_G = jnp.concatenate([jnp.zeros(1, jnp.int32), jnp.arange(L, dtype=jnp.int32)])
    vec_GD = jnp.concatenate([jnp.zeros_like(vectors_LD[:1]), vectors_LD]).astype(jnp.float32)
    ivs = _grid_interventions(hooks, vec_GD, layer_G, N, jnp.ones(T))
    tokens = jnp.tile(prompt_NT, (L + 1, 1))
    chex.assert_shape(gumbel_GNV, (n_new, N, None))
    gumbel = gumbel_GNV.astype(jnp.float32)

    def step(j, toks):
        t = T - n_new + j
        logits = jax.lax.dynamic_index_in_dim(apply_fn(toks, ivs), t - 1, axis=1, keepdims=False)
        g = jnp.tile(gumbel[j], (L + 1, 1))
        nxt = jnp.argmax(logits.astype(jnp.float32) + g, axis=-1).astype(toks.dtype)
        return jax.lax.dynamic_update_index_in_dim(toks, nxt, t, axis=1)

    tokens = jax.lax.fori_loop(0, n_new, step, tokens)
    return tokens.reshape(L + 1, N, T)


def effect_and_slope(alphas_A: jax.Array, deltas_A: jax.Array, alpha_eval: float) -> tuple[jax.Array, jax.Array]:
    """(delta at alpha_eval, least-squares slope through the origin) over the last axis.

    `alpha_eval` must be one of the alphas; deltas may have leading axes ([..., A]).
    """
    alphas = jnp.asarray(alphas_A, jnp.float32)
    at = jnp.argmin(jnp.abs(alphas - alpha_eval))
    slope = jnp.sum(alphas * deltas_A, -1) / jnp.maximum(jnp.sum(alphas**2), 1e-30)
    return deltas_A[..., at], slope
