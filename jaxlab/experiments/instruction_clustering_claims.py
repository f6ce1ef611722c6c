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

Thresholds, fixed before any jaxlab number was compared with them:
- differences that the paper says are positive (a rise over training, a rise with depth) use
  `Above(0)`: the 95% interval of the per-seed difference must exclude 0 on the claimed side;
- `clusters_form`: final ARI above 0.5, half-way from chance to a perfect partition; the
  experiment's own onset threshold. The threshold is absolute: no shuffled-label control is
  computed. ARI is chance-adjusted, so shuffled labels would score 0 in expectation (the best of
  the layers slightly above 0), far below 0.5;
- `ari_tracks_accuracy`: the Pearson r, over a run's checkpoints, of the first differences of the
  best layer's ARI and of the seen accuracy (`ari_acc_diff_corr`), `Above(0)`. The r of the two
  series themselves cannot fail: both rise during training, and a common trend alone makes it
  positive. Differencing removes a trend shared as a linear function of the checkpoint index (it
  becomes a constant, which r ignores); what is left asks whether the two move in the same
  checkpoint intervals. The claim is a direction ("develops together"), so the rule is the sign,
  0. A shared non-linear trend (both saturating in the same intervals) still pushes r above 0:
  that is the claim's reading, not a control. Needs at least `jaxlab.stats.MIN_DIFFS` + 1 evaluations (the r
  of two differences is +-1 by construction); fewer: `untested`;
- `clusters_used`: removing the cluster subspace at the probed position costs more than 0.02 of the
  accuracy beyond a random subspace of the same rank. Accuracy is the fraction of output tokens
  predicted correctly; the quick preset scores 256 sequences of one output token each, so 0.02 is
  about five output tokens of 256, above the resolution of one token (1/256 = 0.004), while a task
  code that the model reads there would cost up to 1 - 1/n_tasks when removed. The test is made
  at `ablation_test_layers`: a projection at the probed position after the last block changes only
  that position's own prediction, which is not scored unless the position is `sep_output` (the
  first output is predicted there), so its drop is 0 by construction; the last block is left out
  then, and so is the embedding where the probed state is the same in every sequence. Of the
  layers left, each run uses the one with the highest final ARI (`test_layer`). A drop of 0 shows
  that the clusters at this position are not needed for the answer (the task may be read from the
  instruction tokens by later positions directly); it does not show that they are unused
  everywhere.

The layer-0 (embedding) state at a separator position (`sep_input`, `sep_output`) is one fixed
token at one fixed position for every sequence, so its ARI is 0 by construction: a claim against
the embedding is untested there, and the depth claim compares the last block with the first.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

from jaxlab.claims import Above, Claim, Values, final, one_per_seed, paired_difference, per_seed
from jaxlab.config import ExperimentConfig
from jaxlab.results import metric_name, split_metric
from jaxlab.stats import too_few_differences
from jaxlab.tasks import instructions as task_lib

PAPER = "Wu & Varshney 2024"
# probe positions whose token and position are the same in every sequence (left-padded template)
CONSTANT_AT_EMBEDDING = ("sep_input", "sep_output")
FORM_THRESHOLD = 0.5
USED_THRESHOLD = 0.02
_LEGACY_LAYER = re.compile(r"^(?P<metric>.+)_layer_(?P<layer>\d+)$")  # run directories from before metric parameters


def layer_metric(metric: str, layer: int) -> str:
    """The name of `metric` at hidden-state layer `layer` (0 = embedding): `ari[layer=3]` (the tidy tables
    split it into the metric `ari` and a `layer` column)."""
    return metric_name(metric, layer=int(layer))


def parse_layer_metric(name: str) -> tuple[str, int] | None:
    """(metric, layer) of a `layer_metric` name, or of the older form `ari_layer_3` of run directories written
    before metric parameters; None for any other name (`best_layer`, `ari_best_layer`, `*_test_layer`)."""
    base, params = split_metric(name)
    layer = params.get("layer")
    if set(params) == {"layer"} and isinstance(layer, float) and layer.is_integer() and layer >= 0:
        return base, int(layer)
    m = _LEGACY_LAYER.match(name)
    return (m.group("metric"), int(m.group("layer"))) if m else None


def _ari_names(run: Mapping[str, Any]) -> dict[int, str]:
    """{layer: the name of its final ARI in the run} (either form, `parse_layer_metric`)."""
    return {p[1]: k for k in run["final"] if (p := parse_layer_metric(k)) is not None and p[0] == "ari"}


def ari_layers(run: Mapping[str, Any]) -> list[int]:
    """The layers (0 = embedding) whose final ARI the run records, ascending."""
    return sorted(_ari_names(run))


def best_final_ari(run: Mapping[str, Any]) -> float:
    """The highest final ARI over the run's layers (its `ari_best_layer`), read from the per-layer
    finals so that the replicate evaluation set re-evaluates it (layer choice included)."""
    values = [final(run, name) for name in _ari_names(run).values()]
    values = [v for v in values if not math.isnan(v)]
    return max(values) if values else math.nan


def last_layer_minus(layer: int) -> Values:
    """values(): per run, the final ARI of its deepest layer minus that of `layer` (NaN without both)."""

    def values(runs: Sequence[Mapping[str, Any]], reference: Mapping[str, Any]) -> list[float]:
        out = []
        for r in runs:
            names = _ari_names(r)
            deepest = max(names, default=-1)
            if deepest <= layer or layer not in names:
                out.append(math.nan)
                continue
            out.append(final(r, names[deepest]) - final(r, names[layer]))
        return out

    return values


def ablation_test_layers(cfg: ExperimentConfig) -> tuple[int, ...]:
    """The layers (0 = embedding .. n_layers = last block) where projecting the clusters out at
    `probe.position` alone can change a scored prediction and the probed state varies: not the last
    block unless the probed position's own prediction is scored (only from `first_output_target`
    on), not the embedding at a position that is constant there (`CONSTANT_AT_EMBEDDING`)."""
    positions = task_lib.positions(cfg.task)
    scored_here = positions[cfg.probe.position] >= positions["first_output_target"]
    last = cfg.model.n_layers
    return tuple(
        layer
        for layer in range(last + 1)
        if (layer < last or scored_here) and not (layer == 0 and cfg.probe.position in CONSTANT_AT_EMBEDDING)
    )


def _no_test_layer(cfg: ExperimentConfig) -> str | None:
    if not ablation_test_layers(cfg):
        return (
            f"no layer of this {cfg.model.n_layers}-block model can test it at `{cfg.probe.position}`: after the last "
            "block a projection there changes only that position's own prediction, which is not scored, and the "
            "embedding there is the same for every sequence"
        )
    return None


def _too_few_evaluations(cfg: ExperimentConfig) -> str | None:
    return too_few_differences(len(cfg.train.eval_steps()))


def _embedding_constant(cfg: ExperimentConfig) -> str | None:
    if cfg.probe.position in CONSTANT_AT_EMBEDDING:
        return (
            f"the state probed at `{cfg.probe.position}` is one fixed token at one fixed position in every "
            "sequence, so the embedding layer's ARI there is 0 by construction"
        )
    return None


def _one_block(cfg: ExperimentConfig) -> str | None:
    if cfg.model.n_layers < 2:
        return f"a {cfg.model.n_layers}-block model has no depth to compare"
    return None


CLAIMS: tuple[Claim, ...] = (
    Claim(
        id="clusters_form",
        claim="By the end of training, k-means on the hidden states recovers the task partition.",
        paper_ref=f"{PAPER}, abstract and ARI-over-training figure (training set)",
        paper_value=None,
        statistic="final ARI, best layer",
        control="none computed: the threshold 0.5 is absolute (ARI is chance-adjusted, so shuffled task "
        "labels would score 0 in expectation, the best of the layers slightly above 0)",
        rule=Above(FORM_THRESHOLD),
        values=lambda runs, reference: [best_final_ari(r) for r in one_per_seed(runs)],
    ),
    Claim(
        id="ari_rises_over_training",
        claim="Task clustering sharpens during training: ARI rises from initialization.",
        paper_ref=f"{PAPER}, ARI-over-training figure (training set)",
        paper_value=None,
        statistic="final minus step-0 ARI, best layer",
        control="the same layer of the same run at initialization (step 0), paired per seed",
        rule=Above(0.0),
        values=per_seed("ari_gain"),
    ),
    Claim(
        id="ari_rises_with_depth",
        claim="Deeper layers cluster by task more than shallow ones.",
        paper_ref=f"{PAPER}, ARI-over-training figure (layers 0-5)",
        paper_value=None,
        statistic="final ARI, last block minus first block",
        control="the first block's output at the same position, same run (not the embedding: identical "
        "for every sequence at a separator)",
        rule=Above(0.0),
        values=last_layer_minus(1),
        untested=_one_block,
    ),
    Claim(
        id="deeper_than_embedding",
        claim="The last layer clusters by task more than the embedding layer, which stays flat.",
        paper_ref=f"{PAPER}, ARI-over-training figure (layer 0 flat)",
        paper_value=None,
        statistic="final ARI, last layer minus embedding",
        control="the embedding layer (layer 0) at the same position, same run",
        rule=Above(0.0),
        values=last_layer_minus(0),
        untested=_embedding_constant,
    ),
    Claim(
        id="clusters_on_unseen_instructions",
        claim="The clusters extend to a validation set and to unseen instructions of the same tasks.",
        paper_ref=f"{PAPER}, ARI-over-training figure (validation set); abstract (unseen instances)",
        paper_value=None,
        statistic="final ARI on unseen instructions, best layer",
        control="none computed: the threshold is absolute (ARI is chance-adjusted: 0 in expectation for "
        "shuffled labels)",
        rule=Above(FORM_THRESHOLD),
        values=per_seed("ari_unseen_distributions"),
        untested=lambda cfg: (
            "ARI is computed on the training-distribution evaluation set only (seen grammars, training "
            "strings); the held-out string and held-out grammar sets are scored for accuracy, not clustered"
        ),
    ),
    Claim(
        id="ari_tracks_accuracy",
        claim="Clustering develops together with the ability to follow the instructions: ARI and accuracy "
        "rise in the same checkpoint intervals.",
        paper_ref=f"{PAPER}, ARI and accuracy over training",
        paper_value=None,
        statistic="Pearson r over a run's checkpoints of the first differences of best-layer ARI and of seen "
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
        claim="The model uses the task clusters at the probed position: removing them there changes its outputs. "
        "A drop of 0 shows only that the clusters at this position are not needed for the answer (the task may "
        "be read from the instruction tokens elsewhere), not that they are unused everywhere.",
        paper_ref=f"{PAPER}, abstract ('assists the model in handling unseen instances'); the paper's "
        "support is correlational, the intervention is jaxlab's test",
        paper_value=None,
        statistic="accuracy drop, cluster subspace minus random subspace at the probed position, at the layer of "
        "highest final ARI among those where the projection can change a scored prediction (test_layer: not the "
        "last block unless the probed position is scored)",
        control="a random subspace of the same rank (n_tasks - 1) projected out at the same position and "
        "layer, paired per seed",
        rule=Above(USED_THRESHOLD),
        values=paired_difference(
            "position_ablation_acc_drop_test_layer", "random_position_ablation_acc_drop_test_layer"
        ),
        untested=_no_test_layer,
    ),
)


def deviations(cfg: ExperimentConfig) -> list[str]:
    """How this config's setup differs from Wu & Varshney's, one line each."""
    m, t, p, tr = cfg.model, cfg.task, cfg.probe, cfg.train
    out = [
        f"Model: {m.n_layers}-block causal transformer, d_model {m.d_model}, {m.n_heads} heads, trained from "
        f"scratch for {tr.steps} steps at batch {tr.batch_size}, {len(cfg.sweep.seeds)} seeds; the paper trains "
        "a 6-layer causal transformer from scratch (its width, vocabulary and training length are not "
        "reproduced here).",
        f"Tasks: {t.n_tasks} random lookup tables from {t.n_inputs} shared input tokens to {t.output_len}-token "
        f"outputs over {t.n_output_tokens} output tokens; the paper's task functions are mappings of five "
        "inputs each (its dataset figure), not random tables of this size.",
        f"Instructions: {t.n_distributions} seen and {t.n_unseen_distributions} held-out grammars per task, "
        f"templates of {t.template_len} slots ({t.n_optional} optional, {t.n_alternative} alternatives of "
        f"{t.alt_width} tokens), task keywords with probability {t.keyword_prob}; the paper draws instructions "
        "from several regular expressions per task.",
        f"Probe: hidden states at `{p.position}` only, every layer (0 = embedding); k-means with k = n_tasks, "
        f"k-means++, best of {p.kmeans_restarts} restarts, {p.kmeans_iters} iterations.",
        f"ARI on the training-distribution evaluation set only ({p.n_eval} sequences, tasks balanced); the paper "
        "also reports it on a validation set. The held-out string and grammar sets give accuracy only.",
        "Causal test (projection of the between-task subspace against a random subspace of the same rank, and "
        "the centroid swap) is jaxlab's addition; the paper reports no intervention. The clusters_used test sits "
        f"at the best-ARI layer among {list(ablation_test_layers(cfg))} (after the last block a projection at "
        f"`{p.position}` could change only that position's own prediction).",
    ]
    if p.position in CONSTANT_AT_EMBEDDING:
        out.append(
            f"At `{p.position}` the embedding-layer state is the same for every sequence: layer 0's ARI is 0 by "
            "construction, so depth is tested as the last block against the first."
        )
    return out


__all__ = [
    "CLAIMS",
    "CONSTANT_AT_EMBEDDING",
    "ablation_test_layers",
    "ari_layers",
    "best_final_ari",
    "deviations",
    "last_layer_minus",
    "layer_metric",
    "parse_layer_metric",
]
