"""function-classes across programs: the dense model on the sparse tasks, the control for
`sparse_below_least_squares` (Garg, Tsipras, Liang & Valiant 2022, Sec. 4, Fig. 4 left).

Garg et al.'s sparse claim compares the model trained on sparse linear functions with least squares
at n < d examples. A model can miss that bar by being undertrained overall and still use the
sparsity prior; the control asks the second question alone, within one sweep and at one training
budget: on the SAME sparse evaluation tasks (the sparse group's `train.make_eval_batch()`: the full d
and N, as its own evaluation), is the model trained on sparse functions better than the model
trained on dense linear functions with the same seed, size and steps?

`after_sweep` (a sweep with one `linear` and one `sparse_linear` program) scores the final parameters
of both groups' runs on the sparse group's evaluation tasks, in one compiled program (vmap over the
runs' stacked parameters):

    cross_nse[trained=c,tasks=sparse_linear,n=i,model_seed=s]
        = mean over the tasks b of (y_hat_{b,i} - y_{b,i})^2 / k

for the run of seed s of class c (linear: the control; sparse_linear: the sparse model's own
`nse[n=i]`, recomputed by the same program so both sides of the comparison come from one code path),
k the sparsity (Garg's normalization of the sparse class). Diverged runs get no entry. The values go
to summary.json's `reference` (the claim `sparse_model_beats_dense_model_on_sparse_tasks` reads them,
paired by seed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.results import metric_name
from jaxlab.tasks import Batch
from jaxlab.tasks import function_classes as fc
from jaxlab.train.experiment import Finalized
from jaxlab.train.outcomes import finished_runs, run_seeds

CROSS = "cross_nse"
DENSE, SPARSE = "linear", "sparse_linear"


def cross_metric(trained: str, tasks: str, n: int, seed: int) -> str:
    """`cross_nse[trained=linear,tasks=sparse_linear,n=3,model_seed=0]`: the run of seed `seed` trained on class
    `trained`, scored on the evaluation tasks of class `tasks` after `n` examples (module docstring)."""
    return metric_name(CROSS, trained=trained, tasks=tasks, n=int(n), model_seed=int(seed))


def model_predictions(train: Any, params: Any, batch: Batch) -> jax.Array:
    """y_hat [B, N]: the model's prediction of f(x_i) read at every x-token (positions 0, 2, ...)."""
    out_BT1 = train.apply(params, batch.inputs)
    return out_BT1[:, 0::2, 0]


def nse_curve(train: Any, params: Any, tasks: Any, batch: Batch) -> jax.Array:
    """[N] normalized squared error of one model (`params`, the model of `train`) on `batch` of the task config
    `tasks` after i = 0..N-1 examples: nse_i = mean_b (y_hat_{b,i} - y_{b,i})^2 / norm(tasks) (the experiment's
    `nse[n=i]`, Garg et al.'s normalization)."""
    _, y_BN = fc.split_interleaved(batch, tasks)
    return jnp.mean((model_predictions(train, params, batch) - y_BN) ** 2, axis=0) / float(fc.error_normalizer(tasks))


def nse_curves(train: Any, params_R: Any, tasks: Any, batch: Batch) -> np.ndarray:
    """[R, N] `nse_curve` of the R runs (`params_R`, leading run axis), one compiled program vmapped over the
    runs."""
    one = lambda params, batch: nse_curve(train, params, tasks, batch)
    return np.asarray(jax.jit(jax.vmap(one, in_axes=(0, None)))(params_R, batch), np.float64)


def _one_group(outcomes: Sequence[Any], cls: str) -> Any | None:
    """The one outcome whose program trains class `cls` (None when there is none, or several: a grid over more
    than the class, where the pairing would not say which point it reads)."""
    hits = [o for o in outcomes if o.group.cfg.task.function_class == cls]
    return hits[0] if len(hits) == 1 else None


def cross_nse(outcomes: Sequence[Any]) -> dict[str, float]:
    """The `cross_metric` values of a sweep's outcomes (module docstring): the linear and the sparse group's runs
    on the sparse group's evaluation tasks; {} when the sweep lacks either class (or has several programs of
    one) or the two models differ in shape."""
    dense, sparse = _one_group(outcomes, DENSE), _one_group(outcomes, SPARSE)
    if dense is None or sparse is None:
        return {}
    params = (dense.state.params, sparse.state.params)
    same = jax.tree_util.tree_structure(params[0]) == jax.tree_util.tree_structure(params[1]) and all(
        np.shape(a)[1:] == np.shape(b)[1:] for a, b in zip(*map(jax.tree_util.tree_leaves, params))
    )
    if not same:
        return {}
    train = sparse.train
    both_R = jax.tree_util.tree_map(lambda a, b: np.concatenate([np.asarray(a), np.asarray(b)]), *params)
    curves_RN = nse_curves(train, both_R, train.cfg.task, train.make_eval_batch())
    out: dict[str, float] = {}
    row = 0
    for cls, outcome in ((DENSE, dense), (SPARSE, sparse)):
        seeds, ok = run_seeds(outcome), finished_runs(outcome)
        for seed, good in zip(seeds, ok):
            if good:
                out.update({cross_metric(cls, SPARSE, n, seed): float(v) for n, v in enumerate(curves_RN[row])})
            row += 1
    return out


def after_sweep(outcomes: list[Any]) -> Finalized:
    """The analyses across function-classes' programs: `cross_nse` as experiment-level references."""
    return Finalized(reference=cross_nse(outcomes))


__all__ = ["CROSS", "after_sweep", "cross_metric", "cross_nse", "model_predictions", "nse_curve", "nse_curves"]
