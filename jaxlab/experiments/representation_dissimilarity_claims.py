"""Brown, Godfrey, Konz, Tu & Kvinge 2023 ("Understanding the Inner Workings of Language Models
Through Representation Dissimilarity", EMNLP 2023, arXiv 2310.14993): its claims, tested on the
runs of representation-dissimilarity, and how a config differs from the paper's setup.

The claims are the three insights of the paper's abstract: (i) an asymmetry between the internal
representations of SoLU and GeLU models, found with model stitching (GeLU representations look
more useful); (ii) dissimilarity measures identify and locate generalization properties that
in-distribution test performance does not show; (iii) how features vary with width and depth
(CKA block structure). The paper gives these as figures on real language models, not as numbers
that a synthetic task could match: every `paper_value` is None (qualitative).

The statistics are computed from the stitching penalty of every model pair, which the experiment's
analysis across programs writes to summary.json's `reference`
(`representation_dissimilarity_analysis`, keys `{metric}_pair[sender=x,receiver=y,layer=l,
sender_seed=i,receiver_seed=j]`: sender seed i into receiver seed j at hook l; a model is never
stitched into itself):

  stitch_penalty_pair[sender=x,receiver=y,...]   family x into family y at the reference point
  gen_penalty_pair[sender=a,receiver=b,...]      the shortcut-trained group A into the clean group B
  gen_penalty_pair[sender=b,receiver=b,...]      B's models into each other (the baseline)

A run directory written before metric parameters has the older names
(`stitch_penalty_{x}_to_{y}_l{l}_from{i}_to{j}`, ...): `parse_dissimilarity_metric` reads both forms
and `current_names` renames a summary's reference to the new ones.

Model pairs share models (every GeLU model is a receiver of every SoLU model and a sender to every
SoLU model), so they are not independent units: the interval resamples the models of each group
(`jaxlab.claims.model_bootstrap`), and the count the 5-seed rule applies to is the smallest group.
A run directory written before these keys existed has only the means over model pairs; its
stitching claims are `untested` (no per-pair penalties).

Block structure (claim `cka_block_structure`) reads the per-run layer x layer CKA matrices
(`cka_run[model=activation,model_seed=s,layer_a=i,layer_b=j]`) of hooks 1..L: for two contiguous
blocks with a boundary k, the contrast is CKA within a block minus CKA across k at the same distance
in depth (`block_contrast`); each run is scored at the boundary that the other half of its family's
seeds picks (`best_boundary`), so neither the choice of k nor CKA's decay with distance makes it
positive. One value per run, the usual median and seed bootstrap.

Budget check (`budget_checks`, reported, not a claim): with `probe.stitch_budget_check` every stitch
trains twice the budget the stopping rule used, and the two stitching claims' statistics are
recomputed from those penalties; the check passes when |statistic(2 x budget) - statistic(budget)|
< |statistic(budget)| (doubling moves the statistic less than the effect it measures).

Thresholds (fixed before any verdict was computed):
  asymmetry        0: the paper states a direction, not a size.
  block structure  0: likewise.
  localization     0.1 nats either way: a contrast between hooks smaller than that is not a
                   localization here. It is 4% of the chance loss of the quick task (ln 11 = 2.40
                   nats), and of the order by which the stitch budget moves a same-family penalty
                   (0.035 -> 0.023 nats from 500 to 2000 stitch steps in the quick setting).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from jaxlab.claims import MIN_SEEDS, Above, Claim, NotApplicable, Outside, model_bootstrap
from jaxlab.config import ExperimentConfig
from jaxlab.results import metric_name, split_metric

LOCALIZATION_MIN_EFFECT = 0.1  # nats (module docstring)
# the metric parameters of representation-dissimilarity: text ones, integer ones
TEXT_KEYS = ("sender", "receiver", "model", "model_a", "model_b")
INT_KEYS = ("layer", "layer_a", "layer_b", "sender_seed", "receiver_seed", "model_seed")
# the older names of run directories written before metric parameters
_LEGACY = (
    re.compile(  # stitch_penalty_gelu_to_solu_l1, _l1_std, _l1_from0_to1; gen_penalty_a_to_b_l1...
        r"^(?P<base>stitch_penalty|gen_penalty)_(?P<sender>[a-z]+)_to_(?P<receiver>[a-z]+)_l(?P<layer>\d+)"
        r"(?:(?P<std>_std)|(?P<pair>_from(?P<sender_seed>-?\d+)_to(?P<receiver_seed>-?\d+)))?$"
    ),
    re.compile(r"^(?P<base>asymmetry_index)_l(?P<layer>\d+)(?P<std>_std)?$"),
    re.compile(
        r"^(?P<base>stitch)\[(?P<sender>[^\[\]]+?)->(?P<receiver>[^\[\]]+)\](?P<init>_init)?_l(?P<layer>\d+)(?P<std>_std)?$"
    ),
    re.compile(r"^(?P<base>cka_within)\[(?P<model>[^\[\]|]+)\]_l(?P<layer_a>\d+)_l(?P<layer_b>\d+)$"),
    re.compile(
        r"^(?P<base>cka_across)\[(?P<model_a>[^\[\]|]+)\|(?P<model_b>[^\[\]|]+)\]_l(?P<layer_a>\d+)_l(?P<layer_b>\d+)$"
    ),
)


# -- metric names ----------------------------------------------------------------------------------
def parse_dissimilarity_metric(name: str) -> tuple[str, dict[str, str | int]] | None:
    """(metric, {key: value}) of a metric of representation-dissimilarity measured at a hook, a pair of models or
    seeds: `stitch_penalty[sender=gelu,receiver=solu,layer=1]`, `stitch_penalty_pair[sender=gelu,receiver=solu,
    layer=1,sender_seed=0,receiver_seed=1]`, `stitch[sender=<tag>,receiver=<tag>,layer=1]`, `asymmetry_index[layer=1]`,
    `cka_within[model=<tag>,layer_a=0,layer_b=1]`, ..., or the older forms of run directories written before metric
    parameters (`stitch_penalty_gelu_to_solu_l1`, `..._l1_std`, `..._l1_from0_to1`, `stitch[<tag>-><tag>]_init_l1`,
    `asymmetry_index_l1`, `cka_within[<tag>]_l0_l1`, `cka_across[<tag>|<tag>]_l0_l1`); None for any other name
    (`asymmetry_index`, `cka_within_mean`, `more_loss_wide`, ...). `results.metric_name(metric, **params)` gives
    the new name."""
    base, params = split_metric(name)
    if params:
        if not set(params) <= set(TEXT_KEYS + INT_KEYS):
            return None
        out: dict[str, str | int] = {}
        for k, v in params.items():
            if k in INT_KEYS:
                if not (isinstance(v, float) and v.is_integer() and (v >= 0 or k.endswith("seed"))):
                    return None
                out[k] = int(v)
            elif isinstance(v, str):
                out[k] = v
            else:
                return None
        return base, out
    for pattern in _LEGACY:
        m = pattern.match(name)
        if m is None:
            continue
        found = {k: v for k, v in m.groupdict().items() if v is not None}
        metric = found.pop("base") + found.pop("init", "") + ("_pair" if found.pop("pair", None) else "")
        metric += found.pop("std", "")
        return metric, {k: int(v) if k in INT_KEYS else v for k, v in found.items()}
    return None


def current_name(name: str) -> str:
    """`name` as the experiment now writes it, whichever form it has (other names unchanged)."""
    p = parse_dissimilarity_metric(name)
    return name if p is None else metric_name(p[0], **p[1])


def current_names(reference: Mapping[str, Any]) -> dict[str, Any]:
    """`reference` (summary.json's) keyed by `current_name`: a run directory of either form reads as the new one."""
    return {current_name(k): v for k, v in reference.items()}


# -- penalties of model pairs, and intervals that resample models -----------------------------------
def pair_penalties(
    reference: Mapping[str, Any], metric: str, sender: str, receiver: str
) -> dict[int, dict[tuple[int, int], float]]:
    """{hook: {(sender seed, receiver seed): penalty}} from the reference keys
    `{metric}_pair[sender=..,receiver=..,layer=l,sender_seed=i,receiver_seed=j]` (either form,
    `parse_dissimilarity_metric`; finite values only)."""
    out: dict[int, dict[tuple[int, int], float]] = {}
    for key, value in reference.items():
        p = parse_dissimilarity_metric(key)
        if p is None or p[0] != metric + "_pair" or (p[1].get("sender"), p[1].get("receiver")) != (sender, receiver):
            continue
        if value is not None and math.isfinite(float(value)):
            q = p[1]
            out.setdefault(int(q["layer"]), {})[(int(q["sender_seed"]), int(q["receiver_seed"]))] = float(value)
    return out


def family_seeds(reference: Mapping[str, Any], metric: str, family: str) -> list[int]:
    """The seeds of a family, read off its same-family pairs (`metric` from `family` into `family`; senders and
    receivers alike)."""
    pairs_by_hook = pair_penalties(reference, metric, family, family)
    return sorted({s for pairs in pairs_by_hook.values() for pair in pairs for s in pair})


def _matrix(pairs: Mapping[tuple[int, int], float], senders: Sequence[int], receivers: Sequence[int]) -> np.ndarray:
    """[senders, receivers] penalties, NaN where a pair is missing."""
    out = np.full((len(senders), len(receivers)), np.nan)
    for a, i in enumerate(senders):
        for b, j in enumerate(receivers):
            out[a, b] = pairs.get((i, j), np.nan)
    return out


def _nanmean_rows(x_BK: np.ndarray, keep_BK: np.ndarray) -> np.ndarray:
    """[B]: the mean of each row's finite entries among those `keep_BK` marks (NaN where there are none)."""
    keep_BK = keep_BK & np.isfinite(x_BK)
    count_B = keep_BK.sum(1)
    total_B = np.where(keep_BK, x_BK, 0.0).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count_B > 0, total_B / np.maximum(count_B, 1), np.nan)


def cross_mean(pen: np.ndarray, senders_BN: np.ndarray, receivers_BM: np.ndarray) -> np.ndarray:
    """[B]: the mean penalty over every (sender, receiver) pair of each row of (resampled) model indices."""
    sub_BNM = pen[senders_BN[:, :, None], receivers_BM[:, None, :]]
    b = sub_BNM.shape[0]
    return _nanmean_rows(sub_BNM.reshape(b, -1), np.ones((b, sub_BNM[0].size), bool))


def same_mean(pen: np.ndarray, models_BN: np.ndarray) -> np.ndarray:
    """[B]: the mean penalty over the pairs of each row of (resampled) model indices of one family, without a
    model stitched into itself (a model drawn twice does not pair with its copy)."""
    sub_BNN = pen[models_BN[:, :, None], models_BN[:, None, :]]
    distinct_BNN = models_BN[:, :, None] != models_BN[:, None, :]
    b = sub_BNN.shape[0]
    return _nanmean_rows(sub_BNN.reshape(b, -1), distinct_BNN.reshape(b, -1))


@dataclass(frozen=True)
class Excess:
    """pen(cross into the receivers) - pen(same family into them) at one hook, as a function of
    resampled model indices of the sender group and the receiver group."""

    cross: np.ndarray  # [n_senders, n_receivers]
    same: np.ndarray  # [n_receivers, n_receivers]
    sender: str
    receiver: str

    def __call__(self, idx: Mapping[str, np.ndarray]) -> np.ndarray:
        """[B]: the excess for each row of the resampled model indices `idx` (group name -> [B, n_group]
        indices): cross mean minus same-family mean."""
        return cross_mean(self.cross, idx[self.sender], idx[self.receiver]) - same_mean(self.same, idx[self.receiver])


def excess_by_hook(
    reference: Mapping[str, Any],
    metric: str,
    sender: tuple[str, Sequence[int]],
    receiver: tuple[str, Sequence[int]],
) -> dict[int, Excess]:
    """{hook: Excess} for the pairs of `metric` (`stitch_penalty`, `gen_penalty`) from the sender group into the
    receiver group against the receiver group into itself; `sender` and `receiver` are (group name, its seeds in
    index order)."""
    (sname, sseeds), (rname, rseeds) = sender, receiver
    cross_p, same_p = pair_penalties(reference, metric, sname, rname), pair_penalties(reference, metric, rname, rname)
    return {
        h: Excess(_matrix(cross_p[h], sseeds, rseeds), _matrix(same_p[h], rseeds, rseeds), sname, rname)
        for h in sorted(cross_p)
        if h in same_p
    }


def asymmetry_parts(
    reference: Mapping[str, Any], metric: str = "stitch_penalty"
) -> tuple[dict[int, Excess], dict[int, Excess], dict[str, int]]:
    """Excess into GeLU (SoLU senders, GeLU's own baseline) and into SoLU (GeLU senders, SoLU's own
    baseline), per hook, and the family sizes (seeds read off the same-family pairs). `metric`:
    `stitch_penalty` (the budget the stopping rule used) or `stitch_penalty_double` (twice it)."""
    gelu = ("gelu", family_seeds(reference, metric, "gelu"))
    solu = ("solu", family_seeds(reference, metric, "solu"))
    into_gelu = excess_by_hook(reference, metric, solu, gelu)
    into_solu = excess_by_hook(reference, metric, gelu, solu)
    return into_gelu, into_solu, {"gelu": len(gelu[1]), "solu": len(solu[1])}


def localization_parts(
    reference: Mapping[str, Any], metric: str = "gen_penalty"
) -> tuple[dict[int, Excess], dict[str, int]]:
    """Excess of group A (shortcut-trained) into group B over B's own baseline, per hook, and the
    group sizes (A's seeds are the senders of A -> B; A is not stitched into itself); `metric`:
    `gen_penalty` or `gen_penalty_double` (the budget check)."""
    a_to_b = pair_penalties(reference, metric, "a", "b")
    a = ("a", sorted({i for pairs in a_to_b.values() for i, _ in pairs}))
    b = ("b", family_seeds(reference, metric, "b"))
    parts = excess_by_hook(reference, metric, a, b)
    return parts, {"a": len(a[1]), "b": len(b[1])}


def _require(sizes: Mapping[str, int], hooks: Sequence[int], need: int) -> None:
    if len(hooks) < need or min(sizes.values(), default=0) < 2:
        raise NotApplicable(
            "no per-pair stitching penalties in this run's summary (written before they were stored), too few "
            "hooks, or a group with fewer than two seeds"
        )


Statistic = Callable[[Mapping[str, np.ndarray]], np.ndarray]  # {group: [B, n] indices} -> [B]


def asymmetry_statistic(reference: Mapping[str, Any], metric: str = "stitch_penalty") -> tuple[Statistic, dict]:
    """The statistic of claim `solu_gelu_asymmetry` as a function of resampled model indices: mean over hooks
    l >= 1 of [excess into GeLU] - [excess into SoLU]; and the family sizes. NotApplicable without the pairs."""
    into_gelu, into_solu, sizes = asymmetry_parts(reference, metric)
    hooks = [h for h in into_gelu if h >= 1 and h in into_solu]
    _require(sizes, hooks, 1)
    return lambda idx: np.mean([into_gelu[h](idx) - into_solu[h](idx) for h in hooks], axis=0), sizes


def localization_statistic(reference: Mapping[str, Any], metric: str = "gen_penalty") -> tuple[Statistic, dict]:
    """The statistic of claim `stitching_localizes_generalization`: excess(L) - excess(1), excess(l) = pen(A -> B)
    - pen(B -> B) at hook l; and the group sizes. NotApplicable without the pairs."""
    parts, sizes = localization_parts(reference, metric)
    past = sorted(h for h in parts if h >= 1)
    _require(sizes, past, 2)
    first, last = parts[past[0]], parts[past[-1]]
    return lambda idx: last(idx) - first(idx), sizes


def asymmetry_interval(
    runs: Sequence[Mapping[str, Any]], reference: Mapping[str, Any]
) -> tuple[float, float, float, int]:
    """Claim `solu_gelu_asymmetry`: mean over hooks l >= 1 of [excess into GeLU] - [excess into SoLU],
    with the interval of `jaxlab.claims.model_bootstrap` over the GeLU and the SoLU models."""
    return model_bootstrap(*asymmetry_statistic(reference))


def localization_interval(
    runs: Sequence[Mapping[str, Any]], reference: Mapping[str, Any]
) -> tuple[float, float, float, int]:
    """Claim `stitching_localizes_generalization`: excess(L) - excess(1), excess(l) = pen(A -> B) -
    pen(B -> B) at hook l, with the interval of `model_bootstrap` over the A and the B models."""
    return model_bootstrap(*localization_statistic(reference))


@dataclass(frozen=True)
class BudgetCheck:
    """A claim's statistic at the budget the stopping rule used and at twice it (the same model pairs).

    effect, shift: (estimate, ci_low, ci_high) of the statistic and of statistic(2 x budget) - statistic(budget)
    (`model_bootstrap`, resampling the same models for both). Rule (fixed before any run): the budget passes
    when |shift estimate| < |effect estimate|, i.e. doubling the stitch training moves the statistic less than
    the effect it measures."""

    claim: str
    effect: tuple[float, float, float]
    shift: tuple[float, float, float]

    @property
    def passes(self) -> bool:
        """|shift| < |effect| (the class docstring)."""
        return abs(self.shift[0]) < abs(self.effect[0])


def budget_checks(reference: Mapping[str, Any]) -> list[BudgetCheck]:
    """The budget check of every stitching claim whose doubled-budget pairs are in `reference` (none without
    `probe.stitch_budget_check`)."""
    out = []
    for claim, stat, metric in (
        ("solu_gelu_asymmetry", asymmetry_statistic, "stitch_penalty"),
        ("stitching_localizes_generalization", localization_statistic, "gen_penalty"),
    ):
        try:
            at, sizes = stat(reference, metric)
            twice, sizes2 = stat(reference, metric + "_double")
        except NotApplicable:
            continue
        if sizes != sizes2:
            continue
        effect = model_bootstrap(at, sizes)[:3]
        shift = model_bootstrap(lambda idx, at=at, twice=twice: twice(idx) - at(idx), sizes)[:3]
        out.append(BudgetCheck(claim, effect, shift))
    return out


# -- CKA block structure ------------------------------------------------------------------------------
def run_cka_matrices(reference: Mapping[str, Any]) -> dict[str, dict[int, np.ndarray]]:
    """{family: {seed: [H, H]}}: the layer x layer linear CKA within each run at the reference point
    (reference keys `cka_run[model=family,model_seed=s,layer_a=i,layer_b=j]`)."""
    entries: dict[str, dict[int, dict[tuple[int, int], float]]] = {}
    for key, value in reference.items():
        p = parse_dissimilarity_metric(key)
        if p is None or p[0] != "cka_run" or value is None or not math.isfinite(float(value)):
            continue
        q = p[1]
        cell = (int(q["layer_a"]), int(q["layer_b"]))
        entries.setdefault(str(q["model"]), {}).setdefault(int(q["model_seed"]), {})[cell] = float(value)
    out: dict[str, dict[int, np.ndarray]] = {}
    for family, by_seed in entries.items():
        for seed, cells in by_seed.items():
            n = max(max(c) for c in cells) + 1
            mat = np.full((n, n), np.nan)
            for (i, j), v in cells.items():
                mat[i, j] = v
            out.setdefault(family, {})[seed] = mat
    return out


def block_contrast(cka_HH: np.ndarray, boundary: int) -> float:
    """Within-block minus across-block CKA at matched depth distance, for the blocks {0..boundary-1} and
    {boundary..H-1} of the hooks of `cka_HH` [H, H]:

      contrast = mean over d of [mean_{|i-j| = d, same block} C_ij - mean_{|i-j| = d, across} C_ij]

    over the distances d with pairs of both kinds (NaN if none). Comparing pairs at the same distance is
    the control: CKA that only decays with distance in depth gives 0 at every boundary."""
    n = cka_HH.shape[0]
    diffs = []
    for d in range(1, n):
        within = [cka_HH[i, i + d] for i in range(n - d) if (i + d < boundary) or (i >= boundary)]
        across = [cka_HH[i, i + d] for i in range(n - d) if i < boundary <= i + d]
        if within and across:
            diffs.append(float(np.mean(within)) - float(np.mean(across)))
    return float(np.mean(diffs)) if diffs else math.nan


def best_boundary(cka_HH: np.ndarray) -> int | None:
    """The boundary (1..H-1) with the largest `block_contrast`; None if no boundary has one."""
    scores = {k: block_contrast(cka_HH, k) for k in range(1, cka_HH.shape[0])}
    scores = {k: v for k, v in scores.items() if math.isfinite(v)}
    return max(scores, key=scores.__getitem__) if scores else None


def block_structure_values(runs: Sequence[Mapping[str, Any]], reference: Mapping[str, Any]) -> list[float]:
    """Claim `cka_block_structure`: one value per seed, the mean over the families (GeLU and SoLU at the
    reference point) of the run's `block_contrast` over hooks 1..L (the embeddings left out) at the
    boundary chosen on the other half of its family's seeds (`best_boundary` of their mean matrix; seeds
    in order, the first half and the rest), so that no run scores a boundary picked on itself. The two
    families' runs of a seed count once: the bootstrap is over seeds, not over 2 x seeds values."""
    by_seed_values: dict[Any, list[float]] = {}
    families = 0
    for _family, by_seed in sorted(run_cka_matrices(reference).items()):
        seeds = sorted(by_seed)
        mats = {s: by_seed[s][1:, 1:] for s in seeds}
        if len(seeds) < 2 or next(iter(mats.values())).shape[0] < 3:
            continue
        families += 1
        halves = (seeds[: len(seeds) // 2], seeds[len(seeds) // 2 :])
        for mine, other in (halves, halves[::-1]):
            boundary = best_boundary(np.nanmean([mats[s] for s in other], axis=0))
            if boundary is None:
                continue
            for s in mine:
                by_seed_values.setdefault(s, []).append(block_contrast(mats[s], boundary))
    values = [float(np.mean(v)) for v in by_seed_values.values() if len(v) == families]
    if not values:
        raise NotApplicable(
            "no per-run CKA matrices with three or more hooks past the embeddings and two seeds a family in this "
            "run's summary"
        )
    return values


# -- what a config can test ---------------------------------------------------------------------------
def _grid(cfg: ExperimentConfig, key: str) -> tuple[Any, ...]:
    values = dict(cfg.sweep.grid).get(key)
    return tuple(values) if values is not None else (cfg.get(key),)


def _reference_depth(cfg: ExperimentConfig) -> int:
    return int(_grid(cfg, "model.n_layers")[0])


def _untested_asymmetry(cfg: ExperimentConfig) -> str | None:
    if not {"gelu", "solu"} <= set(_grid(cfg, "model.activation")):
        return "the sweep does not train both GeLU and SoLU models"
    if len(cfg.sweep.seeds) < 2:
        return "one seed per family: the receiver's same-family baseline needs another seed of its family"
    return None


def _untested_localization(cfg: ExperimentConfig) -> str | None:
    shortcuts = sorted(float(s) for s in _grid(cfg, "task.shortcut"))
    if len(shortcuts) < 2:
        return "the sweep has no shortcut-trained group (one value of task.shortcut)"
    if shortcuts[-1] >= 1.0:
        return (
            "group A is trained with task.shortcut = 1 (the hint always names the answer), so nothing makes "
            "it use the operands and its stream need not carry them past the embeddings (in the quick "
            "reproduction A -> B sat at the chance loss, ln 11 = 2.40 nats, at every hook past them): a "
            "contrast between hooks compares chance with chance, decided by the preset. Groups that differ "
            "subtly (a partial shortcut) are needed"
        )
    if _reference_depth(cfg) < 2:
        return "one block: there is a single hook past the embeddings, no contrast between hooks"
    return None


def _untested_cka_blocks(cfg: ExperimentConfig) -> str | None:
    depth = _reference_depth(cfg)
    if depth < 3:
        return (
            f"the reference model has {depth} block(s): fewer than three hooks past the embeddings, so no two "
            "hooks at the same distance in depth can lie once in a block and once across a boundary"
        )
    if len(cfg.sweep.seeds) < 2:
        return "one seed: the block boundary is chosen on the other half of the seeds"
    return None


CLAIMS: tuple[Claim, ...] = (
    Claim(
        id="solu_gelu_asymmetry",
        claim=(
            "Stitching is asymmetric between SoLU and GeLU models: SoLU's representations stitched into a "
            "GeLU model cost more than GeLU's stitched into a SoLU model, beyond what each receiver costs "
            "with a model of its own family."
        ),
        paper_ref="Brown et al. 2023, abstract insight (i), the SoLU/GeLU stitching experiments (qualitative)",
        statistic=(
            "mean over hooks l >= 1 of [pen(SoLU -> GeLU) - pen(GeLU -> GeLU)] - [pen(GeLU -> SoLU) - "
            "pen(SoLU -> SoLU)], each a mean over model pairs (nats, reference point); interval: bootstrap "
            "over the GeLU and the SoLU models (not pairs, which share models)"
        ),
        control=(
            "each receiver family's same-family penalty: its models stitched into each other at the same hook "
            "with the same stitch budget"
        ),
        rule=Above(0.0),
        interval=asymmetry_interval,
        untested=_untested_asymmetry,
    ),
    Claim(
        id="stitching_localizes_generalization",
        claim=(
            "Stitching localizes a generalization difference that in-distribution accuracy does not show: "
            "the excess penalty of stitching a shortcut-trained model into a shortcut-free one differs "
            "between layers."
        ),
        paper_ref="Brown et al. 2023, abstract insight (ii), the generalization-strategy experiments (qualitative)",
        statistic=(
            "excess(L) - excess(1) with excess(l) = pen(A -> B) - pen(B -> B) at hook l, means over model "
            "pairs (nats; A: shortcut-trained GeLU, B: clean GeLU, reference point); interval: bootstrap over "
            "the A and the B models"
        ),
        control="B's same-group penalty (B's models stitched into each other at the same hook)",
        rule=Outside(-LOCALIZATION_MIN_EFFECT, LOCALIZATION_MIN_EFFECT),
        interval=localization_interval,
        untested=_untested_localization,
    ),
    Claim(
        id="cka_block_structure",
        claim="Linear CKA between the layers of a model shows block structure across depth.",
        paper_ref=(
            "Brown et al. 2023, abstract insight (iii), CKA across width and depth of Pythia models (qualitative)"
        ),
        statistic=(
            "per seed, the mean over GeLU and SoLU (reference point) of the run's linear CKA of hooks 1..L in the "
            "same block minus across the block boundary, at matched distance in depth; two blocks, the boundary "
            "chosen on the other half of the family's seeds"
        ),
        control=(
            "pairs of hooks at the same distance in depth across the boundary (a CKA that only decays with "
            "distance gives 0)"
        ),
        rule=Above(0.0),
        values=block_structure_values,
        untested=_untested_cka_blocks,
    ),
)


def deviations(cfg: ExperimentConfig) -> list[str]:
    """How this config's setup differs from Brown et al.'s, one line each."""
    t, m, p = cfg.task, cfg.model, cfg.probe
    widths = _grid(cfg, "model.d_model")
    depths = _grid(cfg, "model.n_layers")
    shortcuts = sorted(float(s) for s in _grid(cfg, "task.shortcut"))
    n_seeds = len(cfg.sweep.seeds)
    out = [
        (
            f"models: {'/'.join(str(d) for d in depths)}-block transformers of width "
            f"{'/'.join(str(w) for w in widths)} (MLP {m.d_mlp}) trained from scratch for {cfg.train.steps} steps; "
            "the paper stitches Neel Nanda's SoLU and GeLU language models trained on web text"
        ),
        (
            f"task: the synthetic modular sum y = (a + b) mod {t.p}, {t.n_items} items a sequence, with a hint "
            "token; the paper evaluates on text"
        ),
        _stitch_deviation(p),
        (
            f"the claims use the reference point only (width {widths[0]}, depth {depths[0]}); hooks are the "
            "residual stream before each block and after the last"
        ),
    ]
    if len(widths) < 2:
        out.append(
            "one width: no 'more is better' stitching between a narrow and a wide model (the paper's Pythia "
            "width comparison is not made)"
        )
    if len(shortcuts) > 1:
        how = (
            "the hint always names the answer in A's training data, so A need not use the operands: its stream "
            "past the embeddings need not carry them, and a contrast between hooks compares chance with chance "
            "(the localization claim is untested)"
            if shortcuts[-1] >= 1.0
            else "both groups must compute the sum for the part of the data where the hint is noise, so both use "
            "their inputs; whether their representations differ, and where, is measured (the localization claim "
            "can come out either way: an excess that does not change between hooks is not_reproduced)"
        )
        out.append(
            f"generalization groups: GeLU models trained with the hint naming the answer with probability "
            f"{shortcuts[-1]:g} (A) and {shortcuts[0]:g} (B); {how}. The paper's groups are McCoy et al.'s BERT "
            "models fine-tuned on MNLI that generalize differently on HANS"
        )
    depth = _reference_depth(cfg)
    if depth < 3:
        out.append(f"CKA block structure: {depth}-block models, too shallow for blocks across depth (untested)")
    else:
        out.append(
            f"CKA block structure: {depth}-block models, hooks 1..{depth} (the embeddings left out), two blocks "
            "with the boundary chosen on half of the seeds and scored on the other half at matched depth "
            "distance, so neither the boundary's choice nor CKA's decay with distance makes the contrast "
            "positive; the paper reads block structure off the CKA heatmaps of Pythia models by eye"
        )
    if n_seeds < MIN_SEEDS:
        out.append(
            f"{n_seeds} seeds per family: the interval resamples models, and a verdict needs at least {MIN_SEEDS} "
            "models per family"
        )
    return out


def _stitch_deviation(p: Any) -> str:
    """The stitching line of the deviations: the budget rule and the check that makes it falsifiable."""
    head = (
        f"stitching: an affine map, least-squares start then Adam at lr {p.stitch_lr:g} (batch {p.stitch_batch_size})"
    )
    if p.stitch_tol > 0:
        rule = (
            f" until the mean training loss of a {p.stitch_window}-step window improves on the previous window's by "
            f"less than {p.stitch_tol:g} of it (at most {p.stitch_steps} steps, rounded up to whole windows; the "
            "budget each pair used is in the report)"
        )
    else:
        rule = f" for a fixed {p.stitch_steps} steps, with no convergence check"
    check = (
        "; budget check: every stitch trains as many steps again and the claims' statistics are recomputed at "
        "twice the budget: it passes when that moves a statistic less than the effect (the report's Stitch budget)"
        if p.stitch_budget_check
        else "; no budget check (probe.stitch_budget_check = false): the budget could decide a small effect"
    )
    return head + rule + check + ". The paper trains its stitching layers to convergence on text"


__all__ = [
    "CLAIMS",
    "INT_KEYS",
    "LOCALIZATION_MIN_EFFECT",
    "TEXT_KEYS",
    "BudgetCheck",
    "Excess",
    "asymmetry_interval",
    "asymmetry_parts",
    "asymmetry_statistic",
    "best_boundary",
    "block_contrast",
    "block_structure_values",
    "budget_checks",
    "cross_mean",
    "current_name",
    "current_names",
    "deviations",
    "excess_by_hook",
    "family_seeds",
    "localization_interval",
    "localization_parts",
    "localization_statistic",
    "pair_penalties",
    "parse_dissimilarity_metric",
    "run_cka_matrices",
    "same_mean",
]
