"""function-classes: which functions a transformer learns in context (Garg, Tsipras, Liang & Valiant 2022,
"What Can Transformers Learn In-Context? A Case Study of Simple Function Classes"; code
github.com/dtsip/in-context-learning).

A GPT-style causal transformer reads interleaved tokens x_1, f(x_1), ..., x_N, f(x_N) of one
function f drawn per sequence from a class (`jaxlab.tasks.function_classes`: linear, sparse
linear, noisy linear, depth-4 decision trees, 2-layer ReLU networks; x ~ N(0, I_d)) and predicts
f(x_i) at every x-token from the i examples before it. One program per function class (the grid
over `task.function_class`), as Garg et al. train one model per class.

Metrics (`jaxlab.results.metric_name`: the tidy tables have the parameters as columns):
  nse[n=i]                            the model's normalized squared error after i in-context
                                      examples: mean over the evaluation tasks of (y_hat_i - y_i)^2
                                      / norm, norm = d (k for sparse, 1 for trees; Garg's
                                      plot_utils.py), at every evaluation
  baseline_nse[algorithm=a,n=i]       the same for Garg's baselines fitted on the same i examples of
                                      the same tasks (`jaxlab.probes.prefix_baselines`: least
                                      squares, 3-NN, averaging, LASSO for the sparse class) and the
                                      matched learners (MATCHED: `tree`, a greedy sign-feature tree
                                      of the task's depth, `probes.prefix_tree`, for trees;
                                      `relu_net`, a 2-layer ReLU network fitted by Adam,
                                      `probes.prefix_relu_net`, for ReLU networks), final

Across programs (`function_classes_cross`, summary.json `reference`), for a sweep with a linear and a
sparse linear program:
  cross_nse[trained=c,tasks=sparse_linear,n=i,model_seed=s]
                                      the final model of class c (linear or sparse_linear) and seed
                                      s scored on the sparse program's evaluation tasks after i
                                      examples (normalized by k): the dense-model control of the
                                      sparse claim

The claims (`function_classes_claims`) compare the model's curve with the baselines' at fixed
numbers of examples; `function_classes_report` draws the curves (Garg et al. Fig. 2 and 4).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import numpy as np

from jaxlab.config import ExperimentConfig, OptimConfig, ProbeConfig, SweepConfig, TrainConfig
from jaxlab.errors import ConfigError
from jaxlab.experiments import function_classes_cross as _cross
from jaxlab.experiments import function_classes_report as _report
from jaxlab.experiments.function_classes_claims import (
    CLAIMS,
    GARG_CURRICULUM_DIMS,
    GARG_CURRICULUM_POINTS,
    QUICK_CURRICULUM,
    deviations,
)
from jaxlab.experiments.function_classes_cross import nse_curve
from jaxlab.experiments.function_classes_curriculum import CurriculumExperiment
from jaxlab.models.presets import gpt_model
from jaxlab.probes import prefix_baselines as pb
from jaxlab.probes import prefix_relu_net as prn
from jaxlab.probes import prefix_tree as pt
from jaxlab.results import metric_name
from jaxlab.tasks import Batch
from jaxlab.tasks import function_classes as fc
from jaxlab.train.experiment import Finalized


@dataclass(frozen=True)
class FunctionClassProbeConfig(ProbeConfig):
    """The baselines' settings (`jaxlab.probes.prefix_baselines`)."""

    section: ClassVar[str] = "probe"
    lasso_alpha: float = pb.LASSO_ALPHA
    lasso_iters: int = pb.LASSO_ITERS
    knn_k: int = pb.KNN_K
    relu_hidden: int = prn.HIDDEN
    relu_steps: int = prn.STEPS
    relu_lr: float = prn.LR

    FIELD_DOCS: ClassVar[dict[str, str]] = {
        "lasso_alpha": "the LASSO baseline's alpha (sparse class; Garg et al. plot 0.01)",
        "lasso_iters": "FISTA iterations of the LASSO baseline",
        "knn_k": "neighbours of the k-NN baseline (Garg et al.: 3)",
        "relu_hidden": "relu_2nn's matched learner: hidden width of the fitted 2-layer ReLU network (Garg et al.: 100)",
        "relu_steps": "relu_2nn's matched learner: Adam steps per fit (Garg et al.: 100)",
        "relu_lr": "relu_2nn's matched learner: Adam learning rate (Garg et al.: 5e-3)",
    }

    def validate(self) -> None:
        n = self._name
        for name in ("lasso_alpha", "relu_lr"):
            if not getattr(self, name) > 0:
                raise ConfigError(n(name), f"must be > 0, got {getattr(self, name)!r}")
        for name in ("lasso_iters", "knn_k", "relu_hidden", "relu_steps"):
            if getattr(self, name) < 1:
                raise ConfigError(n(name), f"must be >= 1, got {getattr(self, name)!r}")


def nse_metric(n: int) -> str:
    """The model's normalized error after `n` in-context examples: `nse[n=3]`."""
    return metric_name("nse", n=int(n))


def baseline_metric(algorithm: str, n: int) -> str:
    """A baseline's normalized error after `n` examples: `baseline_nse[algorithm=knn,n=3]`."""
    return metric_name("baseline_nse", algorithm=algorithm, n=int(n))


# the learner matched to a class's own structure (Garg et al. Fig. 5; module docstring)
MATCHED: dict[str, tuple[str, ...]] = {"decision_tree": ("tree",), "relu_2nn": ("relu_net",)}
RELU_INIT_STREAM = 1  # the relu_net baseline's initial weights: key(train.eval_seed) folded with this


def baselines(cfg: ExperimentConfig) -> tuple[str, ...]:
    """Garg et al.'s baselines of the config's function class (`prefix_baselines.GARG_BASELINES`), then its
    matched learner (MATCHED)."""
    cls = cfg.task.function_class
    return pb.GARG_BASELINES[cls] + MATCHED.get(cls, ())


def baseline_curves(cfg: ExperimentConfig, x_BND: jax.Array, y_BN: jax.Array) -> dict[str, jax.Array]:
    """algorithm -> normalized error [N] after every number of examples, for every baseline of the config's
    class, fitted on the prefixes of the tasks (x [B, N, d], y [B, N])."""
    probe, norm = cfg.probe, fc.error_normalizer(cfg.task)
    garg = [a for a in baselines(cfg) if a in pb.ALGORITHMS]
    out = pb.baseline_errors(
        x_BND,
        y_BN,
        garg,
        normalizer=norm,
        lasso_alpha=probe.lasso_alpha,
        lasso_iters=probe.lasso_iters,
        knn_k=probe.knn_k,
    )
    for name in baselines(cfg):
        if name == "tree":
            pred_BN = pt.tree_prefix(x_BND, y_BN, depth=cfg.task.tree_depth)
        elif name == "relu_net":
            key = jax.random.fold_in(jax.random.key(cfg.train.eval_seed), RELU_INIT_STREAM)
            pred_BN = prn.relu_net_prefix(
                x_BND, y_BN, key, hidden=probe.relu_hidden, steps=probe.relu_steps, lr=probe.relu_lr
            )
        else:
            continue
        out[name] = pb.normalized_error(pred_BN, y_BN, norm)
    return out


def make_evaluate(cfg: ExperimentConfig):
    """nse[n=i] for every i in 0..N-1 on the fixed evaluation tasks (module docstring)."""
    task = cfg.task

    def evaluate(train: Any, params: Any, batch: Batch) -> dict[str, jax.Array]:
        nse_N = nse_curve(train, params, task, batch)
        return {nse_metric(i): nse_N[i] for i in range(task.n_context)}

    return evaluate


def finalize(train: Any, state: Any, hparams: Mapping[str, Any], seeds: np.ndarray) -> Finalized:
    """The baselines' curves on the same evaluation tasks (the same for every run of the program)."""
    cfg = train.cfg
    x_BND, y_BN = fc.split_interleaved(train.make_eval_batch(), cfg.task)
    curves = jax.jit(lambda x, y: baseline_curves(cfg, x, y))(x_BND, y_BN)
    curves = {name: np.asarray(v, np.float64) for name, v in jax.device_get(curves).items()}
    R = len(seeds)
    per_run = {baseline_metric(a, i): np.full(R, c[i]) for a, c in curves.items() for i in range(len(c))}
    per_run["n_dims"] = np.full(R, float(cfg.task.n_dims))  # what the claims read n = d - 1, 2d from
    return Finalized(per_run=per_run)


# -- presets -------------------------------------------------------------------------------------------
def paper() -> ExperimentConfig:
    """Garg et al.'s setup, for an accelerator: GPT-2 with 12 layers, 8 heads, d_model 256; d = 20,
    N = 41 examples (2d + 1), batch 64, Adam lr 1e-4, 500k steps; one model per function class; their
    curriculum (dims 5 -> 20 by +1 and examples 11 -> 41 by +2, every 2000 steps; for trees and ReLU
    networks Garg et al. train on 26 -> 101 examples by +5, declared under the claims)."""
    return ExperimentConfig(
        experiment="function-classes",
        preset="paper",
        model=gpt_model(n_layers=12, n_heads=8, d_model=256, input="continuous"),
        task=fc.Config(
            function_class="linear",
            n_dims=20,
            n_context=41,
            sparsity=3,
            curriculum_dims=GARG_CURRICULUM_DIMS,
            curriculum_points=GARG_CURRICULUM_POINTS["linear"],
        ),
        optim=OptimConfig(name="adam", lr=1e-4),
        train=TrainConfig(steps=500_000, batch_size=64, eval_every=10_000, eval_batch_size=1024),
        probe=FunctionClassProbeConfig(),
        sweep=SweepConfig(seeds=(0, 1, 2, 3), grid=(("task.function_class", fc.FUNCTION_CLASSES),)),
    )


def quick() -> ExperimentConfig:
    """The same experiment scaled to a 2-core CPU: d = 5, N = 11 (2d + 1), k = 2 for the sparse class,
    a 3-layer model of width 64 (4 heads), batch 64, Adam at a constant lr 1e-3, 4000 steps, 5 seeds per
    class. Garg et al.'s curriculum scaled (`function_classes_claims.QUICK_CURRICULUM`): dims 2 -> 5 by +1
    and examples 3 -> 11 by +2 every 60 steps, done at step 240 (6% of training, as theirs at 30k of 500k)."""
    overrides = {  # the curriculum first: each override is validated as it is set, against the paper's d and N
        "task.curriculum_dims": QUICK_CURRICULUM["dims"],
        "task.curriculum_points": QUICK_CURRICULUM["points"],
        "model.n_layers": 3,
        "model.n_heads": 4,
        "model.d_model": 64,
        "model.d_mlp": 256,
        "task.n_dims": 5,
        "task.n_context": 11,
        "task.sparsity": 2,
        "optim.lr": 1e-3,
        "train.steps": 4000,
        "train.eval_every": 500,
        "train.eval_batch_size": 1024,
    }
    return paper().derive(
        "quick",
        overrides,
        sweep=SweepConfig(seeds=tuple(range(5)), grid=(("task.function_class", fc.FUNCTION_CLASSES),)),
    )


def smoke() -> ExperimentConfig:
    """Seconds: for tests. d = 3, N = 7, one block of width 16, two classes, two seeds, 40 steps; a
    curriculum (dims 2 -> 3, examples 3 -> 7, every 10 steps) so the path is exercised."""
    overrides = {
        "task.curriculum_dims": (2, 3, 1, 10),
        "task.curriculum_points": (3, 7, 2, 10),
        "model.n_layers": 1,
        "model.n_heads": 2,
        "model.d_model": 16,
        "model.d_mlp": 32,
        "task.n_dims": 3,
        "task.n_context": 7,
        "task.sparsity": 1,
        "train.steps": 40,
        "train.batch_size": 16,
        "train.eval_every": 20,
        "train.eval_batch_size": 64,
        "probe.lasso_iters": 500,
    }
    return quick().derive(
        "smoke",
        overrides,
        sweep=SweepConfig(seeds=(0, 1), grid=(("task.function_class", ("linear", "sparse_linear")),)),
    )


METRICS = {
    "nse[n=i]": "the model's normalized squared error after i in-context examples (tidy tables: metric nse, "
    "column n), every evaluation",
    "baseline_nse[algorithm=a,n=i]": "the same for baseline a (least_squares, knn, averaging, lasso; the matched "
    "learners tree and relu_net) on the same tasks (metric baseline_nse, columns algorithm and n), final",
    "cross_nse[trained=c,tasks=sparse_linear,n=i,model_seed=s]": "the final model of class c (linear: the "
    "control; sparse_linear: the sparse model itself) and seed s on the sparse program's evaluation tasks after i "
    "examples (summary.json reference; needs a linear and a sparse_linear program)",
}

EXPERIMENT = CurriculumExperiment(
    name="function-classes",
    description="Which function classes a transformer learns in context, against least squares, LASSO, "
    "3-NN, averaging and the matched learners (greedy trees, fitted ReLU networks) (Garg et al. 2022).",
    presets={"smoke": smoke, "quick": quick, "paper": paper},
    probe_class=FunctionClassProbeConfig,
    metrics=METRICS,
    make_evaluate=make_evaluate,
    finalize=finalize,
    report=_report.sections,
    after_sweep=_cross.after_sweep,
    claims=CLAIMS,
    deviations=deviations,
)
