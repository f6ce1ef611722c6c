"""The constrained (A, B, P) model of Sander, Giryes, Suzuki, Blondel, Peyré (ICML 2024, Sec. 4) at a given
(C, P), no training: the inverse of `probes.autoregressive.constrained_structure`, and its metrics against one
GD step on the inner objective (`probes.autoregressive.equivalence_metrics`).

The paper's released optimum for 2x2-rotation W (Fig. 3 right, orthogonal.py, tensors/*_orthogonal.npy):
C = B^T A = -1.289 blockdiag([[1, 1], [1, 1]]), P[t, t+1] = -0.776, P[t, t] = +0.388, every other entry of P 0
(jaxlab's P[u, u] and P[u, u-1]: `jaxlab.models.constrained_attention`). Scored like a trained model, it is the
control of the claim that the constrained model predicts as one GD step: it measures whether that claim's bar
is met by the paper's own solution.
"""

from __future__ import annotations

from collections.abc import Callable

import chex
import jax
import jax.numpy as jnp

from jaxlab.models.transformer import params_at
from jaxlab.probes.autoregressive import equivalence_metrics
from jaxlab.tasks import autoregressive as ar
from jaxlab.tasks.batch import Batch


def constrained_params(
    params: chex.ArrayTree, task: ar.Config, c_block: float, p_next: float, p_prev: float
) -> chex.ArrayTree:
    """`params` (a one-layer `constrained` model) set to C = c_block blockdiag([[1, 1], [1, 1]]) (task basis),
    P[u, u] = p_next, P[u, u-1] = p_prev, every other entry of P 0 (the paper's P[t, t+1] and P[t, t]).

    C = B^T A = sum_h b_h a_h^T is c_block times a sum of d / 2 rank-one blocks, so head k < d / 2 takes
    b_k = pm (e_2k + e_2k+1), a_k = c_block pm (e_2k + e_2k+1) (pm = `ar.basis`), the other heads 0: exact with
    n_heads >= d / 2 (the paper's 8 heads for d = 10); ValueError otherwise.
    """
    attn = params_at(params, "blocks.0.attn")
    a, p = attn["a"]["kernel"], attn["p"]["kernel"]
    H, d = a.shape
    if d % 2 or H < d // 2:
        raise ValueError(f"C = c blockdiag([[1, 1], [1, 1]]) needs even d and n_heads >= d / 2, got d = {d}, H = {H}")
    k = jnp.arange(d // 2)
    u_HD = jnp.zeros((H, d), a.dtype).at[k, 2 * k].set(1.0).at[k, 2 * k + 1].set(1.0)  # rows e_2k + e_2k+1, then 0
    rows_HD = u_HD @ jnp.asarray(ar.basis(task), a.dtype).T  # row h: pm u_h
    i = jnp.arange(p.shape[0])
    p_new = jnp.zeros_like(p).at[i, i].set(p_next).at[i[1:], i[:-1]].set(p_prev)
    new_attn = {**attn, "a": {"kernel": c_block * rows_HD}, "b": {"kernel": rows_HD}, "p": {"kernel": p_new}}
    return {**params, "blocks_0": {**params["blocks_0"], "attn": new_attn}}


def fixed_point_metrics(
    apply_fn: Callable[[chex.ArrayTree, jax.Array], jax.Array],
    params: chex.ArrayTree,
    batch: Batch,
    ref: dict[str, jax.Array],
    task: ar.Config,
    values: dict[str, float],
    prefix: str = "paper_optimum_",
) -> dict[str, jax.Array]:
    """The model at `constrained_params(params, task, **values)` (keys c_block, p_next, p_prev) scored as a trained
    one against the fitted one-step GD `ref` on `batch` (`equivalence_metrics`), named `prefix` + model_cos
    (cos of d y_hat_{T-1} / d s_{T-1} with GD's, mean over tasks), loss (eval_loss's 0.5 squared error), preds_diff
    (mean ||y_hat - y_hat_GD||), loss_ratio (loss / GD's loss)."""
    m = equivalence_metrics(apply_fn, constrained_params(params, task, **values), batch, ref, task)
    out = {"model_cos": m["model_cos"], "loss": m["eval_loss"], "preds_diff": m["preds_diff"]}
    out["loss_ratio"] = m["eval_loss"] / m["gd_loss"]
    return {prefix + k: v for k, v in out.items()}


__all__ = ["constrained_params", "fixed_point_metrics"]
