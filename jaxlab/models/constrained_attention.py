"""The constrained (A, B, P) attention of Sander, Giryes, Suzuki, Blondel, Peyré (ICML 2024), Sec. 4
(`model.attention="constrained"`; the released orthogonal.py / unitary.py optimize it in closed form).

H heads with diagonal key-query and value matrices diag(b_h), diag(a_h) and one free, signed
positional matrix P shared by the heads. On tokens e_u = (s_u, s_{u-1}, 0_d) (the autoregressive
task's augmented encoding) the output at position u, written into the last d coordinates, is

    y_u,i = sum_{t' <= u} P[u, t'] s_t',i sum_j C_ji s_{u-1,j} s_t',j,     C = B^T A  [d, d]

(B, A [H, d] stack b_h, a_h): the query is the previous state s_{u-1} (the s_{t-1} block of the
token), keys and values are the states s_t' (the s_t block). The released scripts' C is this C's
transpose (their closed forms pair C_ij with output i and query coordinate j); the optimum's C is
symmetric. The paper indexes the query's state:
its P[t, t'] (t' <= t + 1) is this P[t + 1, t'], so its P[t, t+1] is P[u, u] and its P[t, t] is
P[u, u-1]. For 2x2-rotation W and s_0 with unit coordinates the loss is zero at C = c blockdiag of
[[1, 1], [1, 1]], P[u, u] = 1 / c, P[u, u-1] = -1 / (2c): y_u = 2 cos(theta) s_u - s_{u-1} = s_{u+1};
for unitary W (complex, `conj` on the query) at C = c I, P[u, u] = 1 / c.

`attention="constrained_gd"` is the Sec. 3 form on the same tokens, the block structure of the
theory's GD construction without positional weights (`ConstrainedGDAttention`):

    y_u = sum_{t' <= u} (s_u^T B s_{t'-1}) A^T s_t',     B, A [d, d]

one GD step on L(W) = 1/2 sum ||s_t' - W s_{t'-1}||^2 from W = 0 is B = I, A = eta I.

Parameters: `a.kernel` [H, d], `b.kernel` [H, d], `p.kernel` [max_len, max_len], initialized
N(0, 1) and scaled by sqrt(init_scale) like every weight (`scale_weights`): init_scale 0.01 gives the
released scripts' 0.1 N(0, 1). Entries of P above the diagonal are never read.
"""

from __future__ import annotations

from collections.abc import Sequence

import chex
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxlab.config import ModelConfig
from jaxlab.models.attention import make_mask, query_index
from jaxlab.models.interventions import Intervention


class Weight(nn.Module):
    """One weight array named `kernel` (so `scale_weights` applies init_scale to it), N(0, 1 / fan_in) at init."""

    shape: tuple[int, ...]
    fan_in: int = 1

    @nn.compact
    def __call__(self) -> jax.Array:
        return self.param("kernel", nn.initializers.normal(self.fan_in**-0.5), self.shape)


def constrained_outputs(s_BTD: jax.Array, prev_BTD: jax.Array, a_HD: jax.Array, b_HD: jax.Array, p_TT: jax.Array):
    """y [B, T, d]: y_u,i = sum_{t' <= u} P[u, t'] s_t',i sum_h a_h,i (b_h . (s_{u-1} * s_t')) (module docstring)."""
    chex.assert_equal_shape((s_BTD, prev_BTD))
    chex.assert_rank((a_HD, b_HD, p_TT), 2)
    T = s_BTD.shape[1]
    chex.assert_shape(p_TT, (T, T))
    # per head: scores[b, h, u, t'] = sum_j b_h,j s_{u-1},j s_t',j, weighted by P and the causal mask
    scores = jnp.einsum("hj,buj,btj->bhut", b_HD, prev_BTD, s_BTD)
    weights = jnp.where(make_mask("causal", T), p_TT, 0.0)
    z = jnp.einsum("bhut,ut,bti->buhi", scores, weights, s_BTD)
    return jnp.einsum("buhi,hi->bui", z, a_HD)


def c_matrix(a_HD: jax.Array, b_HD: jax.Array) -> jax.Array:
    """C = B^T A [d, d] (C_ji = sum_h b_h,j a_h,i): the only product of A and B the outputs depend on."""
    return b_HD.T @ a_HD


def gd_form_outputs(s_BTD: jax.Array, prev_BTD: jax.Array, a_DD: jax.Array, b_DD: jax.Array) -> jax.Array:
    """y [B, T, d]: y_u = sum_{t' <= u} (s_u^T B s_{t'-1}) A^T s_t' (B = I, A = eta I: one GD step)."""
    chex.assert_equal_shape((s_BTD, prev_BTD))
    chex.assert_equal_shape((a_DD, b_DD))
    T = s_BTD.shape[1]
    scores = jnp.einsum("bud,de,bte->but", s_BTD, b_DD, prev_BTD)
    scores = jnp.where(make_mask("causal", T), scores, 0.0)
    return jnp.einsum("but,btd,de->bue", scores, s_BTD, a_DD)


def _states(x_BTD: jax.Array, d: int) -> tuple[jax.Array, jax.Array]:
    """(s_u, s_{u-1}) [B, T, d]: the first two d-wide blocks of the tokens (s_u, s_{u-1}, 0)."""
    chex.assert_rank(x_BTD, 3)
    if x_BTD.shape[-1] < 3 * d:
        raise ValueError(
            f"constrained attention needs tokens (s_t, s_(t-1), 0) of width >= 3 d = {3 * d}, got {x_BTD.shape[-1]}"
        )
    return x_BTD[..., :d], x_BTD[..., d : 2 * d]


def _write_last(x_BTD: jax.Array, y_BTd: jax.Array, queries: Sequence[int] | None, out_dims: int | None) -> jax.Array:
    """The attention output: zeros but the last d coordinates, which hold y; at `queries` and the last
    `out_dims` coordinates when given (the call of `Attention`)."""
    B, T, D = x_BTD.shape
    out = jnp.concatenate([jnp.zeros((B, T, D - y_BTd.shape[-1]), y_BTd.dtype), y_BTd], axis=-1)
    if queries is not None:
        out = out[:, query_index(queries, T)]
    return out if out_dims is None else out[..., -out_dims:]


class ConstrainedAttention(nn.Module):
    """The attention module of `attention="constrained"`: same call as `Attention`, no hook points inside
    (the block's `hook_attn_out` still records its output)."""

    cfg: ModelConfig

    def setup(self) -> None:
        cfg = self.cfg
        d = int(cfg.d_output)
        self.a = Weight((cfg.n_heads, d))
        self.b = Weight((cfg.n_heads, d))
        self.p = Weight((int(cfg.max_len), int(cfg.max_len)))

    def __call__(
        self,
        x_BTD: jax.Array,
        queries: Sequence[int] | None = None,
        out_dims: int | None = None,
        prefix: str = "",
        interventions: Sequence[Intervention] = (),
    ) -> jax.Array:
        """[B, T, D] (or [B, P, D] at `queries`, or the last `out_dims` coordinates): zeros but the last d,
        which hold y (module docstring). The tokens' first d coordinates are s_u, the next d s_{u-1}."""
        s_BTD, prev_BTD = _states(x_BTD, int(self.cfg.d_output))
        T = x_BTD.shape[1]
        y = constrained_outputs(s_BTD, prev_BTD, self.a(), self.b(), self.p()[:T, :T])
        return _write_last(x_BTD, y, queries, out_dims)


class ConstrainedGDAttention(nn.Module):
    """The attention module of `attention="constrained_gd"` (module docstring): same call as `Attention`; B and A
    start like the full model's blocks (variance init_scale / d after `scale_weights`)."""

    cfg: ModelConfig

    def setup(self) -> None:
        d = int(self.cfg.d_output)
        self.a = Weight((d, d), fan_in=d)
        self.b = Weight((d, d), fan_in=d)

    def __call__(
        self,
        x_BTD: jax.Array,
        queries: Sequence[int] | None = None,
        out_dims: int | None = None,
        prefix: str = "",
        interventions: Sequence[Intervention] = (),
    ) -> jax.Array:
        """As `ConstrainedAttention.__call__`, with y from `gd_form_outputs`."""
        s_BTD, prev_BTD = _states(x_BTD, int(self.cfg.d_output))
        return _write_last(x_BTD, gd_form_outputs(s_BTD, prev_BTD, self.a(), self.b()), queries, out_dims)


__all__ = [
    "ConstrainedAttention",
    "ConstrainedGDAttention",
    "Weight",
    "c_matrix",
    "constrained_outputs",
    "gd_form_outputs",
]
