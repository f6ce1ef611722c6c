"""icl-regression: in-context linear regression with linear self-attention (von Oswald et al. 2023).

Does a trained linear self-attention (LSA) layer implement one step of gradient descent on the
in-context least-squares loss? Every run of a sweep is compared, at every evaluation, with GD whose
learning rate is fitted to the task distribution (`jaxlab.probes.gd_equivalence`), and with the
other algorithms of Akyürek et al. 2023 (ridge, min-norm OLS, 3-NN, averaging).

Presets:
  paper      the published setup: d = 10, N = 10 context points, x ~ U(-0.5, 0.5)^10, w ~ N(0, I),
             noiseless; one LSA layer (no softmax, LayerNorm, MLP or biases) whose keys and values
             come from the context tokens only; init truncated-normal variance scaling 0.002; adamw
             (lr 1e-3, b1 0.9, b2 0.98, weight decay 0) after global-norm clipping at 0.001 (the
             value of the authors' notebook for <= 2 layers); 2048 fresh tasks per step; 5,000
             steps; 8 seeds; evaluation on 10,000 tasks every 250 steps.
  quick      the paper's setup, shorter (`make demo`, under 2 minutes on a 2-core CPU).
  smoke      seconds, for tests; training only (probe.gd_probes = false).
  recurrent  K = 2, 3 tied LSA layers vs K-step GD and GD++ (von Oswald et al. Sec. 4, Fig. 3).
  deep       K = 2, 3 untied LSA layers vs K-step GD and GD++ (the recurrent preset, untied).
  depth      Akyürek et al.'s depth transition: softmax transformers of 1, 2, 4, 8 layers vs GD
             (1 and K steps), noise-matched ridge, OLS, 3-NN, averaging (noiseless labels).
  depth-noisy  the same at 1 and 8 layers with label noise (std 0.5).
  softmax    softmax attention with 1 and 2 heads (d_head 11) vs GD.
  context    context length N in {10, 25, 50}.
  recurrent-context  2 tied LSA layers vs 2-step GD++ at N in {10, 25, 50} (the `recurrent` preset at
             K = 2, the `quick` preset's length): GD++'s gamma per N beside the paper's, and the
             trained model's own gamma.
  softmax-mlp  von Oswald et al.'s token construction with 2 untied softmax-attention layers (2 heads)
             and GeLU MLPs (width 4 d) vs 2-step GD++ (the `deep` preset's settings otherwise).
  ood        the paper model, with the trained model and GD evaluated at input scales alpha in
             [0.5, 2] (x ~ U(-alpha/2, alpha/2)^d; GD keeps the rate fitted at alpha = 1).

Evaluation sets: during training every seed is evaluated on one shared set of
`train.eval_batch_size` tasks (the engine's evaluation data, key `train.eval_seed`), which GD's
rate is fitted on. After training, `finalize` evaluates each seed's model and GD (that rate) on a
fresh set of the same size drawn from the seed (`fresh_eval_keys`), with the standard errors over
tasks: the claims about losses are read there (`icl_regression_claims`).

Metrics: see `METRICS` (they are also listed in every report). The paper's claims, their
statistics and rules, and the deviations from the paper's setup: `icl_regression_claims`.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.config import (
    ExperimentConfig,
    Inert,
    ModelConfig,
    OptimConfig,
    ProbeConfig,
    SweepConfig,
    TrainConfig,
    inert,
)
from jaxlab.errors import ConfigError
from jaxlab.experiments import icl_regression_report as _report
from jaxlab.experiments.icl_regression_claims import CLAIMS, deviations, ood_metric
from jaxlab.models.gd import check_interpolable, lsa_products
from jaxlab.models.presets import gpt_model, linear_attention_model
from jaxlab.probes import gd_equivalence as ge
from jaxlab.probes import icl_algorithms as alg
from jaxlab.probes.icl_algorithms import ALGORITHMS
from jaxlab.rng import in_rng_scope
from jaxlab.tasks import Batch, regression
from jaxlab.train.experiment import Experiment, Finalized


# -- settings --------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ICLProbeConfig(ProbeConfig):
    """Evaluation settings of icl-regression (`--set probe.<field>=...`).

    gd_probes: compare with GD and the other algorithms at every evaluation (false: losses only).
    ridge_lambda: the ridge baseline's lambda. knn_k: neighbours of the kNN baseline.
    ridge_matched: the ridge baseline uses the Bayes-optimal lambda of the task instead,
        noise_std^2 / weight_scale^2 (the posterior mean of w ~ N(0, weight_scale^2 I) under
        Gaussian label noise; Akyürek et al.'s "noise-matched" ridge), floored at RIDGE_FLOOR
        (min-norm OLS up to rounding when the labels are noiseless).
    ilwd_points: probe inputs per task for the implicit linear weight difference (>= task.n_dims).
    ilwd_tasks: evaluation tasks used for ILWD (0: all of them).
    probe_batch_size: tasks evaluated at a time for ILWD (memory bound).
    ood_scales: input scales alpha at which the final models and GD are evaluated.
    """

    section: ClassVar[str] = "probe"
    gd_probes: bool = True
    ridge_lambda: float = 0.1
    ridge_matched: bool = False
    knn_k: int = 3
    ilwd_points: int = 20
    ilwd_tasks: int = 0
    probe_batch_size: int = 250
    ood_scales: tuple[float, ...] = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)

    # without the GD probes neither the evaluation (`make_evaluate`, `eval_data`) nor `finalize`
    # reads the other fields
    INERT: ClassVar[tuple[Inert, ...]] = (
        *(
            inert(name, gd_probes=(False,))
            for name in (
                "ridge_lambda", "ridge_matched", "knn_k", "ilwd_points", "ilwd_tasks", "probe_batch_size", "ood_scales"
            )
        ),
        inert("ridge_lambda", ridge_matched=(True,)),
    )  # fmt: skip

    FIELD_DOCS: ClassVar[dict[str, str]] = {
        "gd_probes": "compare with GD and the other algorithms at every evaluation (false: losses only)",
        "ridge_lambda": "lambda of the ridge-regression baseline",
        "ridge_matched": "the ridge baseline uses the Bayes-optimal lambda noise_std^2 / weight_scale^2 instead",
        "knn_k": "neighbours of the kNN baseline (<= task.n_context)",
        "ilwd_points": "probe inputs per task for the implicit linear weight difference (>= task.n_dims)",
        "ilwd_tasks": "evaluation tasks used for the ILWD (0: all of them)",
        "probe_batch_size": "tasks evaluated at a time for the ILWD (bounds memory)",
        "ood_scales": "input scales at which the final models and GD are evaluated",
    }

    def validate(self) -> None:
        n = self._name
        if not self.ridge_lambda > 0:
            raise ConfigError(n("ridge_lambda"), f"must be > 0, got {self.ridge_lambda!r}")
        for name in ("knn_k", "ilwd_points", "probe_batch_size"):
            if getattr(self, name) < 1:
                raise ConfigError(n(name), f"must be >= 1, got {getattr(self, name)!r}")
        if self.ilwd_tasks < 0:
            raise ConfigError(n("ilwd_tasks"), f"must be >= 0 (0: all tasks), got {self.ilwd_tasks!r}")
        for a in self.ood_scales:
            if not (isinstance(a, (int, float)) and not isinstance(a, bool) and math.isfinite(a) and a > 0):
                raise ConfigError(n("ood_scales"), f"scales must be finite and > 0, got {a!r}")


RIDGE_FLOOR = 1e-6


def ridge_lambda(cfg: ExperimentConfig) -> float:
    """The ridge baseline's lambda: probe.ridge_lambda, or with probe.ridge_matched the Bayes-optimal
    max(noise_std^2 / weight_scale^2, RIDGE_FLOOR)."""
    if not cfg.probe.ridge_matched:
        return float(cfg.probe.ridge_lambda)
    task = cfg.task
    scale = task.weight_scale**2
    return max(task.noise_std**2 / scale, RIDGE_FLOOR) if scale > 0 else RIDGE_FLOOR


def n_gd_steps(cfg: ExperimentConfig) -> int:
    """The GD steps a model is compared with: one per layer (von Oswald et al.)."""
    return cfg.model.n_layers


def interpolable(cfg: ExperimentConfig) -> bool:
    """Whether the model can be interpolated with GD's weights (`jaxlab.models.gd.check_interpolable`: one linear
    head, tied layers, no biases)."""
    try:
        check_interpolable(cfg.model)
    except ConfigError:
        return False
    return True


def check_probe_config(cfg: ExperimentConfig) -> None:
    """Raise ConfigError unless the GD probes can read `cfg`: paired regression tokens, `probe.knn_k` <=
    task.n_context, `probe.ilwd_points` >= task.n_dims."""
    task, probe = cfg.task, cfg.probe
    if not isinstance(task, regression.Config) or task.layout != "paired":
        raise ConfigError("task.layout", "the GD probes need paired regression tokens (x_i, y_i)", ["paired"])
    if probe.knn_k > task.n_context:
        raise ConfigError("probe.knn_k", f"must be <= task.n_context = {task.n_context}, got {probe.knn_k}")
    if probe.ilwd_points < task.n_dims:
        raise ConfigError(
            "probe.ilwd_points", f"must be >= task.n_dims = {task.n_dims} to fit w, got {probe.ilwd_points}"
        )


# -- evaluation ------------------------------------------------------------------------------------
def _ilwd_tasks(cfg: ExperimentConfig) -> int:
    b = cfg.train.eval_batch_size
    return b if cfg.probe.ilwd_tasks == 0 else min(cfg.probe.ilwd_tasks, b)


@in_rng_scope
def _sample_eval(train) -> tuple[Batch, jax.Array]:
    """The evaluation batch (the engine's default one) and the ILWD probe inputs."""
    cfg = train.cfg
    batch = train.sample(train.eval_key(), cfg.train.eval_batch_size)
    probe_key = jax.random.fold_in(train.eval_key(), 1)
    x_probe = regression.sample_inputs(probe_key, cfg.task, (_ilwd_tasks(cfg), cfg.probe.ilwd_points))
    return batch, x_probe


def probe_data(train) -> dict[str, Any]:
    """{"batch": the evaluation batch, "ref": its reference (`gd_equivalence.make_reference`)}.

    Computed as concrete arrays, also when called while a program is being traced (the engine
    does, for its start-up program): the reference depends only on the task distribution and the
    evaluation settings. The sampling runs as one compiled program (`ge.run_compiled`), not op by op.
    """
    cfg = train.cfg
    batch, x_probe = ge.run_compiled(lambda: _sample_eval(train))
    ref = ge.make_reference(
        batch,
        cfg.task.n_dims,
        n_gd_steps(cfg),
        x_probe_BMD=x_probe,
        ridge_lambda=ridge_lambda(cfg),
        knn_k=cfg.probe.knn_k,
    )
    return {"batch": batch, "ref": ref}


def eval_data(train) -> Any:
    """The evaluation batch, plus the GD/baseline reference (`probe_data`) when the GD probes are on.

    Nothing is kept between calls: each computes the reference again from the config (the same
    arrays every time), once per traced start program and once per `finalize` call (run chunk).
    The reference's baselines run in NumPy float64 on the host, so it cannot be traced into the
    program itself (icl-autoregressive's reference, all JAX, is).
    """
    cfg = train.cfg
    if not cfg.probe.gd_probes:
        return train.sample(train.eval_key(), cfg.train.eval_batch_size)
    return probe_data(train)


def make_evaluate(cfg: ExperimentConfig):
    """The on-device evaluation with the GD probes on (None when `probe.gd_probes` is off): GD's loss and
    rate, the equivalence metrics (`gd_equivalence.equivalence_metrics`), the interpolation loss for
    an interpolable model, and GD++'s loss, rate and gamma when the reference has them.
    """
    if not cfg.probe.gd_probes:
        return None
    check_probe_config(cfg)
    n_context, d = cfg.task.n_context, cfg.task.n_dims
    with_interp = interpolable(cfg.resolve())

    def evaluate(train, params, data) -> dict[str, jax.Array]:
        batch, ref = data["batch"], data["ref"]
        out = {"gd_loss": ref["gd"]["loss"], "gd_lr": ref["gd"]["eta"]}
        # equivalence_metrics includes eval_loss (the query loss of its own forward pass)
        out.update(ge.equivalence_metrics(train.apply, params, batch, ref, d, train.cfg.probe.probe_batch_size))
        if with_interp:
            out["interp_loss"] = ge.interp_loss(train.cfg.model, params, batch, ref["gd"]["eta"], n_context)
        if "gdpp" in ref:
            out.update(gdpp_loss=ref["gdpp"]["loss"], gdpp_lr=ref["gdpp"]["eta"], gdpp_gamma=ref["gdpp"]["gamma"])
        return out

    return evaluate


# -- after training --------------------------------------------------------------------------------
def _ood_batches(train, scales: tuple[float, ...]):
    """Evaluation tasks at every input scale, stacked [A, ...]: the same w and draws, rescaled inputs."""
    task = train.cfg.task
    key = train.eval_key()
    batches = [
        train.sample(key, train.cfg.train.eval_batch_size, dataclasses.replace(task, input_scale=a * task.input_scale))
        for a in scales
    ]
    return jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *batches)


FRESH_EVAL_TAG = 0x5EED  # folded into the evaluation key, then the run's seed: the fresh sets


def fresh_eval_keys(train, seeds: np.ndarray) -> jax.Array:
    """[R] keys of the fresh evaluation sets, one per seed (independent of the shared set's key)."""
    base = jax.random.fold_in(train.eval_key(), FRESH_EVAL_TAG)
    return jax.vmap(lambda s: jax.random.fold_in(base, s))(jnp.asarray(seeds, jnp.uint32))


def _mean_and_se(x: jax.Array) -> tuple[jax.Array, jax.Array]:
    """The mean over tasks and its standard error, std (ddof 1) / sqrt(n)."""
    n = x.shape[0]
    return jnp.mean(x), jnp.std(x, ddof=1) / jnp.sqrt(n)


def fresh_losses(train, params_R, keys_R: jax.Array, gd: Mapping[str, Any], pp: Mapping[str, Any]) -> dict:
    """Per run, on its own fresh set of `train.eval_batch_size` tasks: the model's loss, GD's (and
    GD++'s) with the rates fitted on the shared set, their standard errors over the tasks and the
    standard error of the paired model-minus-GD difference. {metric: [R]}."""
    cfg = train.cfg
    d, steps = cfg.task.n_dims, n_gd_steps(cfg)

    @in_rng_scope
    def one(params, key):
        batch = train.sample(key, cfg.train.eval_batch_size)
        x, y, xq, yq = ge.split(batch, d)
        per_task = lambda preds: 0.5 * jnp.sum((preds - yq) ** 2, axis=-1)
        model = per_task(train.apply(params, batch.inputs)[:, -1])
        out = {}
        out["fresh_eval_loss"], out["fresh_eval_loss_se"] = _mean_and_se(model)
        gd_t = per_task(alg.gd_predict(x, y, xq[:, None], gd["eta"], steps)[:, 0])
        out["fresh_gd_loss"], out["fresh_gd_loss_se"] = _mean_and_se(gd_t)
        out["fresh_diff_se"] = _mean_and_se(model - gd_t)[1]
        if pp:
            pp_t = per_task(alg.gd_predict(x, y, xq[:, None], pp["eta"], steps, pp["gamma"])[:, 0])
            out["fresh_gdpp_loss"], out["fresh_gdpp_loss_se"] = _mean_and_se(pp_t)
            out["fresh_gdpp_diff_se"] = _mean_and_se(model - pp_t)[1]
        return out

    return jax.jit(jax.vmap(one))(params_R, keys_R)


def finalize(train, state, hparams: Mapping[str, Any], seeds: np.ndarray) -> Finalized:
    """OOD losses of every run and of GD (per input scale), the losses on each seed's fresh
    evaluation set (`fresh_losses`), and the fitted reference values (with the shared set's
    standard error of GD's loss, `gd_loss_se`)."""
    cfg = train.cfg
    if not cfg.probe.gd_probes:
        return Finalized()
    scales = tuple(cfg.probe.ood_scales)
    d = cfg.task.n_dims

    data = eval_data(train)
    ref = data["ref"]
    steps = n_gd_steps(cfg)

    @jax.jit
    def ood_losses(params_R, eta):
        def at_scale(batch):
            model = jax.vmap(train.loss, in_axes=(0, None))(params_R, batch)
            x, y, xq, yq = ge.split(batch, d)
            return model, ge.gd_loss(eta, x, y, xq, yq, steps)

        return jax.lax.map(at_scale, _ood_batches(train, scales))

    model_AR, gd_A = jax.device_get(ood_losses(state.params, ref["gd"]["eta"])) if scales else (None, None)
    gd, pp, alg_loss = jax.device_get((ref["gd"], ref.get("gdpp", {}), ref["alg_loss"]))
    fresh = jax.device_get(fresh_losses(train, state.params, fresh_eval_keys(train, seeds), gd, pp))
    R = len(seeds)
    per_run: dict[str, np.ndarray] = {name: np.asarray(v, np.float64) for name, v in fresh.items()}
    for i, a in enumerate(scales):
        per_run[ood_metric("eval", a)] = np.asarray(model_AR[i])
        per_run[ood_metric("gd", a)] = np.full(R, float(gd_A[i]))
    # the shared set's own sampling error: GD's per-task losses there
    yq = np.asarray(data["batch"].targets[:, -1], np.float64)
    gd_tasks = 0.5 * np.sum((np.asarray(gd["preds"], np.float64) - yq) ** 2, axis=-1)
    values = {
        "gd_lr": float(gd["eta"]),
        "gd_loss": float(gd["loss"]),
        "gd_loss_se": float(np.std(gd_tasks, ddof=1) / np.sqrt(gd_tasks.size)),
    }
    if pp:
        values.update(gdpp_lr=float(pp["eta"]), gdpp_gamma=float(pp["gamma"]), gdpp_loss=float(pp["loss"]))
    values.update({f"{name}_loss": float(v) for name, v in alg_loss.items()})
    if has_model_gamma(cfg):
        per_run["model_gamma"] = np.asarray(jax.device_get(model_gamma(state.params, cfg)), np.float64)
    return Finalized(per_run=per_run, reference=values)


def has_model_gamma(cfg: ExperimentConfig) -> bool:
    """Whether `model_gamma` is read for `cfg`: tied (interpolable) linear layers, more than one."""
    resolved = cfg.resolve()
    return resolved.model.n_layers > 1 and interpolable(resolved)


def model_gamma(params_R: Any, cfg: ExperimentConfig) -> jax.Array:
    """[R] the curvature correction each tied LSA model applies to its inputs, read off its weights.

    With A = W_q W_k^T and B = W_v W_out (row convention, `lsa_products`), a layer adds
    sum_i (x_j . A_xx x_i) B_xx^T x_i to token j's x block; for A_xx = a I and B_xx = b I that is
    x_j <- (I + a b X X^T) x_j, GD++'s x_j <- (I - gamma X X^T) x_j with gamma = -a b
    (von Oswald et al. Sec. 4). a, b: the mean diagonals of the x blocks (the construction has
    a = 1, b = -gamma; (A, B) -> (cA, B/c) leaves gamma unchanged).
    """
    model_cfg = cfg.resolve().model
    d = cfg.task.n_dims

    def one(params) -> jax.Array:
        a_LHDD, b_LHDD = lsa_products(params, model_cfg)
        a = jnp.mean(jnp.diagonal(a_LHDD[0, 0, :d, :d]))
        b = jnp.mean(jnp.diagonal(b_LHDD[0, 0, :d, :d]))
        return -a * b

    out_R = jax.vmap(one)(params_R)
    chex.assert_rank(out_R, 1)
    return out_R


# -- presets ---------------------------------------------------------------------------------------
def lsa_model(**overrides: Any) -> ModelConfig:
    """One linear self-attention layer on raw (x, y) tokens, von Oswald et al.'s architecture: keys
    and values from the context tokens only, the prediction = minus the y block of the query token."""
    return linear_attention_model(mask="context_keys", readout="neg_y_block", init_scale=0.002, **overrides)


def paper() -> ExperimentConfig:
    """von Oswald et al.'s setup: one LSA layer, d = 10, N = 10, 5000 steps of batch 2048, 8 seeds."""
    return ExperimentConfig(
        experiment="icl-regression",
        preset="paper",
        model=lsa_model(),
        task=regression.Config(n_dims=10, n_context=10, input_dist="uniform", input_scale=1.0, weight_scale=1.0),
        optim=OptimConfig(name="adamw", lr=1e-3, b1=0.9, b2=0.98, weight_decay=0.0, clip_norm=0.001),
        train=TrainConfig(steps=5000, batch_size=2048, eval_every=250, eval_batch_size=10_000),
        probe=ICLProbeConfig(),
        sweep=SweepConfig(seeds=tuple(range(8))),
    )


# the `quick` preset's length (also `recurrent-context`'s)
QUICK_LENGTH = {"train.steps": 600, "train.batch_size": 1024, "train.eval_every": 100, "probe.ilwd_tasks": 1000}


def quick() -> ExperimentConfig:
    """The paper's setup, shorter: the demo (`make demo`)."""
    return paper().derive("quick", QUICK_LENGTH)


def smoke() -> ExperimentConfig:
    """Seconds on a CPU: for tests. Training only; `--set probe.gd_probes=true` adds the probes."""
    overrides = {
        "task.n_dims": 3,
        "task.n_context": 6,
        "train.steps": 80,
        "train.batch_size": 64,
        "train.eval_every": 20,
        "train.eval_batch_size": 256,
        "optim.lr": 3e-2,
        "optim.clip_norm": 10.0,
        "probe.gd_probes": False,
        "probe.ilwd_points": 6,
        "probe.probe_batch_size": 64,
        "probe.ood_scales": (0.5, 1.0, 2.0),
    }
    return paper().derive("smoke", overrides, sweep=SweepConfig(seeds=(0, 1)))


def recurrent() -> ExperimentConfig:
    """K tied LSA layers (K = 2, 3) vs K-step GD and GD++ (von Oswald et al., Sec. 3 and Fig. 3)."""
    overrides = {"model.tie_layers": True, "model.init_scale": 0.001, "optim.clip_norm": 10.0}
    return paper().derive(
        "recurrent", overrides, sweep=SweepConfig(seeds=tuple(range(8)), grid=(("model.n_layers", (2, 3)),))
    )


def deep() -> ExperimentConfig:
    """K untied LSA layers (K = 2, 3) vs K-step GD and GD++ (von Oswald et al., Sec. 4: deeper untied
    models match or beat the recurrent GD++ solution); the `recurrent` preset's settings, untied."""
    overrides = {"model.tie_layers": False, "model.init_scale": 0.001, "optim.clip_norm": 10.0}
    return paper().derive(
        "deep", overrides, sweep=SweepConfig(seeds=tuple(range(8)), grid=(("model.n_layers", (2, 3)),))
    )


DEPTHS = (1, 2, 4, 8)  # the `depth` preset's layer counts
DEPTH_NOISE = 0.5  # `depth-noisy`: label noise std (variance 1/4 of the weights' variance)


def depth() -> ExperimentConfig:
    """Akyürek et al. 2023's depth transition: GPT-style softmax transformers (pre-LayerNorm, GeLU
    MLP, d_model 32, 4 heads) of 1, 2, 4, 8 layers on paired (x, y) tokens, d = 8, N = 16,
    x ~ N(0, I), w ~ N(0, I), noiseless; each compared by SPD and ILWD with GD (one step and K
    steps), ridge with the noise-matched lambda (OLS here), OLS, 3-NN and averaging. Sizes fit a
    2-core CPU; the paper's models are larger (deviations)."""
    return ExperimentConfig(
        experiment="icl-regression",
        preset="depth",
        model=gpt_model(n_layers=1, n_heads=4, d_model=32, input="continuous", pos_encoding="none"),
        task=regression.Config(n_dims=8, n_context=16, input_dist="normal", input_scale=1.0, weight_scale=1.0),
        optim=OptimConfig(name="adamw", lr=1e-3, b1=0.9, b2=0.999, weight_decay=0.0, clip_norm=1.0),
        train=TrainConfig(steps=3000, batch_size=64, eval_every=500, eval_batch_size=1000),
        probe=ICLProbeConfig(ridge_matched=True, ilwd_tasks=100, ood_scales=(1.0,)),
        sweep=SweepConfig(seeds=tuple(range(5)), grid=(("model.n_layers", DEPTHS),)),
    )


def depth_noisy() -> ExperimentConfig:
    """The `depth` preset at 1 and 8 layers with label noise std 0.5: ridge with the noise-matched
    lambda = 0.25 is the Bayes-optimal predictor (Akyürek et al.: the deep model matches it best)."""
    return depth().derive(
        "depth-noisy",
        {"task.noise_std": DEPTH_NOISE},
        sweep=SweepConfig(seeds=tuple(range(5)), grid=(("model.n_layers", (DEPTHS[0], DEPTHS[-1])),)),
    )


def softmax() -> ExperimentConfig:
    """Softmax attention, 1 vs 2 heads of width 11: the remark of the authors' notebook
    constructed_token_setup.ipynb that softmax needs at least 2 heads (claims `softmax_*`)."""
    overrides = {"model.attention": "softmax", "model.d_head": 11}
    return paper().derive(
        "softmax", overrides, sweep=SweepConfig(seeds=tuple(range(8)), grid=(("model.n_heads", (1, 2)),))
    )


def context() -> ExperimentConfig:
    """Context length N in {10, 25, 50}: one program per N, each with its own fitted GD rate."""
    return paper().derive("context", sweep=SweepConfig(seeds=tuple(range(8)), grid=(("task.n_context", (10, 25, 50)),)))


CONTEXT_LENGTHS = (10, 25, 50)  # the `context` and `recurrent-context` presets' N (von Oswald et al. Sec. 4)


def recurrent_context() -> ExperimentConfig:
    """2 tied LSA layers vs 2-step GD++ at context length N = 10, 25, 50: the `recurrent` preset at
    K = 2 and the `quick` preset's length (600 steps of 1024 tasks: issue 20's bar names the quick
    preset; 5000 steps of 2048 tasks at N up to 50 take hours on a shared 2-core CPU), one program
    per N, each with its own fitted GD and GD++ (eta, gamma)."""
    return recurrent().derive(
        "recurrent-context",
        {"model.n_layers": 2, **QUICK_LENGTH},
        sweep=SweepConfig(seeds=tuple(range(8)), grid=(("task.n_context", CONTEXT_LENGTHS),)),
    )


SOFTMAX_MLP_LAYERS = 2  # the `softmax-mlp` preset's depth K (compared with K-step GD++)


def softmax_mlp() -> ExperimentConfig:
    """von Oswald et al.'s token construction (x_i, y_i) with softmax attention and MLPs, as the authors'
    src/transformer.py builds it with use_softmax and an MLP (att_only_trans off): K = 2 untied
    blocks of softmax self-attention (2 heads of width 11: the notebook's remark that softmax needs
    >= 2 heads) and a GeLU MLP of width 4 * 11 (widening_factor 4), no LayerNorm or biases (the
    notebook's defaults), keys and values from the context tokens, the prediction minus the query's
    y entry; the `deep` preset's training settings otherwise (compared with 2-step GD++)."""
    overrides = {
        "model.n_layers": SOFTMAX_MLP_LAYERS,
        "model.attention": "softmax",
        "model.n_heads": 2,
        "model.d_head": 11,
        "model.d_mlp": 44,
        "model.activation": "gelu",
    }
    return deep().derive("softmax-mlp", overrides, sweep=SweepConfig(seeds=tuple(range(8))))


def ood() -> ExperimentConfig:
    """The paper's model and GD at input scales alpha = 0.5, 0.55, ..., 2 (trained at alpha = 1)."""
    scales = tuple(round(0.5 + 0.05 * i, 2) for i in range(31))
    return paper().derive("ood", {"probe.ood_scales": scales})


# -- report ----------------------------------------------------------------------------------------
METRICS = {
    "train_loss": "0.5 * squared error of the query prediction, mean over the steps since the last evaluation",
    "eval_loss": "0.5 * squared error of the query prediction on the fixed evaluation set (>= 10,000 tasks)",
    "gd_loss": "the same loss of GD from W0 = 0 (one step per layer) with the fitted learning rate gd_lr",
    "gd_lr": "GD learning rate eta minimizing gd_loss on the evaluation set (log-grid line search, refined)",
    "preds_diff": "mean |y_hat_model - y_hat_GD| at the queries",
    "model_cos": "mean cosine similarity of the sensitivities d y_hat / d x_query, model vs GD",
    "model_diff": "mean L2 norm of the difference of those sensitivities",
    "interp_loss": "loss of the model whose W_KQ, W_PV products are averaged with GD's after rescaling "
    "by beta = mean x-diagonal of W_KQ (von Oswald et al. App. A.3; one linear head, tied layers only)",
    **{
        f"spd_{a}": f"squared prediction difference to {a}: mean (y_hat_model - y_hat_{a})^2 at the queries"
        for a in ALGORITHMS
    },
    **{
        f"ilwd_{a}": f"implicit linear weight difference to {a}: mean ||w_hat(model) - w_hat({a})||^2, w_hat the "
        "least-squares fit of the predictions at probe.ilwd_points fresh inputs sharing the task's context"
        for a in ALGORITHMS
    },
    "gdpp_loss, gdpp_lr, gdpp_gamma": "GD++ (K steps, x_j <- (I - gamma X X^T) x_j each step) with (eta, gamma) fitted "
    "jointly; models with > 1 layer",
    "*_gdpp": "preds_diff, model_cos, model_diff against GD++",
    "spd_gd1, ilwd_gd1": "the same against ONE GD step with its own fitted rate (models with > 1 layer; `gd` is "
    "K steps)",
    "ood_eval_loss[alpha=A], ood_gd_loss[alpha=A]": "final loss of the model / of GD at input scale alpha = A "
    "(tidy tables: metric ood_eval_loss / ood_gd_loss, column alpha)",
    "fresh_eval_loss, fresh_gd_loss, fresh_gdpp_loss": "final loss of the model / of GD / of GD++ (rates fitted "
    "on the shared set) on a fresh set of train.eval_batch_size tasks drawn from the run's seed",
    "fresh_*_se, fresh_diff_se, fresh_gdpp_diff_se": "standard error over the fresh tasks of those losses and of "
    "the paired per-task difference model - GD (model - GD++)",
    "gd_loss_se (reference)": "standard error over the shared evaluation tasks of GD's loss",
    "model_gamma": "the trained model's own GD++ gamma, -a b with a, b the mean x-block diagonals of its W_KQ and "
    "W_PV products (tied linear layers, K > 1; after training)",
}

EXPERIMENT = Experiment(
    name="icl-regression",
    description="In-context linear regression with linear self-attention, compared with gradient descent "
    "(von Oswald et al. 2023) and other learning algorithms (Akyürek et al. 2023).",
    presets={
        "smoke": smoke,
        "quick": quick,
        "paper": paper,
        "recurrent": recurrent,
        "deep": deep,
        "depth": depth,
        "depth-noisy": depth_noisy,
        "softmax": softmax,
        "context": context,
        "recurrent-context": recurrent_context,
        "softmax-mlp": softmax_mlp,
        "ood": ood,
    },
    probe_class=ICLProbeConfig,
    metrics=METRICS,
    make_evaluate=make_evaluate,
    eval_data=eval_data,
    finalize=finalize,
    report=_report.sections,
    claims=CLAIMS,
    deviations=deviations,
)
