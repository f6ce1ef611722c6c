"""A 2-layer ReLU network fitted by Adam to every prefix of every task at once: the matched learner for
Garg et al.'s 2-layer ReLU network class (Garg, Tsipras, Liang & Valiant 2022, "What Can Transformers
Learn In-Context?", Fig. 5; code github.com/dtsip/in-context-learning, `src/models.py`, `GDModel` with
`NeuralNetwork` from `src/base_models.py`, commit 3383371).

Garg's baseline (models.py, `get_relevant_baselines("relu_2nn_regression")`): per task and prefix i a
fresh network f(x) = w2 . relu(W1 x + b1) + b2 with hidden width 100 (torch's `nn.Linear` layers,
biases included), initialized as torch does (every weight and bias of a layer with fan-in m uniform
in [-1/sqrt(m), 1/sqrt(m)]), trained by Adam (lr 5e-3, betas 0.9 / 0.999, eps 1e-8) for 100 steps on
the squared error over the examples j < i (mini-batches of 100 of them: all of them for i <= 100),
then evaluated at x_i; 0 at i = 0.

    L_i(theta) = (1/i) sum_{j<i} (f_theta(x_j) - y_j)^2

Garg's loss averages over the tasks of a batch as well (one `nn.MSELoss` over [B, i]); each task has
its own parameters, so that only scales every task's gradient by 1/B, which Adam undoes up to its
eps. Here each problem (task, prefix) has its own loss and Adam state: one vmapped `lax.scan` of
`steps` Adam updates over all P = B * N problems, the prefixes masked (static shapes).
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import optax
from jax import lax

from jaxlab import rng
from jaxlab.probes.prefix_baselines import prefix_mask

HIDDEN = 100  # NeuralNetwork(hidden_size=100)
STEPS = 100  # GDModel(num_steps=100)
LR = 5e-3  # GDModel(lr=5e-3), Adam


def _check(x_BND: jax.Array, y_BN: jax.Array) -> None:
    if x_BND.ndim != 3 or y_BN.ndim != 2 or x_BND.shape[:2] != y_BN.shape:
        raise ValueError(f"expected x [B, N, d] and y [B, N], got {x_BND.shape} and {y_BN.shape}")


def init_params(key: jax.Array, n_problems: int, d: int, hidden: int = HIDDEN) -> dict[str, jax.Array]:
    """Torch's default `nn.Linear` initialization of P networks: W1 [P, d, h], b1 [P, h] uniform in +-1/sqrt(d);
    w2 [P, h], b2 [P] uniform in +-1/sqrt(h)."""
    k1, k2, k3, k4 = rng.split(key, 4)
    a1, a2 = 1.0 / math.sqrt(d), 1.0 / math.sqrt(hidden)
    u = lambda k, shape, a: rng.uniform(k, shape, minval=-a, maxval=a)
    P = n_problems
    return {
        "W1": u(k1, (P, d, hidden), a1),
        "b1": u(k2, (P, hidden), a1),
        "w2": u(k3, (P, hidden), a2),
        "b2": u(k4, (P,), a2),
    }


def net(params: dict[str, jax.Array], x_JD: jax.Array) -> jax.Array:
    """f(x) [J] = w2 . relu(W1^T x + b1) + b2 for one network and points x [J, d]."""
    h_JH = jax.nn.relu(x_JD @ params["W1"] + params["b1"])
    return h_JH @ params["w2"] + params["b2"]


def fit_predict(
    params: dict[str, jax.Array],
    x_PJD: jax.Array,
    y_PJ: jax.Array,
    m_PJ: jax.Array,
    xq_PD: jax.Array,
    steps: int = STEPS,
    lr: float = LR,
) -> jax.Array:
    """pred [P]: each problem's network (initial `params`, leaves with a leading P axis) trained by `steps`
    Adam steps at `lr` on the mean squared error over its points with m = 1, evaluated at its query
    xq; 0 where a problem has no training point."""
    opt = optax.adam(lr)

    def one(p0: dict[str, Any], x_JD: jax.Array, y_J: jax.Array, m_J: jax.Array, xq_D: jax.Array) -> jax.Array:
        count = jnp.sum(m_J)

        def loss(p: dict[str, Any]) -> jax.Array:
            return jnp.sum(m_J * (net(p, x_JD) - y_J) ** 2) / jnp.maximum(count, 1.0)

        def step(carry: tuple[Any, Any], _: None) -> tuple[tuple[Any, Any], None]:
            p, s = carry
            updates, s = opt.update(jax.grad(loss)(p), s, p)
            return (optax.apply_updates(p, updates), s), None

        (p, _), _ = lax.scan(step, (p0, opt.init(p0)), None, length=steps)
        return jnp.where(count > 0, net(p, xq_D[None])[0], 0.0)

    return jax.vmap(one)(params, x_PJD, y_PJ, m_PJ, xq_PD)


@partial(jax.jit, static_argnames=("hidden", "steps"))
def relu_net_prefix(
    x_BND: jax.Array,
    y_BN: jax.Array,
    key: jax.Array,
    hidden: int = HIDDEN,
    steps: int = STEPS,
    lr: float | jax.Array = LR,
) -> jax.Array:
    """pred [B, N]: a fresh 2-layer ReLU network (width `hidden`, torch's initialization from `key`) trained by
    Adam on the examples before i, at x_i (module docstring; 0 at i = 0)."""
    _check(x_BND, y_BN)
    B, N, d = x_BND.shape
    m_PJ = jnp.broadcast_to(prefix_mask(N, x_BND.dtype)[None], (B, N, N)).reshape(B * N, N)
    x_PJD = jnp.broadcast_to(x_BND[:, None], (B, N, N, d)).reshape(B * N, N, d)
    y_PJ = jnp.broadcast_to(y_BN[:, None], (B, N, N)).reshape(B * N, N)
    params = init_params(key, B * N, d, hidden)
    return fit_predict(params, x_PJD, y_PJ, m_PJ, x_BND.reshape(B * N, d), steps, lr).reshape(B, N)


__all__ = ["HIDDEN", "LR", "STEPS", "fit_predict", "init_params", "net", "relu_net_prefix"]
