"""The function classes of Garg et al. 2022, "What Can Transformers Learn In-Context? A Case Study of
Simple Function Classes" (NeurIPS 2022; code: github.com/dtsip/in-context-learning, `src/tasks.py`,
`src/samplers.py`; line numbers below are of its commit 3383371).

Every sequence draws its own function f from the class and N inputs x_1..x_N i.i.d. N(0, I_d)
(`GaussianSampler.sample_xs`, samplers.py:44, `torch.randn(b_size, n_points, n_dims)`); the targets
are y_i = f(x_i):

  linear         y = w . x, w ~ N(0, I_d) (LinearRegression, tasks.py:83 and 98, with its default
                 `scale` = 1); E[y^2] = d.
  sparse_linear  w ~ N(0, I_d), then all but k = `sparsity` coordinates, chosen uniformly at random,
                 set to 0; y = w . x. No rescaling of w (SparseLinearRegression, tasks.py:134-147,
                 `mask[perm[:sparsity]] = False; w[mask] = 0`), so E[y^2] = k; Garg et al. divide
                 its errors by k instead of d (plot_utils.py:99-100).
  noisy_linear   y = w . x + noise_std * eps, eps ~ N(0, 1) i.i.d. per example (NoisyLinearRegression,
                 tasks.py:191-197); E[y^2] = d + noise_std^2. With `renormalize_ys`,
                 y <- y * sqrt(d) / std(y), std over the whole batch [B, N] with Bessel's correction
                 (torch's `.std()`, tasks.py:194-195), so the scale depends on the batch. The default
                 noise_std = 1 is the one Garg's code runs the task with (the "noisyLR" evaluation,
                 eval.py:252-255, which also sets renormalize_ys=True; the class's own default noise_std
                 is 0, tasks.py:181, and renormalize_ys defaults to False here as there).
  decision_tree  a complete binary tree of depth D = `tree_depth` stored as an array of
                 2^(D+1) - 1 nodes (root 0, children of n at 2n + 1 and 2n + 2); every node gets a
                 coordinate c_n ~ U{0..d-1} (32 random bits mod d: a bias below d / 2^32) and a
                 value v_n ~ N(0, 1) (only the internal nodes' coordinates and the leaves' values
                 are read; tasks.py:284-290). Starting at the
                 root, D times n <- 2n + 1 + [x[c_n] > 0] (right when the coordinate is positive);
                 y = v_n at the leaf reached (tasks.py:315-330). E[y^2] = 1, so Garg et al. do not
                 normalize its errors (plot_utils.py:101-102).
  relu_2nn       y = sqrt(2 / h) * sum_j a_j relu(W_j . x), W [d, h] and a [h] i.i.d. N(0, 1),
                 h = `hidden` (Relu2nnRegression, tasks.py:227-228 and 251-252, "Renormalize to Linear
                 Regression Scale"): E[relu(W_j . x)^2] = d / 2, so E[y^2] = d as for `linear`.

Token layout: Garg's interleaved sequence x_1, y_1, ..., x_N, y_N (`TransformerModel._combine`,
models.py:102-114) in jaxlab's form, `regression.assemble` with `layout="interleaved"` and d_out = 1:
x-tokens (x_i, 0) and y-tokens (0_d, y_i), width d + 1 (Garg writes y into the first of d coordinates
of a width-d token); the prediction of y_i is read at x_i, the loss covers every x-token
(models.py:127, `prediction[:, ::2, 0]`), so every prefix length 0..N-1 counts. (jaxlab's "mse" loss
is half the squared error, Garg's training loss the squared error: a constant factor.)

Curriculum (Garg's `src/curriculum.py`, `src/train.py` and conf/*.yaml; `curriculum_dims`,
`curriculum_points`, each (start, end, inc, interval) or empty for none): at training step t the
effective dimension and the number of examples are

  d_t = min(start + inc * floor(t / interval), end, d)      (the same rule for n_t, capped at N)

(Garg's `Curriculum.update` runs after every step, so step t has seen floor(t / interval)
increments). Garg et al.: dims (5, 20, 1, 2000) for every class; points (11, 41, 2, 2000) for the
linear classes, (26, 101, 5, 2000) for trees and ReLU networks; both finish at step 30000 of 500k.
A batch of step t (`sample(..., step=t)`) draws x ~ N(0, I_d) and zeroes the coordinates j >= d_t
(`GaussianSampler.sample_xs`, `xs_b[:, :, n_dims_truncated:] = 0`); the sparse class draws its k
non-zero coordinates among the first d_t (`valid_coords`, tasks.py:138-141; so the dims schedule
must start at k or above); the other classes draw their functions over all d coordinates, as
Garg's do. The sequence keeps its N examples (one static shape, so one compiled program serves
every stage) and the loss mask covers the first n_t x-tokens only: the model is causal, so the
masked examples j >= n_t change no prediction that counts. Evaluation batches (`step=None`) use
the full d and N, as Garg evaluates.

Not reproduced: task pools (`num_tasks`), the `scale` factor (1 in all of their training runs)
and `seeds`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab import rng
from jaxlab.config import TaskSection, _choice, _positive, inert
from jaxlab.errors import ConfigError
from jaxlab.tasks import regression
from jaxlab.tasks.batch import Batch, TaskSpec

FUNCTION_CLASSES = ("linear", "sparse_linear", "noisy_linear", "decision_tree", "relu_2nn")
LINEAR_CLASSES = ("linear", "sparse_linear", "noisy_linear")
MAX_TREE_DEPTH = 16  # 2^17 - 1 nodes per tree: beyond that a batch of trees does not fit comfortably


def _others(*classes: str) -> tuple[str, ...]:
    return tuple(c for c in FUNCTION_CLASSES if c not in classes)


@dataclass(frozen=True)
class Config(TaskSection):
    """The `task` section of Garg et al.'s function classes (`kind = "function-class"`; the module docstring
    has every class's formula and the token layout)."""

    kind: ClassVar[str] = "function-class"
    function_class: str = "linear"
    n_dims: int = 20
    n_context: int = 40
    sparsity: int = 3
    noise_std: float = 1.0
    renormalize_ys: bool = False
    tree_depth: int = 4
    hidden: int = 100
    curriculum_dims: tuple[int, ...] = ()
    curriculum_points: tuple[int, ...] = ()

    FIELD_DOCS: ClassVar[dict[str, str]] = {
        "function_class": "the class f is drawn from: linear, sparse_linear, noisy_linear, decision_tree, relu_2nn",
        "n_dims": "dimension d of the inputs x_i ~ N(0, I_d)",
        "n_context": "examples (x_i, f(x_i)) per sequence, N; the loss covers every prefix 0..N-1",
        "sparsity": "sparse_linear: k, the number of nonzero weights of w",
        "noise_std": "noisy_linear: standard deviation of the Gaussian noise added to every y_i",
        "renormalize_ys": "noisy_linear: rescale y by sqrt(d) / std(y) over the batch (Garg's noisyLR evaluation)",
        "tree_depth": "decision_tree: depth D of the tree (2^D leaves)",
        "hidden": "relu_2nn: width h of the ReLU network's hidden layer",
        "curriculum_dims": "training curriculum over the effective dimension: start,end,inc,interval (d_t = "
        "min(start + inc * floor(t / interval), end, n_dims); coordinates >= d_t are 0); empty: none "
        "(Garg et al.: 5,20,1,2000)",
        "curriculum_points": "training curriculum over the examples that carry loss: start,end,inc,interval (capped "
        "at n_context); empty: none (Garg et al.: 11,41,2,2000 for linear classes, 26,101,5,2000 for trees and ReLU "
        "networks)",
    }
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"function_class": FUNCTION_CLASSES}
    INERT = (
        inert("sparsity", function_class=_others("sparse_linear")),
        inert("noise_std", function_class=_others("noisy_linear")),
        inert("renormalize_ys", function_class=_others("noisy_linear")),
        inert("tree_depth", function_class=_others("decision_tree")),
        inert("hidden", function_class=_others("relu_2nn")),
    )

    def validate(self) -> None:
        n = self._name
        _choice(n("function_class"), self.function_class, FUNCTION_CLASSES)
        _positive(n("n_dims"), self.n_dims)
        _positive(n("n_context"), self.n_context)
        _positive(n("sparsity"), self.sparsity)
        _positive(n("noise_std"), self.noise_std, allow_zero=True)
        _positive(n("tree_depth"), self.tree_depth)
        _positive(n("hidden"), self.hidden)
        if self.function_class == "sparse_linear" and self.sparsity > self.n_dims:
            raise ConfigError(n("sparsity"), f"must be <= n_dims = {self.n_dims}, got {self.sparsity}")
        if self.tree_depth > MAX_TREE_DEPTH:
            raise ConfigError(n("tree_depth"), f"must be <= {MAX_TREE_DEPTH}, got {self.tree_depth}")
        _check_schedule(n("curriculum_dims"), self.curriculum_dims, self.n_dims, "n_dims")
        _check_schedule(n("curriculum_points"), self.curriculum_points, self.n_context, "n_context")
        if self.function_class == "sparse_linear" and self.curriculum_dims and self.curriculum_dims[0] < self.sparsity:
            raise ConfigError(
                n("curriculum_dims"),
                f"starts at {self.curriculum_dims[0]} dimensions, below sparsity = {self.sparsity} "
                "(the k non-zero weights are drawn among the first d_t coordinates)",
            )

    @property
    def has_curriculum(self) -> bool:
        """Whether training batches depend on the step (a dims or points schedule is set)."""
        return bool(self.curriculum_dims or self.curriculum_points)


def _check_schedule(name: str, schedule: tuple[int, ...], limit: int, limit_name: str) -> None:
    """Refuse a schedule that is not empty or (start, end, inc, interval) with 1 <= start <= end,
    start <= limit, inc >= 1 and interval >= 1 (an end beyond the limit is capped at it: `scheduled`)."""
    if not schedule:
        return
    if len(schedule) != 4:
        raise ConfigError(name, f"expected start,end,inc,interval (4 integers) or nothing, got {schedule!r}")
    start, end, inc, interval = schedule
    if not 1 <= start <= end or start > limit:
        raise ConfigError(
            name, f"needs 1 <= start <= end and start <= {limit_name} = {limit}, got start {start}, end {end}"
        )
    if inc < 1 or interval < 1:
        raise ConfigError(name, f"needs inc >= 1 and interval >= 1, got inc {inc}, interval {interval}")


FunctionClassConfig = Config


def spec(cfg: Config) -> TaskSpec:
    """The `TaskSpec`: 2N interleaved tokens of width n_dims + 1, one output, mse loss."""
    return TaskSpec(kind=cfg.kind, seq_len=2 * cfg.n_context, output_dim=1, loss="mse", token_dim=cfg.n_dims + 1)


def loss_positions(cfg: Config) -> tuple[int, ...]:
    """The x-token positions 0, 2, ..., 2N - 2, where the prediction of y_i is read (all of them carry loss)."""
    return tuple(range(0, 2 * cfg.n_context, 2))


def n_tree_nodes(depth: int) -> int:
    """2^(depth+1) - 1: the nodes of a complete binary tree of `depth` (Garg's `dt_tensor` size, tasks.py:285)."""
    return 2 ** (depth + 1) - 1


def error_normalizer(cfg: Config) -> int:
    """What Garg et al. divide a squared error by (plot_utils.py:97-102): k for sparse_linear, 1 for
    decision_tree, d otherwise (the variance of y under each class, up to the noise)."""
    if cfg.function_class == "sparse_linear":
        return cfg.sparsity
    if cfg.function_class == "decision_tree":
        return 1
    return cfg.n_dims


def scheduled(schedule: tuple[int, ...], step: jax.Array | int, full: int) -> jax.Array:
    """The curriculum value at `step` (traced or not): min(start + inc * floor(step / interval), end, full), or
    `full` (the task's n_dims or n_context) for an empty schedule (Garg's `Curriculum`, module docstring)."""
    if not schedule:
        return jnp.int32(full)
    start, end, inc, interval = schedule
    return jnp.minimum(start + inc * (jnp.asarray(step, jnp.int32) // interval), min(end, full)).astype(jnp.int32)


def active_sizes(cfg: Config, step: jax.Array | int | None) -> tuple[jax.Array, jax.Array]:
    """(d_t, n_t): the effective dimension and the number of examples carrying loss at training step `step`
    (the full n_dims and n_context for `step=None`, the evaluation batches)."""
    if step is None:
        return jnp.int32(cfg.n_dims), jnp.int32(cfg.n_context)
    return scheduled(cfg.curriculum_dims, step, cfg.n_dims), scheduled(cfg.curriculum_points, step, cfg.n_context)


def sample_functions(
    key: jax.Array, cfg: Config, batch_size: int, valid_dims: jax.Array | None = None
) -> dict[str, jax.Array]:
    """The parameters of `batch_size` functions of `cfg.function_class` (module docstring):

    linear classes: "w" [B, 1, d] (regression's [B, d_out, d]); sparse_linear also "support" [B, d]
    (1.0 at the k nonzero coordinates); decision_tree: "tree_coords" [B, 2^(D+1)-1] int32 and
    "tree_values" [B, 2^(D+1)-1]; relu_2nn: "w1" [B, d, h] and "w2" [B, h]. `valid_dims` (the curriculum's
    d_t, traced): the sparse class's support is drawn among the first d_t coordinates (Garg's `valid_coords`).
    """
    B, d = batch_size, cfg.n_dims
    k_a, k_b = rng.split(key, 2)
    fc = cfg.function_class
    if fc in LINEAR_CLASSES:
        w_BD = rng.normal(k_a, (B, d))
        out = {}
        if fc == "sparse_linear":
            # a uniformly random k-subset per task: the k smallest of d i.i.d. uniforms (torch.randperm[:k])
            u_BD = rng.uniform(k_b, (B, d))
            if valid_dims is not None:  # uniforms are < 1: the k smallest lie among the first d_t
                u_BD = jnp.where(jnp.arange(d)[None, :] < valid_dims, u_BD, 2.0)
            order_BD = jnp.argsort(u_BD, axis=-1)
            rank_BD = jnp.argsort(order_BD, axis=-1)
            support_BD = (rank_BD < cfg.sparsity).astype(w_BD.dtype)
            w_BD = w_BD * support_BD
            out["support"] = support_BD
        return {"w": w_BD[:, None, :], **out}
    if fc == "decision_tree":
        T = n_tree_nodes(cfg.tree_depth)
        coords_BT = (rng.random_bits(k_a, (B, T)) % np.uint32(d)).astype(jnp.int32)
        return {"tree_coords": coords_BT, "tree_values": rng.normal(k_b, (B, T))}
    if fc == "relu_2nn":
        return {"w1": rng.normal(k_a, (B, d, cfg.hidden)), "w2": rng.normal(k_b, (B, cfg.hidden))}
    raise ValueError(f"unknown function class {fc!r}")


def tree_leaf_index(coords_BT: jax.Array, x_BND: jax.Array, depth: int) -> jax.Array:
    """The node index [B, N] of the leaf each x reaches: from the root, `depth` times n <- 2n + 1 + [x[c_n] > 0]."""
    node_BN = jnp.zeros(x_BND.shape[:2], jnp.int32)
    for _ in range(depth):
        coord_BN = jnp.take_along_axis(coords_BT, node_BN, axis=1)
        value_BN = jnp.take_along_axis(x_BND, coord_BN[..., None], axis=2)[..., 0]
        node_BN = 2 * node_BN + 1 + (value_BN > 0).astype(jnp.int32)
    return node_BN


def evaluate(cfg: Config, params: dict[str, Any], x_BND: jax.Array) -> jax.Array:
    """The noise-free f(x) [B, N] of the functions `params` (from `sample_functions`) at x [B, N, d]."""
    fc = cfg.function_class
    if fc in LINEAR_CLASSES:
        return jnp.einsum("bd,bnd->bn", params["w"][:, 0], x_BND)
    if fc == "decision_tree":
        leaf_BN = tree_leaf_index(params["tree_coords"], x_BND, cfg.tree_depth)
        return jnp.take_along_axis(params["tree_values"], leaf_BN, axis=1)
    if fc == "relu_2nn":
        h_BNH = jax.nn.relu(jnp.einsum("bnd,bdh->bnh", x_BND, params["w1"]))
        return jnp.sqrt(2.0 / cfg.hidden) * jnp.einsum("bnh,bh->bn", h_BNH, params["w2"])
    raise ValueError(f"unknown function class {fc!r}")


def assemble(cfg: Config, x_BND: jax.Array, y_BN: jax.Array, aux: dict[str, Any]) -> Batch:
    """The interleaved batch x_1, y_1, ..., x_N, y_N of `regression.assemble` (layout "interleaved",
    d_out = 1) with `aux` as its aux."""
    reg = regression.Config(n_dims=cfg.n_dims, n_context=cfg.n_context, d_out=1, layout="interleaved")
    w_BOD = aux.get("w", jnp.zeros((x_BND.shape[0], 1, cfg.n_dims), x_BND.dtype))
    batch = regression.assemble(reg, w_BOD, x_BND, y_BN[..., None])
    return batch.replace(aux=dict(aux))


def sample(key: jax.Array, cfg: Config, batch_size: int = 1, step: jax.Array | int | None = None) -> Batch:
    """`batch_size` sequences of functions of `cfg.function_class` (module docstring); aux holds the
    functions' parameters (`sample_functions`). `step` (traced or not): the batch of that training step
    under the config's curriculum (coordinates j >= d_t zeroed, loss on the first n_t examples; module
    docstring); None, or no curriculum: the full task."""
    k_f, k_x, k_eps = rng.split(key, 3)
    curriculum = step is not None and cfg.has_curriculum
    d_t, n_t = active_sizes(cfg, step if curriculum else None)
    params = sample_functions(k_f, cfg, batch_size, d_t if curriculum and cfg.curriculum_dims else None)
    x_BND = rng.normal(k_x, (batch_size, cfg.n_context, cfg.n_dims))
    if curriculum and cfg.curriculum_dims:
        x_BND = x_BND * (jnp.arange(cfg.n_dims) < d_t).astype(x_BND.dtype)
    y_BN = evaluate(cfg, params, x_BND)
    if cfg.function_class == "noisy_linear":
        if cfg.noise_std > 0:
            y_BN = y_BN + cfg.noise_std * rng.normal(k_eps, y_BN.shape)
        if cfg.renormalize_ys:
            y_BN = y_BN * (np.sqrt(cfg.n_dims) / jnp.std(y_BN, ddof=1))
    batch = assemble(cfg, x_BND, y_BN, params)
    if curriculum and cfg.curriculum_points:
        active_T = (jnp.arange(2 * cfg.n_context) // 2 < n_t).astype(batch.loss_mask.dtype)
        batch = batch.replace(loss_mask=batch.loss_mask * active_T[None, :])
    return batch


def split_interleaved(batch: Batch, cfg: Config) -> tuple[jax.Array, jax.Array]:
    """(x [B, N, d], y [B, N]) of an interleaved batch: the inputs of the x-tokens and the targets of the y-tokens."""
    d = cfg.n_dims
    return batch.inputs[:, 0::2, :d], batch.inputs[:, 1::2, d]


__all__ = [
    "FUNCTION_CLASSES",
    "LINEAR_CLASSES",
    "Config",
    "FunctionClassConfig",
    "active_sizes",
    "assemble",
    "error_normalizer",
    "evaluate",
    "loss_positions",
    "n_tree_nodes",
    "sample",
    "sample_functions",
    "scheduled",
    "spec",
    "split_interleaved",
    "tree_leaf_index",
]
