"""In-context autoregressive learning (Sander, Giryes, Suzuki, Blondel, Peyré, ICML 2024).

Each sequence has its own orthogonal W [d, d] and follows s_{t+1} = W s_t from s_0:
  commuting  W = blockdiag(R(theta_1), ..., R(theta_{d/2})), R(theta) the 2x2 rotation, theta_k ~
             U(0, 2 pi); with `conjugate`, W = P R P^T for ONE fixed orthogonal P (Haar, drawn from
             `basis_seed`) shared by the whole distribution, so the W still commute.
  haar       W ~ Haar(O(d)): QR of a Gaussian matrix with the signs of diag(R) moved into Q
             (Mezzadri 2007), so W is exactly Haar-distributed (non-commuting).
  unitary    the complex case lambda = exp(i theta / mu), theta ~ U(0, 2 pi), each complex
             coordinate stored as a 2x2 rotation (d = 2 is the paper's d = 1 complex case).
s_0 is 1/sqrt(d) * ones (`s0="fixed"`), uniform on the sphere (`"sphere"`), or ones (`"ones"`: unit
coordinates, ||s_0||^2 = d, the released orthogonal.py / unitary.py / pe_only.py). With `noise_std`
the tokens are noisy observations o_t = s_t + noise_std * eps_t (targets o_{t+1}).

Tokens (t = 0..T-1), targets s_{t+1} at every position (loss mask all ones):
  plain      e_t = s_t                                  (width d)
  augmented  e_t = (s_t, s_{t-1}, 0_d), s_{-1} = 0      (width 3d)
             The paper writes e_t = (0_d, s_t, s_{t-1}); we store the zero block LAST (a fixed
             permutation of coordinates, which a linear transformer absorbs in its weights) so
             that the `y_block` readout reads the prediction from the zero block.
  repeated   e_t = (s_t, s_t)                           (width 2d), for the non-augmented model.
aux: "w" [B, d, d], "s" [B, T + 1, d] (the clean states s_0..s_T). `loss_start` leaves the positions
t < loss_start out of the loss mask (the paper's constrained model predicts from t = 1 on: its query
at t is s_{t-1}).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab import linalg, rng
from jaxlab.config import TaskSection, _choice, _positive
from jaxlab.errors import ConfigError
from jaxlab.tasks.batch import Batch, TaskSpec

W_KINDS = ("commuting", "haar", "unitary")
S0_KINDS = ("fixed", "sphere", "ones")
ENCODINGS = ("augmented", "plain", "repeated")


@dataclass(frozen=True)
class Config(TaskSection):
    """The `task` section of in-context autoregressive sequences s_{t+1} = W s_t (`kind = "autoregressive"`; module
    docstring)."""

    kind: ClassVar[str] = "autoregressive"
    n_dims: int = 10
    seq_len: int = 20
    w_kind: str = "commuting"
    conjugate: bool = False
    basis_seed: int = 0
    mu: float = 1.0
    s0: str = "fixed"
    noise_std: float = 0.0
    encoding: str = "augmented"
    loss_start: int = 0

    FIELD_DOCS: ClassVar[dict[str, str]] = {
        "n_dims": "dimension d of the states s_t (even for commuting and unitary W)",
        "seq_len": "tokens T per sequence; the target at t is s_{t+1}",
        "w_kind": "each sequence's W: commuting (2x2 rotations), haar (Haar orthogonal), unitary (angles theta / mu)",
        "conjugate": "commuting / unitary W in one fixed random basis P shared by all sequences (W = P R P^T)",
        "basis_seed": "seed of the fixed basis P (with conjugate)",
        "mu": "unitary W: rotation angles theta / mu with theta ~ U(0, 2 pi)",
        "s0": "the first state: ones / sqrt(d) (fixed) or uniform on the sphere",
        "noise_std": "tokens are noisy observations s_t + noise_std * eps_t (0: clean)",
        "encoding": "tokens: plain s_t, augmented (s_t, s_{t-1}, 0), or repeated (s_t, s_t)",
        "loss_start": "positions t < loss_start are left out of the loss (mask 0)",
    }
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"w_kind": W_KINDS, "s0": S0_KINDS, "encoding": ENCODINGS}

    def validate(self) -> None:
        n = self._name
        _positive(n("n_dims"), self.n_dims)
        _choice(n("w_kind"), self.w_kind, W_KINDS)
        _choice(n("s0"), self.s0, S0_KINDS)
        _choice(n("encoding"), self.encoding, ENCODINGS)
        _positive(n("mu"), self.mu)
        _positive(n("noise_std"), self.noise_std, allow_zero=True)
        if self.seq_len < 2:
            raise ConfigError(n("seq_len"), f"must be >= 2, got {self.seq_len!r}")
        if not 0 <= self.loss_start < self.seq_len:
            raise ConfigError(n("loss_start"), f"must be in [0, seq_len - 1], got {self.loss_start!r}")
        if self.basis_seed < 0:
            raise ConfigError(n("basis_seed"), f"must be >= 0, got {self.basis_seed!r}")
        if self.w_kind in ("commuting", "unitary") and self.n_dims % 2:
            raise ConfigError(n("n_dims"), f"w_kind={self.w_kind!r} needs an even n_dims (2x2 rotations)")
        if self.conjugate and self.w_kind == "haar":
            raise ConfigError(n("conjugate"), "a fixed basis change only applies to commuting/unitary W", [False])


def spec(cfg: Config) -> TaskSpec:
    """The `TaskSpec`: `seq_len` tokens of width d (plain), 3d (augmented) or 2d (repeated), d outputs, mse loss."""
    width = {"plain": 1, "augmented": 3, "repeated": 2}[cfg.encoding] * cfg.n_dims
    return TaskSpec(kind=cfg.kind, seq_len=cfg.seq_len, output_dim=cfg.n_dims, loss="mse", token_dim=width)


# -- W --------------------------------------------------------------------------------------------
def rotation_blocks(theta_BK: jax.Array) -> jax.Array:
    """blockdiag(R(theta_1), ..., R(theta_K)) [B, 2K, 2K], R(theta) = [[cos, -sin], [sin, cos]]."""
    c, s = jnp.cos(theta_BK), jnp.sin(theta_BK)
    r_BK22 = jnp.stack([jnp.stack([c, -s], -1), jnp.stack([s, c], -1)], -2)
    K = theta_BK.shape[-1]
    eye_KK = jnp.eye(K, dtype=r_BK22.dtype)
    # [B, K, 2, K, 2] with the block R_k at (k, k) -> [B, 2K, 2K]
    full = jnp.einsum("bkij,kl->bkilj", r_BK22, eye_KK)
    return full.reshape(theta_BK.shape[0], 2 * K, 2 * K)


def haar_orthogonal(key: jax.Array, batch_size: int, d: int) -> jax.Array:
    """[B, d, d] Haar-distributed orthogonal matrices: Q diag(sign(diag R)) for G = QR, G Gaussian."""
    g = rng.normal(key, (batch_size, d, d))
    q, r = linalg.qr(g)
    signs = jnp.sign(jnp.diagonal(r, axis1=-2, axis2=-1))
    signs = jnp.where(signs == 0, 1.0, signs)
    return q * signs[:, None, :]


def basis(cfg: Config) -> np.ndarray:
    """The fixed orthogonal P [d, d] of the distribution (identity unless `conjugate`).

    Drawn on the host (NumPy `default_rng(basis_seed)`, QR with the sign correction), so it is a
    constant of every compiled program and the same on every device.
    """
    if not cfg.conjugate:
        return np.eye(cfg.n_dims, dtype=np.float32)
    g = np.random.default_rng(cfg.basis_seed).standard_normal((cfg.n_dims, cfg.n_dims))
    q, r = np.linalg.qr(g)
    return (q * np.sign(np.diag(r))[None, :]).astype(np.float32)


def sample_w(key: jax.Array, cfg: Config, batch_size: int) -> jax.Array:
    d = cfg.n_dims
    if cfg.w_kind == "haar":
        return haar_orthogonal(key, batch_size, d)
    theta = 2.0 * math.pi * rng.uniform(key, (batch_size, d // 2))
    if cfg.w_kind == "unitary":
        theta = theta / cfg.mu
    w = rotation_blocks(theta)
    if cfg.conjugate:
        p = basis(cfg)
        w = jnp.einsum("ij,bjk,lk->bil", p, w, p)
    return w


# -- sequences and tokens -----------------------------------------------------------------------------
def states(w_BDD: jax.Array, s0_BD: jax.Array, n_steps: int) -> jax.Array:
    """[B, n_steps + 1, d]: s_0 and s_{t+1} = W s_t (a scan, so each step is exactly W @ s_t)."""

    def step(s, _):
        nxt = jnp.einsum("bij,bj->bi", w_BDD, s)
        return nxt, nxt

    _, rest = jax.lax.scan(step, s0_BD, None, length=n_steps)
    return jnp.concatenate([s0_BD[:, None], jnp.moveaxis(rest, 0, 1)], axis=1)


def encode(cfg: Config, s_BTD: jax.Array) -> jax.Array:
    """Tokens [B, T, width] of the observed states s_0..s_{T-1} (see the module docstring)."""
    if cfg.encoding == "plain":
        return s_BTD
    if cfg.encoding == "repeated":
        return jnp.concatenate([s_BTD, s_BTD], axis=-1)
    prev = jnp.pad(s_BTD[:, :-1], ((0, 0), (1, 0), (0, 0)))
    return jnp.concatenate([s_BTD, prev, jnp.zeros_like(s_BTD)], axis=-1)


def observed_states(cfg: Config, inputs_BTW: jax.Array) -> jax.Array:
    """The states s_0..s_{T-1} [B, T, d] the tokens carry (the first d coordinates in every encoding)."""
    return inputs_BTW[..., : cfg.n_dims]


def set_state(cfg: Config, inputs_BTW: jax.Array, position: int, x_BD: jax.Array) -> jax.Array:
    """Tokens with the state at `position` replaced by x (every copy of it in the token; for the
    augmented encoding only the s_t block, so s_{t-1} stays the true previous state)."""
    d = cfg.n_dims
    x = x_BD.astype(inputs_BTW.dtype)
    out = inputs_BTW.at[:, position, :d].set(x)
    if cfg.encoding == "repeated":
        out = out.at[:, position, d:].set(x)
    return out


def sample(key: jax.Array, cfg: Config, batch_size: int = 1) -> Batch:
    """`batch_size` sequences. aux: "w" [B, d, d], "s" [B, T + 1, d] (clean states)."""
    k_w, k_s, k_eps = rng.split(key, 3)
    B, T, d = batch_size, cfg.seq_len, cfg.n_dims
    w = sample_w(k_w, cfg, B)
    if cfg.s0 in ("fixed", "ones"):
        s0 = jnp.full((B, d), 1.0 / math.sqrt(d) if cfg.s0 == "fixed" else 1.0)
    else:
        g = rng.normal(k_s, (B, d))
        s0 = g / jnp.linalg.norm(g, axis=-1, keepdims=True)
    s = states(w, s0, T)
    obs = s
    if cfg.noise_std > 0:
        obs = s + cfg.noise_std * rng.normal(k_eps, s.shape)
    return Batch(
        inputs=encode(cfg, obs[:, :T]),
        targets=obs[:, 1:],
        loss_mask=jnp.broadcast_to((jnp.arange(T) >= cfg.loss_start).astype(jnp.float32), (B, T)),
        aux={"w": w, "s": s},
    )


__all__ = ["Config", "basis", "encode", "haar_orthogonal", "observed_states", "rotation_blocks", "sample", "set_state"]
