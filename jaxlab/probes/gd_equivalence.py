"""Is a trained in-context learner doing gradient descent? Equivalence probes, vmappable over runs.

Reference: von Oswald et al. 2023 ("Transformers learn in-context by gradient descent") for the
GD comparison, Akyürek et al. 2023 ("What learning algorithm is in-context learning?") for the
comparison with other algorithms. Everything is for paired-layout regression batches
(tokens (x_i, y_i), query (x_q, 0); `jaxlab.tasks.regression`).

Two steps:
1. `make_reference(batch, ...)` computes, once per evaluation set, everything that does not depend on
   the model: the GD learning rate eta fitted by a line search on GD's own loss (a vectorized
   log-spaced grid, then `rounds` of finer grids around the best point), GD's predictions and
   sensitivities at the queries, GD++ (eta, gamma fitted jointly) when n_steps > 1, the baselines'
   predictions (`icl_algorithms.ALGORITHMS`), and the probe inputs for ILWD. It runs eagerly: the
   GD fits are one compiled JAX program, the baselines and least-squares fits run in NumPy (float64)
   on the host.
2. `equivalence_metrics(apply_fn, params, batch, ref)` compares ONE model with the reference; vmap
   it over stacked parameters to probe R runs in one call (`jax.vmap(f, in_axes=(None, 0, None,
   None))`).

Metrics (means over the tasks of the evaluation set; y_hat, g = d y_hat / d x_q at the query):
  eval_loss     0.5 ||y_hat_model - y||^2 (the model's own loss)
  preds_diff    mean ||y_hat_model - y_hat_GD||
  model_cos     mean cos(g_model, g_GD)  (norms + 1e-8, as in von Oswald et al.'s code)
  model_diff    mean ||g_model - g_GD||
  spd_<alg>     squared prediction difference, mean ||y_hat_model - y_hat_alg||^2 at the queries
                (x_q ~ p(x), independent of the context, as in Akyürek et al.)
  ilwd_<alg>    implicit linear weight difference, mean ||w_hat(model) - w_hat(alg)||^2 where
                w_hat(f) is the least-squares fit of f's predictions at M fresh probe inputs that
                share the task's context (on the first `ilwd_tasks` tasks)
  *_gdpp        the same GD comparisons against GD++ (n_steps > 1)
  spd_gd1, ilwd_gd1   against ONE GD step with its own fitted rate (n_steps > 1; `gd` is K steps)
`interp_loss(...)` is the loss of von Oswald et al.'s interpolated model (Appendix A.3).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.config import ModelConfig
from jaxlab.models.gd import (
    check_interpolable,
    gd_products,
    interpolate_products,
    lsa_products,
    params_from_products,
    product_config,
)
from jaxlab.models.transformer import Transformer
from jaxlab.probes import icl_algorithms as alg
from jaxlab.probes.cosine import VON_OSWALD_EPS, cosine
from jaxlab.probes.sensitivity import model_query_fn, query_sensitivity, with_query
from jaxlab.tasks.batch import Batch

ApplyFn = Callable[[chex.ArrayTree, jax.Array], jax.Array]


# -- losses and the line search --------------------------------------------------------------------
# the one-step GD compared with as well when the model has K > 1 layers (its own fitted rate):
# metrics spd_gd1, ilwd_gd1, reference gd1_loss
ONE_STEP_GD = "gd1"


def half_mse(preds_BO: jax.Array, targets_BO: jax.Array) -> jax.Array:
    """0.5 * squared error summed over outputs, mean over tasks (jaxlab's `mse`, von Oswald's loss)."""
    return 0.5 * jnp.mean(jnp.sum((preds_BO - targets_BO) ** 2, axis=-1))


def minimize_log_grid(
    loss_fn: Callable[[jax.Array], jax.Array],
    lo: Sequence[float],
    hi: Sequence[float],
    n_grid: int = 81,
    rounds: int = 8,
    n_refine: int = 9,
    batch_size: int = 27,
) -> tuple[jax.Array, jax.Array]:
    """Minimize loss_fn(theta) over theta in [lo, hi] (P positive parameters), in log10 space.

    A product grid of n_grid points per parameter is evaluated (`lax.map` in batches of
    `batch_size`, so memory stays bounded), then `rounds` times a grid of n_refine points per
    parameter spanning +-1 spacing around the best point, each round shrinking the spacing by
    (n_refine - 1) / 2. Non-finite losses count as +inf. Returns (theta [P], loss).
    """
    lo_P = jnp.log10(jnp.asarray(lo, jnp.float32))
    hi_P = jnp.log10(jnp.asarray(hi, jnp.float32))
    P = lo_P.shape[0]

    def evaluate(points_GP: jax.Array) -> jax.Array:
        G = points_GP.shape[0]
        # A divisor of G, so lax.map compiles one batched body and no remainder.
        size = max(b for b in range(1, min(batch_size, G) + 1) if G % b == 0)
        losses = jax.lax.map(lambda lp: loss_fn(10.0**lp), points_GP, batch_size=size)
        return jnp.where(jnp.isfinite(losses), losses, jnp.inf)

    def product(axes: list[jax.Array]) -> jax.Array:
        return jnp.stack(jnp.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, P)

    grid = product([jnp.linspace(lo_P[i], hi_P[i], n_grid) for i in range(P)])
    losses = evaluate(grid)
    best, best_loss = grid[jnp.argmin(losses)], jnp.min(losses)
    spacing = (hi_P - lo_P) / (n_grid - 1)
    offsets = product([jnp.linspace(-1.0, 1.0, n_refine)] * P)

    def refine(carry, _):
        best, best_loss, spacing = carry
        points = best + offsets * spacing
        l = evaluate(points)
        i = jnp.argmin(l)
        better = l[i] < best_loss
        best = jnp.where(better, points[i], best)
        return (best, jnp.where(better, l[i], best_loss), spacing * 2.0 / (n_refine - 1)), None

    (best, best_loss, _), _ = jax.lax.scan(refine, (best, best_loss, spacing), None, length=rounds)
    return 10.0**best, best_loss


def gd_loss(
    eta: jax.Array | float,
    x_BND: jax.Array,
    y_BNO: jax.Array,
    xq_BD: jax.Array,
    yq_BO: jax.Array,
    n_steps: int = 1,
    gamma: jax.Array | float = 0.0,
) -> jax.Array:
    """Loss of K-step GD (GD++ for gamma > 0) on a batch of tasks."""
    preds = alg.gd_predict(x_BND, y_BNO, xq_BD[:, None], eta, n_steps, gamma)[:, 0]
    return half_mse(preds, yq_BO)


def fit_gd_lr(
    x_BND: jax.Array,
    y_BNO: jax.Array,
    xq_BD: jax.Array,
    yq_BO: jax.Array,
    n_steps: int = 1,
    lo: float = 1e-4,
    hi: float = 1e4,
    n_grid: int = 81,
    rounds: int = 8,
) -> tuple[jax.Array, jax.Array]:
    """(eta, loss): the learning rate of K-step GD from W = 0 that minimizes GD's loss on the batch."""
    theta, loss = minimize_log_grid(
        lambda t: gd_loss(t[0], x_BND, y_BNO, xq_BD, yq_BO, n_steps), [lo], [hi], n_grid, rounds
    )
    return theta[0], loss


def fit_gd_plus_plus(
    x_BND: jax.Array,
    y_BNO: jax.Array,
    xq_BD: jax.Array,
    yq_BO: jax.Array,
    n_steps: int,
    eta_gd: jax.Array,
    n_grid: int = 41,
    rounds: int = 7,
    max_tasks: int = 2048,
) -> tuple[jax.Array, jax.Array, jax.Array]:
    """(eta, gamma, loss) of K-step GD++ minimizing its loss, fitted jointly on a 2-D log grid.

    The grid is centred on the scales of the problem: eta in [eta_gd / 100, 100 eta_gd] (eta_gd the
    fitted plain-GD rate) and gamma in [1e-3, 10] / lambda-bar with lambda-bar the mean eigenvalue
    of sum_i x_i x_i^T. The search uses the first `max_tasks` tasks (von Oswald et al. fit GD++ by
    Adam on batches of 512); the returned loss is on the whole batch. If no gamma > 0 beats plain
    GD (gamma = 0, eta_gd), that is returned.

    n_grid = 41 (a tenth of a decade apart): the loss is a narrow curved valley in (eta, gamma) at
    larger N, and a coarser first grid (11 points, 0.4 decades) ended in a side basin at N = 50
    (2 steps: gamma 0.0375, loss 0.0080, where gamma 0.056 gives 0.0027).
    """
    n = min(max_tasks, x_BND.shape[0])
    xs, ys, qs, ts = x_BND[:n], y_BNO[:n], xq_BD[:n], yq_BO[:n]
    lam = jnp.mean(jnp.sum(xs**2, axis=(1, 2))) / x_BND.shape[-1]
    theta, _ = minimize_log_grid(
        lambda t: gd_loss(t[0], xs, ys, qs, ts, n_steps, t[1]),
        jnp.stack([eta_gd / 100.0, 1e-3 / lam]),
        jnp.stack([eta_gd * 100.0, 10.0 / lam]),
        n_grid,
        rounds,
        n_refine=5,
    )
    loss = gd_loss(theta[0], x_BND, y_BNO, xq_BD, yq_BO, n_steps, theta[1])
    plain = gd_loss(eta_gd, x_BND, y_BNO, xq_BD, yq_BO, n_steps)
    use_plain = ~(loss < plain)
    return (
        jnp.where(use_plain, eta_gd, theta[0]),
        jnp.where(use_plain, 0.0, theta[1]),
        jnp.where(use_plain, plain, loss),
    )


# -- the model-independent reference ---------------------------------------------------------------
def split(batch: Batch, n_dims: int) -> tuple[jax.Array, jax.Array, jax.Array, jax.Array]:
    """(x_ctx [B, N, d], y_ctx [B, N, O], x_query [B, d], y_query [B, O]) of a paired batch."""
    chex.assert_rank(batch.inputs, 3)
    x = batch.inputs[:, :-1, :n_dims]
    y = batch.inputs[:, :-1, n_dims:]
    return x, y, batch.inputs[:, -1, :n_dims], batch.targets[:, -1]


def _gd_at_queries(x, y, xq, eta, n_steps, gamma=0.0) -> tuple[jax.Array, jax.Array]:
    return query_sensitivity(lambda q: alg.gd_predict(x, y, q[:, None], eta, n_steps, gamma)[:, 0], xq)


def run_compiled(fn: Callable[..., Any], *args: Any) -> Any:
    """fn(*args) as one compiled program, returning concrete arrays even while another program is
    being traced (a plain jit call would then return that trace's tracers, and
    `jax.ensure_compile_time_eval` would run fn op by op, compiling every operation on its own)."""
    return jax.jit(fn).lower(*args).compile()(*args)


def fit_gd_reference(batch: Batch, n_dims: int, n_steps: int, gd_plus_plus: bool) -> dict[str, dict[str, jax.Array]]:
    """GD (and GD++) fitted on the batch: {"gd": {eta, gamma, loss, preds, sens}, "gdpp": {...}}."""
    x, y, xq, yq = split(batch, n_dims)
    eta, loss = fit_gd_lr(x, y, xq, yq, n_steps)
    preds, sens = _gd_at_queries(x, y, xq, eta, n_steps)
    out = {"gd": {"eta": eta, "gamma": jnp.float32(0.0), "loss": loss, "preds": preds, "sens": sens}}
    if n_steps > 1:  # one GD step beside the K-step GD (Akyuerek et al. compare with both)
        eta1, loss1 = fit_gd_lr(x, y, xq, yq, 1)
        out[ONE_STEP_GD] = {"eta": eta1, "loss": loss1}
    if gd_plus_plus:
        eta_pp, gamma_pp, loss_pp = fit_gd_plus_plus(x, y, xq, yq, n_steps, eta)
        preds_pp, sens_pp = _gd_at_queries(x, y, xq, eta_pp, n_steps, gamma_pp)
        out["gdpp"] = {"eta": eta_pp, "gamma": gamma_pp, "loss": loss_pp, "preds": preds_pp, "sens": sens_pp}
    return out


def make_reference(
    batch: Batch,
    n_dims: int,
    n_steps: int = 1,
    *,
    x_probe_BMD: Any = None,
    ridge_lambda: float = 0.1,
    knn_k: int = 3,
    algorithms: Sequence[str] = alg.ALGORITHMS,
    gd_plus_plus: bool | None = None,
) -> dict[str, Any]:
    """Everything the probes compare a model with, for one evaluation batch (see the module docstring).

    x_probe_BMD: probe inputs for ILWD, drawn from the task's input distribution, for the first
    B' <= B tasks (None: no ILWD). gd_plus_plus: fit GD++ too (default: when n_steps > 1).
    Runs eagerly (not under jit), also while another program is being traced: the GD fits run as
    one compiled program, the rest in NumPy. The result is a pytree of float32 arrays (JAX or NumPy);
    pass it unbatched (in_axes None) when vmapping `equivalence_metrics` over runs.
    """
    if gd_plus_plus is None:
        gd_plus_plus = n_steps > 1
    fit = functools.partial(fit_gd_reference, n_dims=n_dims, n_steps=n_steps, gd_plus_plus=gd_plus_plus)
    ref: dict[str, Any] = run_compiled(fit, batch)
    # NumPy from here on: a JAX operation would join a program being traced around this call.
    x, y, xq, yq = split(jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), batch), n_dims)
    eta = float(ref["gd"]["eta"])
    predictors = {
        name: alg.predictor(name, eta=eta, n_steps=n_steps, ridge_lambda=ridge_lambda, knn_k=knn_k)
        for name in algorithms
    }
    if ONE_STEP_GD in ref and "gd" in algorithms:
        eta1 = float(ref[ONE_STEP_GD]["eta"])
        predictors[ONE_STEP_GD] = alg.predictor("gd", eta=eta1, n_steps=1, ridge_lambda=ridge_lambda, knn_k=knn_k)
    preds = {n: p(x, y, xq[:, None])[:, 0] for n, p in predictors.items()}
    f32 = lambda a: np.asarray(a, np.float32)
    ref["alg_preds"] = {n: f32(p) for n, p in preds.items()}
    ref["alg_loss"] = {n: f32(0.5 * np.mean(np.sum((p - yq) ** 2, axis=-1))) for n, p in preds.items()}
    if x_probe_BMD is not None:
        probes = np.asarray(x_probe_BMD, np.float64)
        if probes.ndim != 3 or probes.shape[-1] != n_dims or probes.shape[0] > x.shape[0]:
            raise ValueError(f"x_probe_BMD: expected [B' <= {x.shape[0]}, M, {n_dims}], got {probes.shape}")
        b = probes.shape[0]
        pinv_BDM = np.linalg.pinv(probes)
        ref["probe_x"] = f32(probes)
        ref["probe_pinv"] = f32(pinv_BDM)
        ref["alg_w"] = {n: f32(pinv_BDM @ p(x[:b], y[:b], probes)) for n, p in predictors.items()}
    return ref


# -- one model against the reference ---------------------------------------------------------------
def probe_predictions(
    apply_fn: ApplyFn, params: chex.ArrayTree, inputs_BTD: jax.Array, x_probe_BMD: jax.Array, batch_size: int = 256
) -> jax.Array:
    """The model's predictions [B, M, O] at M probe inputs per task, each with the task's context.

    Every probe is a separate sequence (works for any architecture); `batch_size` tasks
    (batch_size * M sequences) are evaluated at a time to bound memory.
    """
    M = x_probe_BMD.shape[1]

    def one_task(args):
        inputs_TD, xp_MD = args
        seqs = with_query(jnp.broadcast_to(inputs_TD, (M, *inputs_TD.shape)), xp_MD)
        return apply_fn(params, seqs)[:, -1, :]

    return jax.lax.map(one_task, (inputs_BTD[: x_probe_BMD.shape[0]], x_probe_BMD), batch_size=batch_size)


def _gd_comparison(preds, sens, gd: dict[str, jax.Array], suffix: str) -> dict[str, jax.Array]:
    flat = lambda g: g.reshape(g.shape[0], -1)  # Jacobians [B, O, d] compared as flat vectors
    return {
        f"preds_diff{suffix}": jnp.mean(jnp.linalg.norm(preds - gd["preds"], axis=-1)),
        f"model_cos{suffix}": jnp.mean(cosine(flat(sens), flat(gd["sens"]), eps=VON_OSWALD_EPS)),
        f"model_diff{suffix}": jnp.mean(jnp.linalg.norm((sens - gd["sens"]).reshape(sens.shape[0], -1), axis=-1)),
    }


def equivalence_metrics(
    apply_fn: ApplyFn,
    params: chex.ArrayTree,
    batch: Batch,
    ref: dict[str, Any],
    n_dims: int,
    probe_batch_size: int = 256,
) -> dict[str, jax.Array]:
    """eval_loss, preds_diff, model_cos, model_diff (and *_gdpp), spd_<alg>, ilwd_<alg> of one model.

    eval_loss is the model's query loss (0.5 * squared error, mean over tasks) on `batch`.
    """
    _, _, xq, yq = split(batch, n_dims)
    preds, sens = query_sensitivity(model_query_fn(apply_fn, params, batch.inputs), xq)
    out = {"eval_loss": half_mse(preds, yq), **_gd_comparison(preds, sens, ref["gd"], "")}
    if "gdpp" in ref:
        out.update(_gd_comparison(preds, sens, ref["gdpp"], "_gdpp"))
    for name, p in ref["alg_preds"].items():
        out[f"spd_{name}"] = jnp.mean(jnp.sum((preds - p) ** 2, axis=-1))
    if "probe_x" in ref:
        f_BMO = probe_predictions(apply_fn, params, batch.inputs, ref["probe_x"], probe_batch_size)
        w_BDO = jnp.einsum("bdm,bmo->bdo", ref["probe_pinv"], f_BMO)
        for name, w in ref["alg_w"].items():
            out[f"ilwd_{name}"] = jnp.mean(jnp.sum((w_BDO - w) ** 2, axis=(1, 2)))
    return out


def interp_loss(
    cfg: ModelConfig, params: chex.ArrayTree, batch: Batch, eta: jax.Array | float, n_context: int
) -> jax.Array:
    """Loss of the model whose products A, B are averaged with GD's (von Oswald et al., App. A.3).

    `cfg` must be a one-head linear-attention model with shared layer weights (`check_interpolable`);
    GD's layer is the one-step construction with rate `eta` (K tied layers: K steps).
    """
    check_interpolable(cfg)
    a, b = lsa_products(params, cfg)
    a_gd, b_gd = gd_products(cfg, n_context, eta)
    a_int, b_int = interpolate_products(a[0, 0], b[0, 0], a_gd, b_gd, cfg.d_model - cfg.d_output)
    p_int = params_from_products(a_int[None], b_int[None], cfg)
    out = Transformer(product_config(cfg)).apply({"params": p_int}, batch.inputs)
    return half_mse(out[:, -1], batch.targets[:, -1])


__all__ = [
    "equivalence_metrics",
    "fit_gd_lr",
    "fit_gd_plus_plus",
    "fit_gd_reference",
    "gd_loss",
    "half_mse",
    "interp_loss",
    "make_reference",
    "minimize_log_grid",
    "probe_predictions",
    "run_compiled",
    "split",
]
