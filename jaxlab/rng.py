"""jaxlab's random numbers: JAX's threefry, computed by a faster kernel on the CPU.

Convention. All of jaxlab's random draws (parameter init, task sampling, per-step keys) are traced
with threefry's non-partitionable bit layout (`jax.threefry_partitionable(False)`), whatever the
user's global setting, so a run's numbers depend only on its seed. The partitionable layout only
matters when one key fills one array sharded over devices; jaxlab shards along the run axis, where
every run draws from its own key.

Speed. Task sampling draws most of a sweep's random numbers (the paper regression workload: 120
per sequence, 2048 sequences per step, every step), and JAX lowers threefry on the CPU as a rolled
`while` loop over its 5 x 4 rounds: every round reads and writes the whole array. `random_bits`,
`uniform`, `normal` and `split` below compute the *same bits* (threefry-2x32, 20 rounds, the
non-partitionable counter layout) with the rounds unrolled, so XLA fuses the hash and the float
conversion into one vectorized loop: about 3x more numbers per CPU-second on the 2-core CPU, and a
smaller program to compile. They are bit-identical to `jax.random.bits/uniform/normal/split` for
threefry keys (tested), so a run's data do not depend on which kernel drew them. XLA:CPU computes
each output element of a fusion separately, so the two words of one threefry block are hashed twice
(once per half of the output): the cost is one 20-round hash per 32-bit word.

Other key implementations (`train.prng_impl` = `rbg`, `unsafe_rbg`) go to `jax.random`; see
`jaxlab.train.engine` for their caveats under `vmap`.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

F = TypeVar("F", bound=Callable)

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_PARITY = np.uint32(0x1BD11BDA)
_MAX_COUNT = 2**32 - 2  # jax switches to a blocked layout beyond this many words


def rng_scope() -> contextlib.AbstractContextManager:
    """A context in which random draws are traced with threefry's non-partitionable layout
    (`jax.threefry_partitionable(False)`), jaxlab's convention."""
    return jax.threefry_partitionable(False)


def in_rng_scope(fn: F) -> F:
    """Decorator: trace `fn` inside `rng_scope()`."""

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with rng_scope():
            return fn(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


@jax.jit
def threefry2x32(k1: jax.Array, k2: jax.Array, x1: jax.Array, x2: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The Threefry-2x32 block cipher (Salmon et al. 2011), 20 rounds, unrolled; uint32 in and out.

    Jitted: a program that draws many arrays traces the ~110 operations of the rounds once per shape
    (and per batching under `vmap`) and holds them once per shape as a called function, which XLA
    inlines before fusing: the compiled code is the same, tracing and lowering are 5-8x faster."""

    def rotl(x: jax.Array, r: int) -> jax.Array:
        return (x << np.uint32(r)) | (x >> np.uint32(32 - r))

    ks = (k1, k2, k1 ^ k2 ^ _PARITY)
    x1, x2 = x1 + ks[0], x2 + ks[1]
    for i in range(5):
        for r in _ROTATIONS[i % 2]:
            x1 = x1 + x2
            x2 = rotl(x2, r) ^ x1
        x1 = x1 + ks[(i + 1) % 3]
        x2 = x2 + ks[(i + 2) % 3] + np.uint32(i + 1)
    return x1, x2


def is_threefry(key: jax.Array) -> bool:
    """Whether `key` is a threefry2x32 key (the keys this module's fast kernels serve)."""
    return str(jax.random.key_impl(key)) == "threefry2x32"


def _fast(key: jax.Array, n_words: int) -> bool:
    return is_threefry(key) and jnp.ndim(key) == 0 and 0 < n_words <= _MAX_COUNT


def _threefry_words(key: jax.Array, n: int) -> jax.Array:
    """jax's non-partitionable layout: the counters 0..n-1 (and a 0 when n is odd) are split in
    halves, block i hashes (i, h + i), and the first outputs of all blocks come first, then the
    second outputs (h = ceil(n / 2); an odd n drops the last word)."""
    data = jax.random.key_data(key)
    half = (n + 1) // 2
    count = lax.iota(jnp.uint32, half)
    count2 = count + np.uint32(half)
    if n % 2:
        count2 = jnp.where(count == half - 1, np.uint32(0), count2)
    y1, y2 = threefry2x32(data[0], data[1], count, count2)
    return jnp.concatenate([y1, y2])[:n]


def random_bits(key: jax.Array, shape: Sequence[int]) -> jax.Array:
    """uint32 bits of `shape`; equals `jax.random.bits(key, shape, jnp.uint32)` in `rng_scope()`."""
    shape = tuple(shape)
    n = math.prod(shape)
    if not _fast(key, n):
        with rng_scope():
            return jax.random.bits(key, shape, jnp.uint32)
    return _threefry_words(key, n).reshape(shape)


def uniform(key: jax.Array, shape: Sequence[int], minval: float = 0.0, maxval: float = 1.0) -> jax.Array:
    """float32 U[minval, maxval): the 23 high bits of each word as the mantissa of a float in
    [1, 2), shifted and scaled; equals `jax.random.uniform(key, shape, jnp.float32, minval, maxval)`."""
    bits = random_bits(key, shape)
    floats = lax.bitcast_convert_type((bits >> np.uint32(9)) | np.uint32(0x3F800000), jnp.float32) - 1.0
    lo, hi = np.float32(minval), np.float32(maxval)
    return lax.max(lo, floats * (hi - lo) + lo)


def normal(key: jax.Array, shape: Sequence[int]) -> jax.Array:
    """float32 N(0, 1) by inverse CDF, sqrt(2) erfinv(u) with u ~ U(-1, 1); equals `jax.random.normal`."""
    lo = np.nextafter(np.float32(-1.0), np.float32(0.0))
    u = uniform(key, shape, lo, 1.0)
    return np.float32(np.sqrt(2)) * lax.erf_inv(u)


def split(key: jax.Array, num: int = 2) -> jax.Array:
    """`num` typed keys; equals `jax.random.split(key, num)` in `rng_scope()`."""
    if not _fast(key, 2 * num):
        with rng_scope():
            return jax.random.split(key, num)
    data = _threefry_words(key, 2 * num).reshape(num, 2)
    return jax.random.wrap_key_data(data, impl="threefry2x32")
