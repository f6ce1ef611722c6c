"""The claims of Wu & Varshney, "Transformer-based Causal Language Models Perform Clustering"
(arXiv 2402.12151, 2024; NAACL 2025 Findings), as instruction-clustering tests them, and how a
config's setup differs from the paper's.

Where the claims come from. The paper trains a 6-layer causal transformer from scratch on synthetic
instruction-following data (tasks = input->output mappings sharing their inputs, each named by
instructions drawn from several regular-expression distributions), runs k-means on hidden states
and scores the clusters against task identity with the adjusted Rand index (ARI), per layer, over
training, on a training and a validation set. Its findings (abstract and the ARI-over-training
figure): task clusters form in the hidden space and sharpen during training until they saturate;
deeper layers cluster more than the embedding layer (layer 0), which stays flat; the clustering
"assists the model in handling unseen instances". We could not read the paper's per-layer ARI
values from its text or a released code base, so every `paper_value` is None (qualitative).

The measurements are cells: an ARI per (probe position, layer, evaluation set), `cell_metric`
(`ari[layer=3,position=sep_input,set=seen]`), each with its shuffled-label floor (`ari_shuffled`:
the same clusters scored against the task labels permuted across sequences). A run's best cell
(`best_cell`) is the (position, block) of highest final seen-set ARI; the embedding is left out of
it (at the last instruction token the embedding is the token itself, a task keyword in some
strings, so its grouping is partly set by how the task is built).

Thresholds, fixed before any jaxlab number was compared with them:
- differences that the paper says are positive (a rise over training, a rise with depth, the last
  layer over the embedding) use `Above(0)`: the 95% interval of the per-seed difference must
  exclude 0 on the claimed side;
- `clusters_form` and the held-out sets (`clusters_on_validation`, `clusters_on_unseen_strings`,
  `clusters_on_unseen_instructions`): ARI minus its shuffled-label floor above 0.5, half-way from
  chance to a perfect partition; the experiment's own onset threshold. `clusters_form` subtracts
  the best floor over the same cells (the statistic is a maximum over cells, so is its control);
  the held-out sets are read at the seen set's best cell, so a held-out set does not choose its own;
- `deeper_than_embedding_at_<position>`: one claim per probe position. At a separator
  (`sep_input`, `sep_output`) the embedding-layer state is one fixed token at one fixed position in
  every sequence, its ARI 0 by construction: untested there. At `last_instruction` the embedding
  varies with the task's keywords; at `last_input` it is the input token, which all tasks share;
- `ari_tracks_accuracy`: the Pearson r, over a run's checkpoints, of the first differences of the
  best cell's ARI and of the seen accuracy (`ari_acc_diff_corr`), `Above(0)`. The r of the two
  series themselves cannot fail: both rise during training, and a common trend alone makes it
  positive. Differencing removes a trend shared as a linear function of the checkpoint index (it
  becomes a constant, which r ignores); what is left asks whether the two move in the same
  checkpoint intervals. A shared non-linear trend (both saturating in the same intervals) still
  pushes r above 0: that is the claim's reading, not a control. Needs at least
  `jaxlab.stats.MIN_DIFFS` + 1 evaluations (the r of two differences is +-1 by construction);
  fewer: `untested`;
- `clusters_used`: removing the cluster subspace (span of the centred task centroids, rank K - 1)
  at one position and layer costs more than 0.02 of the accuracy beyond a random subspace of the
  same rank there. Accuracy is the fraction of output tokens predicted correctly; the quick preset
  scores 256 sequences of one output token each, so 0.02 is about five output tokens of 256, above
  the resolution of one token (1/256 = 0.004), while a task code that the model reads there would
  cost up to 1 - 1/n_tasks when removed. The test is made where the clusters are clearest: the cell
  of highest final seen-set ARI among `ablation_test_cells` (a projection at a position after the
  last block changes only that position's own prediction, which is not scored unless the position
  is `sep_output`; the embedding at a separator is the same in every sequence). The report gives
  the same test at every probed position's own best layer, with its interval.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from jaxlab.claims import Above, Claim, Values, final, one_per_seed, paired_difference, per_seed
from jaxlab.config import ExperimentConfig
from jaxlab.results import metric_name, split_metric
from jaxlab.stats import too_few_differences
from jaxlab.tasks import instructions as task_lib

PAPER = "Wu & Varshney 2024"
# the positions a probe may read, and the evaluation sets it clusters
POSITIONS = ("last_instruction", "last_input", "sep_input", "sep_output")
EVAL_SETS = ("seen", "validation", "unseen_strings", "unseen_distributions")
# probe positions whose token and position are the same in every sequence (left-padded template)
CONSTANT_AT_EMBEDDING = ("sep_input", "sep_output")
FORM_THRESHOLD = 0.5
USED_THRESHOLD = 0.02


def cell_metric(metric: str, layer: int, position: str, eval_set: str | None = None) -> str:
    """The name of `metric` at hidden-state layer `layer` (0 = embedding), probe position `position` and, for
    the clustering scores, evaluation set `eval_set`: `ari[layer=3,position=sep_input,set=seen]` (the tidy
    tables split it into the metric `ari` and the columns `layer`, `position`, `set`)."""
    params: dict[str, int | str] = {"layer": int(layer), "position": position}
    if eval_set is not None:
        params["set"] = eval_set
    return metric_name(metric, **params)


def at_position(metric: str, position: str) -> str:
    """The name of a per-position metric: `test_layer[position=sep_input]`."""
    return metric_name(metric, position=position)


def parse_cell(name: str) -> tuple[str, int, str, str | None] | None:
    """(metric, layer, position, set or None) of a `cell_metric` name; None for any other name."""
    base, params = split_metric(name)
    layer, position = params.get("layer"), params.get("position")
    if not {"layer", "position"} <= set(params) <= {"layer", "position", "set"}:
        return None
    if not (isinstance(layer, float) and layer.is_integer() and layer >= 0 and isinstance(position, str)):
        return None
    eval_set = params.get("set")
    return base, int(layer), position, None if eval_set is None else str(eval_set)


def cells(run: Mapping[str, Any], metric: str = "ari", eval_set: str | None = "seen") -> dict[tuple[str, int], str]:
    """{(position, layer): the name of the run's final `metric` there, on `eval_set`}."""
    out = {}
    for k in run["final"]:
        p = parse_cell(k)
        if p is not None and p[0] == metric and p[3] == eval_set:
            out[(p[2], p[1])] = k
    return out


def ari_layers(run: Mapping[str, Any]) -> list[int]:
    """The layers (0 = embedding) whose final seen-set ARI the run records, ascending."""
    return sorted({layer for _, layer in cells(run)})


def _finite(v: float) -> float:
    return v if math.isfinite(v) else -math.inf


def best_cell(run: Mapping[str, Any], min_layer: int = 1) -> tuple[str, int] | None:
    """The (position, layer) of highest final seen-set ARI over the layers >= `min_layer` (the blocks: the
    embedding at the last instruction token is the token itself, a task keyword in some strings, so its
    grouping is partly set by how the task is built); ties: the first in sorted order. None without one."""
    names = {c: n for c, n in sorted(cells(run).items()) if c[1] >= min_layer}
    if not names:
        return None
    values = {c: _finite(final(run, n)) for c, n in names.items()}
    best = max(values, key=lambda c: values[c])
    return best if values[best] > -math.inf else None


def best_final_ari(run: Mapping[str, Any]) -> float:
    """The final seen-set ARI at the run's `best_cell` (NaN without one)."""
    cell = best_cell(run)
    return math.nan if cell is None else final(run, cells(run)[cell])


def best_shuffled_ari(run: Mapping[str, Any]) -> float:
    """The highest final shuffled-label ARI over the same cells as `best_cell` (the floor, selected as the
    statistic is: a maximum over the cells)."""
    values = [final(run, n) for (_, layer), n in cells(run, "ari_shuffled").items() if layer >= 1]
    values = [v for v in values if math.isfinite(v)]
    return max(values) if values else math.nan


def clusters_form_values(runs: Sequence[Mapping[str, Any]], reference: Mapping[str, Any]) -> list[float]:
    """Per run: best-cell final ARI minus the best shuffled-label ARI over the same cells (paired in the run)."""
    return [best_final_ari(r) - best_shuffled_ari(r) for r in one_per_seed(runs)]


def on_set_at_best(eval_set: str) -> Values:
    """values(): per run, final ARI on `eval_set` minus its shuffled-label ARI there, at the run's `best_cell`
    (chosen on the seen set, so the held-out set does not choose its own cell)."""

    def values(runs: Sequence[Mapping[str, Any]], reference: Mapping[str, Any]) -> list[float]:
        out = []
        for r in one_per_seed(runs):
            cell = best_cell(r)
            ari, floor = cells(r, "ari", eval_set), cells(r, "ari_shuffled", eval_set)
            if cell is None or cell not in ari or cell not in floor:
                out.append(math.nan)
                continue
            out.append(final(r, ari[cell]) - final(r, floor[cell]))
        return out

    return values


def depth_at_best_position(runs: Sequence[Mapping[str, Any]], reference: Mapping[str, Any]) -> list[float]:
    """Per run: at the position of its `best_cell`, final ARI of the last block minus the first block's."""
    out = []
    for r in one_per_seed(runs):
        cell, names = best_cell(r), cells(r)
        if cell is None:
            out.append(math.nan)
            continue
        layers = sorted(layer for p, layer in names if p == cell[0])
        if len(layers) < 3 or layers[0] != 0:  # the embedding, the first block and a deeper one
            out.append(math.nan)
            continue
        out.append(final(r, names[(cell[0], layers[-1])]) - final(r, names[(cell[0], 1)]))
    return out


def last_layer_minus(layer: int, position: str) -> Values:
    """values(): per run, at `position`, the final seen-set ARI of its deepest layer minus that of `layer`."""

    def values(runs: Sequence[Mapping[str, Any]], reference: Mapping[str, Any]) -> list[float]:
        out = []
        for r in one_per_seed(runs):
            names = {layer_: n for (p, layer_), n in cells(r).items() if p == position}
            deepest = max(names, default=-1)
            if deepest <= layer or layer not in names:
                out.append(math.nan)
                continue
            out.append(final(r, names[deepest]) - final(r, names[layer]))
        return out

    return values


def ablation_test_layers(cfg: ExperimentConfig, position: str) -> tuple[int, ...]:
    """The layers (0 = embedding .. n_layers = last block) where projecting the clusters out at `position`
    alone can change a scored prediction and the probed state varies: not the last block unless the
    position's own prediction is scored (only from `first_output_target` on), not the embedding at a
    position that is constant there (`CONSTANT_AT_EMBEDDING`)."""
    positions = task_lib.positions(cfg.task)
    scored_here = positions[position] >= positions["first_output_target"]
    last = cfg.model.n_layers
    return tuple(
        layer
        for layer in range(last + 1)
        if (layer < last or scored_here) and not (layer == 0 and position in CONSTANT_AT_EMBEDDING)
    )


def ablation_test_cells(cfg: ExperimentConfig) -> tuple[tuple[int, int], ...]:
    """(position index in probe.positions, layer) of every cell `ablation_test_layers` allows."""
    return tuple((i, layer) for i, p in enumerate(cfg.probe.positions) for layer in ablation_test_layers(cfg, p))


def _no_test_cell(cfg: ExperimentConfig) -> str | None:
    if not ablation_test_cells(cfg):
        return (
            f"no layer of this {cfg.model.n_layers}-block model can test it at {list(cfg.probe.positions)}: after "
            "the last block a projection at a position changes only that position's own prediction, which is not "
            "scored, and the embedding at a separator is the same for every sequence"
        )
    return None


def _too_few_evaluations(cfg: ExperimentConfig) -> str | None:
    return too_few_differences(len(cfg.train.eval_steps()))


def _embedding_untested(position: str):
    def untested(cfg: ExperimentConfig) -> str | None:
        if position not in cfg.probe.positions:
            return f"`{position}` is not probed (probe.positions = {list(cfg.probe.positions)})"
        if position in CONSTANT_AT_EMBEDDING:
            return (
                f"the state probed at `{position}` is one fixed token at one fixed position in every sequence, so "
                "the embedding layer's ARI there is 0 by construction"
            )
        return None

    return untested


def _one_block(cfg: ExperimentConfig) -> str | None:
    if cfg.model.n_layers < 2:
        return f"a {cfg.model.n_layers}-block model has no depth to compare"
    return None


def _no_set(eval_set: str):
    def untested(cfg: ExperimentConfig) -> str | None:
        if eval_set == "unseen_strings" and task_lib.heldout_count(cfg.task) == 0:
            return "task.heldout_frac is 0: no string of a seen grammar is held out"
        if eval_set == "unseen_distributions" and cfg.task.n_unseen_distributions == 0:
            return "task.n_unseen_distributions is 0: no grammar is held out"
        return None

    return untested


_FLOOR = (
    "the shuffled-label ARI at the same cell and set (the same hidden states and k-means clusters scored "
    "against the task labels permuted across sequences), paired per seed"
)


def _set_claim(eval_set: str, claim_id: str, what: str, ref: str) -> Claim:
    return Claim(
        id=claim_id,
        claim=f"The task clusters extend to {what}.",
        paper_ref=f"{PAPER}, {ref}",
        paper_value=None,
        statistic=f"final ARI on the {eval_set} set minus its shuffled-label ARI, at each run's best "
        "(position, block) on the seen set",
        control=_FLOOR,
        rule=Above(FORM_THRESHOLD),
        values=on_set_at_best(eval_set),
        untested=_no_set(eval_set),
    )


def _embedding_claim(position: str) -> Claim:
    return Claim(
        id=f"deeper_than_embedding_at_{position}",
        claim=f"At `{position}`, the last layer clusters by task more than the embedding layer.",
        paper_ref=f"{PAPER}, ARI-over-training figure (layer 0 flat)",
        paper_value=None,
        statistic=f"final seen-set ARI at `{position}`, last layer minus embedding",
        control=f"the embedding layer (layer 0) at `{position}`, same run",
        rule=Above(0.0),
        values=last_layer_minus(0, position),
        untested=_embedding_untested(position),
    )


CLAIMS: tuple[Claim, ...] = (
    Claim(
        id="clusters_form",
        claim="By the end of training, k-means on the hidden states recovers the task partition.",
        paper_ref=f"{PAPER}, abstract and ARI-over-training figure (training set)",
        paper_value=None,
        statistic="final seen-set ARI at the best (position, block) minus the best shuffled-label ARI over the "
        "same cells",
        control="shuffled task labels: the same hidden states and k-means clusters scored against the labels "
        "permuted across sequences, the maximum over the same (position, block) cells, paired per seed",
        rule=Above(FORM_THRESHOLD),
        values=clusters_form_values,
    ),
    Claim(
        id="ari_rises_over_training",
        claim="Task clustering sharpens during training: ARI rises from initialization.",
        paper_ref=f"{PAPER}, ARI-over-training figure (training set)",
        paper_value=None,
        statistic="final minus step-0 seen-set ARI, at the best (position, block)",
        control="the same cell of the same run at initialization (step 0), paired per seed",
        rule=Above(0.0),
        values=per_seed("ari_gain"),
    ),
    Claim(
        id="ari_rises_with_depth",
        claim="Deeper layers cluster by task more than shallow ones.",
        paper_ref=f"{PAPER}, ARI-over-training figure (layers 0-5)",
        paper_value=None,
        statistic="final seen-set ARI at the best position, last block minus first block",
        control="the first block's output at the same position, same run",
        rule=Above(0.0),
        values=depth_at_best_position,
        untested=_one_block,
    ),
    *(_embedding_claim(p) for p in POSITIONS),
    _set_claim(
        "validation",
        "clusters_on_validation",
        "a validation set (fresh sequences of the seen instruction strings)",
        "ARI-over-training figure (validation set)",
    ),
    _set_claim(
        "unseen_strings",
        "clusters_on_unseen_strings",
        "unseen instruction strings of the seen grammars",
        "abstract (unseen instances)",
    ),
    _set_claim(
        "unseen_distributions",
        "clusters_on_unseen_instructions",
        "instructions from held-out grammars of the same tasks",
        "abstract (unseen instances)",
    ),
    Claim(
        id="ari_tracks_accuracy",
        claim="Clustering develops together with the ability to follow the instructions: ARI and accuracy "
        "rise in the same checkpoint intervals.",
        paper_ref=f"{PAPER}, ARI and accuracy over training",
        paper_value=None,
        statistic="Pearson r over a run's checkpoints of the first differences of best-cell ARI and of seen "
        "accuracy (ari_acc_diff_corr)",
        control="differencing removes a trend linear in the checkpoint index that both series share (the r of "
        "the series themselves is positive from a common trend alone); a shared saturation in the same "
        "intervals still counts as moving together",
        rule=Above(0.0),
        values=per_seed("ari_acc_diff_corr"),
        untested=_too_few_evaluations,
    ),
    Claim(
        id="clusters_used",
        claim="The model uses the task clusters where they are clearest: removing the cluster subspace at that "
        "position and layer changes its outputs. A drop of 0 shows only that the clusters there are not needed "
        "for the answer (the task may be read from the instruction tokens elsewhere).",
        paper_ref=f"{PAPER}, abstract ('assists the model in handling unseen instances'); the paper's "
        "support is correlational, the intervention is jaxlab's test",
        paper_value=None,
        statistic="accuracy drop, cluster subspace (span of the centred task centroids, rank n_tasks - 1) minus a "
        "random subspace of the same rank, projected out at one position, at the (position, layer) of highest "
        "final seen-set ARI among those where the projection can change a scored prediction (test_position, "
        "test_layer)",
        control="a random subspace of the same rank projected out at the same position and layer, paired per seed",
        rule=Above(USED_THRESHOLD),
        values=paired_difference(
            "position_ablation_acc_drop_test_layer", "random_position_ablation_acc_drop_test_layer"
        ),
        untested=_no_test_cell,
    ),
)


def _tasks_line(t: task_lib.Config) -> str:
    if t.sequence_tasks:
        names = ", ".join(t.sequence_tasks)
        return (
            f"Tasks: {t.n_tasks} sequence rules ({names}) of {t.input_len}-token inputs over {t.n_inputs} symbols, "
            f"{t.output_len}-token outputs; {t.heldout_input_frac:.0%} of the input sequences held out of training "
            "(acc_unseen_inputs); the paper's exact task list and sizes were not available to us."
        )
    return (
        f"Tasks: {t.n_tasks} random lookup tables from {t.n_inputs} shared input tokens to {t.output_len}-token "
        f"outputs over {t.n_output_tokens} output tokens; the paper's task functions are mappings of five inputs "
        "each (its dataset figure), not random tables of this size. A random table cannot be inferred for an "
        "input it has not seen, so unseen-input accuracy is not measured with it."
    )


def deviations(cfg: ExperimentConfig) -> list[str]:
    """How this config's setup differs from Wu & Varshney's, one line each, with how the setup keeps each
    claim falsifiable."""
    m, t, p, tr = cfg.model, cfg.task, cfg.probe, cfg.train
    positions = ", ".join(f"`{x}`" for x in p.positions)
    out = [
        f"Model: {m.n_layers}-block causal transformer, d_model {m.d_model}, {m.n_heads} heads, trained from "
        f"scratch for {tr.steps} steps at batch {tr.batch_size}, {len(cfg.sweep.seeds)} seeds; the paper trains "
        "a 6-layer causal transformer from scratch (its width, vocabulary and training length are not "
        "reproduced here).",
        _tasks_line(t),
        f"Instructions: {t.n_distributions} seen and {t.n_unseen_distributions} held-out grammars per task, "
        f"templates of {t.template_len} slots ({t.n_optional} optional, {t.n_alternative} alternatives of "
        f"{t.alt_width} tokens), task keywords with probability {t.keyword_prob}; the paper draws instructions "
        "from several regular expressions per task.",
        f"Probe: hidden states at {positions}, every layer (0 = embedding); k-means with k = n_tasks, "
        f"k-means++, best of {p.kmeans_restarts} restarts, {p.kmeans_iters} iterations; ARI on four sets of "
        f"{p.n_eval} sequences (tasks balanced): seen (training distribution), validation (a second, independent "
        "draw of the same distribution: the training stream is infinite, so the paper's training and validation "
        "sets are two draws of one distribution here), unseen strings of the seen grammars and strings of "
        "held-out grammars. The best (position, block) of a run is chosen on the seen set and read on the others.",
        "Controls: every ARI has a shuffled-label floor (the same clusters against task labels permuted across "
        "sequences); the clustering claims subtract it, so no ARI counts that chance grouping would give.",
        "Falsifiability: the embedding is left out of the best cell (at `last_instruction` its state is the token, "
        "a task keyword in some strings, so its grouping is partly set by the task's construction); the tasks "
        "share their inputs, so only the instruction can group a state by task, and a state at `last_input` or a "
        "separator groups by task only if a block moved the instruction there; held-out grammars share only their "
        "task's keywords with the seen ones. At `last_input` the embedding is the input token, drawn independently "
        "of the task, so its ARI is 0 in expectation by the data's construction: the embedding claim there tests "
        "whether the last layer carries the task to that position (it may not), not whether the embedding stays "
        "flat. Where a probed state does not group by task (ARI near its floor) the span of the task centroids is "
        "sampling noise in whatever the state does encode (at `last_input`, layer 0: the input), so a drop there "
        "is not a task code; the causal claim is tested at the cell of highest ARI.",
        "Causal test (projection of the between-task subspace, rank n_tasks - 1, against a random subspace of the "
        "same rank, at one position or at every position, and the centroid swap) is jaxlab's addition; the paper "
        "reports no intervention. It is made at every probed (position, layer); the clusters_used claim reads the "
        "cell of highest seen-set ARI among those where a projection at one position can change a scored "
        "prediction (not after the last block unless the position's own prediction is scored, not the embedding "
        "at a separator).",
    ]
    constant = [x for x in p.positions if x in CONSTANT_AT_EMBEDDING]
    if constant:
        out.append(
            f"At {', '.join(f'`{x}`' for x in constant)} the embedding-layer state is the same for every sequence: "
            "layer 0's ARI there is 0 by construction and the embedding claim at that position is untested; "
            "it is measured at the other positions."
        )
    return out


__all__ = [
    "CLAIMS",
    "CONSTANT_AT_EMBEDDING",
    "EVAL_SETS",
    "POSITIONS",
    "ablation_test_cells",
    "ablation_test_layers",
    "ari_layers",
    "at_position",
    "best_cell",
    "best_final_ari",
    "best_shuffled_ari",
    "cell_metric",
    "cells",
    "deviations",
    "last_layer_minus",
    "parse_cell",
]
