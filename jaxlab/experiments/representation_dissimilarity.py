"""representation-dissimilarity: stitching and CKA between GeLU and SoLU transformers (Brown et al. 2023).

Brown, Godfrey, Konz, Tu & Kvinge ("Understanding the Inner Workings of Language Models Through
Representation Dissimilarity", EMNLP 2023) compare language models with affine model stitching and
CKA: (1) stitching a SoLU model's lower layers into a GeLU model costs more than the reverse (an
asymmetry: GeLU representations look more useful); (2) stitching localizes to layers a
generalization difference that in-distribution accuracy does not show; (3) representations of
wider / better-trained models improve weaker ones when stitched in ("more is better"); (4) CKA
matrices across width and depth show block structure. Those are the paper's findings; whether this
setup reproduces them is computed, not written: the claims, their statistics, controls and rules
are in `representation_dissimilarity_claims`, their verdicts in summary.json and the report's
Claims table.

Setting here: the `modsum` task (`jaxlab.tasks.modsum`: y = (a + b) mod p, with a spurious hint
token that names y with probability `task.shortcut`). The sweep grid is `model.activation` x
`task.shortcut` x `model.d_model` x `model.n_layers`; every grid point is one program of many seeds.
Groups are named by tags `{activation}_w{d_model}_d{n_layers}_s{shortcut}`; the *reference point*
is the first width and the first depth of the grid, and the *families* are the groups trained
without the shortcut (the smallest `task.shortcut` of the grid).

Per run (every evaluation): id_acc / id_loss on the in-distribution test set (hint = answer with
probability `probe.id_shortcut`, default 1: the shortcut holds), ood_acc / ood_loss on the shifted
set (`probe.ood_shortcut`, default 0: the hint is noise), both at the answer positions.

Across programs (`after_sweep`, summary.json `reference`), with stitching from
`jaxlab.probes.stitching` (least-squares init, then Adam on B's task loss; penalty = stitched loss
- B's loss, nats, on B's evaluation batch; hooks l = 0..L: l < L is the residual stream before
block l, l = L after the last block). Names measured at a hook, a pair of families or models or a
pair of seeds carry them as metric parameters (`results.metric_name`; `results.split_metric_column`
splits a table of them into the metric and the columns `sender`, `receiver`, `layer`, ...); the
claims and the report read the older names too (`representation_dissimilarity_claims.
parse_dissimilarity_metric`, e.g. `stitch_penalty_gelu_to_solu_l1` = `stitch_penalty[sender=gelu,
receiver=solu,layer=1]`):
  stitch_penalty[sender=gelu,receiver=solu,layer=l]   GeLU run i's stream at l into SoLU run j, mean
                                     over all (i, j)
  stitch_penalty[sender=solu,receiver=gelu,layer=l]   the reverse; both at the reference point,
                                     families only
  stitch_penalty[sender=gelu,receiver=gelu,layer=l], ...[sender=solu,receiver=solu,...]: across
                                     seeds (i != j)
  (each with stitch_penalty_std[...]: the standard deviation over pairs)
  stitch_penalty_pair[sender=x,receiver=y,layer=l,sender_seed=i,receiver_seed=j]  the penalty of
                                     the run of seed i into the run of seed j (never a run into
                                     itself); the claims' per-model values
                                     (`representation_dissimilarity_claims`)
  asymmetry_index                    mean over model pairs (GeLU i, SoLU j) and layers l = 1..L of
                                     penalty(SoLU j -> GeLU i) - penalty(GeLU i -> SoLU j);
                                     > 0 is the direction the paper reports. It does not subtract
                                     the receivers' same-family penalties (GeLU -> GeLU differs from
                                     SoLU -> SoLU), so a receiver that is harder to stitch into
                                     moves it; the claim `solu_gelu_asymmetry` subtracts them.
                                     _std / _n / _frac_positive: spread over the pairs;
                                     asymmetry_index[layer=l], asymmetry_index_std[layer=l]: per hook
  stitch[sender=tagA,receiver=tagB,layer=l]  the same penalties at every (width, depth) point
                                     (stitch_std, and stitch_init / stitch_init_std: the penalty of
                                     the least-squares start)
  cka_within_mean                    linear CKA between the same layer (l = 1..L) of different
                                     seeds of one family, mean over families, points and layers
  cka_gelu_solu_mean                 same-layer CKA of GeLU vs SoLU runs at the reference point
  cka_within[model=tag,layer_a=i,layer_b=j]  layer x layer CKA within one model, mean over its seeds
  cka_across[model_a=tagA,model_b=tagB,layer_a=i,layer_b=j]  layer x layer CKA across models
                                     (different seeds when tagA = tagB)
  (representations: the residual stream at the answer positions of `probe.n_cka` shortcut-free
  sequences; every representation of every run of every group in one `pairwise` call)
  id_acc_group_a, ood_acc_group_a    group A: GeLU at the reference point trained with the
  id_acc_group_b, ood_acc_group_b    shortcut (largest task.shortcut); group B: without (mean over seeds)
  gen_penalty[sender=a,receiver=b,layer=l]  stitching A's stream into B (on B's shortcut-free task)
  gen_penalty[sender=b,receiver=b,layer=l] (B across seeds: the baseline); gen_penalty_std[...],
                                     and gen_penalty_pair[...,sender_seed=i,receiver_seed=j] as for
                                     stitch_penalty (B into A is not stitched: no claim reads it)
  generalization_gap_layer           argmax_l of gen_penalty[a->b, l] - gen_penalty[b->b, l]
                                     (a description: with task.shortcut = 1 group A need not use
                                     the operands and every hook past the embeddings is at chance;
                                     the presets train A with 0.5, so both groups use them)
  {stitch,gen}_penalty_steps_used[sender=x,receiver=y,layer=l]  the stitch training steps the
                                     stopping rule used (`probe.stitch_tol`), mean over model pairs
                                     (_steps_used_max: the most)
  {stitch,gen}_penalty_double[...], _double_pair[...]  with `probe.stitch_budget_check`: the
                                     penalty after twice each pair's budget (the budget check,
                                     `representation_dissimilarity_claims.budget_checks`)
  cka_run[model=activation,model_seed=s,layer_a=i,layer_b=j]  layer x layer CKA within the run of
                                     seed s of a family at the reference point (the block-structure
                                     claim's per-run matrices)
  more_{narrow|wide}_{to}_{...}      "more is better": GeLU families of the smallest and largest
                                     width at the reference depth; the lower half of the blocks of
                                     one stitched (at blocks.{L // 2}.hook_resid_pre) into the
                                     other: stitched loss, and both endpoints' own losses
The names of single scalars stay plain (asymmetry_index, cka_within_mean, id_acc_group_a,
more_stitched_loss_narrow_to_wide, ...): no hook or seed varies in them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import jax
import jax.numpy as jnp

from jaxlab.config import ExperimentConfig, OptimConfig, ProbeConfig, SweepConfig, TrainConfig
from jaxlab.errors import ConfigError
from jaxlab.experiments import representation_dissimilarity_analysis as _analysis
from jaxlab.experiments import representation_dissimilarity_claims as _claims
from jaxlab.experiments import representation_dissimilarity_report as _report
from jaxlab.models.presets import gpt_model
from jaxlab.tasks import modsum
from jaxlab.train.experiment import Experiment, Finalized
from jaxlab.train.losses import accuracy, per_position_loss

if TYPE_CHECKING:
    from jaxlab.train.engine import EvalFn, Train


@dataclass(frozen=True)
class DissimilarityProbeConfig(ProbeConfig):
    """Evaluation and cross-program analysis settings (see the module docstring)."""

    section: ClassVar[str] = "probe"
    id_shortcut: float = 1.0
    ood_shortcut: float = 0.0
    stitch_steps: int = 200
    stitch_lr: float = 3e-3
    stitch_batch_size: int = 64
    stitch_fit_batch_size: int = 256
    stitch_tol: float = 0.0
    stitch_window: int = 50
    stitch_budget_check: bool = False
    stitch_receivers: int = 0
    n_cka: int = 128

    # read once per sweep, from the first program's config, by the analysis across programs
    # (`representation_dissimilarity_analysis.analyse`)
    SWEEP_WIDE: ClassVar[dict[str, str]] = {
        name: "sets the analysis across the sweep's programs (one value for the whole sweep)"
        for name in (
            "stitch_steps",
            "stitch_lr",
            "stitch_batch_size",
            "stitch_fit_batch_size",
            "stitch_tol",
            "stitch_window",
            "stitch_budget_check",
            "stitch_receivers",
            "n_cka",
        )
    }

    FIELD_DOCS: ClassVar[dict[str, str]] = {
        "id_shortcut": "probability that the hint names the answer in the in-distribution test set",
        "ood_shortcut": "the same probability in the shifted (OOD) test set",
        "stitch_steps": "Adam steps that train each stitching layer (the most, with the stopping rule stitch_tol > 0)",
        "stitch_tol": (
            "stopping rule of the stitch training: stop once the mean training loss of a window of stitch_window "
            "steps improves on the previous window's by less than this fraction (0: always stitch_steps steps)"
        ),
        "stitch_window": "steps a window of the stopping rule (the budget is counted in whole windows)",
        "stitch_budget_check": (
            "also train every stitch for as many steps again (twice the budget it used) and report the penalty there"
        ),
        "stitch_lr": "learning rate of the stitching layers",
        "stitch_batch_size": "sequences per stitching training step",
        "stitch_fit_batch_size": "sequences of the least-squares initialization of the stitching layers",
        "stitch_receivers": (
            "receivers each sender is stitched into (0: every pair; k: a ring, sender i into receivers i..i+k-1, "
            "i+1..i+k within a group, so every model is a sender and a receiver k times)"
        ),
        "n_cka": "shortcut-free sequences whose representations CKA compares",
    }

    def validate(self) -> None:
        n = self._name
        for name in ("id_shortcut", "ood_shortcut"):
            v = getattr(self, name)
            if not 0.0 <= v <= 1.0:
                raise ConfigError(n(name), f"is a probability, must be in [0, 1], got {v!r}")
        for name in ("stitch_steps", "stitch_batch_size", "stitch_fit_batch_size", "n_cka"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < (0 if name == "stitch_steps" else 1):
                raise ConfigError(n(name), f"must be an integer >= {0 if name == 'stitch_steps' else 1}, got {v!r}")
        if not self.stitch_lr > 0:
            raise ConfigError(n("stitch_lr"), f"must be > 0, got {self.stitch_lr!r}")
        if not 0.0 <= self.stitch_tol < 1.0:
            raise ConfigError(n("stitch_tol"), f"is a fraction, must be in [0, 1), got {self.stitch_tol!r}")
        w = self.stitch_window
        if not isinstance(w, int) or isinstance(w, bool) or w < 1:
            raise ConfigError(n("stitch_window"), f"must be an integer >= 1, got {w!r}")
        r = self.stitch_receivers
        if not isinstance(r, int) or isinstance(r, bool) or r < 0:
            raise ConfigError(n("stitch_receivers"), f"must be an integer >= 0 (0: every pair), got {r!r}")
        if not isinstance(self.stitch_budget_check, bool):
            raise ConfigError(n("stitch_budget_check"), f"must be true or false, got {self.stitch_budget_check!r}")


# -- evaluation ------------------------------------------------------------------------------------
def _shifted(train: Train, shortcut: float, key: jax.Array, n: int):
    return train.sample(key, n, task=dataclasses.replace(train.cfg.task, shortcut=shortcut))


def make_eval_data(train: Train) -> dict[str, Any]:
    """The ID (shortcut holds) and OOD (shortcut broken) test sets, the same for every run and group."""
    k_id, k_ood = jax.random.split(train.eval_key())
    n, probe = train.cfg.train.eval_batch_size, train.cfg.probe
    return {"id": _shifted(train, probe.id_shortcut, k_id, n), "ood": _shifted(train, probe.ood_shortcut, k_ood, n)}


def make_evaluate(cfg: ExperimentConfig) -> EvalFn:
    """The on-device evaluation: loss and accuracy at the answer positions on the ID and the OOD test sets (`id_*`,
    `ood_*`)."""

    def evaluate(train: Train, params: Any, data: dict[str, Any]) -> dict[str, jax.Array]:
        out: dict[str, jax.Array] = {}
        for split, batch in data.items():
            logits = train.apply(params, batch.inputs)
            loss = per_position_loss("xent", logits, batch.targets)
            out[f"{split}_loss"] = jnp.sum(loss * batch.loss_mask) / jnp.sum(batch.loss_mask)
            out[f"{split}_acc"] = accuracy(logits, batch)
        return out

    return evaluate


# -- presets ---------------------------------------------------------------------------------------
def paper() -> ExperimentConfig:
    """Brown et al.'s families, scaled to the synthetic task: GeLU vs SoLU x widths {64, 128, 256} x
    depths {2, 4, 6} x shortcut {0, 0.5}, 5 seeds each (36 programs); p = 23, 6 items a sequence,
    MLP width 512 for every d_model (the width axis is d_model), 6000 steps of 128 sequences.
    The paper's models are Neel Nanda's SoLU/GeLU LMs (1-12 layers, d 512-1024) trained on web text
    and its generalization groups are McCoy et al.'s MNLI BERTs; both are out of reach here."""
    return ExperimentConfig(
        experiment="representation-dissimilarity",
        preset="paper",
        model=gpt_model(n_layers=2, n_heads=4, d_model=64, d_mlp=512),
        task=modsum.Config(p=23, n_items=6),
        optim=OptimConfig(name="adamw", lr=2e-3, weight_decay=0.01, schedule="warmup_cosine", warmup_steps=200),
        train=TrainConfig(steps=6000, batch_size=128, eval_schedule="linear", eval_every=500, eval_batch_size=512),
        probe=DissimilarityProbeConfig(
            stitch_steps=1000,
            stitch_lr=2e-2,
            stitch_batch_size=128,
            stitch_fit_batch_size=512,
            stitch_tol=0.01,
            stitch_window=100,
            stitch_budget_check=True,
            n_cka=256,
        ),
        sweep=SweepConfig(
            seeds=(0, 1, 2, 3, 4),
            grid=(
                ("model.activation", ("gelu", "solu")),
                ("task.shortcut", (0.0, 0.5)),
                ("model.d_model", (64, 128, 256)),
                ("model.n_layers", (2, 4, 6)),
            ),
        ),
    )


def quick() -> ExperimentConfig:
    """Minutes on a 2-core CPU: p = 11, 4 items, 4 blocks of width 32 (MLP 64), GeLU vs SoLU x
    task.shortcut {0, 0.5}, 5 seeds, 1000 steps of 32 sequences; 4 programs of 5 runs (no width axis).

    The depth axis is the 4 blocks (hooks 0..4: CKA block structure needs more than two hooks past the
    embeddings). The shortcut-trained group sees the hint name the answer with probability 0.5, not 1:
    with 1 it need not use the operands at all and stitching it anywhere past the embeddings sits at the
    chance loss (the earlier quick reproduction), so a contrast between hooks compared chance with chance;
    with 0.5 the sum is the only way to the last half of the loss, so both groups use their inputs.
    Stitching: least squares, then Adam at 2e-2 (batches of 32) until the mean training loss of a 50-step
    window improves on the previous one by less than 2% (at most 300 steps), and the budget check trains
    every stitch for as many steps again; each model is stitched into one model of each receiving group
    (a ring: 5 pairs a direction instead of all 25; the stitching of 4-block models dominates the
    preset's cost, and a first try with 2 receivers and at most 600 steps ran past the sweep's
    15-minute stall limit in its first stitching job on the shared 2-core machine). The fixed 500-step
    budget of the earlier preset left gelu -> gelu at hook 1 at 0.035 nats, 0.023 after 2000 steps:
    more than the asymmetry it measured."""
    return paper().derive(
        "quick",
        {
            "task.p": 11,
            "task.n_items": 4,
            "model.d_mlp": 64,
            "optim.lr": 3e-3,
            "optim.warmup_steps": 100,
            "train.steps": 1000,
            "train.batch_size": 32,
            "train.eval_every": 250,
            "train.eval_batch_size": 256,
            "probe.stitch_steps": 300,
            "probe.stitch_window": 50,
            "probe.stitch_tol": 0.02,
            "probe.stitch_budget_check": True,
            "probe.stitch_receivers": 1,
            "probe.stitch_batch_size": 32,
            "probe.stitch_fit_batch_size": 256,
            "probe.n_cka": 128,
        },
        sweep=SweepConfig(
            seeds=(0, 1, 2, 3, 4),
            grid=(
                ("model.activation", ("gelu", "solu")),
                ("task.shortcut", (0.0, 0.5)),
                ("model.d_model", (32,)),
                ("model.n_layers", (4,)),
            ),
        ),
    )


def smoke() -> ExperimentConfig:
    """Seconds: for tests. p = 5, 2 items, one layer of width 16, 2 seeds, 4 programs (no width axis)."""
    return paper().derive(
        "smoke",
        {
            "task.p": 5,
            "task.n_items": 2,
            "model.n_layers": 1,
            "model.n_heads": 2,
            "model.d_model": 16,
            "model.d_mlp": 32,
            "optim.lr": 1e-2,
            "optim.warmup_steps": 0,
            "optim.schedule": "constant",
            "train.steps": 20,
            "train.batch_size": 16,
            "train.eval_every": 10,
            "train.eval_batch_size": 64,
            "probe.stitch_steps": 20,
            "probe.stitch_window": 5,
            "probe.stitch_tol": 0.05,
            "probe.stitch_budget_check": True,
            "probe.stitch_batch_size": 32,
            "probe.stitch_fit_batch_size": 64,
            "probe.n_cka": 32,
        },
        sweep=SweepConfig(seeds=(0, 1), grid=(("model.activation", ("gelu", "solu")), ("task.shortcut", (0.0, 1.0)))),
    )


METRICS = {
    "id_acc": (
        "accuracy at the answer positions of the in-distribution test set (the hint holds w.p. probe.id_shortcut)"
    ),
    "ood_acc": "the same on the shifted test set (hint = answer w.p. probe.ood_shortcut: the shortcut broken)",
    "id_loss": "cross-entropy at the answer positions of the in-distribution test set (nats)",
    "ood_loss": "the same on the shifted test set (nats)",
    "train_loss": "cross-entropy on the training stream, mean over the steps since the last evaluation (nats)",
    "stitch_penalty[sender=x,receiver=y,layer=l]": (
        "stitched loss - receiver's loss (nats), family x's stream at hook l into family y, mean over model pairs "
        "(summary.json reference; stitch_penalty_std: their standard deviation; stitch_penalty_pair[..., "
        "sender_seed=i,receiver_seed=j]: one model pair)"
    ),
    "stitch[sender=tagA,receiver=tagB,layer=l]": "the same between the groups of two grid points (module docstring)",
    "gen_penalty[sender=a|b,receiver=a|b,layer=l]": (
        "the same between group A (shortcut-trained GeLU) and group B (shortcut-free GeLU) at the reference point"
    ),
    "asymmetry_index[layer=l]": "asymmetry_index at hook l alone",
    "{stitch,gen}_penalty_steps_used[sender=x,receiver=y,layer=l]": (
        "stitch training steps the stopping rule used, mean over model pairs (_max: the most)"
    ),
    "{stitch,gen}_penalty_double[sender=x,receiver=y,layer=l]": (
        "the penalty after twice each pair's budget (the budget check; _double_pair: one model pair)"
    ),
    "cka_run[model=activation,model_seed=s,layer_a=i,layer_b=j]": (
        "linear CKA between layer i and layer j of the run of seed s (reference point, families)"
    ),
    "cka_within[model=tag,layer_a=i,layer_b=j], cka_across[model_a=..,model_b=..,layer_a=i,layer_b=j]": (
        "linear CKA between layer i and layer j of one model (mean over seeds) or of two models"
    ),
    "asymmetry_index": (
        "penalty(SoLU -> GeLU) - penalty(GeLU -> SoLU), mean over model pairs and layers 1..L (nats); "
        "no same-family baseline subtracted"
    ),
    "cka_within_mean": "linear CKA of the same layer across seeds within a family (layers 1..L)",
    "cka_gelu_solu_mean": "linear CKA of the same layer between GeLU and SoLU runs (layers 1..L)",
    "generalization_gap_layer": "hook l where stitching group A into group B costs most beyond the B-B baseline",
    "id_acc_group_{a,b}, ood_acc_group_{a,b}": "accuracy of the shortcut-trained (a) / shortcut-free (b) GeLU group",
}


def after_sweep(outcomes: list[Any]) -> Finalized:
    """The analysis across the sweep's programs (`representation_dissimilarity_analysis.analyse`) as experiment-level
    references."""
    return Finalized(reference=_analysis.analyse(outcomes))


EXPERIMENT = Experiment(
    name="representation-dissimilarity",
    description=(
        "Model stitching and CKA between GeLU and SoLU transformers: asymmetry, generalization "
        "localization, more-is-better, CKA across width and depth (Brown et al. 2023)."
    ),
    presets={"smoke": smoke, "quick": quick, "paper": paper},
    probe_class=DissimilarityProbeConfig,
    metrics=METRICS,
    make_evaluate=make_evaluate,
    eval_data=make_eval_data,
    report=_report.sections,
    after_sweep=after_sweep,
    claims=_claims.CLAIMS,
    deviations=_claims.deviations,
)
