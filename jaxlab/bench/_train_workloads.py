"""The workloads of `jaxlab bench train` and their analytic FLOP count.

lsa-regression      von Oswald et al. (2023): the `icl-regression` paper preset. One linear
                    self-attention layer on raw (x, y) tokens, d = 10, N = 10 (T = 11, D = 11),
                    2048 fresh tasks per step and run, adamw with clipping.
softmax-regression  Garg et al. (2022) style: interleaved x / y tokens, d = 20, N = 40 (T = 80),
                    2 pre-LN blocks of 4-head causal softmax attention, d_model 64, GeLU MLP of
                    width 256, learned positions, 256 tasks per step and run, adamw (lr 1e-4).
clustering          Wu & Varshney (2024): the `instruction-clustering` paper preset. 6 pre-LN
                    blocks of 8-head causal softmax attention, d_model 256, GeLU MLP of width 1024,
                    15-token instruction sequences over a 200-token vocabulary, 256 sequences per
                    step and run, next-token cross-entropy.
clustering-24       `clustering` with 24 blocks: how the compile time grows with depth (the blocks
                    of one structure compile once, `jaxlab.models.layer_scan`).

FLOPs per optimizer step and run (fixed, whatever the implementation computes), per layer and
sequence of T tokens of width D with an MLP of width F:
    forward = 3*2*T*D*D (Q, K, V) + 2*2*T*T*D (scores, weighted sum) + 2*T*D*D (output) + 2*2*T*D*F
    total = 3 x forward (backward = 2 x forward), times layers and batch size; data generation,
    embeddings, norms, readout and the optimizer update are not counted.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from jaxlab.config import ExperimentConfig, OptimConfig, SweepConfig, TrainConfig
from jaxlab.models.presets import gpt_model
from jaxlab.registry import get_experiment
from jaxlab.tasks import regression, task_spec


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    config: Callable[[], ExperimentConfig]
    default_steps: int  # steps per timed repeat at 64 runs: a few seconds each on the 2-core CPU
    runs_per_chunk: int | None = None  # runs per compiled program (memory); None: all runs


def lsa_regression() -> ExperimentConfig:
    return get_experiment("icl-regression").preset("paper")


def softmax_regression() -> ExperimentConfig:
    model = gpt_model(n_layers=2, n_heads=4, d_model=64, input="continuous")  # Garg et al.'s GPT-2 shape, scaled
    task = regression.Config(n_dims=20, n_context=40, input_dist="normal", layout="interleaved")
    return ExperimentConfig(
        experiment="icl-regression",
        preset="bench-softmax-regression",
        model=model,
        task=task,
        optim=OptimConfig(name="adamw", lr=1e-4),
        train=TrainConfig(steps=1000, batch_size=256, eval_every=100, eval_batch_size=256),
        sweep=SweepConfig(seeds=(0,)),
    )


def clustering() -> ExperimentConfig:
    return get_experiment("instruction-clustering").preset("paper")


def clustering_24() -> ExperimentConfig:
    return clustering().set("model.n_layers", 24)


WORKLOADS: dict[str, Workload] = {
    w.name: w
    for w in (
        Workload("lsa-regression", "1-layer LSA, d=10, N=10, batch 2048 (von Oswald et al.)", lsa_regression, 20),
        # 64 runs' activations (~16 GB) exceed the 2-core machine's memory: chunks of 16 runs.
        Workload(
            "softmax-regression",
            "2-layer softmax, d_model 64, T=80, batch 256 (Garg et al.)",
            softmax_regression,
            default_steps=1,
            runs_per_chunk=16,
        ),
        Workload(
            "clustering",
            "6-block softmax, d_model 256, T=15, batch 256 (Wu & Varshney)",
            clustering,
            default_steps=1,
            runs_per_chunk=8,
        ),
        Workload(
            "clustering-24",
            "24-block softmax, d_model 256, T=15, batch 256 (clustering, 4x deeper)",
            clustering_24,
            default_steps=1,
            runs_per_chunk=2,
        ),
    )
}


def flops_per_run_step(cfg: ExperimentConfig) -> float:
    """Model FLOPs of one optimizer step of one run (module docstring)."""
    cfg = cfg.resolve()
    m = cfg.model
    T, D, F = task_spec(cfg.task).seq_len, m.d_model, m.d_mlp
    forward = 3 * 2 * T * D * D + 2 * 2 * T * T * D + 2 * T * D * D + 2 * 2 * T * D * F
    return float(3 * forward * m.n_layers * cfg.train.batch_size)
