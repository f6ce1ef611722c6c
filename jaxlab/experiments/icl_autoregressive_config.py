"""icl-autoregressive's configuration: the probe section (`ARProbeConfig`) and the presets (the table in
`jaxlab.experiments.icl_autoregressive`'s docstring says what each one sets and why)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from jaxlab.config import ExperimentConfig, ModelConfig, OptimConfig, ProbeConfig, SweepConfig, TrainConfig, _choice
from jaxlab.errors import ConfigError
from jaxlab.experiments.icl_autoregressive_claims import AUGMENTED_PY, NON_AUGMENTED_PY
from jaxlab.models.presets import linear_attention_model
from jaxlab.tasks import autoregressive as ar

STARTS = ("random", "gd")


@dataclass(frozen=True)
class ARProbeConfig(ProbeConfig):
    """Probe settings (`--set probe.<field>=...`).

    w_hat_tasks: evaluation tasks used to decode W_hat (0: all). w_hat_probes: probe states per
    task and position (>= task.n_dims). max_positions: positions t at which loss_t / W_hat are
    reported (evenly spaced, always including the last). start: the training's initial parameters,
    `random` (the model's initialization) or `gd` (the full layer set to one GD step with the eta
    fitted on the evaluation set, `probes.autoregressive.gd_step_params`; the control of
    augmented-commuting-gd-start). The experiment's own section holds it: it is a setting of this
    experiment's training, which no other experiment reads.
    """

    section: ClassVar[str] = "probe"
    w_hat_tasks: int = 256
    w_hat_probes: int = 0  # 0: 2 * n_dims
    max_positions: int = 26
    start: str = "random"

    FIELD_DOCS: ClassVar[dict[str, str]] = {
        "w_hat_tasks": "evaluation tasks used to decode W_hat (0: all)",
        "w_hat_probes": "probe states per task and position for W_hat (>= task.n_dims; 0: 2 * n_dims)",
        "max_positions": "positions t at which loss_t and W_hat are reported (evenly spaced, the last included)",
        "start": "initial parameters: random (model.init_scale) or gd (one GD step, eta fitted on the eval set)",
    }
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"start": STARTS}

    def validate(self) -> None:
        n = self._name
        for name in ("w_hat_tasks", "w_hat_probes"):
            if getattr(self, name) < 0:
                raise ConfigError(n(name), f"must be >= 0, got {getattr(self, name)!r}")
        _choice(n("start"), self.start, STARTS)
        if self.max_positions < 2:
            raise ConfigError(
                n("max_positions"), f"must be >= 2 (the first and last positions), got {self.max_positions!r}"
            )


# -- presets ---------------------------------------------------------------------------------------
def augmented_model(**overrides: Any) -> ModelConfig:
    """One linear-attention head, causal, the prediction = the last d coordinates of the stream."""
    return linear_attention_model(**{"mask": "causal", "readout": "y_block", "init_scale": 0.01, **overrides})


def positional_model(n_heads: int, d_head: int, **overrides: Any) -> ModelConfig:
    """`augmented_model` with positional attention and `n_heads` heads of width `d_head`."""
    return augmented_model(attention="positional", n_heads=n_heads, d_head=d_head, **overrides)


def augmented_commuting() -> ExperimentConfig:
    """The paper's setting: d = 10, T = 20, commuting W, s_0 = ones / sqrt(d), augmented tokens; 8 seeds."""
    return ExperimentConfig(
        experiment="icl-autoregressive",
        preset="augmented-commuting",
        model=augmented_model(),
        task=ar.Config(n_dims=10, seq_len=20, w_kind="commuting", s0="fixed", encoding="augmented"),
        optim=OptimConfig(name="adam", lr=1e-2, b1=0.9, b2=0.999),
        train=TrainConfig(steps=3000, batch_size=256, eval_every=250, eval_batch_size=2048),
        probe=ARProbeConfig(),
        sweep=SweepConfig(seeds=tuple(range(8))),
    )


def paper() -> ExperimentConfig:
    """`augmented-commuting` under the name `paper`."""
    return augmented_commuting().derive("paper")


def quick() -> ExperimentConfig:
    """`augmented-commuting` with 800 steps (evaluated every 100)."""
    return augmented_commuting().derive("quick", {"train.steps": 800, "train.eval_every": 100})


def smoke() -> ExperimentConfig:
    """Seconds on a CPU, for tests: d = 4, T = 5, 20 steps, 2 seeds."""
    overrides = {
        "task.n_dims": 4,
        "task.seq_len": 5,
        "train.steps": 20,
        "train.batch_size": 32,
        "train.eval_every": 10,
        "train.eval_batch_size": 64,
        "probe.w_hat_tasks": 16,
    }
    return augmented_commuting().derive("smoke", overrides, sweep=SweepConfig(seeds=(0, 1)))


def augmented_orthogonal() -> ExperimentConfig:
    """d = 5, T = 50, Haar-orthogonal (non-commuting) W, s_0 on the sphere, augmented tokens."""
    task = ar.Config(n_dims=5, seq_len=50, w_kind="haar", s0="sphere", encoding="augmented")
    return augmented_commuting().derive("augmented-orthogonal", task=task)


def pe_only() -> ExperimentConfig:
    """d = 1 complex (2 real), unitary W with mu in {50, 100, 200, 300} (one program each), T = 30, repeated tokens, 4
    positional heads."""
    task = ar.Config(n_dims=2, seq_len=30, w_kind="unitary", mu=100.0, s0="sphere", encoding="repeated")
    return augmented_commuting().derive(
        "pe-only",
        model=positional_model(4, 4),
        task=task,
        sweep=SweepConfig(seeds=tuple(range(8)), grid=(("task.mu", (50.0, 100.0, 200.0, 300.0)),)),
    )


def non_augmented() -> ExperimentConfig:
    """d = 10 commuting W, T = 20, repeated tokens (s_t, s_t), 4 positional heads of width 20."""
    task = ar.Config(n_dims=10, seq_len=20, w_kind="commuting", s0="fixed", encoding="repeated")
    return augmented_commuting().derive("non-augmented", model=positional_model(4, 20), task=task)


def constrained_model(n_heads: int, **overrides: Any) -> ModelConfig:
    """The paper's constrained (A, B, P) attention (`jaxlab.models.constrained_attention`) with `n_heads` diagonal
    heads, in the one-layer shell of `augmented_model` (the prediction = the last d coordinates); init_scale
    0.01 gives orthogonal.py's 0.1 N(0, 1) for A, B and P."""
    return augmented_model(attention="constrained", n_heads=n_heads, d_head=1, **overrides)


def constrained_rotation() -> ExperimentConfig:
    """orthogonal.py's setting (Fig. 3, right): d = 10, T = 20, 2x2-rotation W, s_0 = ones, 8 heads, P [T, T],
    plain SGD from 0.1 N(0, 1); the loss from position 1 on (the query at u is s_{u-1}); 8 seeds.

    orthogonal.py runs gradient descent with step 1e-3 for 1e5 steps on its closed-form expected loss, the SUM over
    the 19 positions of the squared error; jaxlab's loss is 0.5 x the squared error, the mean over the 19
    positions, so the same step is lr 38 x 1e-3 = 0.038 (on sampled batches of 256 sequences instead of the
    expectation). SGD, not Adam: the loss's scale symmetry (C, P) -> (g C, P / g) leaves the raw C and P to the
    optimizer's path, and gradient flow keeps ||A||^2 - ||P||^2 fixed from the initialization, as orthogonal.py's.
    """
    task = ar.Config(n_dims=10, seq_len=20, w_kind="commuting", s0="ones", encoding="augmented", loss_start=1)
    return augmented_commuting().derive(
        "constrained-rotation",
        {"train.steps": 4000, "train.eval_every": 500},
        model=constrained_model(8),
        task=task,
        optim=OptimConfig(name="sgd", lr=0.038),
    )


def constrained_gd_commuting() -> ExperimentConfig:
    """The control: `augmented-commuting` with the Sec. 3 constrained form y_t = sum (s_t^T B s_{t'-1}) A^T s_t'
    (`attention="constrained_gd"`) in place of the full linear-attention layer; everything else the same."""
    model = augmented_model(attention="constrained_gd")
    return augmented_commuting().derive("constrained-gd-commuting", model=model)


def constrained_smoke() -> ExperimentConfig:
    """`constrained-rotation` in seconds, for tests: d = 4, T = 6, 20 steps, 2 seeds."""
    overrides = {
        "task.n_dims": 4,
        "task.seq_len": 6,
        "train.steps": 20,
        "train.batch_size": 32,
        "train.eval_every": 10,
        "train.eval_batch_size": 64,
        "probe.w_hat_tasks": 16,
    }
    return constrained_rotation().derive("constrained-smoke", overrides, sweep=SweepConfig(seeds=(0, 1)))


def augmented_commuting_gd_start() -> ExperimentConfig:
    """The control: `augmented-commuting` (the full layer, same task, optimizer, steps and seeds) started at one
    GD step with the fitted eta (`probe.start = "gd"`) instead of near 0. Does training keep the model at GD?"""
    return augmented_commuting().derive("augmented-commuting-gd-start", {"probe.start": "gd"})


def gd_start_smoke() -> ExperimentConfig:
    """`smoke` started at one GD step, for tests."""
    return smoke().derive("gd-start-smoke", {"probe.start": "gd"})


def fig5_model(d: int) -> ModelConfig:
    """augmented.py's model in jaxlab's options: one linear-attention head of width 3d on the 3d-wide tokens,
    causal, biases, LayerNorm on the attention OUTPUT as augmented.py (`norm_position="attn_out"`: y = W_r (x +
    LN(Attn(x))) + b_r, no final norm; `jaxlab.models.block`), a linear read-out to d; init_scale 1/3 gives
    PyTorch's nn.Linear weight variance 1 / (3 fan_in)."""
    return augmented_model(
        d_head=3 * d,
        use_bias=True,
        layernorm=True,
        norm_position="attn_out",
        readout="linear",
        init_scale=1.0 / 3.0,
    )


def paper_fig5() -> ExperimentConfig:
    """augmented.py (Fig. 5): d = 5, T = 50, Haar W, s_0 = ones / sqrt(d), augmented tokens, `fig5_model`, Adam
    lr 1e-2, batch 1024, 3,200 steps (augmented.py's 200 epochs of 16 batches; fresh sequences here); 8 seeds.
    Only the functional metrics are measured (`is_plain`)."""
    p = AUGMENTED_PY
    task = ar.Config(n_dims=p["n_dims"], seq_len=p["seq_len"], w_kind=p["w_kind"], s0=p["s0"], encoding="augmented")
    return augmented_commuting().derive(
        "paper-fig5",
        {"train.steps": p["steps"], "train.batch_size": p["batch_size"], "train.eval_every": 200},
        model=fig5_model(p["n_dims"]),
        task=task,
        optim=OptimConfig(name="adam", lr=p["lr"], b1=0.9, b2=0.999),
    )


def fig5_smoke() -> ExperimentConfig:
    """`paper-fig5` in seconds, for tests: d = 3, T = 6, 20 steps, 2 seeds."""
    overrides = {
        "task.n_dims": 3,
        "task.seq_len": 6,
        "model.d_head": 9,
        "train.steps": 20,
        "train.batch_size": 32,
        "train.eval_every": 10,
        "train.eval_batch_size": 64,
        "probe.w_hat_tasks": 16,
    }
    return paper_fig5().derive("fig5-smoke", overrides, sweep=SweepConfig(seeds=(0, 1)))


def non_augmented_64() -> ExperimentConfig:
    """non_augmented.py's setting (Fig. 7): d = 5, T = 50, Haar W, s_0 = ones / sqrt(d), repeated tokens (s_t, s_t),
    64 positional heads of width 2d = 10, Adam lr 1e-2; jaxlab's plain positional model (no LayerNorm, biases or
    read-out, residual stream kept) so head_cos and P are read off the weights. Sized for 2 shared CPU cores:
    batch 128, 1,000 steps, 4 seeds, 256 evaluation sequences, W_hat on 32 of them (the 64 heads' W_hat probe of 256
    tasks needs > 18 GB) (non_augmented.py: batch 1024, 3,200 steps)."""
    p = NON_AUGMENTED_PY
    task = ar.Config(n_dims=p["n_dims"], seq_len=p["seq_len"], w_kind=p["w_kind"], s0="fixed", encoding="repeated")
    return augmented_commuting().derive(
        "non-augmented-64",
        {
            "train.steps": 1000,
            "train.batch_size": 128,
            "train.eval_every": 100,
            "train.eval_batch_size": 256,
            "probe.w_hat_tasks": 32,
        },
        model=positional_model(p["n_heads"], 2 * p["n_dims"]),
        task=task,
        sweep=SweepConfig(seeds=tuple(range(4))),
    )
