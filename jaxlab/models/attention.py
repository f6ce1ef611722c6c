"""Multi-head attention: linear (no softmax) and softmax, with causal or context-keys masks.

For head h, with q_t = W_Q^h e_t, k_t = W_K^h e_t, v_t = W_V^h e_t and mask M:
  linear:  out_t = sum_h W_O^h sum_{t'} M[t, t'] (q_t . k_t') v_t'         (von Oswald et al. 2023)
           optionally divided by the number of keys sum_{t'} M[t, t'] (`attn_norm="n_keys"`);
  softmax: out_t = sum_h W_O^h sum_{t'} softmax_{t'}(q_t . k_t' / sqrt(d_head) | M) v_t';
  positional (Sander et al. 2024, the non-augmented multi-head model):
           out_t = sum_h W_O^h sum_{t'} (q_t . k_t') softmax_{t'}(p_q,t . p_k,t' | M) v_t', with
           p_q,t = W_Q^h p_t, p_k,t = W_K^h p_t for learned positional embeddings p_t (`pos_embed`
           [max_len, D], used inside attention only, not added to the residual stream; no biases).

Masks: `causal` (t' <= t), `context_keys` (t' < T - 1: every token, the query included, attends to
the context tokens only, as in von Oswald et al.), `none`.

Parameters: `w_qkv` [D, 3, H, Dh] (Q, K, V fused so one GEMM computes all three), `w_out` [H, Dh, D],
and biases `b_qkv` [3, H, Dh], `b_out` [D] when `use_bias`.

How outputs at a few query positions are computed, and which kernel computes softmax attention
(not what: every choice gives the same numbers up to float rounding), is data, `AttentionExecution`:
the engine passes the choices of its execution plan (`jaxlab.train.plan`); the module itself checks
no backend. Softmax kernels: `jaxlab` (`softmax_attention`, float32; the pattern path in bfloat16)
or `fused` (`jax.nn.dot_product_attention`, `jaxlab.models.fused_attention`; float32 and bfloat16).

Hook points (`jaxlab.models.hooks`): {prefix}.hook_q, hook_k, hook_v [B, T, H, Dh] (biases included),
hook_attn_scores [B, H, T, T] (softmax: q . k / sqrt(Dh) with masked entries at the float32 minimum;
linear and positional: q . k unscaled and unmasked), hook_pattern [B, H, T, T], hook_z [B, T, H, Dh]
(before W_O). They exist on the explicit path only (`Attention._explicit`), which runs while
`intermediates` is mutable or an intervention names one of them; otherwise the fast paths
(q (K^T V), `softmax_attention` or `fused_attention`, the query-side products) run as they are.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.config import ModelConfig
from jaxlab.models.fused_attention import fused_attention
from jaxlab.models.hooks import active, record
from jaxlab.models.interventions import Intervention
from jaxlab.models.softmax_attention import softmax_attention


def make_mask(kind: str, seq_len: int) -> jax.Array:
    """Boolean [T, T] mask, True where query t may attend to key t'."""
    t = jnp.arange(seq_len)
    if kind == "causal":
        return t[None, :] <= t[:, None]
    if kind == "context_keys":
        return jnp.broadcast_to(t[None, :] < seq_len - 1, (seq_len, seq_len))
    if kind == "none":
        return jnp.ones((seq_len, seq_len), dtype=bool)
    raise ValueError(f"unknown mask {kind!r}")


def dot(spec: str, a: jax.Array, b: jax.Array, dtype: str) -> jax.Array:
    """einsum in the compute dtype, accumulated and returned in float32."""
    if dtype == "bfloat16":
        return jnp.einsum(spec, a.astype(jnp.bfloat16), b.astype(jnp.bfloat16), preferred_element_type=jnp.float32)
    return jnp.einsum(spec, a, b)


def kernel_init(in_axis: int | tuple[int, ...], out_axis: int | tuple[int, ...]) -> nn.initializers.Initializer:
    """Truncated-normal variance scaling (variance 1 / fan_in); `init_scale` is applied afterwards."""
    return nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal", in_axis=in_axis, out_axis=out_axis)


def query_index(queries: Sequence[int], seq_len: int) -> slice | np.ndarray:
    """Static positions as a slice when they are evenly spaced (a strided slice, not a gather)."""
    q = [p % seq_len for p in queries]
    if len(q) == 1:
        return slice(q[0], q[0] + 1)
    step = q[1] - q[0]
    if step > 0 and all(b - a == step for a, b in itertools.pairwise(q)):
        return slice(q[0], q[-1] + 1, step)
    return np.asarray(q)


def keys_first_cheaper(n_queries: int, seq_len: int, d_model: int, n_heads: int, head_dim: int) -> bool:
    """Whether projecting every token to keys and values (K = X W_K, V = X W_V) costs fewer FLOPs
    than moving the weights to the query side (scores = X (W_K q), z = (pattern X) W_V)."""
    T, P, D, H, Dh = seq_len, n_queries, d_model, n_heads, head_dim
    keys_first = 2 * T * D * H * Dh + 2 * P * T * H * Dh
    weights_to_queries = P * H * D * Dh + 2 * P * T * H * D
    return keys_first <= weights_to_queries


QUERY_PATHS = ("auto", "keys_first", "query_side")
ATTENTION_KERNELS = ("jaxlab", "fused")


def vector_padding(width: int, lanes: int = 16) -> int:
    """Zero columns that round a token width between lanes / 2 and lanes up to `lanes` floats (else 0).

    `lanes`: float32 lanes of the target's vector registers (16: AVX-512; 0: never pad). The
    query-side path (`_merged_to_queries`) spends its time in batched matrix-vector products over
    the tokens; XLA:CPU runs them on whole vector registers, so a width of 16 costs no more than 11
    and padding the paper's 11-wide tokens makes its training step ~10% faster
    (benchmarks/results/train.md); 32 for 11 costs 1.5x. The plan decides `lanes` per backend
    (`jaxlab.train.plan`).
    """
    if not lanes or not lanes // 2 < width < lanes:
        return 0
    return lanes - width


@dataclass(frozen=True)
class AttentionExecution:
    """How `Attention` computes outputs at a few static query positions (the same numbers either way).

    query_path: `keys_first` projects every token to keys and values and slices the queries;
        `query_side` moves the key and value weights to the queries (`_weights_to_queries`,
        `_merged_to_queries`: per query O(T D) instead of O(T D Dh) per key and value); `auto`
        takes the one with fewer FLOPs (`keys_first_cheaper`) at trace time. Positional attention
        always goes keys first (its pattern needs the keys' positions).
    vector_floats: the query-side path pads token widths between vector_floats / 2 and
        vector_floats up to it (`vector_padding`; 0: no padding).
    kernel: softmax attention on the keys-first path: `jaxlab` (`softmax_attention`, the custom-vjp
        einsums; in bfloat16 the pattern path) or `fused` (`jax.nn.dot_product_attention` through
        `fused_attention`, compiled by each backend's XLA into its fused kernels). Either only while no
        hook point of attention is recorded or intervened on; linear and positional attention have
        no softmax kernel.

    The default is what a model needs on any backend; `jaxlab.train.plan.ExecutionPlan.attention`
    gives the choices of a plan.
    """

    query_path: str = "auto"
    vector_floats: int = 0
    kernel: str = "jaxlab"

    def __post_init__(self) -> None:
        if self.query_path not in QUERY_PATHS:
            raise ValueError(f"query_path must be one of {', '.join(QUERY_PATHS)}, got {self.query_path!r}")
        if self.vector_floats < 0:
            raise ValueError(f"vector_floats must be >= 0, got {self.vector_floats}")
        if self.kernel not in ATTENTION_KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(ATTENTION_KERNELS)}, got {self.kernel!r}")

    def query_side(self, n_queries: int, seq_len: int, d_model: int, n_heads: int, head_dim: int) -> bool:
        """Whether P static queries take the query-side path (`query_path`; `auto`: fewer FLOPs)."""
        if self.query_path == "auto":
            return not keys_first_cheaper(n_queries, seq_len, d_model, n_heads, head_dim)
        return self.query_path == "query_side"


def positional_pattern(
    pos_TD: jax.Array, w_qkv: jax.Array, mask_QT: jax.Array, index: slice | np.ndarray | None = None
) -> jax.Array:
    """[H, Q, T] softmax_{t' | mask}(p_q,t . p_k,t') with p_q = W_Q^h p, p_k = W_K^h p (no scaling)."""
    pq_THK = jnp.einsum("td,dhk->thk", pos_TD, w_qkv[:, 0])
    pk_THK = jnp.einsum("td,dhk->thk", pos_TD, w_qkv[:, 1])
    if index is not None:
        pq_THK = pq_THK[index]
    scores = jnp.einsum("qhk,thk->hqt", pq_THK, pk_THK)
    scores = jnp.where(mask_QT, scores, jnp.finfo(scores.dtype).min)
    return jax.nn.softmax(scores, axis=-1)


class Attention(nn.Module):
    """Multi-head attention of one block, configured by `ModelConfig` (module docstring); `execution` chooses how
    outputs at a few query positions are computed."""

    cfg: ModelConfig
    execution: AttentionExecution = AttentionExecution()

    @nn.compact
    def __call__(
        self,
        x_BTD: jax.Array,
        queries: Sequence[int] | None = None,
        out_dims: int | None = None,
        prefix: str = "attn",
        interventions: Sequence[Intervention] = (),
    ) -> jax.Array:
        """Attention output [B, T, D] (or [B, P, D] at the static query positions `queries`: keys
        and values still come from every token). `out_dims`: only the last `out_dims` coordinates of
        the output (a read-out that needs no more). `prefix` names the hook points (`blocks.0.attn`:
        `blocks.0.attn.hook_q`, ...); while `intermediates` is mutable or an intervention names one of
        them, the explicit path (`_explicit`) computes every point and `queries` is ignored."""
        cfg = self.cfg
        D, H, Dh = x_BTD.shape[-1], cfg.n_heads, cfg.head_dim
        T = x_BTD.shape[1]
        w_qkv = self.param("w_qkv", kernel_init(0, (1, 2, 3)), (D, 3, H, Dh))
        w_out = self.param("w_out", kernel_init((0, 1), 2), (H, Dh, D))
        b_qkv = self.param("b_qkv", nn.initializers.zeros, (3, H, Dh)) if cfg.use_bias else None
        b_out = self.param("b_out", nn.initializers.zeros, (D,)) if cfg.use_bias else None
        mask_TT = make_mask(cfg.mask, T)
        pos_TD = None
        if cfg.attention == "positional":
            pos_TD = self.param("pos_embed", kernel_init(1, 0), (cfg.max_len, D))[:T]
        if active(self, prefix, interventions):
            hook = lambda name, a: record(self, f"{prefix}.{name}", a, interventions)
            z = self._explicit(x_BTD, mask_TT, w_qkv, b_qkv, pos_TD, hook)
            return self._project_out(z, w_out, b_out, out_dims)

        if queries is not None:
            index = query_index(queries, T)
            if pos_TD is None and self.execution.query_side(len(queries), T, D, H, Dh):
                if b_qkv is None:
                    return self._merged_to_queries(x_BTD, index, mask_TT[index], w_qkv, w_out, b_out, out_dims)
                z = self._weights_to_queries(x_BTD, index, mask_TT[index], w_qkv, b_qkv)
                return self._project_out(z, w_out, b_out, out_dims)
        else:
            index = None

        q, k, v = self._qkv(x_BTD, w_qkv, b_qkv)
        if index is not None:
            q, mask_TT = q[:, index], mask_TT[index]

        if cfg.attention == "linear" and cfg.mask == "context_keys":
            # Associate as q (K^T V): no T x T matrix, O(T Dh^2) instead of O(T^2 Dh).
            kv_BHKJ = dot("bthk,bthj->bhkj", k[:, :-1], v[:, :-1], cfg.dtype)
            z = dot("bqhk,bhkj->bqhj", q, kv_BHKJ, cfg.dtype)
            if cfg.attn_norm == "n_keys":
                z = z / (T - 1)
        elif cfg.attention == "softmax" and self.execution.kernel == "fused":
            # no pattern to record: JAX's fused attention (`fused_attention`), the causal mask as is_causal
            z = fused_attention(q, k, v, mask_TT, causal=cfg.mask == "causal" and index is None, dtype=cfg.dtype)
        elif cfg.attention == "softmax" and cfg.dtype == "float32":
            # no pattern to record: the hand-written backward pass (`softmax_attention`)
            z = softmax_attention(q / jnp.sqrt(jnp.float32(Dh)), k, v, mask_TT)
        else:
            pattern = self._pattern(dot("bqhk,bthk->bhqt", q, k, cfg.dtype), mask_TT, Dh)
            if pos_TD is not None:
                pattern = pattern * positional_pattern(pos_TD, w_qkv, mask_TT, index)[None]
            z = dot("bhqt,bthk->bqhk", pattern, v, cfg.dtype)
        return self._project_out(z, w_out, b_out, out_dims)

    def _qkv(self, x_BTD: jax.Array, w_qkv: jax.Array, b_qkv: jax.Array | None) -> tuple[jax.Array, ...]:
        """q, k, v [B, T, H, Dh] = x W_{Q,K,V} + b_{Q,K,V}."""
        # [B, T, 3, H, Dh] is the GEMM's own output layout: no transposed copy of Q, K and V.
        qkv = dot("btd,dshk->btshk", x_BTD, w_qkv, self.cfg.dtype)
        if b_qkv is not None:
            qkv = qkv + b_qkv
        return qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]

    def _explicit(
        self,
        x_BTD: jax.Array,
        mask_TT: jax.Array,
        w_qkv: jax.Array,
        b_qkv: jax.Array | None,
        pos_TD: jax.Array | None,
        hook: Callable[[str, jax.Array], jax.Array],
    ) -> jax.Array:
        """z [B, T, H, Dh] through every hook point, in order: hook_q, hook_k, hook_v [B, T, H, Dh],
        hook_attn_scores (`_scores`), hook_pattern [B, H, T, T] (`_normalize`, times the positional
        softmax for positional attention), hook_z = pattern v."""
        cfg = self.cfg
        q, k, v = (hook(name, a) for name, a in zip(("hook_q", "hook_k", "hook_v"), self._qkv(x_BTD, w_qkv, b_qkv)))
        scores = hook("hook_attn_scores", self._scores(dot("bqhk,bthk->bhqt", q, k, cfg.dtype), mask_TT, cfg.head_dim))
        pattern = self._normalize(scores, mask_TT)
        if pos_TD is not None:
            pattern = pattern * positional_pattern(pos_TD, w_qkv, mask_TT)[None]
        pattern = hook("hook_pattern", pattern)
        return hook("hook_z", dot("bhqt,bthk->bqhk", pattern, v, cfg.dtype))

    def _scores(self, qk_BHQT: jax.Array, mask_QT: jax.Array, head_dim: int) -> jax.Array:
        """softmax: q . k / sqrt(Dh), masked entries at the float32 minimum; linear and positional: q . k as it is."""
        if self.cfg.attention == "softmax":
            scores = qk_BHQT / jnp.sqrt(jnp.float32(head_dim))
            return jnp.where(mask_QT, scores, jnp.finfo(scores.dtype).min)
        return qk_BHQT

    def _normalize(self, scores_BHQT: jax.Array, mask_QT: jax.Array) -> jax.Array:
        """The pattern of `_scores`: softmax over the keys; linear and positional: the scores, 0 where
        masked, divided by the number of keys with `attn_norm="n_keys"`."""
        cfg = self.cfg
        if cfg.attention == "softmax":
            return jax.nn.softmax(scores_BHQT, axis=-1)
        if cfg.attention in ("linear", "positional"):
            pattern = jnp.where(mask_QT, scores_BHQT, 0.0)
            if cfg.attn_norm == "n_keys":
                pattern = pattern / jnp.maximum(mask_QT.sum(-1), 1)[:, None]
            return pattern
        raise ValueError(f"unknown attention {cfg.attention!r}")

    def _pattern(self, scores_BHQT: jax.Array, mask_QT: jax.Array, head_dim: int) -> jax.Array:
        return self._normalize(self._scores(scores_BHQT, mask_QT, head_dim), mask_QT)

    def _weights_to_queries(
        self, x_BTD: jax.Array, index: slice | np.ndarray, mask_PT: jax.Array, w_qkv: jax.Array, b_qkv: jax.Array | None
    ) -> jax.Array:
        """z [B, P, H, Dh] for a few query positions without projecting keys or values.

        q_p . k_t = x_t . (W_K q_p) + q_p . b_K, and sum_t a_pt v_t = (sum_t a_pt x_t) W_V
        + (sum_t a_pt) b_V: per query O(T D) instead of O(T D Dh) per key and value. For the paper's
        one-layer LSA, whose loss reads the query token only, this is the whole layer.
        """
        cfg = self.cfg
        q = dot("bpd,dhk->bphk", x_BTD[:, index], w_qkv[:, 0], cfg.dtype)
        if b_qkv is not None:
            q = q + b_qkv[0]
        a_BPHD = dot("bphk,dhk->bphd", q, w_qkv[:, 1], cfg.dtype)
        score_bias = None if b_qkv is None else jnp.einsum("bphk,hk->bhp", q, b_qkv[1])[..., None]
        pattern, u_BPHD = self._attend_tokens(x_BTD, a_BPHD, mask_PT, w_qkv.shape[-1], score_bias)
        z = dot("bphd,dhk->bphk", u_BPHD, w_qkv[:, 2], cfg.dtype)
        if b_qkv is not None:
            z = z + jnp.sum(pattern, axis=-1).transpose(0, 2, 1)[..., None] * b_qkv[2]
        return z

    def _merged_to_queries(
        self,
        x_BTD: jax.Array,
        index: slice | np.ndarray,
        mask_PT: jax.Array,
        w_qkv: jax.Array,
        w_out: jax.Array,
        b_out: jax.Array | None,
        out_dims: int | None,
    ) -> jax.Array:
        """`_weights_to_queries` without biases, with the per-head products merged:
        q_p . k_t = x_p W_Q^h (W_K^h)^T x_t = x_p M_QK^h x_t and out_p = sum_h (sum_t a_pt x_t) M_VO^h,
        M_QK^h = W_Q^h (W_K^h)^T, M_VO^h = W_V^h W_O^h [D, D] (restricted to the `out_dims` output
        coordinates). Per query O(H D D) instead of O(H D Dh) twice; for the paper's LSA layer the
        [B, D] x [D, D] products halve. Token widths are zero-padded to whole vector registers
        (`vector_padding` with `execution.vector_floats`: 16 on a CPU's plan)."""
        cfg = self.cfg
        w_o, b_o = _output_weights(w_out, b_out, out_dims)
        m_qk = jnp.einsum("dhk,ehk->hde", w_qkv[:, 0], w_qkv[:, 1])
        m_vo = jnp.einsum("dhk,hko->hdo", w_qkv[:, 2], w_o)
        pad = vector_padding(x_BTD.shape[-1], self.execution.vector_floats)
        if pad:  # exact: the zero columns add zeros to every product
            x_BTD = jnp.pad(x_BTD, ((0, 0), (0, 0), (0, pad)))
            m_qk = jnp.pad(m_qk, ((0, 0), (0, pad), (0, pad)))
            m_vo = jnp.pad(m_vo, ((0, 0), (0, pad), (0, 0)))
        a_BPHD = dot("bpd,hde->bphe", x_BTD[:, index], m_qk, cfg.dtype)
        _, u_BPHD = self._attend_tokens(x_BTD, a_BPHD, mask_PT, w_qkv.shape[-1])
        out = dot("bphd,hdo->bpo", u_BPHD, m_vo, cfg.dtype)
        return out if b_o is None else out + b_o

    def _attend_tokens(
        self,
        x_BTD: jax.Array,
        a_BPHD: jax.Array,
        mask_PT: jax.Array,
        head_dim: int,
        score_bias: jax.Array | None = None,
    ) -> tuple[jax.Array, jax.Array]:
        """pattern [B, H, P, T] of the scores x_t . a_p (+ bias), and u_p = sum_t pattern_pt x_t [B, P, H, D]."""
        scores = dot("btd,bphd->bhpt", x_BTD, a_BPHD, self.cfg.dtype)
        if score_bias is not None:
            scores = scores + score_bias
        pattern = self._pattern(scores, mask_PT, head_dim)
        return pattern, dot("bhpt,btd->bphd", pattern, x_BTD, self.cfg.dtype)

    def _project_out(
        self, z_BQHK: jax.Array, w_out: jax.Array, b_out: jax.Array | None, out_dims: int | None = None
    ) -> jax.Array:
        w_out, b_out = _output_weights(w_out, b_out, out_dims)
        out = dot("bqhk,hkd->bqd", z_BQHK, w_out, self.cfg.dtype)
        return out if b_out is None else out + b_out


def _output_weights(
    w_out: jax.Array, b_out: jax.Array | None, out_dims: int | None
) -> tuple[jax.Array, jax.Array | None]:
    """The output projection restricted to its last `out_dims` coordinates (all when None)."""
    if out_dims is None:
        return w_out, b_out
    return w_out[..., -out_dims:], None if b_out is None else b_out[-out_dims:]
