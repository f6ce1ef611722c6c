"""What one run needs at least, from the config's shapes alone: absurd sizes are refused before compiling.

`check_fits(cfg)` (called by `jaxlab.train.plan` for every program, before anything is compiled
or written) compares a lower bound on the bytes one run holds on a device with the per-device
memory budget of `jaxlab.train.chunking` (`JAXLAB_MEMORY_BUDGET`, else the device's memory):

    4 bytes x ( P x (2 + m)          parameters, their gradient, m optimizer moments
                                     (adam/adamw: 2; sgd with momentum: 1; sgd: 0)
              + B_eval x T x w       the evaluation batch's tokens (w: token width, 1 for ids)
              + B_eval x T x D )     its residual stream: one forward pass over it

P counts the transformer's weight matrices (`jaxlab.models`; biases and norms left out, so it is
a lower bound): per block 4 D H Dh (queries, keys, values, output; once with tied layers) +
2 D F (MLP) + max_len D (positional attention), plus the read-in or embedding, the learned
positions and the linear read-out. The evaluation terms count where the experiment reads
`train.eval_batch_size` (not one of the config's inert keys). Every temporary is left out, so
passing this check does not mean a run fits: XLA's memory analysis of the compiled programs
decides that (`chunking.choose`), and refuses with its estimate when one run per device does not.
"""

from __future__ import annotations

from dataclasses import dataclass

from jaxlab.config import ExperimentConfig
from jaxlab.errors import UserError
from jaxlab.tasks import task_spec
from jaxlab.train import chunking

FLOAT_BYTES = 4


@dataclass(frozen=True)
class Part:
    """One term of the bound: its bytes and the config fields that set it."""

    name: str
    bytes: int
    fields: str


def n_weights(cfg: ExperimentConfig) -> int:
    """P: the number of weights in the model's matrices (a resolved config; see the module docstring)."""
    m = cfg.model
    D, H, Dh, F = int(m.d_model), m.n_heads, m.head_dim, m.d_mlp
    block = 4 * D * H * Dh + 2 * D * F + (int(m.max_len) * D if m.attention == "positional" else 0)
    total = (1 if m.tie_layers else m.n_layers) * block
    if m.input == "discrete":
        total += int(m.vocab_size) * D
    elif m.read_in == "linear":
        total += int(m.d_input) * D
    if m.pos_encoding == "learned":
        total += int(m.max_len) * D
    if m.readout == "linear":
        n_out = m.vocab_size if m.input == "discrete" and m.d_output is None else m.d_output
        total += D * int(n_out)
    return total


def optimizer_moments(cfg: ExperimentConfig) -> int:
    """Vectors of the parameters' size that the optimizer keeps: adam/adamw 2, sgd 1 with momentum, else 0."""
    o = cfg.optim
    if o.name in ("adam", "adamw"):
        return 2
    return 1 if o.momentum > 0 else 0


def parts(cfg: ExperimentConfig) -> list[Part]:
    """The terms of the lower bound for one run of a resolved config, largest first."""
    m, t = cfg.model, cfg.train
    spec = task_spec(cfg.task)
    p = n_weights(cfg)
    moments = optimizer_moments(cfg)
    model_fields = (
        f"P = {p:,} weights: model.d_model={m.d_model}"
        + (" (the task's token width: model.read_in='identity')" if m.read_in == "identity" else "")
        + f", model.n_layers={m.n_layers}, model.n_heads={m.n_heads} of width {m.head_dim}"
        + f", model.d_mlp={m.d_mlp}"
        + (f", model.vocab_size={m.vocab_size}" if m.input == "discrete" else f", model.d_input={m.d_input}")
        + f"; optim.name={cfg.optim.name} keeps {moments} moment(s)"
    )
    out = [Part("parameters, gradients and optimizer state", FLOAT_BYTES * p * (2 + moments), model_fields)]
    if "train.eval_batch_size" not in cfg.inert_keys():
        width = 1 if spec.vocab_size is not None else int(spec.token_dim)
        tokens = t.eval_batch_size * spec.seq_len
        fields = (
            f"train.eval_batch_size={t.eval_batch_size} sequences x {spec.seq_len} tokens (from task.*) "
            f"x (token width {width} + model.d_model={m.d_model})"
        )
        out.append(
            Part(
                "the evaluation batch and its residual stream", FLOAT_BYTES * tokens * (width + int(m.d_model)), fields
            )
        )
    return sorted(out, key=lambda part: -part.bytes)


def lower_bound(cfg: ExperimentConfig) -> int:
    """Bytes one run certainly holds on a device (resolved config; see the module docstring)."""
    return sum(part.bytes for part in parts(cfg))


def drivers(cfg: ExperimentConfig) -> str:
    """The config fields that make one run large, with their share of the lower bound, for messages."""
    return "What one run holds at least: " + "; ".join(
        f"{part.name} {chunking.gigabytes(part.bytes)} ({part.fields})" for part in parts(cfg)
    )


def check_fits(cfg: ExperimentConfig, label: str = "", budget: int | None = None) -> None:
    """Refuse (UserError) a resolved config whose one run cannot fit a device's memory budget."""
    need = lower_bound(cfg)
    budget = chunking.memory_budget() if budget is None else budget
    if need > budget:
        where = f" (program {label})" if label else ""
        raise UserError(
            f"out of memory before starting{where}: one run holds at least {chunking.gigabytes(need)} on a "
            f"device but the budget is {chunking.gigabytes(budget)} per device ({chunking.budget_source()}). "
            f"{drivers(cfg)}. Make the run smaller or use a device with more memory"
        )
