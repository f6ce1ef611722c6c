"""instruction-clustering: task clusters in the hidden states of a causal transformer trained to
follow synthetic instructions (Wu & Varshney, "Transformer-based Causal Language Models Perform
Clustering", 2024).

A 6-block causal softmax transformer learns the `instructions` task (K tasks sharing one input set,
each named by instructions from M small regular grammars; loss on the output tokens only). At every
evaluation, on four fixed evaluation sets of `probe.n_eval` sequences (`seen`: the training
distribution; `validation`: a second, independent draw of it; `unseen_strings`: held-out strings of the
seen grammars; `unseen_distributions`: strings of held-out grammars):
- accuracy on the output tokens of each set (`acc_seen`, `acc_validation`, ...);
- in every cell (probe position p in `probe.positions`, layer l: 0 = embedding .. 6 = last block, set s),
  k-means with k = K on the hidden states at p, scored against the task labels (`ari[layer=l,position=p,
  set=s]`) and against the labels permuted across the set's sequences (`ari_shuffled[...]`, the floor:
  same states, same clusters); on the seen set also `nmi`, and the labels' own grouping `silhouette`,
  `variance_ratio` (`instruction_clustering_claims.cell_metric`; the tidy tables have the metric `ari` and
  columns `layer`, `position`, `set`). The positions: `last_instruction` (the last instruction token, which
  varies with the string), `last_input` (the input's last token, which all tasks share), `sep_input` (the
  separator that ends the instruction) and `sep_output` (the separator before the output). At a separator
  the embedding is one fixed token at one fixed position, the same for every sequence, so layer 0's ARI there
  is 0 by construction; at the other two it is measured.
From the history: the best cell (`best_position`, `best_layer`: the (position, block) of highest final
seen-set ARI, the embedding left out), `ari_best_layer`, `ari_gain` (its final minus step-0 ARI),
`ari_onset_step` / `acc_onset_step` (first evaluated step with best-cell ARI / seen accuracy above 0.5),
`ari_acc_corr` (Pearson correlation of best-cell ARI and seen accuracy over the checkpoints of a run; the
report also pools every checkpoint of every run, from the stored history), `ari_acc_diff_corr` (the same
correlation of the two series' first differences: a trend both share is removed; the claim's statistic).
After training, the causal check in every (position, layer) cell (`ablation_acc_drop[layer=l,position=p]`,
...): projecting the between-task directions of that cell (span of the centred task centroids, rank K - 1)
out of the layer's residual stream at every position (`ablation_acc_drop`) against random directions of
the same rank (`random_ablation_acc_drop`); the same projection at p alone (`position_ablation_acc_drop`)
against random directions there (`random_position_ablation_acc_drop`); replacing the state at p by another
task's centroid (`swap_acc_drop`, `swap_follow_rate`). Each position's test at its own best testable layer
(`*_test_layer[position=p]`), and the run's test cell (`test_position`, `test_layer`): the cell of highest
seen-set ARI among those where a projection at one position can change a scored prediction
(`instruction_clustering_claims.ablation_test_cells`); the `clusters_used` claim reads it.

The paper's claims, each with its statistic, control and rule, and this setup's deviations from the
paper are in `instruction_clustering_claims`; the verdicts are computed from the runs.

Presets. `quick` (the default) and `smoke` are CPU sizes, with random lookup tables as the task functions.
`paper` is the setup at GPT-2-like proportions (a 6-layer causal transformer of width 256, 16 table tasks of
8 + 4 grammars). `paper-sequence` is `paper` with tasks closer to the paper's: multi-token sequence rules
(copy, reverse, sort, shift, map; `task.sequence_tasks`) and held-out input sequences (`acc_unseen_inputs`).
The paper's exact numbers of tasks, grammars, vocabulary and model width were not available to us, so
those are our choices.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.config import ExperimentConfig, OptimConfig, ProbeConfig, SweepConfig, TrainConfig, _choice
from jaxlab.config import _positive as positive
from jaxlab.errors import ConfigError
from jaxlab.experiments import instruction_clustering_report as _report
from jaxlab.experiments.instruction_clustering_claims import (
    CLAIMS,
    EVAL_SETS,
    POSITIONS,
    ablation_test_cells,
    ablation_test_layers,
    at_position,
    cell_metric,
    deviations,
)
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

ONSET = 0.5
# the split each evaluation set draws from; "validation" is a second draw of the training split
SPLIT_OF = {
    "seen": "train",
    "validation": "train",
    "unseen_strings": "unseen_strings",
    "unseen_distributions": "unseen_distributions",
    "unseen_inputs": "unseen_inputs",
}
UNSEEN_INPUTS_KEY = 99  # folded into the evaluation key for the unseen-input set (scored for accuracy only)


@dataclass(frozen=True)
class Probe(ProbeConfig):
    """Evaluation settings: the probed positions, evaluation-set size, k-means and control sizes."""

    section: ClassVar[str] = "probe"
    positions: tuple[str, ...] = ("last_instruction", "last_input", "sep_input")
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
        "positions": "clustered states: the last instruction token, the last input token, the separator after the "
        "instruction, the separator before the output",
        "n_eval": "sequences in each evaluation set (seen, validation, unseen strings, unseen distributions)",
        "kmeans_iters": "k-means iterations",
        "kmeans_restarts": "k-means restarts (the best clustering counts)",
        "n_random": "random-direction controls per ablation (their mean is reported)",
        "swap_shift": "swap control: the probed state becomes the centroid of task (k + swap_shift) mod n_tasks",
        "seed": "seed of the probes' PRNG key (k-means, shuffled labels, random control directions)",
    }

    def validate(self) -> None:
        n = self._name
        if not self.positions:
            raise ConfigError(n("positions"), "needs at least one position", POSITIONS)
        for position in self.positions:
            _choice(n("positions"), position, POSITIONS)
        if len(set(self.positions)) != len(self.positions):
            raise ConfigError(n("positions"), f"positions repeat: {list(self.positions)}", POSITIONS)
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
    longer training (random lookup tables; the `clustering` training benchmark measures this preset)."""
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


def paper_sequence() -> ExperimentConfig:
    """`paper` with tasks closer to the paper's: the five sequence rules (copy, reverse, sort, shift, map) of 5-token
    inputs over 8 symbols, 5-token outputs, 10% of the input sequences held out (`acc_unseen_inputs`); a 6-layer
    causal transformer of width 256; accelerator hours, not run here."""
    overrides = {
        "task.n_tasks": 5,  # the sizes first: every override is validated as it is set
        "task.n_inputs": 8,
        "task.n_output_tokens": 8,
        "task.input_len": 5,
        "task.output_len": 5,
        "task.sequence_tasks": task_lib.SEQUENCE_TASKS,
        "task.heldout_input_frac": 0.1,
    }
    return paper().derive("paper-sequence", overrides)


# -- evaluation ----------------------------------------------------------------------------------------
def n_hidden_layers(cfg: ExperimentConfig) -> int:
    """Hidden-state layers probed: the embedding and the output of every block (n_layers + 1)."""
    return cfg.model.n_layers + 1


def eval_sets(cfg: ExperimentConfig) -> list[str]:
    """The evaluation sets this task config has (a held-out set can be configured away), in `EVAL_SETS` order."""
    names = ["seen", "validation"]
    if task_lib.heldout_count(cfg.task) > 0:
        names.append("unseen_strings")
    if cfg.task.n_unseen_distributions > 0:
        names.append("unseen_distributions")
    if task_lib.heldout_input_count(cfg.task) > 0:
        names.append("unseen_inputs")  # accuracy only: not clustered
    return names


def make_eval_data(train: Any) -> dict[str, Batch]:
    """Fixed evaluation sets of `probe.n_eval` sequences each, tasks balanced (same for every run)."""
    cfg = train.cfg
    with rng_scope():
        key = train.eval_key()
        keys = jax.random.split(key, len(EVAL_SETS))
        data = {
            name: task_lib.sample_split(keys[i], cfg.task, cfg.probe.n_eval, SPLIT_OF[name], balanced=True)
            for i, name in enumerate(EVAL_SETS)
            if name in eval_sets(cfg)
        }
        if "unseen_inputs" in eval_sets(cfg):
            data["unseen_inputs"] = task_lib.sample_split(
                jax.random.fold_in(key, UNSEEN_INPUTS_KEY), cfg.task, cfg.probe.n_eval, "unseen_inputs", balanced=True
            )
        return data


def probe_positions(cfg: ExperimentConfig) -> tuple[int, ...]:
    """The model-input positions of `probe.positions` (`instructions.positions`), in that order."""
    table = task_lib.positions(cfg.task)
    return tuple(table[p] for p in cfg.probe.positions)


def _probe_key(cfg: ExperimentConfig) -> jax.Array:
    return jax.random.key(cfg.probe.seed)


def shuffled_labels(cfg: ExperimentConfig, labels_N: jax.Array, set_index: int) -> jax.Array:
    """The task labels of evaluation set `set_index` permuted across its sequences (the ARI floor's labels; one
    fixed permutation per set, from the probe seed)."""
    with rng_scope():
        key = jax.random.fold_in(jax.random.fold_in(_probe_key(cfg), 2), set_index)
    return pc.permuted_labels(key, labels_N)


def stacked_eval(data: Mapping[str, Batch]) -> tuple[jax.Array, list[tuple[str, Batch]]]:
    """All evaluation sets' inputs as one batch [S * N, T] (one forward pass), and the sets."""
    sets = list(data.items())
    return jnp.concatenate([b.inputs for _, b in sets]), sets


def seen_cell_scores(cfg: ExperimentConfig, reps_LNPD: jax.Array, labels_N: jax.Array) -> dict[str, jax.Array]:
    """The seen set's cluster scores of every (position, layer) cell: {metric: [P, L]}
    (`probes.clustering.cell_cluster_scores`; the same program in `evaluate` and in the causal check, so both
    choose the same best cell)."""
    L, N, P, D = reps_LNPD.shape
    probe = cfg.probe
    cells_CND = jnp.transpose(reps_LNPD, (2, 0, 1, 3)).reshape(P * L, N, D)  # c = p * L + l
    shuffled = shuffled_labels(cfg, labels_N, 0)
    with rng_scope():
        key = _probe_key(cfg)
    scores = pc.cell_cluster_scores(
        key, cells_CND, labels_N, shuffled, cfg.task.n_tasks, probe.kmeans_iters, probe.kmeans_restarts
    )
    return {k: v.reshape(P, L) for k, v in scores.items()}


def make_evaluate(cfg: ExperimentConfig):
    """The on-device evaluation: accuracy on every evaluation set, the seen set's loss, and per (position,
    layer) cell the k-means ARI of the probed hidden states against the task labels and against the labels
    shuffled (every set), with NMI, silhouette and variance ratio on the seen set."""
    probe, K = cfg.probe, cfg.task.n_tasks

    def evaluate(train: Any, params: Any, data: Mapping[str, Batch]) -> dict[str, jax.Array]:
        inputs, sets = stacked_eval(data)
        out, reps = pc.hidden_states_at(train.model, params, inputs, jnp.asarray(probe_positions(train.cfg)))
        n, L = probe.n_eval, reps.shape[0]
        metrics = {}
        for i, (name, batch) in enumerate(sets):
            logits = out[i * n : (i + 1) * n]
            metrics[f"acc_{name}"] = accuracy(logits, batch)
            if name == "seen":
                metrics["eval_loss"] = batch_loss("xent", logits, batch)
        seen = seen_cell_scores(train.cfg, reps[:, :n], data["seen"].aux["task"])
        for metric, values in seen.items():
            metrics.update(_named_cells(metric, values, probe.positions, "seen"))
        others = [(i, name, batch) for i, (name, batch) in enumerate(sets) if name in EVAL_SETS[1:]]
        if others:  # one k-means program for every other set's cells: c = (set, position, layer)
            with rng_scope():
                key = _probe_key(train.cfg)
            P, D = reps.shape[2], reps.shape[3]
            cells_CND = jnp.concatenate(
                [jnp.transpose(reps[:, i * n : (i + 1) * n], (2, 0, 1, 3)).reshape(P * L, n, D) for i, _, _ in others]
            )
            labels = [b.aux["task"] for _, _, b in others]
            shuffled = [
                shuffled_labels(train.cfg, lab, EVAL_SETS.index(name)) for lab, (_, name, _) in zip(labels, others)
            ]
            per_cell = lambda xs: jnp.repeat(jnp.stack(xs), P * L, axis=0)  # [S' * P * L, N]
            scores = pc.cell_aris(
                key, cells_CND, per_cell(labels), per_cell(shuffled), K, probe.kmeans_iters, probe.kmeans_restarts
            )
            for metric, values in scores.items():
                values = values.reshape(len(others), P, L)
                for j, (_, name, _) in enumerate(others):
                    metrics.update(_named_cells(metric, values[j], probe.positions, name))
        return metrics

    return evaluate


# -- from the history ----------------------------------------------------------------------------------
def cell_order(cfg: Any) -> list[tuple[str, int]]:
    """The (position, block) cells a best cell is chosen from, in tie order: sorted by position name, then
    layer (as `instruction_clustering_claims.best_cell`); the embedding is left out."""
    return sorted((p, layer) for p in cfg.probe.positions for layer in range(1, cfg.model.n_layers + 1))


def best_cell_series(history: Mapping[str, np.ndarray], cfg: Any) -> tuple[np.ndarray, np.ndarray]:
    """(index into `cell_order` [R] of the best cell by final seen-set ARI, that cell's ARI over the
    checkpoints [R, n])."""
    order = cell_order(cfg)
    ari = np.stack([np.asarray(history[cell_metric("ari", layer, p, "seen")]) for p, layer in order], axis=1)
    best = np.argmax(np.nan_to_num(ari[:, :, -1], nan=-np.inf), axis=1)
    return best, ari[np.arange(ari.shape[0]), best]


def summarize_history(train: Any, history: Mapping[str, np.ndarray], steps: np.ndarray) -> Finalized:
    """The per-run summaries of a run chunk's evaluation history (METRICS defines them)."""
    cfg = train.cfg
    order = cell_order(cfg)
    best, ari_best = best_cell_series(history, cfg)
    acc = np.asarray(history["acc_seen"])
    corr = np.array([pearson(a, b) for a, b in zip(ari_best, acc)])
    diff_corrs = np.array([diff_corr(a, b) for a, b in zip(ari_best, acc)])
    per_run = {
        "best_layer": np.array([order[b][1] for b in best], np.float64),
        "best_position": np.array([cfg.probe.positions.index(order[b][0]) for b in best], np.float64),
        "ari_best_layer": ari_best[:, -1],
        # the rise over training: the best cell's final ARI minus its ARI at the first evaluation
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
ABLATIONS = {
    "ablation": "ablation_acc_drop",
    "random": "random_ablation_acc_drop",
    "position": "position_ablation_acc_drop",
    "random_position": "random_position_ablation_acc_drop",
    "swap": "swap_acc_drop",
    "follow": "swap_follow_rate",
}


def ablation_one_run(train: Any, params: Any, seen: Batch, key: jax.Array) -> dict[str, jax.Array]:
    """The causal checks at every (position, layer) cell [P, L], for one run, on the seen evaluation set.

    `key` draws the random control bases (the clustering uses the key of `evaluate`).

    At cell (p, l): U = the between-task directions of the layer-l states at position p (span of the centred
    task centroids, rank K - 1). `ablation`: accuracy drop when the layer's residual stream is projected off U
    at every position, about each position's mean over the set (x_t <- x_t - U U^T (x_t - mean_b x_t));
    `random`: the same for random orthonormal bases of the same rank (mean over `probe.n_random`);
    `position`: the cluster projection at p only; `random_position`: the random bases at p only (the control
    of `position`); `swap`: the state at p replaced by the centroid of task k + swap_shift; `follow`: how
    often the first output token is then that task's. Also the clean accuracy and the seen-set ARIs [P, L]
    that choose the best cell (`seen_cell_scores`, the program of `evaluate`).
    """
    cfg = train.cfg
    probe, K = cfg.probe, cfg.task.n_tasks
    labels = seen.aux["task"]
    pos_P = jnp.asarray(probe_positions(cfg))
    T = seen.inputs.shape[1]
    everywhere = jnp.ones((T,))
    hooks = residual_hooks(cfg.model.n_layers, embeddings=True)
    out, cache = run_with_cache(train.model, params, seen.inputs, names=hooks)
    clean = accuracy(out, seen)
    xs = jnp.stack([cache[h] for h in hooks])  # [L, B, T, D]
    L, D = xs.shape[0], xs.shape[-1]
    P = pos_P.shape[0]
    ari = seen_cell_scores(cfg, xs[:, :, pos_P], labels)["ari"]  # [P, L]
    R = K - 1
    rand = jax.vmap(lambda k: pc.random_basis(k, D, R))(jax.random.split(key, P * L * probe.n_random))
    rand = rand.reshape(P * L, probe.n_random, D, R)
    swapped = pc.shifted_labels(labels, K, probe.swap_shift)
    swap_targets = task_lib.task_targets(cfg.task, swapped, seen.aux["input"])[:, 0]
    first = task_lib.positions(cfg.task)["first_output_target"]

    def per_cell(c: jax.Array) -> dict[str, jax.Array]:
        p, layer = c // L, c % L
        x = xs[layer]
        reps = x[:, pos_P[p]]
        basis, _ = pc.between_class_basis(reps, labels, K)
        centroids = class_means(reps, labels, K)
        at_p = pc.position_mask(T, pos_P[p])
        center_TD = x.mean(0)  # each position keeps its mean; at the probed position that is mu

        def ablated_acc(basis: jax.Array, where: jax.Array) -> jax.Array:
            out = pc.projection_ablation(train.model, params, seen.inputs, layer, x, basis, center_TD, where)
            return accuracy(out, seen)

        # one vmapped forward pass: the cluster basis and the random ones everywhere, then the same
        # bases at the probed position only
        n = 1 + probe.n_random
        pair = jnp.concatenate([basis[None], rand[c]])
        all_bases = jnp.concatenate([pair, pair])
        where = jnp.stack([everywhere] * n + [at_p] * n)
        acc = jax.vmap(ablated_acc)(all_bases, where)
        logits = pc.centroid_swap(train.model, params, seen.inputs, layer, centroids, swapped, at_p)
        return {
            "ablation": clean - acc[0],
            "random": clean - jnp.mean(acc[1:n]),
            "position": clean - acc[n],
            "random_position": clean - jnp.mean(acc[n + 1 :]),
            "swap": clean - accuracy(logits, seen),
            "follow": jnp.mean(jnp.argmax(logits[:, first], -1) == swap_targets),
        }

    res = jax.lax.map(per_cell, jnp.arange(P * L))
    return {"acc_clean": clean, "ari": ari, **{k: v.reshape(P, L) for k, v in res.items()}}


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


def select_test_cell(ari_RPL: np.ndarray, candidates: tuple[tuple[int, int], ...]) -> tuple[np.ndarray, np.ndarray]:
    """([R] position index, [R] layer), both float: per run, the cell of highest final ARI among `candidates`
    ((position index, layer) pairs; ties: the first candidate); NaN for every run when there is none."""
    ari = np.asarray(ari_RPL, np.float64)
    R = ari.shape[0]
    if not candidates:
        return np.full(R, np.nan), np.full(R, np.nan)
    cand = np.asarray(candidates, np.int64)  # [C, 2]
    values = np.nan_to_num(ari[:, cand[:, 0], cand[:, 1]], nan=-np.inf)  # [R, C]
    pick = cand[np.argmax(values, axis=1)]
    return pick[:, 0].astype(np.float64), pick[:, 1].astype(np.float64)


def _named_cells(metric: str, values_PL: Any, positions: Sequence[str], set_name: str) -> dict[str, Any]:
    """{`cell_metric(metric, layer, position, set_name)`: values_PL[p, layer]} for every position p and layer."""
    return {
        cell_metric(metric, layer, position, set_name): values_PL[p, layer]
        for p, position in enumerate(positions)
        for layer in range(values_PL.shape[1])
    }


def finalize(train: Any, state: Any, hparams: Mapping[str, Any], seeds: np.ndarray) -> Finalized:
    """The causal checks of a run chunk (METRICS defines them): at every (position, layer) cell, at each
    position's own test layer, and at the run's test cell (`test_position`, `test_layer`)."""
    cfg = train.cfg
    res = ablation_all_runs(train, state.params, jnp.asarray(seeds, jnp.uint32), seen_set(train))
    res = {k: np.asarray(v) for k, v in jax.device_get(res).items()}
    R, P, L = res["ari"].shape
    rows = np.arange(R)
    per_run: dict[str, np.ndarray] = {}
    for p, position in enumerate(cfg.probe.positions):
        for layer in range(L):
            per_run.update({cell_metric(name, layer, position): res[k][:, p, layer] for k, name in ABLATIONS.items()})
        # each position's own test: its best layer where a projection there can change a scored output
        _, layer_p = select_test_cell(res["ari"], tuple((p, layer) for layer in ablation_test_layers(cfg, position)))
        have = np.isfinite(layer_p)
        at = np.where(have, layer_p, 0).astype(np.int64)
        per_run[at_position("test_layer", position)] = layer_p
        for k in ("position", "random_position"):
            per_run[at_position(f"{ABLATIONS[k]}_test_layer", position)] = np.where(have, res[k][rows, p, at], np.nan)
    # the clusters_used test: the best cell where the projection at one position can change a scored output
    pos_t, layer_t = select_test_cell(res["ari"], ablation_test_cells(cfg))
    per_run["test_position"], per_run["test_layer"] = pos_t, layer_t
    have = np.isfinite(layer_t)
    pi, li = (np.where(have, v, 0).astype(np.int64) for v in (pos_t, layer_t))
    for k in ("position", "random_position"):
        per_run[f"{ABLATIONS[k]}_test_layer"] = np.where(have, res[k][rows, pi, li], np.nan)
    return Finalized(per_run=per_run)


# -- report --------------------------------------------------------------------------------------------
CELL = "[layer=l,position=p,set=s]"
METRICS = {
    "train_loss": "cross-entropy (nats) of the output tokens, mean over the steps since the last evaluation",
    "eval_loss": "cross-entropy (nats) of the output tokens on the seen evaluation set",
    "acc_seen": "fraction of output tokens predicted (arg-max) correctly, seen grammars, training strings",
    "acc_validation": "the same on the validation set (a second draw of the seen set's distribution)",
    "acc_unseen_strings": "the same on held-out strings of the seen grammars",
    "acc_unseen_distributions": "the same on strings of held-out grammars",
    "acc_unseen_inputs": "the same on held-out input sequences with seen instructions (task.sequence_tasks "
    "with task.heldout_input_frac > 0; not clustered)",
    f"ari{CELL}": "adjusted Rand index between k-means clusters (k = n_tasks, k-means++, best of "
    "probe.kmeans_restarts) of the layer-l hidden states at position p of evaluation set s and the task labels; "
    "layer 0 = embedding, l = output of block l; s = seen, validation, unseen_strings, unseen_distributions "
    "(tidy tables: metric ari, columns layer, position, set)",
    f"ari_shuffled{CELL}": "the ARI of the same clusters against the task labels permuted across the set's "
    "sequences (one fixed permutation per set): the floor of ari",
    "nmi[layer=l,position=p,set=seen]": "normalized mutual information (arithmetic mean of the entropies) of the "
    "seen set's clusters and labels",
    "silhouette[layer=l,position=p,set=seen]": "silhouette score of the hidden states grouped by task label "
    "(Euclidean)",
    "variance_ratio[layer=l,position=p,set=seen]": "between-task over within-task variance of the hidden states",
    "best_layer, best_position": "the (position, block) of highest final seen-set ARI, the embedding left out "
    "(ties: first by position name, then the shallowest; best_position indexes probe.positions)",
    "ari_best_layer": "final seen-set ARI at the best cell",
    "ari_gain": "final ARI at the best cell minus that cell's ARI at the first evaluation (step 0)",
    "ari_onset_step": "first evaluated step at which the best cell's ARI exceeds 0.5 (none: missing)",
    "acc_onset_step": "first evaluated step at which acc_seen exceeds 0.5 (none: missing)",
    "ari_acc_corr": "Pearson correlation of the best cell's ARI and acc_seen over the run's checkpoints "
    "(the report also gives the correlation pooled over every checkpoint of every run)",
    "ari_acc_diff_corr": "Pearson r over the run's checkpoints n of the first differences dA_n = ARI_{n+1} - "
    "ARI_n (best cell) and dY_n = acc_seen_{n+1} - acc_seen_n: sum (dA - mean dA)(dY - mean dY) / "
    "sqrt(sum (dA - mean dA)^2 sum (dY - mean dY)^2); NaN with fewer than 3 differences",
    "ablation_acc_drop[layer=l,position=p]": "acc_seen minus the accuracy when the between-task directions (span "
    "of the centred task means of the layer-l states at position p, rank n_tasks - 1) are projected out of the "
    "layer-l residual stream at every position (about each position's mean over the evaluation set)",
    "random_ablation_acc_drop[layer=l,position=p]": "the same for random orthonormal directions of the same rank "
    "(mean over probe.n_random draws)",
    "position_ablation_acc_drop[layer=l,position=p]": "the cluster projection at position p only",
    "random_position_ablation_acc_drop[layer=l,position=p]": "the random projections (same rank, mean over "
    "probe.n_random draws) at position p only: the control of position_ablation_acc_drop",
    "swap_acc_drop[layer=l,position=p]": "acc_seen minus the accuracy with the layer-l hidden state at p replaced "
    "by the centroid of task (k + probe.swap_shift) mod n_tasks",
    "swap_follow_rate[layer=l,position=p]": "fraction of first output tokens that then equal the swapped-in "
    "task's output",
    "test_layer[position=p]": "argmax of the final seen-set ARI at p over the layers where a projection at p can "
    "change a scored prediction and the state varies (instruction_clustering_claims.ablation_test_layers: not the "
    "last block unless p's own prediction is scored; not the embedding at a separator)",
    "position_ablation_acc_drop_test_layer[position=p], random_position_ablation_acc_drop_test_layer[position=p]": (
        "the position-only pair at p and test_layer[position=p]"
    ),
    "test_position, test_layer": "the cell of highest final seen-set ARI over every position's test layers "
    "(test_position indexes probe.positions): where the clusters_used claim is tested",
    "position_ablation_acc_drop_test_layer, random_position_ablation_acc_drop_test_layer": "the position-only "
    "pair at the test cell",
}


EXPERIMENT = Experiment(
    name="instruction-clustering",
    description=(
        "Task clusters in the hidden states of a causal transformer trained on synthetic instructions "
        "(Wu & Varshney 2024)."
    ),
    presets={"smoke": smoke, "quick": quick, "paper": paper, "paper-sequence": paper_sequence},
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
