"""steerability: when do concept directions become readable and steerable during training?

She et al. (2025), "How Does Controllability Emerge In Language Models During Pretraining?", read
concept directions from Pythia/OLMo checkpoints with an "Intervention Detector" (last-token hidden
states of paired stimuli, PCA of their differences) and find that linear steerability (adding
alpha * v to the residual stream moves generations toward the concept) emerges at intermediate
training stages, at different times for related concepts (anger vs sadness), and that linear
separability grows with training and correlates with steerability.

Here: a 4-6 block causal softmax transformer learns the `concepts` language (jaxlab.tasks.concepts:
a Markov chain plus four latent "emotions" that prefer their own marker tokens; joy frequent,
fear rare, anger and sadness a close pair sharing two markers, sadness weaker). Many seeds train
as one program; evaluations (and orbax checkpoints, every one kept) are log-spaced in steps. At
every evaluation, on device and vmapped over runs, `jaxlab.probes.steering` reads each concept at
every residual layer (ID score, explained variance, separability) and steers with the direction
found (see that module for the formulas). The checkpoint series is read again afterwards for
direction stability (`checkpoint_directions`).

Metrics (c: concept name, l: residual layer 0..n_layers-1, the stream after block l):
  per evaluation: eval_loss; {id_score, id_score_mean_diff, ev_ratio, separability, steer_effect,
  steer_slope}_{c}_l{l}; concept_gap_{c} (the model's own marker-mass difference on vs off, held-out
  pairs); cos_{a}_{b}_l{l} (between the PCA directions of two concepts).
  final (summary.json): sep_onset_step_{c}, steer_onset_step_{c} (first evaluation step whose
  best-layer separability / steering effect reaches probe.sep_threshold / probe.steer_threshold;
  null if never), id_score_{c}, separability_{c}, steer_effect_{c} (best layer, last evaluation),
  sep_steer_corr_{c} (Pearson correlation over evaluations of the layer-mean separability and the
  layer-mean steering effect) and sep_steer_corr (its mean over concepts).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import chex
import jax
import jax.numpy as jnp
import numpy as np

from jaxlab.config import (
    ExperimentConfig,
    ModelConfig,
    OptimConfig,
    ProbeConfig,
    SweepConfig,
    TrainConfig,
    _choice,
    _positive,
)
from jaxlab.errors import ConfigError
from jaxlab.probes import steering
from jaxlab.stats import pearson_rows
from jaxlab.tasks import concepts
from jaxlab.train.experiment import Experiment

POSITIONS = steering.POSITIONS
DIRECTIONS = steering.DIRECTIONS
READINGS = ("id_score", "id_score_mean_diff", "ev_ratio", "separability")
STEERINGS = ("steer_effect", "steer_slope")


@dataclass(frozen=True)
class SteerabilityProbe(ProbeConfig):
    """Stimuli, ID reader, steering grid and onset thresholds.

    n_pairs stimulus pairs per concept: the first fit_fraction of them fit the directions and the
    ridge probe, the rest score them. n_steer base sequences (every concept off) are steered.
    alphas: steering strengths in units of the layer's last-token RMS norm (alpha_eval among them).
    """

    section: ClassVar[str] = "probe"
    n_pairs: int = 256
    fit_fraction: float = 0.5
    n_steer: int = 32
    ridge_lam: float = 1e-2
    alphas: tuple[float, ...] = (0.25, 0.5, 1.0)
    alpha_eval: float = 1.0
    positions: str = "all"
    direction: str = "pca"
    sep_threshold: float = 0.9
    steer_threshold: float = 0.2
    n_loss: int = 256

    UNREAD_KEYS: ClassVar[dict[str, str]] = {
        "train.eval_batch_size": "steerability evaluates on its stimuli (probe.n_pairs, probe.n_steer, probe.n_loss)"
    }

    def validate(self) -> None:
        n = self._name
        for name in ("n_steer", "n_loss"):
            _positive(n(name), getattr(self, name))
        if self.n_pairs < 4:
            raise ConfigError(n("n_pairs"), f"must be >= 4, got {self.n_pairs}")
        if not 0.0 < self.fit_fraction < 1.0:
            raise ConfigError(n("fit_fraction"), f"must be in (0, 1), got {self.fit_fraction}")
        _positive(n("ridge_lam"), self.ridge_lam)
        if not self.alphas:
            raise ConfigError(n("alphas"), "needs at least one steering strength")
        if self.alpha_eval not in self.alphas:
            raise ConfigError(n("alpha_eval"), f"must be one of probe.alphas, got {self.alpha_eval}", self.alphas)
        _choice(n("positions"), self.positions, POSITIONS)
        _choice(n("direction"), self.direction, DIRECTIONS)
        if not 0.0 <= self.sep_threshold <= 1.0:
            raise ConfigError(n("sep_threshold"), f"must be in [0, 1], got {self.sep_threshold}")

    @property
    def n_fit(self) -> int:
        """Pairs that fit the directions and probes; at least one fits and one scores."""
        return min(max(round(self.n_pairs * self.fit_fraction), 1), self.n_pairs - 1)


# -- presets ---------------------------------------------------------------------------------------
def model(**overrides: Any) -> ModelConfig:
    base = dict(
        n_layers=4,
        n_heads=2,
        d_model=32,
        d_mlp=128,
        attention="softmax",
        mask="causal",
        input="discrete",
        pos_encoding="learned",
        layernorm=True,
    )
    return ModelConfig(**{**base, **overrides})


def quick() -> ExperimentConfig:
    """8 seeds on a CPU in minutes."""
    return ExperimentConfig(
        experiment="steerability",
        preset="quick",
        model=model(),
        task=concepts.Config(),
        optim=OptimConfig(name="adamw", lr=3e-3, weight_decay=0.0, schedule="warmup_constant", warmup_steps=50),
        train=TrainConfig(
            steps=2000,
            batch_size=32,
            eval_schedule="log",
            n_evals=16,
            checkpoint_every=1,
            keep_checkpoints=0,
        ),
        probe=SteerabilityProbe(),
        sweep=SweepConfig(seeds=tuple(range(8))),
    )


def paper() -> ExperimentConfig:
    """The largest setup here (an accelerator's worth): 6 blocks, d_model 64, 16 seeds, 10k steps.

    She et al. probe public Pythia/OLMo checkpoint series of natural-language models; this keeps
    their method (log-spaced checkpoints, last-token ID reader over >= 256 pairs, residual steering)
    on the synthetic language, at the size of the issue's model family.
    """
    overrides = {
        "train.steps": 10_000,
        "train.batch_size": 64,
        "train.n_evals": 24,
        "model.n_layers": 6,
        "model.n_heads": 4,
        "model.d_model": 64,
        "model.d_mlp": 256,
        "optim.lr": 1e-3,
        "optim.warmup_steps": 200,
        "probe.n_pairs": 512,
        "probe.n_steer": 64,
    }
    return quick().derive("paper", overrides, sweep=SweepConfig(seeds=tuple(range(16))))


def smoke() -> ExperimentConfig:
    """Seconds on a CPU: for tests."""
    overrides = {
        "model.n_layers": 2,
        "model.n_heads": 2,
        "model.d_model": 16,
        "model.d_mlp": 32,
        "task.seq_len": 12,
        "task.n_base": 12,
        "train.steps": 40,
        "train.batch_size": 16,
        "train.n_evals": 4,
        "probe.n_pairs": 64,
        "probe.n_steer": 8,
        "probe.n_loss": 32,
        "optim.warmup_steps": 5,
    }
    return quick().derive("smoke", overrides, sweep=SweepConfig(seeds=(0, 1)))


# -- evaluation data and on-device probes ----------------------------------------------------------
def eval_data(train: Any) -> dict[str, Any]:
    """Stimulus pairs [K, n_pairs, T] per concept, steered base sequences [n_steer, T], the marker
    masks [K, V], and a loss batch; fixed by train.eval_seed, the same for every run."""
    cfg, probe = train.cfg.task, train.cfg.probe
    k_stim, k_steer, k_loss = jax.random.split(train.eval_key(), 3)
    on, off = jax.vmap(lambda c: concepts.paired_stimuli(k_stim, cfg, c, probe.n_pairs))(jnp.arange(cfg.n_concepts))
    return {
        "on": on,
        "off": off,
        "steer": concepts.base_sequences(k_steer, cfg, probe.n_steer),
        "markers": jnp.asarray(concepts.marker_mask(cfg)),
        "loss": train.sample(k_loss, probe.n_loss),
    }


def probe_one_concept(
    train: Any, params: chex.ArrayTree, on_NT: jax.Array, off_NT: jax.Array, steer_ST: jax.Array, mask_V: jax.Array
) -> tuple[dict[str, jax.Array], jax.Array]:
    """({metric: [L] or []}, PCA directions [L, D]) for one concept of one model."""
    probe = train.cfg.probe
    n, n_fit = on_NT.shape[0], probe.n_fit
    # one forward pass for the stimuli and the steered base sequences
    h, logits = steering.last_token_states(train.model, params, jnp.concatenate([on_NT, off_NT, steer_ST]))
    h_on, h_off, h_steer = h[:, :n], h[:, n : 2 * n], h[:, 2 * n :]
    reading = steering.read_concept(h_on, h_off, n_fit, probe.ridge_lam)
    p_markers = jax.nn.softmax(logits, -1) @ mask_V
    gap = jnp.mean(p_markers[n_fit:n] - p_markers[n + n_fit : 2 * n])
    v = reading.v_pca if probe.direction == "pca" else reading.v_mean_diff
    scale = jax.vmap(steering.rms_norm)(h_steer)
    hooks = steering.residual_hooks(train.cfg.model.n_layers)
    positions = steering.position_mask(probe.positions, on_NT.shape[1])
    apply_fn = functools.partial(train.apply, params)
    alphas = jnp.asarray(probe.alphas, jnp.float32)
    deltas = steering.steering_deltas(apply_fn, steer_ST, hooks, scale[:, None] * v, alphas, positions, mask_V)
    effect, slope = steering.effect_and_slope(alphas, deltas, probe.alpha_eval)
    metrics = {
        "id_score": reading.id_score,
        "id_score_mean_diff": reading.id_score_mean_diff,
        "ev_ratio": reading.ev_ratio,
        "separability": reading.separability,
        "steer_effect": effect,
        "steer_slope": slope,
        "concept_gap": gap,
    }
    return metrics, reading.v_pca


def make_evaluate(cfg: ExperimentConfig):
    names = cfg.task.names

    def evaluate(train: Any, params: chex.ArrayTree, data: dict[str, Any]) -> dict[str, jax.Array]:
        # lax.map over concepts bounds memory: the (layer x alpha) steering grid is already vmapped
        per, v_KLD = jax.lax.map(
            lambda a: probe_one_concept(train, params, a[0], a[1], data["steer"], a[2]),
            (data["on"], data["off"], data["markers"]),
        )
        out = {"eval_loss": train.loss(params, data["loss"])}
        L = v_KLD.shape[1]
        for k, c in enumerate(names):
            out[f"concept_gap_{c}"] = per["concept_gap"][k]
            for name in READINGS + STEERINGS:
                for l in range(L):
                    out[f"{name}_{c}_l{l}"] = per[name][k, l]
        cos = steering.cosine(v_KLD[:, None], v_KLD[None, :])  # [K, K, L]
        for a in range(len(names)):
            for b in range(a + 1, len(names)):
                for l in range(L):
                    out[f"cos_{names[a]}_{names[b]}_l{l}"] = cos[a, b, l]
        return out

    return evaluate


# -- finals from the evaluation history ------------------------------------------------------------
def layer_series(history: dict[str, np.ndarray], name: str, concept: str, n_layers: int) -> np.ndarray:
    """[R, n_evals, L] values of `{name}_{concept}_l{l}`."""
    return np.stack([np.asarray(history[f"{name}_{concept}_l{l}"], np.float64) for l in range(n_layers)], -1)


def onset_steps(values_RN: np.ndarray, steps_N: np.ndarray, threshold: float) -> np.ndarray:
    """[R] first step whose value is >= threshold (nan where none)."""
    above = values_RN >= threshold
    first = np.argmax(above, axis=1)
    return np.where(above.any(axis=1), np.asarray(steps_N, np.float64)[first], np.nan)


def from_history(train: Any, history: dict[str, np.ndarray], steps: np.ndarray) -> dict[str, np.ndarray]:
    probe, L = train.cfg.probe, train.cfg.model.n_layers
    out: dict[str, np.ndarray] = {}
    corrs = []
    for c in train.cfg.task.names:
        sep = layer_series(history, "separability", c, L)
        steer = layer_series(history, "steer_effect", c, L)
        ids = layer_series(history, "id_score", c, L)
        out[f"sep_onset_step_{c}"] = onset_steps(sep.max(-1), steps, probe.sep_threshold)
        out[f"steer_onset_step_{c}"] = onset_steps(steer.max(-1), steps, probe.steer_threshold)
        out[f"separability_{c}"] = sep[:, -1].max(-1)
        out[f"steer_effect_{c}"] = steer[:, -1].max(-1)
        out[f"id_score_{c}"] = ids[:, -1].max(-1)
        out[f"sep_steer_corr_{c}"] = pearson_rows(sep.mean(-1), steer.mean(-1))
        corrs.append(out[f"sep_steer_corr_{c}"])
    with np.errstate(invalid="ignore"), _quiet():
        out["sep_steer_corr"] = np.nanmean(np.stack(corrs), axis=0)
    return out


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)


# -- post hoc: the saved checkpoint series ---------------------------------------------------------
def checkpoint_directions(run_dir: str | Path, group: int = 0, chunk: int = 4) -> dict[str, np.ndarray]:
    """PCA directions and ID scores recomputed from every saved checkpoint of a run directory.

    Returns steps [C], v [C, R, K, L, D] and id_score [C, R, K, L]: one program, vmapped over runs and
    layers, and over checkpoints in chunks of `chunk` (`lax.map(batch_size=...)` bounds the memory).
    """
    from jaxlab.train.restore import checkpoint_indices, load_group

    indices = checkpoint_indices(EXPERIMENT, run_dir, group)
    if not indices:
        raise FileNotFoundError(f"no checkpoints of group {group} in {Path(run_dir) / 'checkpoints'}")
    series = [load_group(EXPERIMENT, run_dir, group, checkpoint=i) for i in indices]
    train = series[0].train
    params_CR = jax.tree_util.tree_map(lambda *xs: jnp.stack(xs), *(o.state.params for o in series))
    data = train.make_eval_batch()
    n_fit, lam = train.cfg.probe.n_fit, train.cfg.probe.ridge_lam

    def read(params):
        def per_concept(on, off):
            h, _ = steering.last_token_states(train.model, params, jnp.concatenate([on, off]))
            r = steering.read_concept(h[:, : on.shape[0]], h[:, on.shape[0] :], n_fit, lam)
            return r.v_pca, r.id_score

        return jax.lax.map(lambda a: per_concept(*a), (data["on"], data["off"]))

    v, ids = jax.jit(lambda p: jax.lax.map(jax.vmap(read), p, batch_size=chunk))(params_CR)
    steps = np.asarray(train.eval_steps)[np.asarray(indices)]
    return {"steps": steps, "v": np.asarray(v), "id_score": np.asarray(ids)}


def direction_stability(v_CRKLD: np.ndarray) -> dict[str, np.ndarray]:
    """Signed cosines of oriented directions: successive checkpoints [C-1, R, K, L], to the last [C, R, K, L]."""
    v = jnp.asarray(v_CRKLD)
    return {
        "successive": np.asarray(steering.cosine(v[1:], v[:-1])),
        "to_final": np.asarray(steering.cosine(v, v[-1:])),
    }


# -- report ----------------------------------------------------------------------------------------
def history_grid(df: Any, name: str, concept: str, n_layers: int) -> tuple[np.ndarray, np.ndarray]:
    """(steps [n], values [R, n, L]) of the per-layer metric `{name}_{concept}_l{l}` from the tidy table."""
    cols = [f"{name}_{concept}_l{l}" for l in range(n_layers)]
    sub = df[df.metric.isin(cols)]
    wide = sub.pivot_table(index=["run", "step"], columns="metric", values="value", aggfunc="last")[cols]
    runs = wide.index.get_level_values("run").unique()
    steps = np.asarray(sorted(wide.index.get_level_values("step").unique()))
    values = wide.to_numpy(np.float64).reshape(len(runs), len(steps), len(cols))
    return steps, values


def _heatmap_figure(ctx: Any, name: str, label: str, vmin: float | None, vmax: float | None, cmap: str):
    import matplotlib.pyplot as plt

    from jaxlab.reporting import Figure

    names, L = ctx.cfg.task.names, ctx.cfg.model.n_layers
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.2), squeeze=False)
    for ax, c in zip(axes[0], names):
        steps, values = history_grid(ctx.df, name, c, L)
        med = np.nanmedian(values, axis=0).T  # [L, n]
        im = ax.imshow(med, origin="lower", aspect="auto", vmin=vmin, vmax=vmax, cmap=cmap)
        ticks = np.unique(np.linspace(0, len(steps) - 1, min(6, len(steps))).round().astype(int))
        ax.set_xticks(ticks, [str(int(steps[i])) for i in ticks], fontsize=7)
        ax.set_yticks(range(L))
        ax.set_xlabel("checkpoint (optimizer step, log-spaced)")
        ax.set_ylabel("layer (after block l)")
        ax.set_title(c)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label=label)
    filename = f"heatmap_{name}.png"
    fig.savefig(ctx.run_dir / filename, dpi=110, bbox_inches="tight")
    plt.close(fig)
    caption = (
        f"{label}: median over {ctx.summary['n_runs']} runs, per checkpoint (column) and residual layer (row). "
        "Computed on device at every evaluation step, which is the step of each checkpoint of the saved "
        f"log-spaced series. {ctx.provenance()}"
    )
    return Figure(filename, caption)


def _spread(values: list[float | None]) -> str:
    from jaxlab.reporting import fmt

    arr = np.asarray([v for v in values if v is not None and np.isfinite(v)], np.float64)
    if arr.size == 0:
        return "never"
    return f"{fmt(float(np.median(arr)))} [{fmt(float(arr.min()))}, {fmt(float(arr.max()))}]"


def _finals(ctx: Any, key: str) -> list[float | None]:
    return [r["final"].get(key) for r in ctx.summary["runs"] if r["status"] == "ok"]


def _onset_section(ctx: Any):
    from jaxlab.reporting import Section, table

    task, probe = ctx.cfg.task, ctx.cfg.probe
    R = sum(1 for r in ctx.summary["runs"] if r["status"] == "ok")
    rows = []
    for k, c in enumerate(task.names):
        sep, steer = _finals(ctx, f"sep_onset_step_{c}"), _finals(ctx, f"steer_onset_step_{c}")
        reached = lambda xs: sum(1 for x in xs if x is not None and np.isfinite(x))
        rows.append(
            [
                c,
                task.freqs[k],
                task.strengths[k],
                f"{_spread(sep)} ({reached(sep)}/{R})",
                f"{_spread(steer)} ({reached(steer)}/{R})",
                _spread(_finals(ctx, f"steer_effect_{c}")),
                _spread(_finals(ctx, f"id_score_{c}")),
                _spread(_finals(ctx, f"separability_{c}")),
                _spread(_finals(ctx, f"concept_gap_{c}")),
            ]
        )
    header = [
        "concept",
        "freq",
        "strength",
        "separability onset",
        "steerability onset",
        "steer_effect (end)",
        "id_score (end)",
        "separability (end)",
        "concept_gap (end)",
    ]
    pair = f"{task.names[task.close_pair[0]]} / {task.names[task.close_pair[1]]}" if task.close_pair else "none"
    body = (
        f"Onset: the first checkpoint step at which the best layer's separability reaches "
        f"{probe.sep_threshold} (`probe.sep_threshold`) or its steering effect (probability mass moved to the "
        f"concept's markers at alpha = {probe.alpha_eval} x the layer's RMS norm, steering at "
        f"{probe.positions} positions) reaches {probe.steer_threshold} (`probe.steer_threshold`). "
        f"Cells: median [min, max] over runs (runs reaching it / runs); 'never' when no run does. "
        f"Close pair (sharing {task.n_shared} of {task.n_markers} markers): {pair}. `concept_gap`: the model's own "
        "marker mass on the 'on' minus the 'off' stimuli (the ideal model's gap is the concept's strength).\n\n"
    )
    return Section("Onsets of separability and steerability", body + table(header, rows))


def _corr_section(ctx: Any):
    import matplotlib.pyplot as plt

    from jaxlab.reporting import Figure, Section, table

    names, L = ctx.cfg.task.names, ctx.cfg.model.n_layers
    fig, ax = plt.subplots(figsize=(5.2, 4.0))
    for c in names:
        _, sep = history_grid(ctx.df, "separability", c, L)
        _, steer = history_grid(ctx.df, "steer_effect", c, L)
        ax.scatter(sep.mean(-1).ravel(), steer.mean(-1).ravel(), s=8, alpha=0.5, label=c)
    ax.set_xlabel("separability (mean over layers)")
    ax.set_ylabel("steer_effect (mean over layers)")
    ax.legend(fontsize=7)
    filename = "sep_vs_steer.png"
    ctx.save(fig, filename)
    rows = [[c, _spread(_finals(ctx, f"sep_steer_corr_{c}"))] for c in names]
    rows.append(["mean over concepts (sep_steer_corr)", _spread(_finals(ctx, "sep_steer_corr"))])
    body = (
        "Pearson correlation, over the checkpoints of one run, between the layer-mean separability and the "
        "layer-mean steering effect of a concept; median [min, max] over runs.\n\n" + table(["concept", "r"], rows)
    )
    caption = f"Every (run, checkpoint) of every concept. {ctx.provenance()}"
    return Section("Separability vs steerability", body, [Figure(filename, caption)])


def _stability_section(ctx: Any):
    import matplotlib.pyplot as plt

    from jaxlab.reporting import Figure, Section, fmt, table

    names, L = ctx.cfg.task.names, ctx.cfg.model.n_layers
    cache = ctx.run_dir / "checkpoint_directions.npz"
    try:
        if cache.exists():
            found = dict(np.load(cache))
        else:
            found = checkpoint_directions(ctx.run_dir)
            np.savez(cache, **found)
    except Exception as err:  # a run without its checkpoints still gets the rest of its report
        return Section("Direction stability", f"Not available: the checkpoint series could not be read ({err}).")
    stab = direction_stability(found["v"])
    steps = found["steps"]
    fig, axes = plt.subplots(1, len(names), figsize=(3.6 * len(names), 3.2), squeeze=False)
    for k, (ax, c) in enumerate(zip(axes[0], names)):
        med = np.nanmedian(stab["successive"][:, :, k], axis=1).T  # [L, C-1]
        im = ax.imshow(med, origin="lower", aspect="auto", vmin=-1, vmax=1, cmap="RdBu_r")
        ticks = np.unique(np.linspace(0, len(steps) - 2, min(6, max(len(steps) - 1, 1))).round().astype(int))
        ax.set_xticks(ticks, [str(int(steps[i + 1])) for i in ticks], fontsize=7)
        ax.set_yticks(range(L))
        ax.set_xlabel("checkpoint step")
        ax.set_ylabel("layer")
        ax.set_title(c)
    fig.colorbar(im, ax=axes[0].tolist(), shrink=0.8, label="cos(v_t, v_prev)")
    filename = "direction_stability.png"
    fig.savefig(ctx.run_dir / filename, dpi=110, bbox_inches="tight")
    plt.close(fig)
    # between concepts at the last checkpoint, per layer
    v_last = found["v"][-1]  # [R, K, L, D]
    rows = []
    for a in range(len(names)):
        for b in range(a + 1, len(names)):
            cos = np.asarray(steering.cosine(jnp.asarray(v_last[:, a]), jnp.asarray(v_last[:, b])))  # [R, L]
            rows.append([f"{names[a]} / {names[b]}", *(fmt(float(np.median(cos[:, l]))) for l in range(L))])
    # the in-training ID scores agree with the ones recomputed from the saved checkpoints
    diffs = []
    for k, c in enumerate(names):
        h_steps, values = history_grid(ctx.df, "id_score", c, L)
        idx = np.searchsorted(h_steps, steps)
        diffs.append(np.abs(values[:, idx] - np.moveaxis(found["id_score"][:, :, k], 0, 1)).max())
    body = (
        "Recomputed from the saved orbax checkpoint series (every evaluation step, `train.checkpoint_every=1`, "
        "`train.keep_checkpoints=0`). Directions are oriented (the mean on-minus-off difference projects "
        "positively), so cosines are signed: 1 = the same direction as at the previous checkpoint. The ID scores "
        "recomputed from the checkpoints agree with the on-device ones to "
        f"{fmt(float(max(diffs)))} (max abs difference).\n\nCosine between concepts' PCA directions at the last "
        "checkpoint (median over runs), per layer:\n\n" + table(["pair", *(f"l{l}" for l in range(L))], rows)
    )
    caption = f"Median over runs of the cosine between successive checkpoints' directions. {ctx.provenance()}"
    return Section("Direction stability", body, [Figure(filename, caption)])


def _median_final(ctx: Any, key: str) -> float:
    vals = [v for v in _finals(ctx, key) if v is not None and np.isfinite(v)]
    return float(np.median(vals)) if vals else float("nan")


def _paper_section(ctx: Any):
    from jaxlab.reporting import Section, fmt

    task, L = ctx.cfg.task, ctx.cfg.model.n_layers
    names = task.names
    total = ctx.cfg.train.steps
    onsets = {c: _median_final(ctx, f"steer_onset_step_{c}") for c in names}
    freq_order = sorted(range(len(names)), key=lambda k: task.freqs[k])
    rare, frequent = names[freq_order[0]], names[freq_order[-1]]
    lines = [
        "She et al. (2025) report, for Pythia/OLMo checkpoints: (1) linear steerability emerges at intermediate "
        "training stages; (2) closely related concepts (anger, sadness) become steerable at different times; "
        "(3) linear separability grows with training and correlates with steerability. Measured here:",
        "",
        "- (1) median steerability onset (step of "
        + fmt(total)
        + "): "
        + ", ".join(f"{c} {fmt(onsets[c])}" for c in names)
        + f"; the rare concept ({rare}, freq {task.freqs[freq_order[0]]}) vs the frequent one ({frequent}, freq "
        f"{task.freqs[freq_order[-1]]}): {fmt(onsets[rare])} vs {fmt(onsets[frequent])}.",
    ]
    if task.close_pair:
        a, b = (names[i] for i in task.close_pair)
        lines.append(
            f"- (2) close pair {a} / {b} (shared markers; strengths {task.strengths[task.close_pair[0]]} / "
            f"{task.strengths[task.close_pair[1]]}): steerability onsets {fmt(onsets[a])} / {fmt(onsets[b])}, "
            f"separability onsets {fmt(_median_final(ctx, f'sep_onset_step_{a}'))} / "
            f"{fmt(_median_final(ctx, f'sep_onset_step_{b}'))}."
        )
    first_last = []
    for c in names:
        steps, sep = history_grid(ctx.df, "separability", c, L)
        med = np.nanmedian(sep.max(-1), axis=0)
        first_last.append(f"{c} {fmt(float(med[0]))} -> {fmt(float(med[-1]))}")
    lines.append(
        "- (3) best-layer separability, first -> last checkpoint (median): "
        + ", ".join(first_last)
        + f"; sep_steer_corr (median over runs) {fmt(_median_final(ctx, 'sep_steer_corr'))}."
    )
    lines += [
        "",
        "A difference by design: these concepts are lexical (marker tokens), so even a randomly initialized "
        "network's last-token state orders most stimulus pairs (ID scores well above 0.5 at step 0) and separates "
        "them partly; what training adds is the separability of on/off across different texts and, above all, "
        "the steerability. The embedding stream is not read: the reading token is the same in both members of a "
        "pair, so there is nothing to read there.",
    ]
    return Section("Comparison with the paper", "\n".join(lines))


def report(ctx: Any) -> list:
    from jaxlab.reporting import Section, table

    task = ctx.cfg.task
    markers = concepts.marker_table(task)
    rows = [[c, task.freqs[k], task.strengths[k], " ".join(map(str, markers[k]))] for k, c in enumerate(task.names)]
    intro = Section(
        "The concept language",
        f"{task.n_base} base tokens (Markov chain, {task.branching} successors each), sequences of {task.seq_len} "
        f"tokens, background marker rate {task.background}.\n\n"
        + table(["concept", "frequency", "strength", "marker tokens"], rows),
    )
    figs = [
        _heatmap_figure(ctx, "id_score", "ID score (held-out pairs)", 0.5, 1.0, "viridis"),
        _heatmap_figure(ctx, "separability", "linear separability (ridge, held out)", 0.5, 1.0, "viridis"),
        _heatmap_figure(
            ctx, "steer_effect", f"steering effect at alpha={ctx.cfg.probe.alpha_eval}", None, None, "magma"
        ),
    ]
    heat = Section("Readability and steerability over training", figures=figs)
    sections = [intro, heat, _onset_section(ctx), _corr_section(ctx), _stability_section(ctx)]
    return [*sections, _paper_section(ctx)]


METRICS = {
    "eval_loss": "next-token cross-entropy (nats) on a fixed batch of the concept language",
    "train_loss": "next-token cross-entropy (nats), mean over the steps since the last evaluation",
    "id_score_{c}_l{l}": "fraction of held-out stimulus pairs whose last-token difference projects positively "
    "on the PCA direction read at layer l",
    "id_score_mean_diff_{c}_l{l}": "the same with the difference-of-means direction",
    "ev_ratio_{c}_l{l}": "explained-variance ratio of the first principal component of the differences",
    "separability_{c}_l{l}": "held-out accuracy of the ridge classifier on/off on last-token states",
    "steer_effect_{c}_l{l}": "change of next-token probability mass on the concept's markers when alpha_eval x "
    "RMS norm x v is added at layer l (base sequences with every concept off)",
    "steer_slope_{c}_l{l}": "least-squares slope through the origin of that change over probe.alphas",
    "concept_gap_{c}": "model's marker mass on 'on' minus 'off' stimuli (held-out pairs)",
    "cos_{a}_{b}_l{l}": "cosine between the PCA directions of concepts a and b at layer l",
    "sep_onset_step_{c}": "first evaluation step where max over layers of separability >= probe.sep_threshold",
    "steer_onset_step_{c}": "first evaluation step where max over layers of steer_effect >= probe.steer_threshold",
    "id_score_{c}, separability_{c}, steer_effect_{c}": "max over layers at the last evaluation",
    "sep_steer_corr_{c}": "Pearson r over evaluations of layer-mean separability and layer-mean steer_effect",
    "sep_steer_corr": "mean of sep_steer_corr_{c} over concepts",
}


EXPERIMENT = Experiment(
    name="steerability",
    description=(
        "Emergence of linear readability and steerability of concepts during training "
        "(She et al. 2025, 'How Does Controllability Emerge In Language Models During Pretraining?')."
    ),
    presets={"smoke": smoke, "quick": quick, "paper": paper},
    probe_class=SteerabilityProbe,
    make_evaluate=make_evaluate,
    eval_data=eval_data,
    from_history=from_history,
    report=report,
    metrics=METRICS,
)
