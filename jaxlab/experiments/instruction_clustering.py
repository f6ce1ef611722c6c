"""instruction-clustering: task clusters in the hidden states of a causal transformer trained to
follow synthetic instructions (Wu & Varshney, "Transformer-based Causal Language Models Perform
Clustering", 2024).

A 6-block causal softmax transformer learns the `instructions` task (K tasks sharing one input set,
each named by instructions from M small regular grammars; loss on the output tokens only). At every
evaluation, on fixed evaluation sets:
- accuracy on the output tokens for seen instructions (`acc_seen`), unseen strings of the seen
  grammars (`acc_unseen_strings`) and whole unseen grammars (`acc_unseen_distributions`);
- at every layer l (0 = embedding .. 6 = last block), the hidden state of each seen-set sequence at
  `probe.position` is clustered by k-means with k = K and compared with the task labels:
  `ari[layer=l]`, `nmi[layer=l]`; the labels' own grouping: `silhouette[layer=l]`,
  `variance_ratio[layer=l]` (`instruction_clustering_claims.layer_metric`; the tidy tables have the
  metric `ari` and a column `layer`). The default position is the separator that ends the instruction
  (`sep_input`): its state can only hold what the instruction says. At layer 0 (the embedding) it is
  one fixed token at one fixed position, the same for every sequence, so layer 0's ARI there is 0
  by construction (likewise at `sep_output`); a comparison with the embedding needs
  `last_instruction` (the last instruction token, which varies). `sep_output` (the separator before
  the output, whose state must also carry the input, so at the top it groups by output rather than
  by task) is the third choice. ARI is computed on the seen set only: the held-out sets are scored
  for accuracy, not clustered.
From the history: `best_layer` (highest final ARI), `ari_gain` (its final minus step-0 ARI),
`ari_onset_step` / `acc_onset_step` (first evaluated step with best-layer ARI / seen accuracy above
0.5), `ari_acc_corr` (Pearson correlation of best-layer ARI and seen accuracy over the checkpoints
of a run; the report also pools every checkpoint of every run, from the stored history, so a sweep
split into run chunks pools them all), `ari_acc_diff_corr` (the same correlation of the two series'
first differences over the checkpoints: a trend both share is removed; the claim's statistic).
After training, the causal check at each layer (`ablation_acc_drop[layer=l]`, ...) and at the best
layer (`ablation_acc_drop`, ...):
projecting the between-task directions found at the probed position out of the layer's residual
stream at every position (`ablation_acc_drop`) against random directions of the same rank
(`random_ablation_acc_drop`); the same projection at the probed position alone
(`position_ablation_acc_drop`) against random directions there (`random_position_ablation_acc_drop`);
replacing the probed state by another task's centroid (`swap_acc_drop`, `swap_follow_rate`).
The `clusters_used` claim reads the position-only pair at `test_layer` (`*_test_layer`): the best
layer among those where the projection can change a scored prediction
(`instruction_clustering_claims.ablation_test_layers`).

The paper's claims, each with its statistic, control and rule, and this setup's deviations from the
paper are in `instruction_clustering_claims`; the verdicts are computed from the runs.

Presets. `quick` (the default) and `smoke` are CPU sizes. `paper` follows the setup as the issue
describes it (5 shared inputs per task function, M regular-grammar instruction distributions per
task, a 6-layer causal transformer) at GPT-2-like proportions; the paper's exact numbers of tasks,
grammars, vocabulary and model width were not available to us, so those are our choices.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.config import ExperimentConfig, OptimConfig, ProbeConfig, SweepConfig, TrainConfig, _choice
from jaxlab.config import _positive as positive
from jaxlab.experiments import instruction_clustering_report as _report
from jaxlab.experiments.instruction_clustering_claims import CLAIMS, ablation_test_layers, deviations, layer_metric
from jaxlab.metrics.clustering import class_means
from jaxlab.models import residual_hooks, run_with_cache
from jaxlab.models.presets import gpt_model
from jaxlab.probes import clustering as pc
from jaxlab.rng import rng_scope
from jaxlab.stats import diff_corr, onset_steps, pearson
from jaxlab.tasks import Batch
from jaxlab.tasks import instructions as task_lib
from jaxlab.train.experiment import Experiment, Finalized
from jaxlab.train.losses import accuracy, batch_loss

POSITIONS = ("sep_output", "sep_input", "last_instruction")
EVAL_SETS = ("seen", "unseen_strings", "unseen_distributions")
ONSET = 0.5


@dataclass(frozen=True)
class Probe(ProbeConfig):
    """Evaluation settings: the probed position, evaluation-set size, k-means and control sizes."""

    section: ClassVar[str] = "probe"
    position: str = "sep_input"
    n_eval: int = 256
    kmeans_iters: int = 50
    kmeans_restarts: int = 10
    n_random: int = 2
    swap_shift: int = 1
    seed: int = 0

    UNREAD_KEYS: ClassVar[dict[str, str]] = {
        "train.eval_batch_size": "instruction-clustering evaluates on sets of probe.n_eval sequences"
    }

    FIELD_DOCS: ClassVar[dict[str, str]] = {
        "position": "clustered state: separator before the output / after the instruction, or last instruction token",
        "n_eval": "sequences in each evaluation set (seen, unseen strings, unseen distributions)",
        "kmeans_iters": "k-means iterations",
        "kmeans_restarts": "k-means restarts (the best clustering counts)",
        "n_random": "random-direction controls per ablation (their mean is reported)",
        "swap_shift": "swap control: the probed state becomes the centroid of task (k + swap_shift) mod n_tasks",
        "seed": "seed of the probes' PRNG key (k-means, random control directions)",
    }
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"position": POSITIONS}

    def validate(self) -> None:
        n = self._name
        _choice(n("position"), self.position, POSITIONS)
        for name in ("n_eval", "kmeans_iters", "kmeans_restarts", "n_random", "swap_shift"):
            positive(n(name), getattr(self, name))
        positive(n("seed"), self.seed, allow_zero=True)


# -- presets -------------------------------------------------------------------------------------------
def quick() -> ExperimentConfig:
    """The default: 6 blocks of width 64 (4 heads), 8 tasks of 4 + 2 grammars, 300 steps, 8 seeds; CPU minutes."""
    return ExperimentConfig(
        experiment="instruction-clustering",
        preset="quick",
        model=gpt_model(n_layers=6, n_heads=4, d_model=64),
        task=task_lib.Config(
            n_tasks=8,
            n_inputs=5,
            n_output_tokens=16,
            output_len=1,
            keywords_per_task=4,
            n_fillers=24,
            n_distributions=4,
            n_unseen_distributions=2,
            template_len=10,
            n_optional=3,
            n_alternative=3,
            alt_width=3,
        ),
        optim=OptimConfig(
            name="adamw", lr=1e-3, weight_decay=0.01, clip_norm=1.0, schedule="warmup_constant", warmup_steps=100
        ),
        train=TrainConfig(steps=300, batch_size=64, eval_every=10, eval_batch_size=256),
        probe=Probe(),
        sweep=SweepConfig(seeds=tuple(range(8))),
    )


def smoke() -> ExperimentConfig:
    """Seconds on a CPU, for tests: 2 tiny blocks, 3 tasks, short grammars."""
    overrides = {
        "model.n_layers": 2,
        "model.n_heads": 2,
        "model.d_model": 16,
        "model.d_mlp": 32,
        "task.n_tasks": 3,
        "task.n_inputs": 3,
        "task.n_output_tokens": 8,
        "task.keywords_per_task": 2,
        "task.n_fillers": 8,
        "task.n_optional": 1,  # before template_len: every override is validated as it is set
        "task.n_alternative": 2,
        "task.template_len": 5,
        "task.alt_width": 2,
        "task.n_distributions": 2,
        "task.n_unseen_distributions": 1,
        "train.steps": 40,
        "train.batch_size": 32,
        "train.eval_every": 10,
        "optim.lr": 1e-2,
        "optim.warmup_steps": 5,
        "probe.n_eval": 24,
        "probe.kmeans_iters": 5,
        "probe.kmeans_restarts": 2,
        "probe.n_random": 1,
    }
    return quick().derive("smoke", overrides, sweep=SweepConfig(seeds=(0, 1)))


def paper() -> ExperimentConfig:
    """The issue's setup at GPT-2-like proportions: `quick` with width 256 (8 heads), 16 tasks of 8 + 4 grammars and
    longer training."""
    overrides = {
        "model.d_model": 256,
        "model.n_heads": 8,
        "model.d_mlp": 1024,
        "task.n_tasks": 16,
        "task.n_output_tokens": 32,
        "task.keywords_per_task": 6,
        "task.n_fillers": 64,
        "task.n_distributions": 8,
        "task.n_unseen_distributions": 4,
        "task.template_len": 12,
        "task.n_optional": 3,
        "task.n_alternative": 4,
        "train.steps": 10_000,
        "train.batch_size": 256,
        "train.eval_every": 250,
        "optim.lr": 3e-4,
        "optim.warmup_steps": 500,
        "probe.n_eval": 512,
    }
    return quick().derive("paper", overrides)


# -- evaluation ----------------------------------------------------------------------------------------
def n_hidden_layers(cfg: ExperimentConfig) -> int:
    """Hidden-state layers probed: the embedding and the output of every block (n_layers + 1)."""
    return cfg.model.n_layers + 1


def eval_sets(cfg: ExperimentConfig) -> list[str]:
    """The evaluation sets this task config has (a held-out set can be configured away)."""
    names = ["seen"]
    if task_lib.heldout_count(cfg.task) > 0:
        names.append("unseen_strings")
    if cfg.task.n_unseen_distributions > 0:
        names.append("unseen_distributions")
    return names


def make_eval_data(train: Any) -> dict[str, Batch]:
    """Fixed evaluation sets of `probe.n_eval` sequences each, tasks balanced (same for every run)."""
    cfg = train.cfg
    split = {"seen": "train", "unseen_strings": "unseen_strings", "unseen_distributions": "unseen_distributions"}
    with rng_scope():
        keys = jax.random.split(train.eval_key(), len(EVAL_SETS))
        return {
            name: task_lib.sample_split(keys[i], cfg.task, cfg.probe.n_eval, split[name], balanced=True)
            for i, name in enumerate(EVAL_SETS)
            if name in eval_sets(cfg)
        }


def probe_position(cfg: ExperimentConfig) -> int:
    """The model-input position of `probe.position` (`instructions.positions`)."""
    return task_lib.positions(cfg.task)[cfg.probe.position]


def _probe_key(cfg: ExperimentConfig) -> jax.Array:
    return jax.random.key(cfg.probe.seed)


def stacked_eval(data: Mapping[str, Batch]) -> tuple[jax.Array, list[tuple[str, Batch]]]:
    """All evaluation sets' inputs as one batch [S * N, T] (one forward pass), and the sets."""
    sets = list(data.items())
    return jnp.concatenate([b.inputs for _, b in sets]), sets


def make_evaluate(cfg: ExperimentConfig):
    """The on-device evaluation: accuracy on every evaluation set, the seen set's loss, and per layer
    the k-means ARI / NMI of the probed hidden states against the task labels, with the labels'
    silhouette and variance ratio (`probes.clustering.layer_cluster_scores`).
    """
    probe, K = cfg.probe, cfg.task.n_tasks

    def evaluate(train: Any, params: Any, data: Mapping[str, Batch]) -> dict[str, jax.Array]:
        inputs, sets = stacked_eval(data)
        out, reps = pc.hidden_states(train.model, params, inputs, probe_position(train.cfg))
        n = probe.n_eval
        metrics = {}
        for i, (name, batch) in enumerate(sets):
            logits = out[i * n : (i + 1) * n]
            metrics[f"acc_{name}"] = accuracy(logits, batch)
            if name == "seen":
                metrics["eval_loss"] = batch_loss("xent", logits, batch)
        with rng_scope():
            key = _probe_key(train.cfg)
        seen_reps = reps[:, :n]  # "seen" is the first set
        scores = pc.layer_cluster_scores(
            key, seen_reps, data["seen"].aux["task"], K, probe.kmeans_iters, probe.kmeans_restarts
        )
        for metric, values in scores.items():
            for layer in range(reps.shape[0]):
                metrics[layer_metric(metric, layer)] = values[layer]
        return metrics

    return evaluate


# -- from the history ----------------------------------------------------------------------------------
def best_layer_series(history: Mapping[str, np.ndarray], n_layers: int) -> tuple[np.ndarray, np.ndarray]:
    """(best layer [R] by final ARI, that layer's ARI over the checkpoints [R, n])."""
    ari = np.stack([np.asarray(history[layer_metric("ari", layer)]) for layer in range(n_layers)], axis=1)  # [R, L, n]
    best = np.argmax(np.nan_to_num(ari[:, :, -1], nan=-np.inf), axis=1)
    return best, ari[np.arange(ari.shape[0]), best]


def summarize_history(train: Any, history: Mapping[str, np.ndarray], steps: np.ndarray) -> Finalized:
    """The per-run summaries of a run chunk's evaluation history (METRICS defines them)."""
    best, ari_best = best_layer_series(history, n_hidden_layers(train.cfg))
    acc = np.asarray(history["acc_seen"])
    corr = np.array([pearson(a, b) for a, b in zip(ari_best, acc)])
    diff_corrs = np.array([diff_corr(a, b) for a, b in zip(ari_best, acc)])
    per_run = {
        "best_layer": best.astype(np.float64),
        "ari_best_layer": ari_best[:, -1],
        # the rise over training: the best layer's final ARI minus its ARI at the first evaluation
        # (step 0, the initialized network)
        "ari_gain": ari_best[:, -1] - ari_best[:, 0],
        # onsets "exceed" 0.5 (>), as METRICS defines them
        "ari_onset_step": onset_steps(ari_best, steps, ONSET, strict=True),
        "acc_onset_step": onset_steps(acc, steps, ONSET, strict=True),
        "ari_acc_corr": corr,
        # the claim's statistic: a trend both series share does not make it positive
        "ari_acc_diff_corr": diff_corrs,
    }
    # No pooled (all runs) correlation here: this hook sees one run chunk at a time, and a mean of
    # per-chunk correlations is not the pooled one. The report pools every run's checkpoints.
    return Finalized(per_run=per_run)


# -- the causal check after training -------------------------------------------------------------------
def ablation_one_run(train: Any, params: Any, seen: Batch, key: jax.Array) -> dict[str, jax.Array]:
    """The causal checks at every layer [L], for one run, on the seen evaluation set.

    `key` draws the random control bases (the clustering uses the key of `evaluate`).

    U = the between-task directions at the probed position (rank K - 1). `ablation`: accuracy drop
    when the residual stream of the layer is projected off U at every position, about each
    position's mean over the set (x_t <- x_t - U U^T (x_t - mean_b x_t)); `random`: the same for
    random orthonormal bases of the same rank (mean over `probe.n_random`); `position`: the cluster
    projection at the probed position only; `random_position`: the random bases there only (the
    control of `position`); `swap`: the state at the probed position replaced by
    the centroid of task k + swap_shift; `follow`: how often the first output token is then that
    task's. Also the clean accuracy and the ARIs [L] that choose the best layer.
    """
    cfg = train.cfg
    probe, K = cfg.probe, cfg.task.n_tasks
    labels = seen.aux["task"]
    pos = probe_position(cfg)
    positions = pc.position_mask(seen.inputs.shape[1], pos)
    everywhere = jnp.ones_like(positions)
    hooks = residual_hooks(cfg.model.n_layers, embeddings=True)
    out, cache = run_with_cache(train.model, params, seen.inputs, names=hooks)
    clean = accuracy(out, seen)
    xs = jnp.stack([cache[h] for h in hooks])  # [L, B, T, D]
    reps = xs[:, :, pos]
    # the k-means key of `evaluate`: the final ARIs, hence the best layer, are those of the history
    ari = jax.vmap(lambda r: pc.kmeans_ari(_probe_key(cfg), r, labels, K, probe.kmeans_iters, probe.kmeans_restarts))(
        reps
    )
    bases, _ = jax.vmap(lambda r: pc.between_class_basis(r, labels, K))(reps)  # [L, D, R]
    centroids = jax.vmap(lambda r: class_means(r, labels, K))(reps)  # [L, K, D]
    L, D, R = bases.shape
    rand = jax.vmap(lambda k: pc.random_basis(k, D, R))(jax.random.split(key, L * probe.n_random))
    rand = rand.reshape(L, probe.n_random, D, R)
    swapped = pc.shifted_labels(labels, K, probe.swap_shift)
    swap_targets = task_lib.task_targets(cfg.task, swapped, seen.aux["input"])[:, 0]
    first = task_lib.positions(cfg.task)["first_output_target"]

    def per_layer(layer: jax.Array) -> dict[str, jax.Array]:
        x = xs[layer]
        center_TD = x.mean(0)  # each position keeps its mean; at the probed position that is mu

        def ablated_acc(basis: jax.Array, where: jax.Array) -> jax.Array:
            out = pc.projection_ablation(train.model, params, seen.inputs, layer, x, basis, center_TD, where)
            return accuracy(out, seen)

        # one vmapped forward pass: the cluster basis and the random ones everywhere, then the same
        # bases at the probed position only
        n = 1 + probe.n_random
        pair = jnp.concatenate([bases[layer][None], rand[layer]])
        all_bases = jnp.concatenate([pair, pair])
        where = jnp.stack([everywhere] * n + [positions] * n)
        acc = jax.vmap(ablated_acc)(all_bases, where)
        logits = pc.centroid_swap(train.model, params, seen.inputs, layer, centroids[layer], swapped, positions)
        return {
            "ablation": clean - acc[0],
            "random": clean - jnp.mean(acc[1:n]),
            "position": clean - acc[n],
            "random_position": clean - jnp.mean(acc[n + 1 :]),
            "swap": clean - accuracy(logits, seen),
            "follow": jnp.mean(jnp.argmax(logits[:, first], -1) == swap_targets),
        }

    return {"acc_clean": clean, "ari": ari, **jax.lax.map(per_layer, jnp.arange(L))}


@functools.partial(jax.jit, static_argnums=0)
def seen_set(train: Any) -> Batch:
    """The seen evaluation set (as `make_eval_data` draws it), as one compiled program."""
    return make_eval_data(train)["seen"]


@functools.partial(jax.jit, static_argnums=0)
def ablation_all_runs(train: Any, params_R: Any, seeds_R: jax.Array, seen: Batch) -> dict[str, jax.Array]:
    """The causal checks of every run (params and seeds [R]) on the seen set, as one program; the
    random control bases of run r come from `seeds[r]`. `train` is static (as in `seen_set`): every
    run chunk of a program reuses one executable (JAX's jit cache); no array is kept between calls.
    (The seen set is an argument, not drawn inside: as a constant of this program XLA would sum the
    accuracies in another order.)"""
    with rng_scope():  # the random draws are traced here
        key = jax.random.fold_in(_probe_key(train.cfg), 1)

        def one(params: Any, seed: jax.Array) -> dict[str, jax.Array]:
            return ablation_one_run(train, params, seen, jax.random.fold_in(key, seed))  # random bases per seed

        return jax.vmap(one)(params_R, seeds_R)


def select_test_layer(ari_RL: np.ndarray, candidates: tuple[int, ...]) -> np.ndarray:
    """[R] float: per run, the layer of highest final ARI among `candidates` (ties: the shallowest);
    NaN for every run when there is no candidate."""
    ari = np.asarray(ari_RL, np.float64)
    if not candidates:
        return np.full(ari.shape[0], np.nan)
    cand = np.asarray(candidates, np.int64)
    return cand[np.argmax(np.nan_to_num(ari[:, cand], nan=-np.inf), axis=1)].astype(np.float64)


def finalize(train: Any, state: Any, hparams: Mapping[str, Any], seeds: np.ndarray) -> Finalized:
    """The causal checks of a run chunk (METRICS defines them), at each run's best layer, its
    `test_layer` and every layer."""
    res = ablation_all_runs(train, state.params, jnp.asarray(seeds, jnp.uint32), seen_set(train))
    res = {k: np.asarray(v) for k, v in jax.device_get(res).items()}
    R, L = res["ari"].shape
    best = np.argmax(res["ari"], axis=1)
    tested = select_test_layer(res["ari"], ablation_test_layers(train.cfg))
    names = {
        "ablation": "ablation_acc_drop",
        "random": "random_ablation_acc_drop",
        "position": "position_ablation_acc_drop",
        "random_position": "random_position_ablation_acc_drop",
        "swap": "swap_acc_drop",
        "follow": "swap_follow_rate",
    }
    per_run = {name: res[k][np.arange(R), best] for k, name in names.items()}  # at each run's best layer
    # the clusters_used test: the best layer where the projection at the position can change a scored output
    per_run["test_layer"] = tested
    have = np.isfinite(tested)
    at = np.where(have, tested, 0).astype(np.int64)
    for k in ("position", "random_position"):
        per_run[f"{names[k]}_test_layer"] = np.where(have, res[k][np.arange(R), at], np.nan)
    for layer in range(L):
        per_run.update({layer_metric(name, layer): res[k][:, layer] for k, name in names.items()})
    return Finalized(per_run=per_run)


# -- report --------------------------------------------------------------------------------------------
METRICS = {
    "train_loss": "cross-entropy (nats) of the output tokens, mean over the steps since the last evaluation",
    "eval_loss": "cross-entropy (nats) of the output tokens on the seen evaluation set",
    "acc_seen": "fraction of output tokens predicted (arg-max) correctly, seen grammars, training strings",
    "acc_unseen_strings": "the same on held-out strings of the seen grammars",
    "acc_unseen_distributions": "the same on strings of held-out grammars",
    "ari[layer=l]": "adjusted Rand index between k-means clusters (k = n_tasks, k-means++, best of "
    "probe.kmeans_restarts) of the layer-l hidden states at probe.position and the task labels (seen set); "
    "layer 0 = embedding, l = output of block l (tidy tables: metric ari, column layer)",
    "nmi[layer=l]": "normalized mutual information (arithmetic mean of the entropies) of the same partitions",
    "silhouette[layer=l]": "silhouette score of the layer-l hidden states grouped by task label (Euclidean)",
    "variance_ratio[layer=l]": "between-task over within-task variance of the layer-l hidden states",
    "best_layer": "the layer with the highest final ARI (ties: the shallowest)",
    "ari_best_layer": "final ARI at the best layer",
    "ari_gain": "final ARI at the best layer minus that layer's ARI at the first evaluation (step 0)",
    "ari_onset_step": "first evaluated step at which the best layer's ARI exceeds 0.5 (none: missing)",
    "acc_onset_step": "first evaluated step at which acc_seen exceeds 0.5 (none: missing)",
    "ari_acc_corr": "Pearson correlation of the best layer's ARI and acc_seen over the run's checkpoints "
    "(the report also gives the correlation pooled over every checkpoint of every run)",
    "ari_acc_diff_corr": "Pearson r over the run's checkpoints n of the first differences dA_n = ARI_{n+1} - "
    "ARI_n (best layer) and dY_n = acc_seen_{n+1} - acc_seen_n: sum (dA - mean dA)(dY - mean dY) / "
    "sqrt(sum (dA - mean dA)^2 sum (dY - mean dY)^2); NaN with fewer than 3 differences",
    "ablation_acc_drop": "acc_seen minus the accuracy when the between-task directions (span of the centred "
    "task means at probe.position, rank n_tasks - 1) are projected out of the residual stream of the best layer "
    "at every position (about each position's mean over the evaluation set)",
    "random_ablation_acc_drop": "the same for random orthonormal directions of the same rank (mean over "
    "probe.n_random draws)",
    "position_ablation_acc_drop": "the cluster projection at probe.position only",
    "random_position_ablation_acc_drop": "the random projections (same rank, mean over probe.n_random draws) at "
    "probe.position only: the control of position_ablation_acc_drop",
    "swap_acc_drop": "acc_seen minus the accuracy with the hidden state at the best layer and probe.position "
    "replaced by the centroid of task (k + probe.swap_shift) mod n_tasks",
    "swap_follow_rate": "fraction of first output tokens that then equal the swapped-in task's output",
    "ablation_acc_drop[layer=l], ..., swap_follow_rate[layer=l]": "the ablation metrics at layer l instead of the "
    "best layer (tidy tables: the metric with column layer; the best layer's value has no layer)",
    "test_layer": "argmax of the final ARI over the layers where a projection at probe.position can change a "
    "scored prediction and the probed state varies (instruction_clustering_claims.ablation_test_layers: not the "
    "last block unless probe.position's own prediction is scored; not the embedding at a separator)",
    "position_ablation_acc_drop_test_layer": "position_ablation_acc_drop[layer=l] at l = test_layer",
    "random_position_ablation_acc_drop_test_layer": "random_position_ablation_acc_drop[layer=l] at l = test_layer",
}


EXPERIMENT = Experiment(
    name="instruction-clustering",
    description=(
        "Task clusters in the hidden states of a causal transformer trained on synthetic instructions "
        "(Wu & Varshney 2024)."
    ),
    presets={"smoke": smoke, "quick": quick, "paper": paper},
    probe_class=Probe,
    metrics=METRICS,
    make_evaluate=make_evaluate,
    eval_data=make_eval_data,
    finalize=finalize,
    from_history=summarize_history,
    report=_report.sections,
    claims=CLAIMS,
    deviations=deviations,
)
