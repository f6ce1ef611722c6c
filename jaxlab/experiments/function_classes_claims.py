"""The claims of Garg, Tsipras, Liang & Valiant (NeurIPS 2022, "What Can Transformers Learn In-Context? A
Case Study of Simple Function Classes"; code github.com/dtsip/in-context-learning) that function-classes
tests, and how a config's setup differs from theirs.

Every statistic is per seed, on the shared evaluation tasks, from the run's final normalized errors
(`nse[n=i]`, the model; `baseline_nse[algorithm=a,n=i]`, the baselines fitted on the same i examples
of the same tasks): errors are normalized as Garg et al. plot them (by d; by k for sparse linear, 1
for trees), so least squares' error on a noise-free linear function falls from 1 at n = 0 to 0 at
n = d.

Thresholds, fixed before any run (issue 20's bars): "close to least squares" on linear functions is
a normalized error of at most NEAR_ZERO = 0.2 at n = 2d (least squares: 0); "beats" and "below" are
differences below 0. The matched learners (issue 20, fixed before any run that records them): on
decision trees the model "beats" the greedy sign-feature tree (model - tree < 0 at the last position
n = N - 1); on ReLU networks it is "competitive with" the network fitted by Adam (model - network
< COMPETITIVE = 0.1 at n = N - 1, a tenth of the error of predicting 0). The control of the sparse claim
(issue 20, its rule fixed before any run computed it): on the sparse program's evaluation tasks at n = d - 1,
the sparse-trained model's error minus the linear-trained model's of the same seed (`function_classes_cross`)
is below 0, i.e. the sparse model uses the sparsity prior, whether or not it beats least squares.

Garg et al. train with a curriculum over d and N (conf/base.yaml and conf/<class>.yaml: dims 5 -> 20
by +1 every 2000 steps; examples 11 -> 41 by +2 every 2000 steps for the linear classes, 26 -> 101 by
+5 for trees and ReLU networks; both done at step 30000 of 500k), Adam lr 1e-4, batch 64, 500k
steps, a 12-layer GPT-2 of width 256 with 8 heads. The quick preset scales the curriculum
(QUICK_CURRICULUM), a rule fixed before any curriculum run: the start sizes by Garg's start/end
ratios (d: ceil(5 * 5/20) = 2; N: round(11 * 11/41) = 3), his increments (+1 dimension, +2
examples), and an interval that ends the curriculum at the same fraction of training as his (6%:
the examples' 4 increments done at step 240 of 4000, interval 60).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from jaxlab.claims import Below, Claim, NotApplicable, final, one_per_seed, where
from jaxlab.experiments.function_classes_cross import CROSS, DENSE, SPARSE, cross_metric
from jaxlab.results import metric_name, split_metric
from jaxlab.tasks.function_classes import FUNCTION_CLASSES

NEAR_ZERO = 0.2
COMPETITIVE = 0.1
KEY = "task.function_class"
CLASSES = FUNCTION_CLASSES
GARG = {  # conf/base.yaml, conf/*.yaml and src/models.py of dtsip/in-context-learning
    "n_layers": 12,
    "n_heads": 8,
    "d_model": 256,
    "n_dims": 20,
    "n_points": 41,
    "sparsity": 3,
    "lr": 1e-4,
    "batch_size": 64,
    "steps": 500_000,
}
GARG_CURRICULUM_DIMS = (5, 20, 1, 2000)  # (start, end, inc, interval), conf/base.yaml
GARG_CURRICULUM_POINTS = {  # conf/<class>.yaml; the noisy class as the linear one
    "linear": (11, 41, 2, 2000),
    "sparse_linear": (11, 41, 2, 2000),
    "noisy_linear": (11, 41, 2, 2000),
    "decision_tree": (26, 101, 5, 2000),
    "relu_2nn": (26, 101, 5, 2000),
}
QUICK_CURRICULUM = {"dims": (2, 5, 1, 60), "points": (3, 11, 2, 60)}  # the scaling of the module docstring
Run = Mapping[str, Any]


def nse(run: Run, n: int) -> float:
    """The run's final normalized error after n examples."""
    return final(run, metric_name("nse", n=n))


def baseline(run: Run, algorithm: str, n: int) -> float:
    """Baseline `algorithm`'s normalized error after n examples, on the run's evaluation tasks."""
    return final(run, metric_name("baseline_nse", algorithm=algorithm, n=n))


def swept_classes(cfg: Any) -> tuple[str, ...]:
    """The function classes the config's sweep trains (its grid over task.function_class, else its one class)."""
    for key, values in cfg.sweep.grid:
        if key == KEY:
            return tuple(values)
    return (cfg.task.function_class,)


def _grid_reason(cfg: Any) -> str | None:
    """Why the claims cannot read this config's runs by class (None: the sweep grid names the class)."""
    if not any(key == KEY for key, _ in cfg.sweep.grid):
        return f"needs {KEY} in the sweep grid (the claims read each class's runs by its grid value)"
    return None


def _needs_class(cls: str):
    def untested(cfg: Any) -> str | None:
        reason = _grid_reason(cfg)
        if reason is None and cls not in swept_classes(cfg):
            return f"no {cls} runs in this sweep"
        return reason

    return untested


def _linear_untested(cfg: Any) -> str | None:
    reason = _needs_class("linear")(cfg)
    if reason is None and cfg.task.n_context < 2 * cfg.task.n_dims + 1:
        return f"reads n = 2d = {2 * cfg.task.n_dims} examples; task.n_context is {cfg.task.n_context}"
    return reason


def _sparse_untested(cfg: Any) -> str | None:
    reason = _needs_class("sparse_linear")(cfg)
    if reason is None and cfg.task.n_dims - 1 <= cfg.task.sparsity:
        return (
            f"reads n = d - 1 = {cfg.task.n_dims - 1} examples, which must exceed the sparsity k = "
            f"{cfg.task.sparsity} for the question to be open"
        )
    return reason


def _all_untested(cfg: Any) -> str | None:
    reason = _grid_reason(cfg)
    missing = [c for c in CLASSES if c not in swept_classes(cfg)]
    if reason is None and missing:
        return f"needs every function class; missing {', '.join(missing)}"
    return reason


def _of_class(runs: Sequence[Run], cls: str) -> Sequence[Run]:
    return one_per_seed(where(runs, task__function_class=cls))


def _last_n(run: Run) -> int:
    """The largest number of examples the run's nse is recorded at (N - 1); -1 for none."""
    ns = [params.get("n") for name, params in map(split_metric, run["final"]) if name == "nse"]
    return int(max((n for n in ns if n is not None), default=-1))


def _minus_simple_baselines(run: Run, n: int) -> float:
    """The run's nse after n examples minus the better of averaging and 3-NN there."""
    return nse(run, n) - min(baseline(run, "averaging", n), baseline(run, "knn", n))


def _d(run: Run) -> int:
    d = final(run, "n_dims")
    if not math.isfinite(d):
        raise NotApplicable("the runs do not record n_dims")
    return int(d)


def linear_at_2d(runs: Sequence[Run], reference: Mapping[str, Any]) -> list[float]:
    """values(): per seed, the linear model's nse at n = 2d."""
    return [nse(r, 2 * _d(r)) for r in _of_class(runs, "linear")]


def linear_minus_simple_baselines(runs: Sequence[Run], reference: Mapping[str, Any]) -> list[float]:
    """values(): per seed, at n = 2d on linear functions, the model's nse minus the better of averaging and 3-NN."""
    return [_minus_simple_baselines(r, 2 * _d(r)) for r in _of_class(runs, "linear")]


def sparse_minus_least_squares(runs: Sequence[Run], reference: Mapping[str, Any]) -> list[float]:
    """values(): per seed, at n = d - 1 on sparse linear functions, the model's nse minus least squares'."""
    return [nse(r, _d(r) - 1) - baseline(r, "least_squares", _d(r) - 1) for r in _of_class(runs, "sparse_linear")]


def _control_untested(cfg: Any) -> str | None:
    return _sparse_untested(cfg) or _needs_class(DENSE)(cfg)


def sparse_minus_dense_on_sparse_tasks(runs: Sequence[Run], reference: Mapping[str, Any]) -> list[float]:
    """values(): per seed (the seeds with a finished linear and a finished sparse run), at n = d - 1 on the
    sparse program's evaluation tasks, the sparse model's nse minus the dense (linear-trained) model's, both from
    `cross_nse[trained=...,tasks=sparse_linear,n=d-1,model_seed=s]` (`function_classes_cross`).

    d is the sparse run's `n_dims` (a finalize metric without a replicate value: reading it also tells the claims
    machinery not to re-evaluate this statistic on the replicate set, whose tasks the reference values are not
    scored on)."""
    if not any(k.startswith(CROSS + "[") for k in reference):
        raise NotApplicable(
            f"the summary has no {CROSS} values (a run directory written before jaxlab computed them: "
            "`jaxlab run ... --resume` on it computes them from its final checkpoints)"
        )
    dense_seeds = {int(r["seed"]) for r in _of_class(runs, DENSE)}
    out = []
    for r in sorted(_of_class(runs, SPARSE), key=lambda r: int(r["seed"])):
        seed, n = int(r["seed"]), _d(r) - 1
        own = reference.get(cross_metric(SPARSE, SPARSE, n, seed))
        dense = reference.get(cross_metric(DENSE, SPARSE, n, seed))
        if seed in dense_seeds and own is not None and dense is not None:
            out.append(float(own) - float(dense))
    return out


def worst_class_minus_simple_baselines(runs: Sequence[Run], reference: Mapping[str, Any]) -> list[float]:
    """values(): per seed, over the function classes, the largest (model nse - the better of averaging and 3-NN)
    at the last position n = N - 1 (a seed missing a class is dropped)."""
    by_seed: dict[int, dict[str, float]] = {}
    for cls in CLASSES:
        for r in _of_class(runs, cls):
            last = _last_n(r)
            if last >= 0:
                by_seed.setdefault(int(r["seed"]), {})[cls] = _minus_simple_baselines(r, last)
    n_classes = max((len(v) for v in by_seed.values()), default=0)
    return [max(v.values()) for _, v in sorted(by_seed.items()) if len(v) == n_classes and n_classes > 0]


def _minus_matched(cls: str, algorithm: str):
    def values(runs: Sequence[Run], reference: Mapping[str, Any]) -> list[float]:
        """values(): per seed, at the last position n = N - 1, the model's nse minus the matched learner's."""
        out = []
        for r in _of_class(runs, cls):
            last = _last_n(r)
            matched = baseline(r, algorithm, last)
            if not math.isfinite(matched):
                raise NotApplicable(
                    f"the runs do not record baseline_nse[algorithm={algorithm}] (written before jaxlab had it)"
                )
            out.append(nse(r, last) - matched)
        return out

    return values


CLAIMS: tuple[Claim, ...] = (
    Claim(
        id="linear_close_to_least_squares",
        claim="Trained on linear functions, the transformer's in-context error is close to least squares' "
        "(zero) once it has seen n = 2d examples.",
        paper_ref="Garg et al. 2022, Sec. 3, Fig. 2 (qualitative: the transformer's curve matches least squares)",
        paper_value="near 0 at n >= d (Fig. 2; least squares is 0 there)",
        statistic="per seed, the linear model's normalized error nse at n = 2d (shared evaluation tasks)",
        control="least squares on the same examples: 0 at n >= d",
        rule=Below(NEAR_ZERO),
        values=linear_at_2d,
        untested=_linear_untested,
    ),
    Claim(
        id="linear_beats_averaging_and_knn",
        claim="On linear functions the transformer beats averaging and 3-nearest-neighbours at n = 2d.",
        paper_ref="Garg et al. 2022, Fig. 2 (qualitative)",
        statistic="per seed, at n = 2d, nse - min(averaging, 3-NN) on the same tasks",
        control="averaging and 3-NN fitted on the same examples",
        rule=Below(0.0),
        values=linear_minus_simple_baselines,
        untested=_linear_untested,
    ),
    Claim(
        id="sparse_below_least_squares",
        claim="Trained on sparse linear functions, the transformer beats least squares with fewer examples "
        "than dimensions (it exploits the sparsity, as LASSO does).",
        paper_ref="Garg et al. 2022, Sec. 4, Fig. 4 left (qualitative: below least squares, near LASSO)",
        statistic="per seed, at n = d - 1, the sparse model's nse - least squares' nse",
        control="minimum-norm least squares on the same examples (LASSO reported beside it)",
        rule=Below(0.0),
        values=sparse_minus_least_squares,
        untested=_sparse_untested,
    ),
    Claim(
        id="sparse_model_beats_dense_model_on_sparse_tasks",
        claim="(The control for sparse_below_least_squares, not a claim of the paper:) on the same sparse linear "
        "tasks with fewer examples than dimensions, the model trained on sparse functions beats the model trained "
        "on dense linear functions with the same seed, size and training steps (it uses the sparsity prior, "
        "whatever its overall accuracy).",
        paper_ref="Garg et al. 2022, Sec. 4, Fig. 4 left (the mechanism behind sparse_below_least_squares; the "
        "comparison itself is jaxlab's)",
        statistic="per seed (paired by seed), at n = d - 1 on the sparse program's evaluation tasks, the sparse "
        "model's nse - the linear-trained model's nse (cross_nse)",
        control="the model trained on dense linear functions (same seed, size, steps, curriculum), scored on the "
        "same sparse tasks",
        rule=Below(0.0),
        values=sparse_minus_dense_on_sparse_tasks,
        untested=_control_untested,
    ),
    Claim(
        id="every_class_beats_averaging_and_knn",
        claim="On every function class (linear, sparse, noisy linear, decision trees, 2-layer ReLU networks) the "
        "transformer beats averaging and 3-NN.",
        paper_ref="Garg et al. 2022, Fig. 4 and 5 (qualitative)",
        statistic="per seed, over the classes, the largest nse - min(averaging, 3-NN) at the last position n = N - 1",
        control="averaging and 3-NN fitted on the same examples",
        rule=Below(0.0),
        values=worst_class_minus_simple_baselines,
        untested=_all_untested,
    ),
    Claim(
        id="tree_beats_greedy_tree",
        claim="Trained on depth-4 decision trees, the transformer beats greedy tree learning on the same examples.",
        paper_ref="Garg et al. 2022, Sec. 5, Fig. 5 right (qualitative: below scikit-learn's greedy trees and XGBoost)",
        statistic="per seed, at the last position n = N - 1, the tree model's nse - the greedy tree's nse",
        control="a greedy CART tree of the task's depth on sign features (splits at x_c = 0, the class's own "
        "splits; Garg et al. fit scikit-learn's trees on the raw x)",
        rule=Below(0.0),
        values=_minus_matched("decision_tree", "tree"),
        untested=_needs_class("decision_tree"),
    ),
    Claim(
        id="relu_competitive_with_fitted_network",
        claim="Trained on 2-layer ReLU networks, the transformer is competitive with a 2-layer ReLU network fitted "
        "to the same examples by gradient descent.",
        paper_ref="Garg et al. 2022, Sec. 5, Fig. 5 left (qualitative: close to the fitted network)",
        statistic="per seed, at the last position n = N - 1, the ReLU model's nse - the fitted network's nse",
        control="a width-100 2-layer ReLU network per task and prefix, 100 Adam steps at lr 5e-3 (Garg's GDModel)",
        rule=Below(COMPETITIVE),
        values=_minus_matched("relu_2nn", "relu_net"),
        untested=_needs_class("relu_2nn"),
    ),
)


def _schedule_text(schedule: tuple[int, ...]) -> str:
    start, end, inc, interval = schedule
    return f"{start} -> {end} by +{inc} every {interval} steps"


def curriculum_deviations(cfg: Any) -> list[str]:
    """How the config's curriculum differs from Garg et al.'s (none: an empty list)."""
    t = cfg.task
    garg = (
        f"Garg et al.: dims {_schedule_text(GARG_CURRICULUM_DIMS)}; examples "
        f"{_schedule_text(GARG_CURRICULUM_POINTS['linear'])} for the linear classes, "
        f"{_schedule_text(GARG_CURRICULUM_POINTS['decision_tree'])} for trees and ReLU networks; done at step 30000 "
        "of 500000"
    )
    if not t.has_curriculum:
        return [f"curriculum: none ({garg})"]
    dims = _schedule_text(t.curriculum_dims) if t.curriculum_dims else "none (full d)"
    points = _schedule_text(t.curriculum_points) if t.curriculum_points else "none (all N)"
    classes = swept_classes(cfg)
    same = t.curriculum_dims == GARG_CURRICULUM_DIMS and all(
        t.curriculum_points == GARG_CURRICULUM_POINTS[c] for c in classes
    )
    if same:
        return []
    scaled = (
        " (Garg's scaled to this d, N and step count: start sizes by his start/end ratios, his increments, "
        "done at the same 6% of training)"
        if (t.curriculum_dims, t.curriculum_points) == (QUICK_CURRICULUM["dims"], QUICK_CURRICULUM["points"])
        else ""
    )
    return [f"curriculum: dims {dims}; examples with loss {points}{scaled} ({garg})"]


def deviations(cfg: Any) -> list[str]:
    """How `cfg` differs from Garg et al.'s setup (module docstring), one line each."""
    m, t, o, tr = cfg.model, cfg.task, cfg.optim, cfg.train
    g = GARG
    out = []
    if (m.n_layers, m.n_heads, m.d_model) != (g["n_layers"], g["n_heads"], g["d_model"]):
        out.append(
            f"model: {m.n_layers} layers, {m.n_heads} heads, d_model {m.d_model} (Garg et al.: GPT-2 with "
            f"{g['n_layers']} layers, {g['n_heads']} heads, d_model {g['d_model']})"
        )
    if (t.n_dims, t.n_context) != (g["n_dims"], g["n_points"]):
        out.append(
            f"task: d = {t.n_dims}, N = {t.n_context} examples (Garg et al.: d = {g['n_dims']}, N = {g['n_points']})"
        )
    if t.sparsity != g["sparsity"]:
        out.append(f"sparse linear: k = {t.sparsity} non-zero weights (Garg et al.: k = {g['sparsity']} of 20)")
    warmup = f", {o.warmup_steps} warm-up steps" if o.schedule.startswith("warmup") else ""
    out.append(
        f"training: {o.name} lr {o.lr:g} ({o.schedule}{warmup}), batch {tr.batch_size}, {tr.steps} steps "
        f"(Garg et al.: Adam lr {g['lr']:g}, batch {g['batch_size']}, {g['steps']} steps)"
    )
    out += curriculum_deviations(cfg)
    out.append(
        f"evaluation: one shared set of {tr.eval_batch_size} tasks per class for every seed (key train.eval_seed); "
        "the baselines are fitted on the same examples"
    )
    out.append(
        "tokens: d + 1 wide with y in the last coordinate (Garg et al. write y into the first of d coordinates); "
        "jaxlab's training loss is half the squared error (the reported errors are full squared errors)"
    )
    classes = swept_classes(cfg)
    if "decision_tree" in classes:
        out.append(
            "decision-tree baselines: a greedy depth-"
            f"{t.tree_depth} CART tree on sign features (splits at 0, the class's own) stands in for Garg et al.'s "
            "scikit-learn trees (depth 4 and unbounded) and XGBoost on the raw x"
        )
    if "relu_2nn" in classes:
        p = cfg.probe
        out.append(
            f"ReLU-network baseline: width {p.relu_hidden}, {p.relu_steps} Adam steps at lr {p.relu_lr:g}, full-batch, "
            "each task's own mean squared error (Garg et al.'s GDModel: width 100, 100 steps, lr 5e-3, batches of "
            "100 examples, one loss averaged over the tasks)"
        )
    if t.function_class == "noisy_linear" or "noisy_linear" in classes:
        out.append(f"noisy linear: noise std {t.noise_std:g}, y not renormalized (Garg et al.'s eval renormalizes)")
    return out
