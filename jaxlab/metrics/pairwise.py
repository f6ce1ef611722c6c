"""A metric over all pairs of many representations, in blocks that fit in memory.

`pairwise(metric, xs, ys=None)` takes stacks of representations with any leading shape, e.g.
xs [R, L, n, d] (runs x layers), or a list of [n, d_i] arrays of different widths, and returns
the matrix over all pairs with shape lead(xs) + lead(ys) (lead(xs) twice when ys is None). So
"every layer of every run of group A against every layer of every run of group B" is one call:
`pairwise(linear_cka, acts_A_RLND, acts_B_RLND)` -> [R_A, L, R_B, L].

Generic metrics: pairs are evaluated by `vmap` over blocks of pairs (one compiled function per
pair of widths; widths are grouped, never padded, so every metric sees its inputs as given). Only
i <= j is computed for symmetric metrics when ys is None.

Linear CKA (biased or debiased) has a fast path. Each representation is centered and scaled to
unit Frobenius norm once; then every cross term <K_i, K_j>_F = ||X_i^T X_j||_F^2 is an entry of
one large Gram-of-Grams product. The example axis is cut into tiles of c rows; for each tile pair
p <= q the blocks K_r[p, q] = X_r[p] X_r[q]^T of all representations are flattened into
V [R, c^2] (scaled by sqrt(2) when p < q, since K[q, p] = K[p, q]^T; only the upper triangle of
diagonal tiles) and accumulated as G += V V^T, so the work is one batched product and one large
GEMM per tile pair, and every distinct entry of the symmetric K enters once:
  FLOPs = R n^2 d (half Gram matrices, 2 n(n+1)/2 d each) + (R (R + 1) / 2) n (n + 1) (cross terms),
versus 2 n d_i d_j per pair in feature space; this path is used when n <= 2 d^2. Widths are
zero-padded to the largest (exact: padding features leaves X X^T unchanged); rows are
zero-padded to a multiple of c (exact: zero rows add nothing after centering). Memory: R c^2
floats for V (c is chosen to keep it under `memory_bytes`) plus the [R, R] result.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from tqdm.auto import tqdm

from jaxlab.errors import ConfigError
from jaxlab.metrics._common import HIGHEST, center, float_dtype, record_warnings, unit_frobenius
from jaxlab.metrics.by_name import METRICS
from jaxlab.metrics.cka import debiased_linear_hsic, linear_cka, self_hsic_ok

MEMORY_BYTES = 512 * 2**20
TILE_MAX = 256


@dataclass
class _Side:
    """Representations of one side, grouped by width: rows of the flat [R] order in each group."""

    lead: tuple[int, ...]
    n: int
    groups: list[tuple[np.ndarray, jax.Array]]  # (flat indices [R_g], stack [R_g, n, d_g])

    @property
    def size(self) -> int:
        return math.prod(self.lead)


def _side(name: str, xs: Any) -> _Side:
    if isinstance(xs, (list, tuple)):
        arrays = [jnp.asarray(x) for x in xs]
        if not arrays:
            raise ConfigError(f"pairwise: {name}", "needs at least one representation")
        bad = [i for i, a in enumerate(arrays) if a.ndim != 2]
        if bad:
            shapes = [arrays[i].shape for i in bad]
            raise ConfigError(f"pairwise: {name}", f"a list holds [n_examples, n_features] arrays; got {shapes}")
        ns = {a.shape[0] for a in arrays}
        if len(ns) > 1:
            raise ConfigError(f"pairwise: {name}", f"all representations need the same n_examples, got {sorted(ns)}")
        by_width: dict[int, list[int]] = {}
        for i, a in enumerate(arrays):
            by_width.setdefault(a.shape[1], []).append(i)
        groups = [(np.asarray(idx), jnp.stack([arrays[i] for i in idx])) for idx in by_width.values()]
        return _Side((len(arrays),), arrays[0].shape[0], groups)
    arr = jnp.asarray(xs)
    if arr.ndim < 3:
        raise ConfigError(
            f"pairwise: {name}", f"needs a stack [..., n_examples, n_features] (or a list of arrays), got {arr.shape}"
        )
    lead = tuple(arr.shape[:-2])
    flat = arr.reshape(-1, *arr.shape[-2:])
    return _Side(lead, arr.shape[-2], [(np.arange(flat.shape[0]), flat)])


# -- generic metrics ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Bound:
    """A metric implementation with its keyword arguments; hashable, so jit caches one program per metric."""

    fn: Callable[..., Any]
    kwargs: tuple[tuple[str, Any], ...]
    has_flags: bool

    def __call__(self, x: jax.Array, y: jax.Array) -> tuple[jax.Array, dict[str, jax.Array]]:
        out = self.fn(x, y, **dict(self.kwargs))
        return out if self.has_flags else (out, {})


def _resolve(metric: Callable[..., Any] | str) -> tuple[str, _Bound, bool | None]:
    """(name, bound implementation, symmetric or None when unknown)."""
    if isinstance(metric, str):
        if metric not in METRICS:
            raise ConfigError("pairwise: metric", f"unknown metric {metric!r}", sorted(METRICS))
        metric = METRICS[metric]
    kwargs: dict[str, Any] = {}
    base = metric
    if isinstance(metric, functools.partial):
        if metric.args:
            raise ConfigError(
                "pairwise: metric", "bind options by keyword, e.g. functools.partial(rbf_cka, threshold=0.5)"
            )
        base, kwargs = metric.func, dict(metric.keywords)
    impl = getattr(base, "impl", None)
    name = getattr(base, "__name__", repr(base))
    if impl is None:
        return name, _Bound(base, tuple(sorted(kwargs.items())), False), None
    return name, _Bound(impl, tuple(sorted(kwargs.items())), True), base.symmetric


@functools.partial(jax.jit, static_argnums=0)
def _pair_block(fn: _Bound, xg: jax.Array, yg: jax.Array, ii: jax.Array, jj: jax.Array):
    return jax.vmap(lambda i, j: fn(xg[i], yg[j]))(ii, jj)


def _pairs_per_block(fn: _Bound, n: int, d1: int, d2: int, memory_bytes: int) -> int:
    """Pairs per compiled call: the metric's working memory per pair (floats) within the budget, <= 4096."""
    estimate = getattr(fn.fn, "memory", None)
    floats = estimate(n, d1, d2) if estimate else 6 * (n * n + n * (d1 + d2) + d1 * d2)  # unknown: assume n x n
    per_pair = 4 * floats
    return int(2 ** max(0, min(12, math.floor(math.log2(max(1, memory_bytes // per_pair))))))


def _generic(name, fn, sx, sy, symmetric, memory_bytes, block_pairs, progress):
    plan = []  # (x group, y group, ii, jj) in group-local indices
    for a, (ia, xa) in enumerate(sx.groups):
        for b, (ib, yb) in enumerate(sy.groups):
            if symmetric and sy is sx and b < a:
                continue
            if symmetric and sy is sx and a == b:
                ii, jj = np.triu_indices(len(ia))
            else:
                ii, jj = (g.ravel() for g in np.meshgrid(np.arange(len(ia)), np.arange(len(ib)), indexing="ij"))
            plan.append((xa, yb, ia, ib, ii, jj))
    total = sum(len(p[4]) for p in plan)
    bar = tqdm(total=total, unit="pair", desc=f"pairwise {name}", disable=not progress)
    pending = []
    for xa, yb, ia, ib, ii, jj in plan:
        block = block_pairs or _pairs_per_block(fn, xa.shape[1], xa.shape[2], yb.shape[2], memory_bytes)
        block = min(block, 2 ** math.ceil(math.log2(len(ii))))
        for s in range(0, len(ii), block):
            bi, bj = ii[s : s + block], jj[s : s + block]
            m = len(bi)
            pad = block - m
            out = _pair_block(fn, xa, yb, jnp.asarray(np.pad(bi, (0, pad))), jnp.asarray(np.pad(bj, (0, pad))))
            pending.append((ia[bi], ib[bj], m, out))
            if progress and len(pending) > 2:  # keep two blocks in flight; the bar counts finished pairs
                jax.block_until_ready(pending[-3][3])
                bar.update(pending[-3][2])
    for entry in pending[-2:] if progress else []:
        jax.block_until_ready(entry[3])
        bar.update(entry[2])
    bar.close()
    values, counts = None, {}
    for gi, gj, m, (val, flags) in pending:
        val = np.asarray(val)[:m]
        if values is None:
            values = np.zeros((sx.size, sy.size, *val.shape[1:]), val.dtype)
        if val.shape[1:] != values.shape[2:]:
            raise ConfigError(
                "pairwise: metric", f"returns shape {val.shape[1:]} for some widths, {values.shape[2:]} for others"
            )
        values[gi, gj] = val
        if symmetric and sy is sx:
            values[gj, gi] = val
        for k, v in flags.items():
            counts[k] = counts.get(k, 0) + int(np.asarray(v)[:m].sum())
    return values, counts


# -- the linear CKA fast path ---------------------------------------------------------------------------
def _prepared(stacks: tuple[jax.Array, ...], d_max: int, n_pad: int) -> tuple[jax.Array, jax.Array]:
    """(Z [R, n_pad, d_max]: every representation centered, unit Frobenius norm, zero-padded; constant flags [R])."""

    def one(x):
        xc, const = center(x)
        return unit_frobenius(xc), const

    zs, consts = [], []
    for stack in stacks:
        z, c = jax.vmap(one)(stack)
        zs.append(jnp.pad(z, ((0, 0), (0, n_pad - z.shape[1]), (0, d_max - z.shape[2]))))
        consts.append(c)
    return jnp.concatenate(zs), jnp.concatenate(consts)


def _tile_vectors(z: jax.Array, p: jax.Array, q: jax.Array, c: int, diagonal: bool) -> jax.Array:
    """V [R, m]: the distinct entries of tile (p, q) of every representation's Gram matrix, weighted.

    Off-diagonal tiles (p < q) give all c^2 entries times sqrt(2) (K[q, p] = K[p, q]^T is not
    visited); diagonal tiles give the c (c + 1) / 2 entries on and above the diagonal, times sqrt(2)
    off the diagonal. So <V_i, V_j> summed over tiles is <K_i, K_j>_F.
    """
    zp = jax.lax.dynamic_slice_in_dim(z, p * c, c, axis=1)
    zq = jax.lax.dynamic_slice_in_dim(z, q * c, c, axis=1)
    k = jnp.matmul(zp, jnp.swapaxes(zq, 1, 2), precision=HIGHEST)
    if not diagonal:
        return k.reshape(z.shape[0], c * c) * math.sqrt(2.0)
    rows, cols = np.triu_indices(c)
    weight = np.where(rows == cols, 1.0, math.sqrt(2.0)).astype(k.dtype)
    return k[:, rows, cols] * weight


def _gram_of_grams(zx, zy, c: int, t: int):
    """(G [Rx, Ry] with G_ij = <K_i, K_j>_F, ||K_i||_F^2 [Rx], ||K_j||_F^2 [Ry]); zy None: symmetric.

    Loops (not Python-unrolled) over the tile pairs, so the [R, c^2] buffers are reused.
    """
    sym = zy is None
    rx, ry = zx.shape[0], (zx if sym else zy).shape[0]
    dtype = zx.dtype

    def add(carry, p, q, diagonal):
        g, sx, sy = carry
        vx = _tile_vectors(zx, p, q, c, diagonal)
        vy = vx if sym else _tile_vectors(zy, p, q, c, diagonal)
        # One full GEMM even when symmetric: on CPU it ran faster than the row-block triangle.
        g = g + jnp.matmul(vx, vy.T, precision=HIGHEST)
        return g, sx + jnp.sum(vx * vx, axis=1), sy + jnp.sum(vy * vy, axis=1)

    carry = (jnp.zeros((rx, ry), dtype), jnp.zeros(rx, dtype), jnp.zeros(ry, dtype))
    carry = jax.lax.fori_loop(0, t, lambda i, cr: add(cr, i, i, True), carry)
    if t > 1:
        ps, qs = (jnp.asarray(a, jnp.int32) for a in np.triu_indices(t, 1))
        carry = jax.lax.fori_loop(0, len(ps), lambda i, cr: add(cr, ps[i], qs[i], False), carry)
    g, sx, sy = carry
    if sym:
        g = jnp.triu(g) + jnp.triu(g, 1).T
    return g, sx, sy


@functools.partial(jax.jit, static_argnames=("n", "d_max", "c", "t", "debiased"))
def _linear_cka_all(xstacks, ystacks, *, n: int, d_max: int, c: int, t: int, debiased: bool):
    """(CKA [Rx, Ry] in group order, constant flags x, y, debiased self-term ok flags x, y)."""
    zx, cx = _prepared(xstacks, d_max, c * t)
    zy, cy = (zx, cx) if ystacks is None else _prepared(ystacks, d_max, c * t)
    g, s_x, s_y = _gram_of_grams(zx, None if ystacks is None else zy, c, t)
    ok = ~(cx[:, None] | cy[None, :])
    if not debiased:
        den = jnp.sqrt(s_x)[:, None] * jnp.sqrt(s_y)[None, :]
        return jnp.where(ok, g / jnp.where(ok, den, 1.0), 0.0), cx, cy, ~cx, ~cy
    dx = jnp.sum(zx * zx, axis=2)  # Gram diagonals [R, n_pad]
    dy = jnp.sum(zy * zy, axis=2)
    tx, ty, dxx, dyy = jnp.sum(dx, axis=1), jnp.sum(dy, axis=1), jnp.sum(dx * dx, axis=1), jnp.sum(dy * dy, axis=1)
    dxdy = jnp.matmul(dx, dy.T, precision=HIGHEST)
    u = debiased_linear_hsic(g, dxdy, tx[:, None], ty[None, :], n)
    uxx = debiased_linear_hsic(s_x, dxx, tx, tx, n)
    uyy = debiased_linear_hsic(s_y, dyy, ty, ty, n)
    gx = self_hsic_ok(uxx, s_x, dxx, n) & ~cx
    gy = self_hsic_ok(uyy, s_y, dyy, n) & ~cy
    ok = ok & gx[:, None] & gy[None, :]
    den = jnp.sqrt(jnp.where(gx, uxx, 1.0))[:, None] * jnp.sqrt(jnp.where(gy, uyy, 1.0))[None, :]
    return jnp.where(ok, u / den, 0.0), cx, cy, gx, gy


def tile_size(n: int, n_reps: int, memory_bytes: int, itemsize: int) -> tuple[int, int]:
    """(tile rows c, number of tiles T): T c >= n, n_reps c^2 floats within the budget, c <= TILE_MAX.

    Smaller tiles waste less on diagonal tiles (built whole, used by halves) and keep the [R, c^2]
    buffers small; on CPU 128 <= c <= 256 ran fastest.
    """
    c_max = min(TILE_MAX, max(8, math.isqrt(max(1, memory_bytes // (2 * itemsize * n_reps)))))
    t = -(-n // c_max)
    c = -(-n // t)
    if c > 8:
        c = -(-c // 8) * 8  # vector-friendly widths; the padding rows are zeros
    return c, t


def linear_cka_matrix(
    sx: _Side, sy: _Side | None, debiased: bool, memory_bytes: int = MEMORY_BYTES
) -> tuple[np.ndarray, dict[str, int]]:
    """Linear CKA over all pairs by the Gram-of-Grams path (module docstring); sy None: symmetric."""
    n = sx.n
    d_max = max(g.shape[2] for _, g in sx.groups + (sy.groups if sy else []))
    n_reps = sx.size + (sy.size if sy else 0)
    c, t = tile_size(n, n_reps, memory_bytes, jnp.dtype(float_dtype()).itemsize)
    xstacks = tuple(stack for _, stack in sx.groups)
    ystacks = None if sy is None else tuple(stack for _, stack in sy.groups)
    value, cx, cy, gx, gy = jax.device_get(
        _linear_cka_all(xstacks, ystacks, n=n, d_max=d_max, c=c, t=t, debiased=debiased)
    )
    counts = {"constant_input": _count_pairs(cx, cy, sy is None)}
    if debiased:
        counts["nonpositive_self_hsic"] = _count_pairs(~gx & ~cx, ~gy & ~cy, sy is None)
    ox = np.concatenate([idx for idx, _ in sx.groups])
    oy = ox if sy is None else np.concatenate([idx for idx, _ in sy.groups])
    out = np.empty_like(value)
    out[np.ix_(ox, oy)] = value
    return out, counts


def _count_pairs(bad_x: np.ndarray, bad_y: np.ndarray, symmetric: bool) -> int:
    """Computed pairs with a flagged side (i <= j only when symmetric)."""
    if symmetric:
        r, good = len(bad_x), int((~bad_x).sum())
        return r * (r + 1) // 2 - good * (good + 1) // 2
    return len(bad_x) * len(bad_y) - int((~bad_x).sum()) * int((~bad_y).sum())


def _fast_linear_cka(fn: _Bound, sx: _Side, sy: _Side | None) -> bool | None:
    """debiased flag when the Gram-of-Grams path applies, else None."""
    if fn.fn is not linear_cka.impl or set(dict(fn.kwargs)) - {"debiased"}:
        return None
    d_max = max(g.shape[2] for _, g in sx.groups + (sy.groups if sy else []))
    if sx.n > 2 * d_max * d_max:
        return None
    return bool(dict(fn.kwargs).get("debiased", False))


# -- the public function ------------------------------------------------------------------------------
def pairwise(
    metric: Callable[..., jax.Array] | str,
    xs: jax.Array | Sequence[jax.Array],
    ys: jax.Array | Sequence[jax.Array] | None = None,
    *,
    symmetric: bool | None = None,
    memory_bytes: int = MEMORY_BYTES,
    block_pairs: int | None = None,
    progress: bool = False,
) -> jax.Array:
    """`metric` over all pairs: result[a..., b...] = metric(xs[a...], ys[b...]) (ys defaults to xs).

    metric: a jaxlab metric (or its name, e.g. "linear_cka"), a `functools.partial` of one with
        keyword options, or any jit/vmap-compatible f(x [n, d1], y [n, d2]) -> array.
    xs, ys: [..., n, d] stacks (any leading shape) or lists of [n, d_i] arrays (mixed widths).
    symmetric: whether f(x, y) == f(y, x) (then only i <= j is computed when ys is None); taken from
        jaxlab metrics, False for other functions unless given.
    memory_bytes: working-memory budget that sets the block sizes; block_pairs overrides the
        number of pairs per compiled call of the generic path.
    Returns lead(xs) + lead(ys) (+ the metric's own output shape). Degenerate pairs are counted in
    `jaxlab.metrics.warning_counts()`; see the module docstring for the blocking and the FLOPs.
    """
    name, fn, sym = _resolve(metric)
    symmetric = bool(sym) if symmetric is None else symmetric
    sx = _side("xs", xs)
    sy = sx if ys is None else _side("ys", ys)
    if sy.n != sx.n:
        raise ConfigError("pairwise: ys", f"needs the same n_examples as xs ({sx.n}), got {sy.n}")
    if block_pairs is not None and block_pairs < 1:
        raise ConfigError("pairwise: block_pairs", f"must be >= 1, got {block_pairs}")
    debiased = _fast_linear_cka(fn, sx, None if ys is None else sy)
    if debiased is not None:
        if debiased and sx.n < 4:
            raise ConfigError("linear_cka: x", f"debiased=True needs at least 4 examples (rows), got {sx.n}")
        values, counts = linear_cka_matrix(sx, None if ys is None else sy, debiased, memory_bytes)
    else:
        values, counts = _generic(name, fn, sx, sy, symmetric and ys is None, memory_bytes, block_pairs, progress)
    record_warnings(name, counts)
    return jnp.asarray(values.reshape(*sx.lead, *sy.lead, *values.shape[2:]))
