"""Probes of in-context autoregressive learning (Sander et al., ICML 2024), vmappable over runs.

Sequences s_{t+1} = W s_t (`jaxlab.tasks.autoregressive`). The reference in-context learner is one
gradient step from W = 0 on the inner objective L(W) = 1/2 sum_{t' <= t} ||s_t' - W s_{t'-1}||^2
(s_{-1} = 0), followed by the prediction mapping:
    Gamma_t = eta * sum_{t' <= t} s_t' s_{t'-1}^T,      y_hat_t = Gamma_t s_t   (prediction of s_{t+1})
with ONE eta for all positions, fitted by a log-grid line search on its own loss
(`gd_equivalence.minimize_log_grid`). A one-layer linear transformer on augmented tokens
(s_t, s_{t-1}, 0) computes exactly this when its key-query block between the query's s_t and the
key's s_{t'-1} is I and its value-output block from s_t' to the prediction block is eta I.

Metrics against the fitted GD (means over the evaluation tasks):
  gd_loss       GD's loss (0.5 * squared error summed over dims, mean over tasks and positions)
  controls of its single eta (reference only): the loss with eta_t fitted per position, with the
                update scaled to ||s_t||, and the lower bound of any rescaling of the update per task
                and position (`gd_position_eta_predictions`, `gd_state_norm_predictions`,
                `gd_direction_oracle_predictions`)
  preds_diff    mean ||y_hat_model - y_hat_GD|| over tasks and positions
  model_cos     mean cos(g_model, g_GD), g = d y_hat_{T-1} / d s_{T-1} the sensitivity of the last
                prediction to the last state (every copy of it in the last token)
Learned structure (from the parameters, no data):
  C = B^T A     B [d, d] the key-query block (query's s_t rows, key's s_{t'-1} columns; for
                non-augmented tokens the key's s_t' block) and A [d, d] the value-output block (the
                value's s_t' rows, the prediction block's columns), summed over heads;
                c_offblock_ratio = ||C off the 2x2 diagonal blocks||_F / ||C||_F in the basis in
                which the task's W are block-diagonal (P^T C P for conjugated tasks).
  P             positional attention [H, T, T] of the `positional` model; p_superdiag_mass = mean
                over heads and rows t >= 1 of P[t, t] + P[t, t-1] (the mass on the last two tokens;
                the paper's P[t, t+1] indexes keys before queries); NaN without positional attention.
  head_cos      mean |cos| between the heads' flattened (W_Q, W_K, W_V, W_O) parameter vectors.
In-context estimation: W_hat_t is the least-squares fit of the predictions at position t when the
state at t is replaced by M probe directions (context s_0..s_{t-1} kept); w_hat_rel_err_t =
||W_hat_t - W||_F / ||W||_F.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import chex
import jax
import jax.numpy as jnp

from jaxlab import linalg
from jaxlab.config import ModelConfig
from jaxlab.metrics._common import safe_div
from jaxlab.models.attention import make_mask, positional_pattern
from jaxlab.models.transformer import params_at
from jaxlab.probes.cosine import VON_OSWALD_EPS, cosine
from jaxlab.probes.gd_equivalence import minimize_log_grid
from jaxlab.probes.sensitivity import query_sensitivity
from jaxlab.tasks import autoregressive as ar
from jaxlab.tasks.batch import Batch


# -- the one-step-GD learner ----------------------------------------------------------------------
def gd_predictions(s_BTD: jax.Array, eta: jax.Array | float) -> jax.Array:
    """y_hat_t = eta * sum_{t' <= t} s_t' (s_{t'-1} . s_t) [B, T, d] (s_{-1} = 0)."""
    chex.assert_rank(s_BTD, 3)
    T = s_BTD.shape[1]
    prev = jnp.pad(s_BTD[:, :-1], ((0, 0), (1, 0), (0, 0)))
    scores = jnp.einsum("btd,bud->btu", s_BTD, prev)
    scores = jnp.where(jnp.tril(jnp.ones((T, T), bool)), scores, 0.0)
    return eta * jnp.einsum("btu,bud->btd", scores, s_BTD)


def masked_half_mse(preds_BTD: jax.Array, targets_BTD: jax.Array, mask_BT: jax.Array) -> jax.Array:
    """0.5 * squared error summed over dims, averaged over masked positions (jaxlab's `mse`)."""
    per = 0.5 * jnp.sum((preds_BTD - targets_BTD) ** 2, axis=-1)
    return jnp.sum(per * mask_BT) / jnp.maximum(jnp.sum(mask_BT), 1.0)


def fit_gd_eta(batch: Batch, task: ar.Config, lo: float = 1e-4, hi: float = 1e4) -> tuple[jax.Array, jax.Array]:
    """(eta, loss) of the one-step-GD predictor minimizing its loss on `batch` (log-grid line search)."""
    s = ar.observed_states(task, batch.inputs)
    theta, loss = minimize_log_grid(
        lambda t: masked_half_mse(gd_predictions(s, t[0]), batch.targets, batch.loss_mask), [lo], [hi]
    )
    return theta[0], loss


def gd_position_eta_predictions(s_BTD: jax.Array, targets_BTD: jax.Array, mask_BT: jax.Array) -> jax.Array:
    """One GD step with a step size fitted per position: y_hat_t = eta_t g_t, g_t = `gd_predictions`(s, 1),
    eta_t = sum_b <g_bt, y_bt> / sum_b ||g_bt||^2 over the masked tasks (least squares per position; 0 where
    every g_t is 0, as at t = 0). The best any one-step-GD predictor whose step depends on t alone does on
    these targets: the control of a single eta, whose update g_t grows with the t terms it sums."""
    chex.assert_equal_shape([s_BTD, targets_BTD])
    g_BTD = gd_predictions(s_BTD, 1.0)
    num_T = jnp.sum(jnp.sum(g_BTD * targets_BTD, axis=-1) * mask_BT, axis=0)
    den_T = jnp.sum(jnp.sum(g_BTD * g_BTD, axis=-1) * mask_BT, axis=0)
    eta_T = safe_div(num_T, den_T, den_T > 0)
    return eta_T[None, :, None] * g_BTD


def gd_state_norm_predictions(s_BTD: jax.Array) -> jax.Array:
    """One GD step's update rescaled to the current state's norm: y_hat_t = ||s_t|| g_t / ||g_t|| (0 where
    g_t = 0). For orthogonal W, ||s_{t+1}|| = ||s_t||: the prediction has the target's norm, with no step size
    fitted (what a normalization of the attention output can give). Not the best rescaling: along g_t the
    loss-optimal norm is ||y_t|| cos(g_t, y_t) (`gd_direction_oracle_predictions`)."""
    g_BTD = gd_predictions(s_BTD, 1.0)
    norm_BT1 = jnp.linalg.norm(g_BTD, axis=-1, keepdims=True)
    return g_BTD * safe_div(jnp.linalg.norm(s_BTD, axis=-1, keepdims=True), norm_BT1, norm_BT1 > 0)


def gd_direction_oracle_predictions(s_BTD: jax.Array, targets_BTD: jax.Array) -> jax.Array:
    """The target's projection on one GD step's update: y_hat_bt = (<g_bt, y_bt> / ||g_bt||^2) g_bt (0 where
    g_bt = 0). It reads the target, so it is not a predictor: its loss, 1/2 ||y_bt||^2 sin^2(g_bt, y_bt) per
    task and position, is a lower bound on the loss of every predictor of the form (any scalar) x g_bt, i.e.
    of one GD step with any step size, normalization or gain, per task and position. A model below it does
    not predict along one GD step's update."""
    chex.assert_equal_shape([s_BTD, targets_BTD])
    g_BTD = gd_predictions(s_BTD, 1.0)
    gg_BT1 = jnp.sum(g_BTD * g_BTD, axis=-1, keepdims=True)
    gy_BT1 = jnp.sum(g_BTD * targets_BTD, axis=-1, keepdims=True)
    return safe_div(gy_BT1, gg_BT1, gg_BT1 > 0) * g_BTD


def last_state_sensitivity(
    predict: Callable[[jax.Array], jax.Array], task: ar.Config, inputs_BTW: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """(y_hat at the last position [B, d], d y_hat / d s_{T-1} [B, d, d]) of a sequence predictor."""
    T = inputs_BTW.shape[1]
    x0 = ar.observed_states(task, inputs_BTW)[:, -1]
    return query_sensitivity(lambda x: predict(ar.set_state(task, inputs_BTW, T - 1, x))[:, -1], x0)


def make_reference(batch: Batch, task: ar.Config) -> dict[str, jax.Array]:
    """The fitted GD learner on the evaluation batch: eta, loss, per-position loss, predictions,
    last-position sensitivities, and the losses of controls of its single step size
    (`gd_position_eta_predictions`: loss_pos_eta; `gd_state_norm_predictions`: loss_state_norm) and the lower
    bound of any rescaled GD step (`gd_direction_oracle_predictions`: loss_direction_oracle).
    Model-independent; pass it unbatched when vmapping over runs."""
    eta, loss = fit_gd_eta(batch, task)
    s = ar.observed_states(task, batch.inputs)
    gd = lambda inputs: gd_predictions(ar.observed_states(task, inputs), eta)
    preds = gd_predictions(s, eta)
    _, sens = last_state_sensitivity(gd, task, batch.inputs)
    per_t = 0.5 * jnp.sum((preds - batch.targets) ** 2, axis=-1)
    pos_eta = gd_position_eta_predictions(s, batch.targets, batch.loss_mask)
    state_norm = gd_state_norm_predictions(s)
    oracle = gd_direction_oracle_predictions(s, batch.targets)
    return {
        "eta": eta,
        "loss": loss,
        "loss_t": jnp.mean(per_t, axis=0),
        "preds": preds,
        "sens": sens,
        "loss_pos_eta": masked_half_mse(pos_eta, batch.targets, batch.loss_mask),
        "loss_state_norm": masked_half_mse(state_norm, batch.targets, batch.loss_mask),
        "loss_direction_oracle": masked_half_mse(oracle, batch.targets, batch.loss_mask),
    }


def equivalence_metrics(
    apply_fn: Callable[[chex.ArrayTree, jax.Array], jax.Array],
    params: chex.ArrayTree,
    batch: Batch,
    ref: dict[str, jax.Array],
    task: ar.Config,
) -> dict[str, jax.Array]:
    """eval_loss, gd_loss, preds_diff, model_cos of ONE model (vmap over params for runs)."""
    predict = lambda inputs: apply_fn(params, inputs)
    flat = lambda g: g.reshape(g.shape[0], -1)  # Jacobians compared as flat vectors
    preds = predict(batch.inputs)
    _, sens = last_state_sensitivity(predict, task, batch.inputs)
    return {
        "eval_loss": masked_half_mse(preds, batch.targets, batch.loss_mask),
        "gd_loss": ref["loss"],
        "preds_diff": jnp.mean(jnp.linalg.norm(preds - ref["preds"], axis=-1)),
        "model_cos": jnp.mean(cosine(flat(sens), flat(ref["sens"]), eps=VON_OSWALD_EPS)),
    }


def loss_by_position(preds_BTD: jax.Array, targets_BTD: jax.Array) -> jax.Array:
    """[T] 0.5 * squared error summed over dims, mean over tasks, per position."""
    return jnp.mean(0.5 * jnp.sum((preds_BTD - targets_BTD) ** 2, axis=-1), axis=0)


# -- learned structure ------------------------------------------------------------------------------
def _attn(params: chex.ArrayTree) -> dict:
    return params_at(params, "blocks.0.attn")  # either parameter layout (a training state's may be stacked)


def block_products(params: chex.ArrayTree, task: ar.Config) -> tuple[jax.Array, jax.Array]:
    """(B, A) [d, d] of a one-layer model (see the module docstring), summed over heads; a `constrained_gd`
    model's own (B, A).

    Score between query token e_t and key token e_t' is e_t^T (W_Q W_K^T) e_t'; the value path
    adds e_t'^T (W_V W_O) to the residual stream, whose last d coordinates are the prediction.
    """
    attn = _attn(params)
    if "w_qkv" not in attn:  # `attention="constrained_gd"`: the blocks are its parameters
        return attn["b"]["kernel"], attn["a"]["kernel"]
    d = task.n_dims
    w_qkv, w_out = attn["w_qkv"], attn["w_out"]
    kq_DD = jnp.einsum("dhk,ehk->de", w_qkv[:, 0], w_qkv[:, 1])
    vo_DD = jnp.einsum("dhk,hke->de", w_qkv[:, 2], w_out)
    key = slice(d, 2 * d) if task.encoding == "augmented" else slice(0, d)
    b = kq_DD[:d, key]
    a = vo_DD[:d, -d:]
    return b, a


def gd_step_params(params: chex.ArrayTree, task: ar.Config, eta: jax.Array | float) -> chex.ArrayTree:
    """`params` (a one-layer linear-attention model on augmented tokens, no biases) with its attention set to
    one GD step: y_hat_t = eta sum_{t' <= t} (s_t . s_{t'-1}) s_t' (`gd_predictions`). The inverse of
    `block_products` at B = I, A = eta I, every other block 0.

    Row convention (`block_products`): score e_t^T W_Q W_K^T e_t', value path e_t'^T W_V W_O. Head 0 takes
    W_Q = [I; 0; 0] (the query's s_t), W_K = [0; I; 0] (the key's s_{t'-1}), W_V = [I; 0; 0] (the value's s_t')
    into its first d coordinates, and W_O writes eta times them to the prediction block (the last d coordinates
    of the stream); the other heads and head coordinates are 0.
    """
    attn = _attn(params)
    w_qkv, w_out = attn["w_qkv"], attn["w_out"]
    D, _, H, Dh = w_qkv.shape
    d = task.n_dims
    chex.assert_shape(w_out, (H, Dh, D))
    if task.encoding != "augmented" or D != 3 * d or Dh < d or "b_qkv" in attn:
        raise ValueError("one GD step needs augmented tokens (width 3d), a bias-free layer and head width >= d")
    eye = jnp.eye(d, dtype=w_qkv.dtype)
    w_qkv = jnp.zeros_like(w_qkv)
    w_qkv = w_qkv.at[:d, 0, 0, :d].set(eye).at[d : 2 * d, 1, 0, :d].set(eye).at[:d, 2, 0, :d].set(eye)
    w_out = jnp.zeros_like(w_out).at[0, :d, 2 * d :].set(eta * eye)
    block = {**params["blocks_0"], "attn": {**attn, "w_qkv": w_qkv, "w_out": w_out}}
    return {**params, "blocks_0": block}


def block_fractions(params: chex.ArrayTree, task: ar.Config) -> dict[str, jax.Array]:
    """Shares of the augmented model's key-query and value-output products by token block.

    kq_<query>_<key>: ||W_Q W_K^T restricted to (query block, key block)||_F^2 over the sum of the
    four (cur = s_t, prev = s_{t-1}) pairs; vo_<value>: the same for the value block that writes
    the prediction. One GD step is kq_cur_prev = vo_cur = 1 (query s_t, key s_{t'-1}, value s_t');
    the "backward" estimator sum_{t'} s_{t'-1} s_t'^T s_t is kq_cur_cur = vo_prev = 1.
    """
    d = task.n_dims
    w_qkv, w_out = _attn(params)["w_qkv"], _attn(params)["w_out"]
    kq = jnp.einsum("dhk,ehk->de", w_qkv[:, 0], w_qkv[:, 1])
    vo = jnp.einsum("dhk,hke->de", w_qkv[:, 2], w_out)
    blk = {"cur": slice(0, d), "prev": slice(d, 2 * d)}
    kq_sq = {f"kq_{q}_{k}": jnp.sum(kq[blk[q], blk[k]] ** 2) for q in blk for k in blk}
    vo_sq = {f"vo_{v}": jnp.sum(vo[blk[v], -d:] ** 2) for v in blk}
    kq_tot = sum(kq_sq.values())
    vo_tot = sum(vo_sq.values())
    return {**{k: v / kq_tot for k, v in kq_sq.items()}, **{k: v / vo_tot for k, v in vo_sq.items()}}


def offblock_ratio(c_DD: jax.Array, task: ar.Config) -> jax.Array:
    """||C outside the 2x2 diagonal blocks||_F / ||C||_F, in the task's block basis P^T C P."""
    p = ar.basis(task)
    c = p.T @ c_DD @ p
    d = c.shape[0]
    blk = jnp.arange(d) // 2
    on = blk[:, None] == blk[None, :]
    total = jnp.sqrt(jnp.sum(c**2))
    return jnp.sqrt(jnp.sum(jnp.where(on, 0.0, c**2))) / jnp.maximum(total, 1e-30)


def c_offblock_ratio(params: chex.ArrayTree, task: ar.Config) -> jax.Array:
    """`offblock_ratio` of C = B^T A, the block products of the model (`block_products`): 0 when C is block-diagonal."""
    b, a = block_products(params, task)
    return offblock_ratio(b.T @ a, task)


def constrained_structure(params: chex.ArrayTree, task: ar.Config) -> dict[str, jax.Array]:
    """The learned C = B^T A and P of a `constrained` model (`jaxlab.models.constrained_attention`), as scalars.

    The loss is invariant under (C, P) -> (g C, P / g) for any g != 0, so the raw values are fixed by
    the optimizer's path, not by the loss; the sign gauge is fixed as in the paper's figure
    (P[u, u] < 0: every value below is multiplied by -sign(mean P[u, u])). Rows u >= 1 (row 0's query
    is s_{-1} = 0). In the paper's indexing P[t, t+1] = P[u, u] and P[t, t] = P[u, u-1].
      c_block_diag, c_block_anti   mean of C's 2x2 diagonal blocks' diagonal / anti-diagonal entries (task basis)
      c_offblock_ratio             ||C off the 2x2 blocks||_F / ||C||_F
      p_next, p_prev               mean of P[u, u] and of P[u, u-1]
      p_other_frac                 sum |P[u, t']| over t' <= u - 2 / sum |P[u, t']| over t' <= u
      cp_next                      mean block entry of C times p_next (gauge-invariant; 1 at the exact recurrence)
      p_prev_ratio                 p_prev / p_next (gauge-invariant; -1/2 at the exact recurrence)
    """
    attn = _attn(params)
    a, b = attn["a"]["kernel"], attn["b"]["kernel"]
    T = task.seq_len
    p_TT = attn["p"]["kernel"][:T, :T]
    chex.assert_equal_shape((a, b))
    pm = ar.basis(task)
    c = pm.T @ (b.T @ a) @ pm
    i = jnp.arange(0, c.shape[0] - 1, 2)
    u = jnp.arange(1, T)
    next_raw = jnp.mean(p_TT[u, u])
    g = -jnp.where(next_raw < 0, -1.0, 1.0)
    diag = g * jnp.mean(jnp.concatenate([c[i, i], c[i + 1, i + 1]]))
    anti = g * jnp.mean(jnp.concatenate([c[i, i + 1], c[i + 1, i]]))
    p_next, p_prev = g * next_raw, g * jnp.mean(p_TT[u, u - 1])
    rows = jnp.abs(jnp.where(jnp.tril(jnp.ones((T, T), bool)), p_TT, 0.0))[1:]
    other = jnp.where(jnp.tril(jnp.ones((T, T), bool), -2), jnp.abs(p_TT), 0.0)[1:]
    return {
        "c_block_diag": diag,
        "c_block_anti": anti,
        "c_offblock_ratio": offblock_ratio(b.T @ a, task),
        "p_next": p_next,
        "p_prev": p_prev,
        "p_other_frac": jnp.sum(other) / jnp.maximum(jnp.sum(rows), 1e-30),
        "cp_next": 0.5 * (diag + anti) * p_next,
        "p_prev_ratio": p_prev / p_next,
    }


def positional_matrices(params: chex.ArrayTree, seq_len: int) -> jax.Array:
    """[H, T, T] causal softmax(p_q,t . p_k,t') of the `positional` attention model."""
    attn = _attn(params)
    return positional_pattern(attn["pos_embed"][:seq_len], attn["w_qkv"], make_mask("causal", seq_len))


def superdiag_mass(p_HTT: jax.Array) -> jax.Array:
    """Mean over heads and rows t >= 1 of P[t, t] + P[t, t-1] (each row sums to 1)."""
    diag = jnp.diagonal(p_HTT, axis1=-2, axis2=-1)[:, 1:]
    sub = jnp.diagonal(p_HTT, offset=-1, axis1=-2, axis2=-1)
    return jnp.mean(diag + sub)


def last_row_diagonal(p_HTT: jax.Array) -> jax.Array:
    """Mean over heads of P[T-1, T-1], the last row's weight on its own token (pe_only.py reports the same entry of
    its free P: 0.334 / 0.242 / 0.183 / 0.132 at mu = 50 / 100 / 200 / 300)."""
    return jnp.mean(p_HTT[:, -1, -1])


def head_cosines(params: chex.ArrayTree) -> jax.Array:
    """Mean |cos| over pairs of heads of their flattened (W_Q, W_K, W_V, W_O) vectors (NaN for 1 head)."""
    attn = _attn(params)
    w_qkv, w_out = attn["w_qkv"], attn["w_out"]
    H = w_qkv.shape[2]
    vec = jnp.concatenate(
        [jnp.moveaxis(w_qkv, 2, 0).reshape(H, -1), w_out.reshape(H, -1)], axis=-1
    )  # [H, 3 D Dh + Dh D]
    u = vec / jnp.maximum(jnp.linalg.norm(vec, axis=-1, keepdims=True), 1e-30)
    g = jnp.abs(u @ u.T)
    off = ~jnp.eye(H, dtype=bool)
    return jnp.sum(jnp.where(off, g, 0.0)) / jnp.maximum(H * (H - 1), 1) if H > 1 else jnp.float32(jnp.nan)


def positional_spectrum(params: chex.ArrayTree, seq_len: int) -> jax.Array:
    """[H, T] singular values of each head's positional matrix P_h, divided by the largest."""
    sv = linalg.svdvals(positional_matrices(params, seq_len))
    return sv / jnp.maximum(sv[:, :1], 1e-30)


def structured_predictions(s_BTD: jax.Array, b_DD: jax.Array, a_DD: jax.Array) -> jax.Array:
    """y_hat_t = sum_{t' <= t} (s_t^T B s_{t'-1}) A^T s_t' [B, T, d]: the block-structured model of the
    theory with the blocks (B, A) read off a trained model; B = I, A = eta I is one GD step."""
    T = s_BTD.shape[1]
    prev = jnp.pad(s_BTD[:, :-1], ((0, 0), (1, 0), (0, 0)))
    scores = jnp.einsum("btd,de,bue->btu", s_BTD, b_DD, prev)
    scores = jnp.where(jnp.tril(jnp.ones((T, T), bool)), scores, 0.0)
    return jnp.einsum("btu,bud,de->bte", scores, s_BTD, a_DD)


def block_angles(m_DD: jax.Array, task: ar.Config) -> jax.Array:
    """[d / 2] rotation angle atan2(m_10 - m_01, m_00 + m_11) of each 2x2 diagonal block of P^T M P
    (0 for a positive multiple of the identity, as in one GD step)."""
    p = ar.basis(task)
    m = p.T @ m_DD @ p
    i = jnp.arange(0, m.shape[0] - 1, 2)
    return jnp.arctan2(m[i + 1, i] - m[i, i + 1], m[i, i] + m[i + 1, i + 1])


# -- in-context estimation of W ---------------------------------------------------------------------
def probe_directions(key: jax.Array, n_probes: int, d: int) -> jax.Array:
    """[M, d] probe states, uniform on the unit sphere."""
    g = jax.random.normal(key, (n_probes, d))
    return g / jnp.linalg.norm(g, axis=-1, keepdims=True)


def w_hat_errors(
    predict: Callable[[jax.Array], jax.Array],
    task: ar.Config,
    inputs_BTW: jax.Array,
    w_BDD: jax.Array,
    x_probe_MD: jax.Array,
    positions: Sequence[int],
) -> jax.Array:
    """[B, P] ||W_hat_t - W||_F / ||W||_F at each position t of `positions`.

    W_hat_t = argmin_V sum_m ||y_hat_t(x_m) - V x_m||^2 where y_hat_t(x_m) is the prediction at
    position t with the state at t replaced by x_m (the earlier context unchanged).
    """
    B, T, Wd = inputs_BTW.shape
    M = x_probe_MD.shape[0]
    pinv_DM = linalg.pinv(x_probe_MD)
    seqs = jnp.broadcast_to(inputs_BTW[:, None], (B, M, T, Wd)).reshape(B * M, T, Wd)
    xs = jnp.broadcast_to(x_probe_MD[None], (B, M, x_probe_MD.shape[1])).reshape(B * M, -1)
    norm_B = jnp.linalg.norm(w_BDD, axis=(1, 2))

    def at(t):
        y = jnp.take(predict(ar.set_state(task, seqs, t, xs)), t, axis=1).reshape(B, M, -1)
        w_hat = jnp.einsum("dm,bme->bed", pinv_DM, y)  # y_m = W_hat x_m
        return jnp.linalg.norm(w_hat - w_BDD, axis=(1, 2)) / norm_B

    return jax.lax.map(at, jnp.asarray(positions)).T


def lag_weights(preds_BTD: jax.Array, s_BTD: jax.Array, n_lags: int = 2) -> jax.Array:
    """[n_lags] scalar weights a_k of the least-squares fit y_hat_t ~ sum_k a_k s_{t-k} (t >= n_lags - 1).

    For a 2x2 rotation, s_{t+1} = 2 cos(theta) s_t - s_{t-1} exactly; for slow rotations the
    theory's predictor extrapolates, s_{t+1} ~ 2 s_t - s_{t-1}: a = (2, -1). (More lags make the
    fit ill-conditioned when consecutive states are nearly collinear.)
    """
    T = s_BTD.shape[1]
    lags = jnp.stack([s_BTD[:, n_lags - 1 - k : T - k] for k in range(n_lags)], axis=-1)  # [B, T', d, K]
    y = preds_BTD[:, n_lags - 1 :]
    gram = jnp.einsum("btdk,btdl->kl", lags, lags)
    rhs = jnp.einsum("btdk,btd->k", lags, y)
    return linalg.solve(gram, rhs)


def model_config_check(cfg: ModelConfig) -> None:
    """The structural probes read blocks_0.attn: one layer, no biases."""
    if cfg.n_layers != 1 or cfg.use_bias:
        raise ValueError("the structure probes need a one-layer model without biases")


__all__ = [
    "block_angles",
    "block_fractions",
    "block_products",
    "c_offblock_ratio",
    "constrained_structure",
    "equivalence_metrics",
    "fit_gd_eta",
    "gd_direction_oracle_predictions",
    "gd_position_eta_predictions",
    "gd_predictions",
    "gd_state_norm_predictions",
    "gd_step_params",
    "head_cosines",
    "lag_weights",
    "last_row_diagonal",
    "last_state_sensitivity",
    "loss_by_position",
    "make_reference",
    "masked_half_mse",
    "offblock_ratio",
    "positional_matrices",
    "positional_spectrum",
    "probe_directions",
    "structured_predictions",
    "superdiag_mass",
    "w_hat_errors",
]
