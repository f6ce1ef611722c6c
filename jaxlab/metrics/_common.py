"""What every similarity metric shares: float precision, centering, degenerate inputs, warnings.

Precision. Inputs are cast to float64 when jax x64 is enabled and to float32 otherwise. Each
column (feature) of a representation is first divided by a power of two just above its largest
absolute entry (exact), then centered in two passes (subtract the mean, then the mean of the
residual), which removes the rounding error of the first mean; the centered columns are then put
back on one common scale by powers of two, so that the largest centered entry is in [0.5, 1) (every
metric here is invariant to isotropic scaling and translation). Nothing overflows or underflows
however large or small the activations are, and a large constant offset in one feature costs the
others no precision. All products are taken of centered data, so no quantity is a small difference
of large uncentered sums. Matrix products use `precision="highest"` (on GPUs the default would be
TF32, with ~1e-3 relative error).

Degenerate inputs. A column whose centered values have an RMS <= `CONSTANT_RTOL` eps times its own
largest absolute entry carries no information at float resolution: it is set to exactly zero after
centering (so one large constant feature leaves the others as they are). A representation all of
whose columns are so is *constant*, and each metric returns a documented value for it
(similarities 0, Procrustes distance 2) instead of NaN. Such cases are counted, per metric and
reason, in a host counter (`warning_counts()`), and a `DegenerateInputWarning` is issued. The counter is updated by
eager calls (concrete arrays) and by `pairwise`; inside `jit`/`vmap` the metrics are pure and count
nothing (use `pairwise`, or check `is_constant(x)` yourself).
"""

from __future__ import annotations

import functools
import inspect
import threading
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.errors import ConfigError

HIGHEST = jax.lax.Precision.HIGHEST
CONSTANT_RTOL = 4.0  # in units of the float epsilon


class DegenerateInputWarning(UserWarning):
    """A metric met a constant or rank-deficient representation and returned its documented value."""


_LOCK = threading.Lock()
_COUNTS: Counter[str] = Counter()


def warning_counts() -> dict[str, int]:
    """Degenerate-input events since the last reset, keyed "metric: reason" (e.g. "linear_cka: constant_input")."""
    with _LOCK:
        return dict(_COUNTS)


def reset_warning_counts() -> None:
    """Forget the degenerate-input events counted so far (`warning_counts` starts again from zero)."""
    with _LOCK:
        _COUNTS.clear()


def record_warnings(metric: str, counts: Mapping[str, Any]) -> None:
    """Add host-side counts of degenerate events (reason -> number of pairs) and warn once per call."""
    found = {reason: int(n) for reason, n in counts.items() if int(n) > 0}
    if not found:
        return
    with _LOCK:
        for reason, n in found.items():
            _COUNTS[f"{metric}: {reason}"] += n
    text = ", ".join(f"{reason} x{n}" for reason, n in found.items())
    warnings.warn(
        f"{metric}: degenerate input ({text}); returned the documented value (see jaxlab.metrics.warning_counts())",
        DegenerateInputWarning,
        stacklevel=3,
    )


def float_dtype() -> jnp.dtype:
    """float64 when jax x64 is enabled, else float32."""
    return jnp.dtype(jax.dtypes.canonicalize_dtype(jnp.float64))


def eps() -> float:
    return float(jnp.finfo(float_dtype()).eps)


def as_float(x: jax.Array) -> jax.Array:
    return jnp.asarray(x).astype(float_dtype())


def max_abs(x: jax.Array) -> jax.Array:
    """max |x|, as max(max x, -min x): XLA's CPU reduction of |x| is several times slower."""
    return jnp.maximum(jnp.max(x), -jnp.min(x))


def max_abs_columns(x_ND: jax.Array) -> jax.Array:
    """[D] max_n |x_nd| (as `max_abs`, per column)."""
    return jnp.maximum(jnp.max(x_ND, axis=0), -jnp.min(x_ND, axis=0))


def pow2_at_least(v: jax.Array) -> jax.Array:
    """The power of two 2^e with v < 2^e <= 2 v (1 for v <= 0): dividing by it is exact."""
    return jnp.where(v > 0, jnp.ldexp(jnp.ones_like(v), jnp.frexp(v)[1]), jnp.ones_like(v))


def unit_max_rows(x_ND: jax.Array) -> jax.Array:
    """x with each row divided by its own max |x_n| (zero rows stay 0): per-example scale, no over- or underflow."""
    x = as_float(x_ND)
    rowmax = jnp.maximum(jnp.max(x, axis=1), -jnp.min(x, axis=1))
    return x / jnp.where(rowmax > 0, rowmax, 1.0)[:, None]


def center(x_ND: jax.Array) -> tuple[jax.Array, jax.Array]:
    """(xc [N, D], is_constant): x centered over examples, constant columns zeroed, one power-of-two scale.

    With s_d = 2^e_d the power of two with max_n |x_nd| < s_d <= 2 max_n |x_nd|, column d is centered
    in its own units u_nd = x_nd / s_d (two passes: u - mean(u), then minus the mean of that); it is
    constant when sqrt(mean_n uc_nd^2) <= CONSTANT_RTOL eps max_n |u_nd| and then set to 0. The
    result is xc_nd = uc_nd s_d / 2^E, with 2^E the power of two that puts max |xc| in [0.5, 1): the
    centered x up to one positive factor. is_constant: every column is constant.
    """
    x = as_float(x_ND)
    amax_D = max_abs_columns(x)
    e_D = jnp.frexp(amax_D)[1]  # amax < 2^e <= 2 amax (e = 0 for a zero column)
    u = jnp.ldexp(x, -e_D)
    uc = u - jnp.mean(u, axis=0)
    uc = uc - jnp.mean(uc, axis=0)
    rms_D = jnp.sqrt(jnp.mean(uc * uc, axis=0))
    const_D = rms_D <= CONSTANT_RTOL * eps() * jnp.ldexp(amax_D, -e_D)
    uc = jnp.where(const_D, 0.0, uc)
    top_D = jnp.where(const_D, jnp.iinfo(e_D.dtype).min, e_D + jnp.frexp(max_abs_columns(uc))[1])
    constant = jnp.all(const_D)
    shift = jnp.where(constant, 0, jnp.max(top_D))
    return jnp.ldexp(uc, e_D - shift), constant


BLOCK_FLOATS = 2**22  # at most this many floats in one row block of differences [block, n, d] (16 MiB in float32)


def block_rows(n: int, d: int, block_floats: int = BLOCK_FLOATS) -> int:
    """Rows per block of explicit differences: the largest b in [1, n] with b n d <= block_floats."""
    return max(1, min(n, block_floats // max(1, n * d)))


def difference_block_floats(n: int, *widths: int) -> int:
    """Floats of one block of explicit differences per representation of these widths (memory estimates)."""
    return sum(block_rows(n, d) * n * d for d in widths)


def explicit_squared_distances(x_ND: jax.Array, block_floats: int = BLOCK_FLOATS) -> jax.Array:
    """d2[i, j] = sum_f (x_if - x_jf)^2 [n, n], from explicit differences in blocks of rows.

    Accurate to a few eps relative to d2[i, j] itself however far x_i, x_j lie from the origin.
    Rows are mapped (`jax.lax.map`) in blocks of `block_rows(n, d)`, so at most about
    block_floats + n d floats of differences exist at once. x should be scaled so that the squares
    neither overflow nor underflow (`jaxlab.metrics.knn.pow2_scaled`).
    """
    n, d = x_ND.shape

    def row(xi_D: jax.Array) -> jax.Array:
        diff_ND = xi_D[None, :] - x_ND
        return jnp.sum(diff_ND * diff_ND, axis=1)

    return jax.lax.map(row, x_ND, batch_size=block_rows(n, d, block_floats))


def unit_frobenius(xc_ND: jax.Array) -> jax.Array:
    """xc / ||xc||_F (0 stays 0)."""
    norm = jnp.sqrt(jnp.sum(xc_ND * xc_ND))
    return xc_ND / jnp.where(norm > 0, norm, 1.0)


def is_constant(x_ND: jax.Array) -> jax.Array:
    """True when no column of x varies across examples at its own float resolution (see `center`)."""
    return center(x_ND)[1]


def safe_div(num: jax.Array, den: jax.Array, ok: jax.Array) -> jax.Array:
    """num / den where ok, else 0 (and no NaN in either branch's gradient)."""
    return jnp.where(ok, num / jnp.where(ok, den, 1.0), 0.0)


def check_pair(name: str, x: jax.Array, y: jax.Array, min_examples: int = 2) -> None:
    """Shapes of a metric's two representations: [n, d1] and [n, d2], the same n >= min_examples."""
    chex.assert_rank([x, y], 2)
    if x.shape[0] != y.shape[0]:
        raise ConfigError(f"{name}: x, y", f"need the same number of examples (rows), got {x.shape} and {y.shape}")
    if x.shape[0] < min_examples:
        raise ConfigError(f"{name}: x", f"needs at least {min_examples} examples (rows), got {x.shape[0]}")


def _is_traced(*values: Any) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for v in values for leaf in jax.tree_util.tree_leaves(v))


Impl = Callable[..., tuple[jax.Array, dict[str, jax.Array]]]


def metric(*, symmetric: bool, memory: Callable[[int, int, int], int]) -> Callable[[Impl], Callable[..., jax.Array]]:
    """Turn `impl(x, y, **kw) -> (value, {reason: bool})` into the public metric `f(x, y, **kw) -> value`.

    Eager calls run a compiled `impl` (options static) and record the reasons that are true (see
    `warning_counts`); traced calls (inside the caller's jit/vmap) only compute.
    `f.impl` is the raw function (used by `pairwise`, which counts over all pairs), `f.symmetric`
    says whether f(x, y) == f(y, x), and `memory(n, d1, d2)` estimates the floats one pair works in
    (`pairwise` sizes its blocks with it).
    """

    def wrap(impl: Impl) -> Callable[..., jax.Array]:
        name = impl.__name__
        options = list(inspect.signature(impl).parameters)[2:]
        compiled = jax.jit(impl, static_argnames=options)

        @functools.wraps(impl)
        def public(x: jax.Array, y: jax.Array, *args: Any, **kwargs: Any) -> jax.Array:
            if _is_traced(x, y, args, kwargs):
                return impl(x, y, *args, **kwargs)[0]
            kwargs.update(zip(options, args))
            value, flags = compiled(x, y, **kwargs)
            record_warnings(name, {k: np.asarray(v).sum() for k, v in flags.items()})
            return value

        public.impl = impl  # type: ignore[attr-defined]
        public.symmetric = symmetric  # type: ignore[attr-defined]
        impl.memory = memory  # type: ignore[attr-defined]
        return public

    return wrap
