"""icl-autoregressive: in-context autoregressive learning (Sander, Giryes, Suzuki, Blondel, Peyré, ICML 2024).

Sequences s_{t+1} = W s_t with a fresh orthogonal W per sequence (`jaxlab.tasks.autoregressive`);
the model predicts s_{t+1} at every position t. Does a trained one-layer linear transformer on
augmented tokens learn W in context by one gradient step on L(W) = 1/2 sum ||s_t - W s_{t-1}||^2
(Gamma = eta sum s_t' s_{t'-1}^T, y_hat = Gamma s_t)? Without augmented tokens, how do the heads and
the positional attention organize? Probes: `jaxlab.probes.autoregressive`.

Models (no LayerNorm, biases or MLP; identity read-in; prediction = last d coordinates of the
residual stream, `readout="y_block"`; paper-fig5 alone adds augmented.py's biases, LayerNorm and read-out):
  augmented    one linear-attention head, causal mask, tokens (s_t, s_{t-1}, 0) (the paper's
               (0, s_t, s_{t-1}) with the zero block stored last), no attention normalization
               (the GD map above has none either).
  positional   `attention="positional"`: heads whose weights are (q_t . k_t') times a softmax over
               positions of positional queries/keys through the same W_Q, W_K; tokens (s_t, s_t).
The block-structured parametrization of the theory is READ OFF the trained full model (C = B^T A
from the W_Q W_K^T and W_V W_O blocks, see the probes module) rather than trained separately.

Presets. The released code (github.com/michaelsdr/ical) gives the paper's settings: augmented.py
(Fig. 5) trains with Adam lr 1e-2, batch 1024, 200 epochs over a fixed set of 2^14 sequences
(3,200 steps), with LayerNorm on the attention output, biases and a read-out. jaxlab's presets use
Adam lr 1e-2 with a constant rate, batch 256, fresh sequences and CPU-sized step counts; every
difference is listed, per preset, by `icl_autoregressive_claims.deviations` (in every report):
  augmented-commuting  (= paper) d = 10, T = 20, commuting W (canonical basis), s_0 = ones/sqrt(d):
                       the theory's setting at the theory scripts' sizes, trained as a full model.
  augmented-orthogonal d = 5, T = 50, Haar W (non-commuting; Fig. 5's task), s_0 on the sphere
                       (augmented.py fixes s_0 = ones/sqrt(d)).
  pe-only              d = 1 complex (2 real), lambda = exp(i theta / mu), T = 30, mu in
                       {50, 100, 200, 300} (one program per mu), positional model with 4 heads.
  non-augmented        d = 10 commuting W, T = 20, tokens (s_t, s_t), positional model, 4 heads.
  constrained-rotation the paper's constrained (A, B, P) model of Sec. 4 (`attention="constrained"`,
                       `jaxlab.models.constrained_attention`) on orthogonal.py's setting: d = 10,
                       T = 20, 2x2-rotation W, s_0 = ones, 8 heads, plain SGD (constrained-smoke: tests).
  constrained-gd-commuting  the control: augmented-commuting with the Sec. 3 constrained form
                       (`attention="constrained_gd"`: y_t = sum (s_t^T B s_{t'-1}) A^T s_t') in place
                       of the full layer. Does the constrained form reach GD where the full one does not?
  augmented-commuting-gd-start  the other control: augmented-commuting started at one GD step
                       (`probe.start = "gd"`, `GDStartTrain`): does training keep the full model at GD?
  paper-fig5           augmented.py (Fig. 5): d = 5, T = 50, Haar W, s_0 = ones/sqrt(d), one head of width 3d
                       with biases, LayerNorm on the attention output (x + LN(Attn(x)), as augmented.py)
                       and a linear read-out, Adam 1e-2, batch 1024, 3,200 steps. Not the plain layer
                       (`is_plain`): only the functional metrics (losses, model_cos, W_hat) are measured.
  non-augmented-64     non_augmented.py's setting (Fig. 7): d = 5, T = 50, Haar W, 64 positional heads of
                       width 2d, plain layer; sized for CPUs (batch 128, 1,000 steps, 4 seeds).
  quick                augmented-commuting, shorter.   smoke, gd-start-smoke, fig5-smoke  seconds, for tests.

The paper's claims, their statistics and rules: `icl_autoregressive_claims`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.config import ExperimentConfig
from jaxlab.errors import ConfigError
from jaxlab.experiments import icl_autoregressive_report as _report
from jaxlab.experiments.icl_autoregressive_claims import (
    CLAIMS,
    ORTHOGONAL_PY,
    constrained_untested,
    deviations,
)
from jaxlab.experiments.icl_autoregressive_config import (
    ARProbeConfig,
    augmented_commuting,
    augmented_commuting_gd_start,
    augmented_orthogonal,
    constrained_gd_commuting,
    constrained_rotation,
    constrained_smoke,
    fig5_smoke,
    gd_start_smoke,
    non_augmented,
    non_augmented_64,
    paper,
    paper_fig5,
    pe_only,
    quick,
    smoke,
)
from jaxlab.probes import autoregressive as pr
from jaxlab.probes.constrained_optimum import fixed_point_metrics
from jaxlab.probes.cosine import VON_OSWALD_EPS, cosine
from jaxlab.rng import in_rng_scope
from jaxlab.tasks import autoregressive as ar
from jaxlab.train.engine import Train, TrainState
from jaxlab.train.experiment import Experiment, Finalized
from jaxlab.train.hparams import Hparams
from jaxlab.train.plan import ExecutionPlan


def is_plain(cfg: ExperimentConfig) -> bool:
    """Whether the model is the plain layer the structure probes read (`probes.autoregressive`: blocks of
    W_Q W_K^T and W_V W_O): no biases, no LayerNorm, the prediction = the last d coordinates of the stream.
    augmented.py's model (paper-fig5: biases, LayerNorm, a linear read-out) is not; for it only the
    functional metrics (losses, model_cos, W_hat, lags) are measured and the structure metrics are absent."""
    m = cfg.model
    return not (m.use_bias or m.layernorm) and m.readout == "y_block"


def check_config(cfg: ExperimentConfig) -> None:
    """Raise ConfigError unless the probes can read the config: the autoregressive task, a one-layer
    attention-only model with identity read-in; the constrained forms and `probe.start = "gd"` need the plain
    layer (`is_plain`); `probe.w_hat_probes` 0 or >= task.n_dims.
    """
    if not isinstance(cfg.task, ar.Config):
        raise ConfigError("task", "icl-autoregressive needs the autoregressive task", ["autoregressive"])
    m = cfg.model
    if m.n_layers != 1 or m.d_mlp:
        raise ConfigError("model.n_layers", "the probes read a one-layer attention-only model", [1])
    if m.read_in != "identity":
        raise ConfigError("model.read_in", "the tokens enter the stream as they are", ["identity"])
    if m.readout not in ("y_block", "linear"):
        raise ConfigError(
            "model.readout", "the last d coordinates of the stream or a linear read-out", ["y_block", "linear"]
        )
    if m.attention in ("constrained", "constrained_gd") and not is_plain(cfg):
        raise ConfigError(
            "model.use_bias", "the constrained forms are read without biases, LayerNorm or read-out", [False]
        )
    if cfg.probe.start == "gd":
        if not is_plain(cfg) or m.attention != "linear" or cfg.task.encoding != "augmented":
            raise ConfigError(
                "probe.start", "one GD step is built in the plain linear layer on augmented tokens", ["random"]
            )
    if m.attention in ("constrained", "constrained_gd") and cfg.task.encoding != "augmented":
        raise ConfigError("task.encoding", "the constrained model reads (s_t, s_{t-1}) from the tokens", ["augmented"])
    probes = cfg.probe.w_hat_probes
    if probes and probes < cfg.task.n_dims:
        raise ConfigError("probe.w_hat_probes", f"must be >= task.n_dims = {cfg.task.n_dims} (or 0), got {probes}")


def positions(cfg: ExperimentConfig) -> tuple[int, ...]:
    """Reported positions t: evenly spaced over 0..T-1, at most probe.max_positions, 0 and T-1 included."""
    T = cfg.task.seq_len
    n = min(cfg.probe.max_positions, T)
    return tuple(sorted({int(np.rint(x)) for x in np.linspace(0, T - 1, n)}))


def is_positional(cfg: ExperimentConfig) -> bool:
    """Whether the model uses positional attention (`model.attention='positional'`)."""
    return cfg.model.attention == "positional"


def is_constrained(cfg: ExperimentConfig) -> bool:
    """Whether the model is the paper's constrained (A, B, P) form (`model.attention='constrained'`)."""
    return cfg.model.attention == "constrained"


# -- evaluation ------------------------------------------------------------------------------------
@in_rng_scope
def eval_data(train) -> dict[str, Any]:
    """{"batch": the evaluation batch, "ref": the fitted one-step GD on it} (`probes.make_reference`).

    Pure: traced into the program that uses it (the engine's `start`, `finalize`'s probe program),
    so the line search compiles with it instead of running op by op.
    """
    cfg = train.cfg
    batch = train.sample(train.eval_key(), cfg.train.eval_batch_size)
    return {"batch": batch, "ref": pr.make_reference(batch, cfg.task)}


def make_evaluate(cfg: ExperimentConfig):
    """The on-device evaluation of `cfg` (checked by `check_config`): the model-vs-GD equivalence
    metrics, the fitted GD eta, the off-block ratio of C = B^T A, the positional superdiagonal mass
    (NaN without positional attention) and, with several heads, the mean |cos| between heads.
    """
    check_config(cfg)
    task = cfg.task
    positional = is_positional(cfg)
    constrained = is_constrained(cfg)

    plain = is_plain(cfg)

    def evaluate(train, params, data) -> dict[str, jax.Array]:
        out = pr.equivalence_metrics(train.apply, params, data["batch"], data["ref"], task)
        out["gd_eta"] = data["ref"]["eta"]
        if not plain:  # no W_Q W_K^T / W_V W_O blocks to read (biases, LayerNorm, read-out)
            return {**out, "p_superdiag_mass": jnp.float32(jnp.nan)}
        if constrained:
            out.update(pr.constrained_structure(params, task))
            return {**out, "p_superdiag_mass": jnp.float32(jnp.nan)}
        out["c_offblock_ratio"] = pr.c_offblock_ratio(params, task)
        if positional:
            p_HTT = pr.positional_matrices(params, task.seq_len)
            out["p_superdiag_mass"] = pr.superdiag_mass(p_HTT)
            out["p_last_diag"] = pr.last_row_diagonal(p_HTT)
        else:
            out["p_superdiag_mass"] = jnp.float32(jnp.nan)
        if cfg.model.n_heads > 1:
            out["head_cos"] = pr.head_cosines(params)
        return out

    return evaluate


# -- the GD start (probe.start = "gd") ------------------------------------------------------------
class GDStartTrain(Train):
    """`Train` whose runs start at one GD step: the initial parameters are `Train.init`'s with the attention
    replaced by `probes.autoregressive.gd_step_params` at the eta fitted on the evaluation set (`eval_data`),
    so the step-0 evaluation is GD itself (model_cos 1, loss ratio 1); the optimizer state is initialized at
    those parameters."""

    def init(self, key: jax.Array, hparams: Hparams | None = None) -> TrainState:
        """`Train.init`'s state with the parameters set to one GD step (the class docstring)."""
        hparams = self.full_hparams(hparams)
        state = super().init(key, hparams)
        eta = eval_data(self)["ref"]["eta"]
        params = pr.gd_step_params(state.params, self.cfg.task, eta)
        return state.replace(params=params, opt_state=self.optimizer(hparams).init(params))


@dataclass(frozen=True)
class ARExperiment(Experiment):
    """`Experiment` whose training starts at one GD step where the config asks (`probe.start = "gd"`)."""

    def make_train(self, cfg: ExperimentConfig, plan: ExecutionPlan | None = None) -> Train:
        """`Experiment.make_train`, as a `GDStartTrain` when `cfg.probe.start == "gd"`."""
        if getattr(cfg.probe, "start", "random") != "gd":
            return super().make_train(cfg, plan)
        return GDStartTrain(cfg, self.make_evaluate(cfg), self.eval_data, plan=plan)


# -- after training --------------------------------------------------------------------------------
def finalize(train, state, hparams: Mapping[str, Any], seeds: np.ndarray) -> Finalized:
    """Loss and W_hat error per position t, lag weights, positional spectra, for every run; for the constrained
    model on orthogonal.py's setting, the reference values paper_optimum_* (the paper's released C and P in the
    same model, no training: `probes.constrained_optimum`), the control of constrained_optimum_is_gd."""
    cfg = train.cfg
    task = cfg.task
    n = cfg.probe.w_hat_tasks or cfg.train.eval_batch_size
    n = min(n, cfg.train.eval_batch_size)
    M = cfg.probe.w_hat_probes or 2 * task.n_dims
    pos = positions(cfg)

    def one_run(params, batch, probes, inputs, w, s_all):
        predict = lambda x: train.apply(params, x)
        preds = predict(batch.inputs)
        out = {
            "loss_t": pr.loss_by_position(preds, batch.targets),
            "w_hat_t": jnp.mean(pr.w_hat_errors(predict, task, inputs, w, probes, pos), axis=0),
            "lags": pr.lag_weights(preds, s_all),
        }
        if is_constrained(cfg) or not is_plain(cfg):  # no (W_Q, W_K, W_V, W_O) blocks to read
            return out
        b, a = pr.block_products(params, task)
        blocks = lambda x: pr.structured_predictions(ar.observed_states(task, x), b, a)
        _, sens = pr.last_state_sensitivity(predict, task, batch.inputs)
        _, sens_blocks = pr.last_state_sensitivity(blocks, task, batch.inputs)
        out["block_loss"] = pr.masked_half_mse(blocks(batch.inputs), batch.targets, batch.loss_mask)
        flat = lambda g: g.reshape(g.shape[0], -1)
        out["block_model_cos"] = jnp.mean(cosine(flat(sens), flat(sens_blocks), eps=VON_OSWALD_EPS))
        if task.w_kind != "haar":
            out["b_block_angle"] = jnp.mean(jnp.abs(pr.block_angles(b, task)))
            out["a_block_angle"] = jnp.mean(jnp.abs(pr.block_angles(a.T, task)))
        if task.encoding == "augmented" and cfg.model.attention != "constrained_gd":
            out.update(pr.block_fractions(params, task))
        if is_positional(cfg):
            out["spectrum"] = jnp.mean(pr.positional_spectrum(params, task.seq_len), axis=0)
        return out

    @jax.jit
    def probe_all(params_R):
        """Every run and the GD reference in ONE program (no eager op-by-op compilation)."""
        data = eval_data(train)
        batch, ref = data["batch"], data["ref"]
        probes = pr.probe_directions(jax.random.key(cfg.train.eval_seed + 7), M, task.n_dims)
        inputs, w = batch.inputs[:n], batch.aux["w"][:n]
        s_all = ar.observed_states(task, batch.inputs)
        runs = jax.vmap(one_run, in_axes=(0, None, None, None, None, None))(params_R, batch, probes, inputs, w, s_all)
        gd = lambda x: pr.gd_predictions(ar.observed_states(task, x), ref["eta"])
        gd_w = jnp.mean(pr.w_hat_errors(gd, task, inputs, w, probes, pos), axis=0)
        paper = {}
        if is_constrained(cfg) and constrained_untested(cfg) is None:  # the control of constrained_optimum_is_gd
            template = jax.tree.map(lambda x: x[0], params_R)  # one run's tree, its A, B, P replaced
            paper = fixed_point_metrics(train.apply, template, batch, ref, task, ORTHOGONAL_PY)
        return runs, gd_w, pr.lag_weights(ref["preds"], s_all), ref, paper

    res, gd_w, gd_lags, ref, paper = jax.device_get(probe_all(state.params))
    loss_t_gd = np.asarray(ref["loss_t"])

    per_run: dict[str, np.ndarray] = {"w_hat_rel_err": np.asarray(res["w_hat_t"][:, -1])}
    for i, t in enumerate(pos):
        per_run[f"loss_t{t:02d}"] = np.asarray(res["loss_t"][:, t])
        per_run[f"w_hat_err_t{t:02d}"] = np.asarray(res["w_hat_t"][:, i])
    for k in range(res["lags"].shape[1]):
        per_run[f"lag{k}_weight"] = np.asarray(res["lags"][:, k])
    per_run["lag1_ratio"] = per_run["lag1_weight"] / per_run["lag0_weight"]
    for name in res:
        if name.startswith(("block_", "kq_", "vo_")) or name in ("b_block_angle", "a_block_angle"):
            per_run[name] = np.asarray(res[name])
    if "spectrum" in res:
        sv = np.asarray(res["spectrum"])
        per_run["p_top_sv_frac"] = sv[:, 0] ** 2 / np.sum(sv**2, axis=1)
    reference = {
        "gd_eta": float(ref["eta"]),
        "gd_loss": float(ref["loss"]),
        "gd_pos_eta_loss": float(ref["loss_pos_eta"]),
        "gd_state_norm_loss": float(ref["loss_state_norm"]),
        "gd_direction_oracle_loss": float(ref["loss_direction_oracle"]),
    }
    for i, t in enumerate(pos):
        reference[f"gd_loss_t{t:02d}"] = float(loss_t_gd[t])
        reference[f"gd_w_hat_err_t{t:02d}"] = float(gd_w[i])
    reference["gd_w_hat_rel_err"] = float(gd_w[-1])
    for k, v in enumerate(np.asarray(gd_lags)):
        reference[f"gd_lag{k}_weight"] = float(v)
    reference.update({k: float(v) for k, v in paper.items()})  # probes.constrained_optimum
    return Finalized(per_run=per_run, reference=reference)


METRICS = {
    "train_loss": "0.5 * squared error of the next-state prediction, summed over dims, mean over positions/tasks",
    "eval_loss": "the same loss on the fixed evaluation set",
    "gd_loss": "the same loss of one GD step Gamma_t = eta sum_{t'<=t} s_t' s_{t'-1}^T, y_hat = Gamma_t s_t "
    "(eta fitted)",
    "gd_eta": "the fitted eta (log-grid line search on gd_loss)",
    "gd_pos_eta_loss": "reference: the same loss of one GD step with eta_t fitted per position (least squares per "
    "t): the control of gd_loss's single eta",
    "gd_state_norm_loss": "reference: the same loss of one GD step's prediction scaled to ||s_t|| (= ||s_{t+1}|| for "
    "orthogonal W): what a normalization such as augmented.py's LayerNorm can give, with no step size fitted",
    "gd_direction_oracle_loss": "reference: the loss of the target's projection on one GD step's update per task "
    "and position (reads the target): the lower bound of one GD step with any step size, normalization or gain",
    "preds_diff": "mean ||y_hat_model - y_hat_GD|| over tasks and positions",
    "model_cos": "mean cosine of d y_hat_{T-1} / d s_{T-1}, model vs GD (sensitivity to the last state)",
    "c_offblock_ratio": "||C off the 2x2 diagonal blocks||_F / ||C||_F, C = B^T A (key-query block B, "
    "value-output block A), in the basis where W is block-diagonal",
    "p_superdiag_mass": "positional model: mean over heads and rows of P[t, t] + P[t, t-1] (NaN otherwise)",
    "head_cos": "mean |cos| between heads' flattened (W_Q, W_K, W_V, W_O)",
    "p_last_diag": "positional model: P[T-1, T-1], the last row's softmax weight on its own token (mean over heads)",
    "w_hat_rel_err": "||W_hat - W||_F / ||W||_F at the last position, W_hat the least-squares fit of the "
    "model's predictions at probe states (context kept)",
    "w_hat_err_tNN, loss_tNN": "the same error / the loss at position t = NN",
    "lagK_weight, lag1_ratio": "least-squares weights a_K of y_hat_t ~ a_0 s_t + a_1 s_{t-1}; ratio a_1 / a_0 "
    "(an extrapolation s_{t+1} ~ 2 s_t - s_{t-1} gives -1/2; meaningful for slow rotations, the PE-only setting)",
    "block_loss, block_model_cos": "loss of the block-structured predictor read off the model, "
    "y_hat_t = sum_{t'} (s_t^T B s_{t'-1}) A^T s_t', and the model's sensitivity cosine with it",
    "b_block_angle, a_block_angle": "mean |rotation angle| of the 2x2 diagonal blocks of B and A^T "
    "(task basis; 0 for one GD step, B = I, A = eta I)",
    "kq_<q>_<k>, vo_<v>": "augmented model: share of ||W_Q W_K^T||_F^2 in the (query block, key block) pair "
    "and of ||W_V W_O||_F^2 from each value block to the prediction (cur = s_t, prev = s_{t-1}); one GD step: "
    "kq_cur_prev = vo_cur = 1; the backward estimator sum s_{t'-1} s_t'^T s_t: kq_cur_cur = vo_prev = 1",
    "p_top_sv_frac": "positional model: sigma_1^2 / sum sigma^2 of the positional matrices (mean over heads)",
    "c_block_diag, c_block_anti": "constrained model: mean diagonal / anti-diagonal entry of C = B^T A's 2x2 blocks, "
    "in the sign gauge P[t, t+1] < 0 (`probes.constrained_structure`)",
    "p_next, p_prev, p_other_frac": "constrained model: mean P[t, t+1] and P[t, t] (paper's indexing), and the share "
    "of abs(P)'s causal row mass on older tokens",
    "paper_optimum_model_cos, paper_optimum_loss, paper_optimum_preds_diff, paper_optimum_loss_ratio": "constrained "
    "model, reference values: the model at the paper's released optimum (C = -1.289 blockdiag([[1, 1], [1, 1]]), "
    "P[t, t+1] = -0.776, P[t, t] = +0.388, no training) scored as a trained model: model_cos, eval_loss, "
    "preds_diff against the fitted one-step GD, and its loss / gd_loss (the control of constrained_optimum_is_gd)",
    "cp_next, p_prev_ratio": "constrained model: mean C block entry x p_next and p_prev / p_next (gauge-invariant; "
    "1 and -1/2 at the exact recurrence)",
}

EXPERIMENT = ARExperiment(
    name="icl-autoregressive",
    description="In-context autoregressive learning s_{t+1} = W s_t with one-layer linear transformers, "
    "compared with one step of GD on the inner least-squares objective (Sander et al., ICML 2024).",
    presets={
        "smoke": smoke,
        "quick": quick,
        "paper": paper,
        "augmented-commuting": augmented_commuting,
        "augmented-orthogonal": augmented_orthogonal,
        "pe-only": pe_only,
        "non-augmented": non_augmented,
        "constrained-rotation": constrained_rotation,
        "constrained-smoke": constrained_smoke,
        "constrained-gd-commuting": constrained_gd_commuting,
        "augmented-commuting-gd-start": augmented_commuting_gd_start,
        "gd-start-smoke": gd_start_smoke,
        "paper-fig5": paper_fig5,
        "fig5-smoke": fig5_smoke,
        "non-augmented-64": non_augmented_64,
    },
    probe_class=ARProbeConfig,
    metrics=METRICS,
    make_evaluate=make_evaluate,
    eval_data=eval_data,
    finalize=finalize,
    report=_report.sections,
    claims=CLAIMS,
    deviations=deviations,
)
